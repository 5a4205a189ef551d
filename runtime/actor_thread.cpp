#include "runtime/actor_thread.hpp"

#include "runtime/log.hpp"
#include "runtime/thread_name.hpp"

namespace filo {

void ActorFailures::record(const std::string& actor, std::exception_ptr error) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (error_) return;
  actor_ = actor;
  error_ = std::move(error);
}

bool ActorFailures::any() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return static_cast<bool>(error_);
}

std::string ActorFailures::describe() const {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!error_) return {};
  try {
    std::rethrow_exception(error_);
  } catch (const std::exception& e) {
    return actor_ + ": " + e.what();
  } catch (...) {
    return actor_ + ": an exception that is not a std::exception";
  }
}

ActorThread::ActorThread(std::string actor, std::function<void()> body, ActorFailures& failures,
                         StopFlag& stop)
    : thread_([actor = std::move(actor), body = std::move(body), &failures, &stop] {
        name_this_thread(actor);
        try {
          body();
        } catch (const std::exception& e) {
          log(LogLevel::kError, actor, "stopped by an error: ", e.what());
          failures.record(actor, std::current_exception());
          stop.request_stop();
        } catch (...) {
          log(LogLevel::kError, actor, "stopped by an unknown exception");
          failures.record(actor, std::current_exception());
          stop.request_stop();
        }
      }) {}

ActorThread::~ActorThread() {
  if (thread_.joinable()) thread_.join();
}

}  // namespace filo
