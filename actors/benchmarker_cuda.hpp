#pragma once
// GPU facts from the CUDA runtime. Built as CUDA code where a toolkit was found; elsewhere the
// probe answers that this build has no CUDA.
#include <string>
#include <vector>

#include "messages/membership.hpp"

namespace filo {

struct GpuProbe {
  std::vector<msg::GpuInfo> gpus;
  std::string status;  // why `gpus` is empty, when it is
};

/// Lists the visible GPUs; never fails on a machine without one.
GpuProbe probe_gpus();

}  // namespace filo
