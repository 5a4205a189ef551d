#pragma once
#include <algorithm>
#include <atomic>
#include <chrono>
#include <ctime>

namespace filo {

/// Monotonic time for deadlines, heartbeats and round timing.
using Clock = std::chrono::steady_clock;
using Milliseconds = std::chrono::milliseconds;

inline double seconds_between(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

template <typename Rep, typename Period>
Clock::duration to_clock_duration(std::chrono::duration<Rep, Period> duration) {
  return std::chrono::duration_cast<Clock::duration>(duration);
}

/// Where actors read the time: the steady clock in a running cluster, a clock that a test moves
/// by hand (ManualTime) so that liveness, deadlines and probes are tested without sleeping.
class TimeSource {
 public:
  virtual ~TimeSource() = default;
  virtual Clock::time_point now() const = 0;
};

class SteadyTime final : public TimeSource {
 public:
  Clock::time_point now() const override { return Clock::now(); }
};

/// The real clock. Stateless, so sharing one is not sharing state.
inline const TimeSource& steady_time() {
  static const SteadyTime time;
  return time;
}

/// A clock that stands still until advance() moves it. Safe to read from actor threads while the
/// test thread moves it.
class ManualTime final : public TimeSource {
 public:
  explicit ManualTime(Clock::time_point start = Clock::now()) : ticks_(start.time_since_epoch().count()) {}
  Clock::time_point now() const override { return Clock::time_point(Clock::duration(ticks_.load())); }
  void advance(Clock::duration by) { ticks_ += by.count(); }

 private:
  std::atomic<Clock::rep> ticks_;
};

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
