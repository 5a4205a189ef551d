#pragma once
#include <algorithm>
#include <chrono>
#include <ctime>

namespace filo {

/// Monotonic time for deadlines, heartbeats and round timing.
using Clock = std::chrono::steady_clock;
using Milliseconds = std::chrono::milliseconds;

inline double seconds_between(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

/// CPU time used by this process so far, all threads: what work cost, apart from waiting for a CPU.
inline Clock::duration process_cpu_time() {
  timespec now{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &now);
  return std::chrono::duration_cast<Clock::duration>(std::chrono::seconds(now.tv_sec) +
                                                     std::chrono::nanoseconds(now.tv_nsec));
}

/// How long a piece of work took: its wall time, or its CPU time where that is less (the process
/// waited for a CPU that others held). Many busy threads make CPU time exceed wall time.
class WorkTimer {
 public:
  WorkTimer() : wall_(Clock::now()), cpu_(process_cpu_time()) {}
  Clock::time_point started() const { return wall_; }
  Clock::duration wall() const { return Clock::now() - wall_; }
  Clock::duration busy() const { return std::min(wall(), process_cpu_time() - cpu_); }

 private:
  Clock::time_point wall_;
  Clock::duration cpu_;
};

}  // namespace filo
