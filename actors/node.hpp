#pragma once
// A node process: benchmark the machine, then run one trainer for the configured device.
#include "runtime/config.hpp"
#include "runtime/stop_signal.hpp"

namespace filo {

/// Returns the trainer's exit code (0 finished, 2 rejected, 3 coordinator unreachable).
int run_node(const Config& config, const StopFlag& process_stop);

/// The node's name: node.name, or this machine's hostname.
std::string node_name(const NodeOptions& options);

}  // namespace filo
