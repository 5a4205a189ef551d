#pragma once
#include <chrono>

namespace filo {

/// Monotonic time for deadlines, heartbeats and round timing.
using Clock = std::chrono::steady_clock;
using Milliseconds = std::chrono::milliseconds;

inline double seconds_between(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

}  // namespace filo
