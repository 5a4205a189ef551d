#pragma once
#include <thread>
#include <utility>

namespace filo {

/// A thread that is always joined when it goes out of scope (C++17 has no std::jthread).
class ScopedThread {
 public:
  ScopedThread() = default;
  template <typename Function>
  explicit ScopedThread(Function&& function) : thread_(std::forward<Function>(function)) {}
  ScopedThread(ScopedThread&&) noexcept = default;
  ScopedThread& operator=(ScopedThread&& other) noexcept {
    join();
    thread_ = std::move(other.thread_);
    return *this;
  }
  ~ScopedThread() { join(); }
  void join() {
    if (thread_.joinable()) thread_.join();
  }

 private:
  std::thread thread_;
};

}  // namespace filo
