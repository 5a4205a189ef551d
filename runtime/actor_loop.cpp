#include "runtime/actor_loop.hpp"

#include <algorithm>

namespace filo {

void ActorLoop::on_readable(zmq::socket_t& socket, Handler handler) {
  poll_items_.push_back(zmq::pollitem_t{socket.handle(), 0, ZMQ_POLLIN, 0});
  readers_.push_back(std::move(handler));
}

ActorLoop::TimerId ActorLoop::every(Milliseconds interval, Handler handler) {
  const TimerId id = next_timer_id_++;
  timers_.emplace(id, Timer{now() + interval, interval, std::move(handler)});
  return id;
}

ActorLoop::TimerId ActorLoop::at(Clock::time_point when, Handler handler) {
  const TimerId id = next_timer_id_++;
  timers_.emplace(id, Timer{when, Milliseconds{0}, std::move(handler)});
  return id;
}

void ActorLoop::cancel(TimerId id) {
  timers_.erase(id);
}

Milliseconds ActorLoop::time_to_next_timer(Clock::time_point now) const {
  Milliseconds wait = kStopCheckInterval;
  for (const auto& [id, timer] : timers_) {
    const auto until = std::chrono::duration_cast<Milliseconds>(timer.due - now);
    wait = std::min(wait, std::max(Milliseconds{0}, until));
  }
  return wait;
}

void ActorLoop::run_due_timers() {
  const auto now = this->now();
  std::vector<TimerId> due;
  for (const auto& [id, timer] : timers_)
    if (timer.due <= now) due.push_back(id);
  for (TimerId id : due) {
    auto found = timers_.find(id);
    if (found == timers_.end()) continue;  // cancelled by an earlier handler
    Handler handler = found->second.handler;
    if (found->second.interval.count() > 0) {
      found->second.due = now + found->second.interval;
    } else {
      timers_.erase(found);
    }
    handler();
  }
}

void ActorLoop::run() {
  while (!finishing()) {
    const auto wait = time_to_next_timer(now());
    try {
      zmq::poll(poll_items_.empty() ? nullptr : poll_items_.data(), poll_items_.size(), wait);
    } catch (const zmq::error_t& e) {
      if (e.num() != EINTR) throw;
      continue;  // a signal arrived: look at the stop flag before anything else
    }
    for (std::size_t i = 0; i < poll_items_.size() && !finishing(); ++i) {
      if (poll_items_[i].revents & ZMQ_POLLIN) readers_[i]();
    }
    if (!finishing()) run_due_timers();
  }
}

}  // namespace filo
