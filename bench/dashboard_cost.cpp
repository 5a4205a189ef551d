// Dashboard cost: does serving the dashboard slow the run it watches? Real `filo local` runs of
// separate processes, alternately without a dashboard (--web off) and with one that is being
// watched hard: --watchers client threads in this process each fetch /api/state and /metrics
// every --poll-ms (a browser fetches /api/state once a second; Prometheus scrapes every 15 s
// or so). The clients run on the same machine as the run, so on a small machine their own CPU
// use counts against the run too: an upper bound of what watching from elsewhere costs.
// Prints each run's throughput, the CPU time of the `filo local` process itself (its terminal
// monitor, plus the dashboard when there is one), and the medians side by side.
//
//   build/dashboard_cost [--pairs 3] [--samples 12000] [--watchers 4] [--poll-ms 250]
//
// Throughput counts the rounds after the third, from the close of round 3 to the close of the
// last (as bench/cluster_balance does).
#include <unistd.h>
#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <optional>
#include <regex>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "runtime/http_client.hpp"
#include "runtime/process.hpp"
#include "runtime/scoped_thread.hpp"

using namespace filo;
using nlohmann::json;

namespace {
constexpr std::size_t kSettleRounds = 3;
constexpr std::chrono::minutes kRunTimeout{20};

double samples_per_second(const std::string& rounds_path) {
  std::ifstream file(rounds_path);
  std::vector<json> rounds;
  for (std::string line; std::getline(file, line);) rounds.push_back(json::parse(line));
  if (rounds.size() <= kSettleRounds + 1)
    throw std::runtime_error(rounds_path + " has too few rounds; give the benchmark more --samples");
  double samples = 0.0;
  for (std::size_t r = kSettleRounds; r < rounds.size(); ++r)
    samples += rounds[r].at("samples").get<double>();
  const double seconds = rounds.back().at("closed_seconds").get<double>() -
                         rounds[kSettleRounds - 1].at("closed_seconds").get<double>();
  return samples / seconds;
}

bool fetch(int port, const char* path) {
  const auto reply = http_get("127.0.0.1", port, path);
  return reply && reply->status == 200;
}

struct RunResult {
  double samples_per_second = 0.0;
  std::uint64_t fetches = 0;
  double monitor_cpu_seconds = 0.0;  // the `filo local` process itself: its monitor and dashboard
};

/// CPU seconds (user + system) the process `pid` has used so far, from /proc/PID/stat.
std::optional<double> cpu_seconds_of(pid_t pid) {
  std::ifstream file("/proc/" + std::to_string(pid) + "/stat");
  std::string text(std::istreambuf_iterator<char>(file), {});
  const auto close = text.rfind(')');  // the command name may hold spaces
  if (close == std::string::npos) return std::nullopt;
  std::istringstream fields(text.substr(close + 2));
  std::string field;
  double utime = 0, stime = 0;
  for (int i = 3; i <= 15 && fields >> field; ++i) {  // fields 14 and 15 are utime and stime
    if (i == 14) utime = std::stod(field);
    if (i == 15) stime = std::stod(field);
  }
  return (utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

RunResult run_once(const std::string& run_dir, std::int64_t samples, bool dashboard, int watchers,
                   std::chrono::milliseconds poll) {
  std::filesystem::remove_all(run_dir);
  std::filesystem::create_directories(run_dir);
  const std::string log = run_dir + ".log";
  ChildProcess local({FILO_BINARY, "local", "--run-dir", run_dir, "--epochs", "1", "--web",
                      dashboard ? "127.0.0.1:0" : "off", "--set",
                      "data.train_limit=" + std::to_string(samples), "--set", "data.test_limit=500"},
                     log);
  std::atomic<bool> done{false};
  std::atomic<std::uint64_t> fetches{0};
  std::vector<ScopedThread> clients;
  if (dashboard) {
    // The dashboard prints its address before the nodes start.
    int port = 0;
    const std::regex address("dashboard at http://127\\.0\\.0\\.1:([0-9]+)/");
    while (port == 0 && local.running()) {
      std::ifstream file(log);
      const std::string text(std::istreambuf_iterator<char>(file), {});
      std::smatch match;
      if (std::regex_search(text, match, address))
        port = std::stoi(match[1]);
      else
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    for (int i = 0; i < watchers && port != 0; ++i) {
      clients.emplace_back([&, port] {
        while (!done) {
          if (fetch(port, "/api/state")) ++fetches;
          if (fetch(port, "/metrics")) ++fetches;
          std::this_thread::sleep_for(poll);
        }
      });
    }
  }
  // Its CPU time, read until just before it exits (afterwards /proc has nothing).
  double cpu_seconds = 0.0;
  std::optional<int> code;
  const auto give_up = std::chrono::steady_clock::now() + kRunTimeout;
  while (!(code = local.wait_for(std::chrono::milliseconds(100))) &&
         std::chrono::steady_clock::now() < give_up) {
    if (auto seconds = cpu_seconds_of(local.pid())) cpu_seconds = *seconds;
  }
  done = true;
  for (auto& client : clients) client.join();
  if (code != std::optional<int>(0)) throw std::runtime_error("filo local failed; see " + log);
  return {samples_per_second(run_dir + "/rounds.jsonl"), fetches.load(), cpu_seconds};
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const std::size_t n = values.size();
  return n % 2 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}
}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Throughput of filo local without a dashboard and with a hard-watched one, alternately"};
  int pairs = 3;
  std::int64_t samples = 12000;
  int watchers = 4;
  int poll_ms = 250;
  std::string out = "runs/dashboard_cost";
  app.add_option("--pairs", pairs, "runs of each kind, alternating (default 3)");
  app.add_option("--samples", samples, "training samples of each one-epoch run (default 12000)");
  app.add_option("--watchers", watchers, "client threads fetching /api/state and /metrics (default 4)");
  app.add_option("--poll-ms", poll_ms, "pause between one client's fetches, ms (default 250)");
  app.add_option("--out", out, "where the runs go (default runs/dashboard_cost)");
  CLI11_PARSE(app, argc, argv);
  std::vector<double> without, with, cpu_without, cpu_with;
  std::cout << std::fixed << std::setprecision(0);
  try {
    for (int pair = 0; pair < pairs; ++pair) {
      const RunResult plain = run_once(out + "/off-" + std::to_string(pair), samples, false, 0, {});
      without.push_back(plain.samples_per_second);
      cpu_without.push_back(plain.monitor_cpu_seconds);
      std::cout << "run " << 2 * pair + 1 << ": no dashboard            " << plain.samples_per_second
                << " samples/s; filo local itself used " << std::setprecision(2) << plain.monitor_cpu_seconds
                << " CPU s" << std::setprecision(0) << std::endl;
      const RunResult watched = run_once(out + "/on-" + std::to_string(pair), samples, true, watchers,
                                         std::chrono::milliseconds(poll_ms));
      with.push_back(watched.samples_per_second);
      cpu_with.push_back(watched.monitor_cpu_seconds);
      std::cout << "run " << 2 * pair + 2 << ": dashboard, " << watchers << " watchers  "
                << watched.samples_per_second << " samples/s; filo local itself used " << std::setprecision(2)
                << watched.monitor_cpu_seconds << " CPU s" << std::setprecision(0) << " (" << watched.fetches
                << " pages served)" << std::endl;
    }
  } catch (const std::exception& e) {
    std::cerr << "dashboard_cost: " << e.what() << std::endl;
    return 1;
  }
  const double base = median(without);
  const double watched = median(with);
  std::cout << "median: no dashboard " << base << " samples/s; watched dashboard " << watched
            << " samples/s; ratio " << std::setprecision(3) << watched / base << "; filo local's own CPU "
            << std::setprecision(2) << median(cpu_without) << " s without, " << median(cpu_with) << " s with"
            << std::endl;
  return 0;
}
