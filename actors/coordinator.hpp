#pragma once
// The coordinator process: the hub plus the registrar, scheduler and aggregator, each on its own
// thread, talking over inproc. Remote trainers reach the same hub over tcp.
#include "runtime/config.hpp"
#include "runtime/stop_signal.hpp"

namespace filo {

/// Runs a whole training run as coordinator. Returns 0 when the run finished, 130 when stopped
/// first. Throws ConfigError or std::runtime_error on bad configuration or missing data.
int run_coordinator(const Config& config, const StopFlag& process_stop);

}  // namespace filo
