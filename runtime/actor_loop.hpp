#pragma once
// One thread owns its sockets and runs this loop: poll until the next deadline, then fire timers.
// No sleeps; the stop flag is looked at least every kStopCheckInterval. Timers follow the loop's
// TimeSource, so a test can move an actor's time by hand.
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <vector>
#include <zmq.hpp>

#include "runtime/clock.hpp"
#include "runtime/stop_signal.hpp"

namespace filo {

constexpr Milliseconds kStopCheckInterval{50};

class ActorLoop {
 public:
  using Handler = std::function<void()>;
  using TimerId = std::uint64_t;

  explicit ActorLoop(const StopFlag& stop, const TimeSource& time = steady_time())
      : stop_(stop), time_(time) {}

  /// Calls `handler` whenever `socket` has input; the handler drains what it wants.
  void on_readable(zmq::socket_t& socket, Handler handler);
  /// Fires `handler` every `interval`, first after one interval.
  TimerId every(Milliseconds interval, Handler handler);
  /// Fires `handler` once at `when`.
  TimerId at(Clock::time_point when, Handler handler);
  void cancel(TimerId id);

  /// Runs until the process is asked to stop or quit() is called.
  void run();
  /// Ends run() after the current handler returns.
  void quit() { quit_ = true; }
  bool finishing() const { return quit_ || stop_.stop_requested(); }

  /// Fires timers that are due, without polling sockets: lets a long computation keep its
  /// heartbeats going.
  void run_due_timers();

  /// The time as this loop's actor sees it.
  Clock::time_point now() const { return time_.now(); }
  const TimeSource& time() const { return time_; }

 private:
  struct Timer {
    Clock::time_point due;
    Milliseconds interval;  // zero for one-shot timers
    Handler handler;
  };

  Milliseconds time_to_next_timer(Clock::time_point now) const;

  const StopFlag& stop_;
  const TimeSource& time_;
  bool quit_ = false;
  std::vector<zmq::pollitem_t> poll_items_;
  std::deque<Handler> readers_;  // a deque: a handler may add a reader while it runs
  std::map<TimerId, Timer> timers_;
  TimerId next_timer_id_ = 1;
};

}  // namespace filo
