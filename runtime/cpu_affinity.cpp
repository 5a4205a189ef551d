#include "runtime/cpu_affinity.hpp"

#include <sched.h>
#include <algorithm>
#include <filesystem>
#include <sstream>
#include <system_error>
#include <thread>

#include "runtime/config.hpp"

namespace filo {
namespace {
int parse_index(const std::string& text, const std::string& key, const std::string& item) {
  std::size_t used = 0;
  int value = -1;
  try {
    value = std::stoi(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != text.size() || value < 0 || value >= CPU_SETSIZE) {
    throw ConfigError(key + ": '" + item + "' is not a CPU number or range (expected e.g. \"0-3,8\")");
  }
  return value;
}
}  // namespace

std::vector<int> parse_cpu_list(const std::string& text, const std::string& key) {
  std::vector<int> cpus;
  for (const auto& item : split_list(text)) {
    const auto dash = item.find('-');
    const int first = parse_index(item.substr(0, dash), key, item);
    const int last = dash == std::string::npos ? first : parse_index(item.substr(dash + 1), key, item);
    if (last < first) throw ConfigError(key + ": range '" + item + "' runs backwards");
    for (int cpu = first; cpu <= last; ++cpu) cpus.push_back(cpu);
  }
  return cpus;
}

void pin_to_cpus(pid_t pid, const std::vector<int>& cpus) {
  if (cpus.empty()) return;
  cpu_set_t set;
  CPU_ZERO(&set);
  std::ostringstream named;
  for (int cpu : cpus) {
    CPU_SET(cpu, &set);
    named << (named.tellp() > 0 ? "," : "") << cpu;
  }
  std::vector<pid_t> threads{pid};
  if (pid == 0) {
    // Every thread this process has started so far (zmq's, LibTorch's); later ones inherit.
    threads.clear();
    for (const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
      threads.push_back(static_cast<pid_t>(std::stol(task.path().filename().string())));
    }
  }
  for (pid_t thread : threads) {
    if (sched_setaffinity(thread, sizeof set, &set) != 0 && errno != ESRCH) {  // ESRCH: it ended meanwhile
      throw std::system_error(errno, std::generic_category(),
                              "cannot pin to CPUs " + named.str() + " (this machine has " +
                                  std::to_string(std::thread::hardware_concurrency()) + ")");
    }
  }
}

int usable_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) != 0) return std::max(1U, std::thread::hardware_concurrency());
  return std::max(1, CPU_COUNT(&set));
}

}  // namespace filo
