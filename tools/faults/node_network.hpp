#pragma once
// A node's own network namespace for fault injection: a veth pair joins it to the host, so its
// link can be taken down and up, or capped with tc tbf, without touching any other process.
// Needs root and iproute2; `network_namespaces_available()` says whether this machine has them.
#include <string>
#include <vector>

namespace filo {

/// Whether `ip netns` works here (root, iproute2, a kernel with network namespaces); when not,
/// `why` says what is missing.
bool network_namespaces_available(std::string& why);

/// Removes namespaces left by fault runs whose process is gone (a run killed before cleaning up).
void remove_stale_node_networks();

class NodeNetwork {
 public:
  /// Namespace `filo-f<pid>-<index>`; host side 10.213.<pid % 250>.<4 index + 1>/30, node side
  /// <4 index + 2>. Commands and their output go to `log_path`.
  NodeNetwork(int index, std::string log_path);
  ~NodeNetwork();
  NodeNetwork(const NodeNetwork&) = delete;
  NodeNetwork& operator=(const NodeNetwork&) = delete;

  /// The address the node reaches the host (the coordinator) at.
  const std::string& host_address() const { return host_address_; }
  /// The namespace's own address: where the host reaches what listens inside it.
  const std::string& node_address() const { return node_address_; }
  /// `ip netns exec <namespace>`: put in front of a command to run it inside.
  std::vector<std::string> exec_prefix() const;

  void set_link_up(bool up);
  /// Caps both directions of the link with a token bucket (tc tbf); 0 removes the cap.
  void cap_bandwidth(int kilobits_per_second);

 private:
  void run(std::vector<std::string> arguments) const;

  std::string namespace_;
  std::string host_interface_;
  std::string node_interface_;
  std::string host_address_;
  std::string node_address_;
  std::string log_path_;
  bool capped_ = false;
};

}  // namespace filo
