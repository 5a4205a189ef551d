#pragma once
// Background work at a lower priority than a round's path. Where trainers fill the cores (a local
// cluster, a coordinator beside a node), a thread that evaluates the test set or writes a
// checkpoint at the same priority takes a core's slice from a trainer that the whole round waits
// for; niced, it runs on what the rounds leave idle. Raising niceness needs no privilege.
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace filo {

/// The niceness of background threads: well below a trainer's, yet not starved when cores are busy.
constexpr int kBackgroundNiceness = 10;

/// Makes the calling thread (only it: Linux keeps a niceness per thread) yield to the others.
/// Best effort: a refusal leaves it at its priority.
inline void lower_this_thread_priority(int niceness = kBackgroundNiceness) {
  const auto thread = static_cast<id_t>(syscall(SYS_gettid));
  (void)setpriority(PRIO_PROCESS, thread, niceness);
}

}  // namespace filo
