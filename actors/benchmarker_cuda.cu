// CUDA runtime queries for the benchmarker. Every call is checked; failures become a status.
#include <cuda_runtime.h>

#include <cstdio>
#include <string>

#include "actors/benchmarker_cuda.hpp"

namespace filo {
namespace {
std::string uuid_text(const cudaUUID_t& uuid) {
  char text[48];
  const auto* b = reinterpret_cast<const unsigned char*>(uuid.bytes);
  std::snprintf(text, sizeof text,
                "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
                b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
                b[14], b[15]);
  return text;
}

std::string failure(const char* call, cudaError_t status) {
  return std::string(call) + " failed: " + cudaGetErrorName(status) + " (" +
         cudaGetErrorString(status) + ")";
}
}  // namespace

GpuProbe probe_gpus() {
  GpuProbe probe;
  int count = 0;
  if (cudaError_t status = cudaGetDeviceCount(&count); status != cudaSuccess) {
    const bool no_gpu = status == cudaErrorNoDevice || status == cudaErrorInsufficientDriver;
    probe.status = (no_gpu ? std::string("no NVIDIA GPU or driver on this machine; ") : std::string()) +
                   failure("cudaGetDeviceCount", status);
    return probe;
  }
  if (count == 0) probe.status = "the CUDA runtime sees no GPU";
  for (int device = 0; device < count; ++device) {
    cudaDeviceProp properties{};
    if (cudaError_t status = cudaGetDeviceProperties(&properties, device); status != cudaSuccess) {
      probe.status = failure("cudaGetDeviceProperties", status);
      continue;
    }
    msg::GpuInfo info;
    info.name = properties.name;
    info.uuid = uuid_text(properties.uuid);
    info.compute_capability_major = properties.major;
    info.compute_capability_minor = properties.minor;
    info.total_memory_bytes = static_cast<std::int64_t>(properties.totalGlobalMem);
    size_t free_bytes = 0, total_bytes = 0;
    if (cudaSetDevice(device) == cudaSuccess && cudaMemGetInfo(&free_bytes, &total_bytes) == cudaSuccess) {
      info.free_memory_bytes = static_cast<std::int64_t>(free_bytes);
    }
    probe.gpus.push_back(std::move(info));
  }
  return probe;
}

}  // namespace filo
