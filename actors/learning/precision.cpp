#include "actors/learning/precision.hpp"

#include <ATen/autocast_mode.h>
#include <torch/cuda.h>
#include <torch/version.h>

#include <stdexcept>

#ifdef FILO_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

// LibTorch 2.4 replaced the per-backend autocast calls by device-typed ones (and deprecated the old).
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
#define FILO_DEVICE_TYPED_AUTOCAST 1
#endif

// LibTorch 1.13's CPU autocast takes bf16 only ("AutocastCPU only support Bfloat16"); fp16 on a CPU
// came with the device-typed API.
#ifdef FILO_DEVICE_TYPED_AUTOCAST
#define FILO_CPU_FP16_AUTOCAST 1
#endif

namespace filo {
namespace {
constexpr int kBf16ComputeCapability = 8;

int compute_capability_major(const torch::Device& device) {
#ifdef FILO_HAVE_CUDA
  cudaDeviceProp properties{};
  if (cudaGetDeviceProperties(&properties, device.has_index() ? device.index() : 0) == cudaSuccess) {
    return properties.major;
  }
#else
  (void)device;
#endif
  return 0;
}

bool autocast_enabled(torch::DeviceType type) {
#ifdef FILO_DEVICE_TYPED_AUTOCAST
  return at::autocast::is_autocast_enabled(type);
#else
  return type == torch::kCPU ? at::autocast::is_cpu_enabled() : at::autocast::is_enabled();
#endif
}

torch::ScalarType autocast_dtype(torch::DeviceType type) {
#ifdef FILO_DEVICE_TYPED_AUTOCAST
  return at::autocast::get_autocast_dtype(type);
#else
  return type == torch::kCPU ? at::autocast::get_autocast_cpu_dtype()
                             : at::autocast::get_autocast_gpu_dtype();
#endif
}

void set_autocast(torch::DeviceType type, bool enabled, torch::ScalarType dtype) {
#ifdef FILO_DEVICE_TYPED_AUTOCAST
  at::autocast::set_autocast_enabled(type, enabled);
  at::autocast::set_autocast_dtype(type, dtype);
#else
  if (type == torch::kCPU) {
    at::autocast::set_cpu_enabled(enabled);
    at::autocast::set_autocast_cpu_dtype(dtype);
  } else {
    at::autocast::set_enabled(enabled);
    at::autocast::set_autocast_gpu_dtype(dtype);
  }
#endif
}
}  // namespace

Precision resolve_precision(const std::string& name, const torch::Device& device) {
  if (name == "fp32") return Precision::kFp32;
  if (name == "bf16") return Precision::kBf16;
  if (name == "fp16") {
#ifndef FILO_CPU_FP16_AUTOCAST
    // Refused here, where the trainer reports it and exits, not on the first forward pass.
    if (device.is_cpu()) {
      throw std::invalid_argument("precision fp16 on a CPU needs LibTorch 2.4 or newer (this one, " +
                                  std::string(TORCH_VERSION) + ", autocasts CPUs to bf16 only): use bf16");
    }
#endif
    return Precision::kFp16;
  }
  if (name == "auto") {
    if (device.is_cpu()) return Precision::kBf16;
    return compute_capability_major(device) >= kBf16ComputeCapability ? Precision::kBf16 : Precision::kFp16;
  }
  throw std::invalid_argument("unknown precision '" + name + "' (known: fp32, bf16, fp16, auto)");
}

std::string precision_name(Precision precision) {
  switch (precision) {
    case Precision::kFp32:
      return "fp32";
    case Precision::kBf16:
      return "bf16";
    case Precision::kFp16:
      return "fp16";
  }
  return "fp32";
}

AutocastScope::AutocastScope(Precision precision, const torch::Device& device) {
  if (precision == Precision::kFp32) return;
  active_ = true;
  device_type_ = device.type();
  previous_enabled_ = autocast_enabled(device_type_);
  previous_dtype_ = autocast_dtype(device_type_);
  set_autocast(device_type_, true, precision == Precision::kBf16 ? torch::kBFloat16 : torch::kHalf);
  at::autocast::increment_nesting();
}

AutocastScope::~AutocastScope() {
  if (!active_) return;
  // Casts are cached while autocast is on; the cache must not outlive it (weights change).
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  set_autocast(device_type_, previous_enabled_, previous_dtype_);
}

}  // namespace filo
