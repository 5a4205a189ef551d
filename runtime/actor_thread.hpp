#pragma once
// An actor's thread whose failure reaches its owner. An exception escaping a plain std::thread
// ends the process through std::terminate with no word of what went wrong; here it is kept as an
// exception_ptr (as gloo keeps I/O-thread errors), the process's other actors are asked to stop,
// and the owner reports it and exits with a code of its own.
#include <exception>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "runtime/stop_signal.hpp"

namespace filo {

/// The first failure among the actor threads of one process.
class ActorFailures {
 public:
  /// Keeps the first failure; later ones are only logged by their thread.
  void record(const std::string& actor, std::exception_ptr error);
  bool any() const;
  /// "aggregator: what went wrong", or empty when nothing failed.
  std::string describe() const;

 private:
  mutable std::mutex mutex_;
  std::string actor_;
  std::exception_ptr error_;
};

/// Runs `body` on its own thread, joined on destruction. If `body` throws, the error is recorded in
/// `failures`, logged, and `stop` is requested so that the other actors end too.
class ActorThread {
 public:
  ActorThread(std::string actor, std::function<void()> body, ActorFailures& failures, StopFlag& stop);
  ~ActorThread();
  ActorThread(const ActorThread&) = delete;
  ActorThread& operator=(const ActorThread&) = delete;

 private:
  std::thread thread_;
};

/// Exit code of a process whose actor failed (EX_SOFTWARE).
constexpr int kExitActorFailed = 70;

}  // namespace filo
