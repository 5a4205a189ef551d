#pragma once
// GPU facts and speeds from the CUDA runtime and cuBLAS. Built as CUDA code where a toolkit was
// found; elsewhere the probe answers that this build has no CUDA.
#include <string>
#include <vector>

#include "messages/membership.hpp"

namespace filo {

struct GpuProbe {
  std::vector<msg::GpuInfo> gpus;
  std::string status;  // why `gpus` is empty, when it is
};

struct GpuBenchmarkOptions {
  bool measure = false;           /// run the GEMM and copy benchmarks, not just list devices
  double seconds_per_test = 0.2;  /// timed span of each GEMM precision and copy direction
  /// Only this device is listed and measured (a trainer's own), so that a node creates no CUDA
  /// context on GPUs it does not train on; -1: every visible GPU (filo bench).
  int only_device = -1;
};

/// Lists the visible GPUs and, when asked, measures each; never fails on a machine without one.
/// A failing CUDA or cuBLAS call is named, with its status string, in the GPU's benchmark_status.
GpuProbe probe_gpus(const GpuBenchmarkOptions& options = {});

}  // namespace filo
