#pragma once
// Names the calling thread, so that top -H, perf and /proc show which actor uses the CPU.
#include <pthread.h>

#include <string>

namespace filo {

/// Linux keeps the first 15 characters.
inline void name_this_thread(const std::string& name) {
  pthread_setname_np(pthread_self(), name.substr(0, 15).c_str());
}

}  // namespace filo
