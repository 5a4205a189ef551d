#include "actors/learning/device.hpp"

#include <torch/cuda.h>

#include <fstream>
#include <sstream>

#ifdef FILO_TORCH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

namespace filo {
namespace {
std::int64_t peak_resident_bytes() {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("VmHWM:", 0) != 0) continue;
    std::istringstream fields(line.substr(6));
    std::int64_t kibibytes = 0;
    fields >> kibibytes;
    return kibibytes * 1024;
  }
  return 0;
}
}  // namespace

DeviceChoice choose_devices(const std::string& name, const std::string& setting) {
  DeviceChoice choice;
  if (name == "cpu") {
    choice.devices.emplace_back(torch::kCPU);
    return choice;
  }
  if (name != "cuda" && name.rfind("cuda:", 0) != 0) {
    choice.problem = setting + " must be cpu, cuda or cuda:N, not " + name;
    return choice;
  }
  const auto visible =
      static_cast<std::int64_t>(torch::cuda::is_available() ? torch::cuda::device_count() : 0);
  if (visible == 0) {
    choice.problem =
        setting + " is " + name + " but " +
        (torch::cuda::is_available() ? std::string("no GPU is visible")
                                     : std::string("this machine has no CUDA device visible to LibTorch "
                                                   "(no GPU or driver, or a LibTorch built without CUDA)"));
    return choice;
  }
  if (name == "cuda") {
    for (std::int64_t index = 0; index < visible; ++index) {
      choice.devices.emplace_back(torch::kCUDA, static_cast<torch::DeviceIndex>(index));
    }
    return choice;
  }
  std::int64_t index = -1;
  try {
    std::size_t used = 0;
    index = std::stoll(name.substr(5), &used);
    if (used != name.size() - 5) index = -1;
  } catch (const std::exception&) {
    index = -1;
  }
  if (index < 0 || index >= visible) {
    choice.problem = setting + " is " + name + " but this machine has " + std::to_string(visible) +
                     " GPU(s): cuda:0 to cuda:" + std::to_string(visible - 1);
    return choice;
  }
  choice.devices.emplace_back(torch::kCUDA, static_cast<torch::DeviceIndex>(index));
  return choice;
}

std::string device_name(const torch::Device& device) {
  return device.is_cpu() ? "cpu" : "cuda:" + std::to_string(device.has_index() ? device.index() : 0);
}

std::int64_t peak_memory_bytes(const torch::Device& device) {
#ifdef FILO_TORCH_CUDA
  if (device.is_cuda()) {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index());
    return stats
        .allocated_bytes[static_cast<std::size_t>(c10::cuda::CUDACachingAllocator::StatType::AGGREGATE)]
        .peak;
  }
#else
  if (device.is_cuda()) return 0;
#endif
  return peak_resident_bytes();
}

}  // namespace filo
