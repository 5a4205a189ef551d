#pragma once
// Child processes for `filo local` and the multi-process tests: started with posix_spawn,
// always reaped. A ChildProcess that goes out of scope still running is terminated, then killed.
#include <sys/types.h>
#include <chrono>
#include <optional>
#include <string>
#include <vector>

namespace filo {

class ChildProcess {
 public:
  /// Starts `arguments[0]` with `arguments`; stdout/stderr go to `log_path` when given.
  ChildProcess(const std::vector<std::string>& arguments, const std::string& log_path = {});
  ~ChildProcess();
  ChildProcess(ChildProcess&& other) noexcept;
  ChildProcess& operator=(ChildProcess&&) = delete;
  ChildProcess(const ChildProcess&) = delete;

  pid_t pid() const { return pid_; }
  bool running();
  /// Sends `signal_number` if the process still runs.
  void signal(int signal_number);
  /// Waits up to `timeout` for exit; returns the exit code (128+signal when killed by one).
  std::optional<int> wait_for(std::chrono::milliseconds timeout);
  /// SIGTERM, up to `grace` for a clean exit, then SIGKILL. Returns the exit code.
  int stop(std::chrono::milliseconds grace);
  std::optional<int> exit_code() const { return exit_code_; }

 private:
  bool reap(bool block);
  pid_t pid_ = -1;
  std::optional<int> exit_code_;
};

/// The path of the running executable (/proc/self/exe), for spawning more of itself.
std::string current_executable();

}  // namespace filo
