#pragma once
// SIGINT/SIGTERM turn into a flag that every actor loop checks at least every kStopCheckInterval.
#include <atomic>

namespace filo {

/// A stop request shared by the actors of one process. Actors only read it; the process's main
/// function owns it and lets signals set it.
class StopFlag {
 public:
  void request_stop() { stopped_.store(true, std::memory_order_relaxed); }
  bool stop_requested() const { return stopped_.load(std::memory_order_relaxed); }

 private:
  std::atomic<bool> stopped_{false};
};

/// Routes SIGINT and SIGTERM of this process to `flag` (and ignores SIGPIPE). Call once in main.
void install_stop_signals(StopFlag& flag);

}  // namespace filo
