#include "tools/faults/node_network.hpp"

#include <unistd.h>
#include <csignal>
#include <filesystem>
#include <stdexcept>

#include "runtime/process.hpp"

namespace filo {
namespace {
constexpr auto kCommandTimeout = std::chrono::seconds(10);
constexpr const char* kNamespacePrefix = "filo-f";

std::string tool_path(const std::string& name) {
  for (const char* directory : {"/usr/sbin/", "/sbin/", "/usr/bin/", "/bin/"}) {
    const std::string path = directory + name;
    if (access(path.c_str(), X_OK) == 0) return path;
  }
  return {};
}

std::string ip_tool() {
  const std::string path = tool_path("ip");
  if (path.empty()) throw std::runtime_error("no ip command: install iproute2");
  return path;
}

int run_quietly(std::vector<std::string> arguments, const std::string& log_path) {
  ChildProcess process(arguments, log_path);
  const auto code = process.wait_for(kCommandTimeout);
  if (!code) return process.stop(std::chrono::seconds(1));
  return *code;
}
}  // namespace

bool network_namespaces_available(std::string& why) {
  if (geteuid() != 0) {
    why = "network namespaces need root";
    return false;
  }
  if (tool_path("ip").empty() || tool_path("tc").empty()) {
    why = "no ip or tc command: install iproute2";
    return false;
  }
  const std::string probe = std::string(kNamespacePrefix) + std::to_string(getpid()) + "-probe";
  if (run_quietly({ip_tool(), "netns", "add", probe}, "/dev/null") != 0) {
    why = "ip netns add failed: this kernel or container does not allow network namespaces";
    return false;
  }
  run_quietly({ip_tool(), "netns", "del", probe}, "/dev/null");
  return true;
}

void remove_stale_node_networks() {
  const std::filesystem::path directory = "/var/run/netns";
  std::error_code error;
  if (!std::filesystem::is_directory(directory, error)) return;
  for (const auto& entry : std::filesystem::directory_iterator(directory, error)) {
    const std::string name = entry.path().filename();
    if (name.rfind(kNamespacePrefix, 0) != 0) continue;
    const pid_t owner =
        static_cast<pid_t>(std::atol(name.c_str() + std::char_traits<char>::length(kNamespacePrefix)));
    if (owner > 0 && (::kill(owner, 0) == 0 || errno == EPERM)) continue;  // its run is still going
    run_quietly({ip_tool(), "netns", "del", name}, "/dev/null");
  }
}

NodeNetwork::NodeNetwork(int index, std::string log_path) : log_path_(std::move(log_path)) {
  if (index < 0 || index > 60) throw std::invalid_argument("node network index must be 0..60");
  const std::string tag = std::to_string(getpid());
  namespace_ = kNamespacePrefix + tag + "-" + std::to_string(index);
  // Interface names are at most 15 characters.
  host_interface_ = "fh" + std::to_string(getpid() % 100000) + "-" + std::to_string(index);
  node_interface_ = "fn" + std::to_string(getpid() % 100000) + "-" + std::to_string(index);
  const std::string subnet = "10.213." + std::to_string(getpid() % 250) + ".";
  host_address_ = subnet + std::to_string(4 * index + 1);
  node_address_ = subnet + std::to_string(4 * index + 2);
  const std::string& node_address = node_address_;
  const std::string ip = ip_tool();
  run({ip, "netns", "add", namespace_});
  try {
    run({ip, "link", "add", host_interface_, "type", "veth", "peer", "name", node_interface_});
    run({ip, "link", "set", node_interface_, "netns", namespace_});
    run({ip, "addr", "add", host_address_ + "/30", "dev", host_interface_});
    run({ip, "link", "set", host_interface_, "up"});
    run({ip, "netns", "exec", namespace_, ip, "addr", "add", node_address + "/30", "dev", node_interface_});
    run({ip, "netns", "exec", namespace_, ip, "link", "set", node_interface_, "up"});
    run({ip, "netns", "exec", namespace_, ip, "link", "set", "lo", "up"});
  } catch (...) {
    run_quietly({ip, "netns", "del", namespace_}, log_path_);
    run_quietly({ip, "link", "del", host_interface_}, log_path_);
    throw;
  }
}

NodeNetwork::~NodeNetwork() {
  // Deleting the namespace deletes the veth pair with it (and the cap with the interfaces).
  try {
    run_quietly({ip_tool(), "netns", "del", namespace_}, log_path_);
    run_quietly({ip_tool(), "link", "del", host_interface_}, log_path_);  // in case the pair outlived it
  } catch (...) {
  }
}

std::vector<std::string> NodeNetwork::exec_prefix() const {
  return {ip_tool(), "netns", "exec", namespace_};
}

void NodeNetwork::set_link_up(bool up) {
  // The host side: taking one end down takes the carrier of both.
  run({ip_tool(), "link", "set", host_interface_, up ? "up" : "down"});
}

void NodeNetwork::cap_bandwidth(int kilobits_per_second) {
  const std::string tc = tool_path("tc");
  if (tc.empty()) throw std::runtime_error("no tc command: install iproute2");
  const std::vector<std::vector<std::string>> sides{{tc}, {ip_tool(), "netns", "exec", namespace_, tc}};
  const std::vector<std::string> interfaces{host_interface_, node_interface_};
  for (std::size_t side = 0; side < sides.size(); ++side) {
    std::vector<std::string> command = sides[side];
    if (kilobits_per_second <= 0) {
      if (!capped_) continue;
      command.insert(command.end(), {"qdisc", "del", "dev", interfaces[side], "root"});
    } else {
      // A burst of a few packets and a queue of at most 200 ms: a slow link, not a deep buffer.
      const std::string rate = std::to_string(kilobits_per_second) + "kbit";
      command.insert(command.end(), {"qdisc", "replace", "dev", interfaces[side], "root", "tbf", "rate", rate,
                                     "burst", "16kb", "latency", "200ms"});
    }
    run(command);
  }
  capped_ = kilobits_per_second > 0;
}

void NodeNetwork::run(std::vector<std::string> arguments) const {
  std::string text;
  for (const auto& argument : arguments) text += (text.empty() ? "" : " ") + argument;
  const int code = run_quietly(arguments, log_path_);
  if (code != 0)
    throw std::runtime_error("'" + text + "' failed with exit code " + std::to_string(code) + " (see " +
                             log_path_ + ")");
}

}  // namespace filo
