#include "runtime/memory.hpp"

#include <malloc.h>

namespace filo {
namespace {
constexpr int kMmapThresholdBytes = 32 << 20;  // glibc's maximum: 1 MB frames come from the heap
constexpr int kTrimThresholdBytes = 1 << 30;   // give memory back only past 1 GiB of free heap
}  // namespace

void keep_message_memory() {
  mallopt(M_MMAP_THRESHOLD, kMmapThresholdBytes);
  mallopt(M_TRIM_THRESHOLD, kTrimThresholdBytes);
}

}  // namespace filo
