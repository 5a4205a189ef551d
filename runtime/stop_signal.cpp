#include "runtime/stop_signal.hpp"

#include <csignal>

namespace filo {
namespace {
// A signal handler can reach nothing but a global; it is set once, by main, and only flags.
StopFlag* g_stop_flag = nullptr;

extern "C" void on_stop_signal(int) {
  if (g_stop_flag != nullptr) g_stop_flag->request_stop();
}
}  // namespace

void install_stop_signals(StopFlag& flag) {
  g_stop_flag = &flag;
  struct sigaction action {};
  action.sa_handler = on_stop_signal;
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
  std::signal(SIGPIPE, SIG_IGN);
}

}  // namespace filo
