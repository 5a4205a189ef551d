#include "actors/learning/device.hpp"

#include <torch/cuda.h>

#include <fstream>
#include <sstream>

#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <torch/version.h>

#ifdef FILO_TORCH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#endif

// c10::Event::synchronize() is in LibTorch 2.x (gated at 2.5, where it surely is); 1.13 only queries.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 5)
#define FILO_EVENT_SYNCHRONIZE 1
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

#ifdef FILO_TORCH_CUDA
namespace {
/// The caching allocator is set up lazily, by a process's first CUDA tensor; asking it for
/// statistics before then fails ("Invalid device argument", seen on an H200 with LibTorch 2.11).
/// One small tensor on the device sets it up.
void initialise_allocator(const torch::Device& device) {
  (void)torch::empty({1}, torch::TensorOptions().device(device));
}

/// "cuda" without an index is the thread's current device.
c10::DeviceIndex cuda_index(const torch::Device& device) {
  return device.has_index() ? device.index() : c10::cuda::current_device();
}
}  // namespace
#endif

std::int64_t peak_memory_bytes(const torch::Device& device) {
#ifdef FILO_TORCH_CUDA
  if (device.is_cuda()) {
    initialise_allocator(device);
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(cuda_index(device));
    // Index 0 is StatType::AGGREGATE (all pools), whose namespace moved between LibTorch 1.13
    // (c10::cuda::CUDACachingAllocator) and 2.x (c10::CachingDeviceAllocator).
    constexpr std::size_t kAggregate = 0;
    return stats.allocated_bytes[kAggregate].peak;
  }
#else
  if (device.is_cuda()) return 0;
#endif
  return peak_resident_bytes();
}

void use_device_on_this_thread(const torch::Device& device) {
  if (device.is_cpu()) return;
  c10::impl::getDeviceGuardImpl(device.type())->setDevice(device);
}

void synchronize(const torch::Device& device) {
  if (device.is_cpu()) return;
  c10::impl::getDeviceGuardImpl(device.type())->getStream(device).synchronize();
}

DeviceEvent::DeviceEvent(const torch::Device& device) : device_(device) {}

void DeviceEvent::record() {
  if (device_.is_cpu()) return;
  if (!event_) event_.emplace(device_.type());
  stream_ = c10::impl::getDeviceGuardImpl(device_.type())->getStream(device_);
  event_->record(*stream_);
}

void DeviceEvent::wait() {
  if (!event_ || !stream_) return;
#ifdef FILO_EVENT_SYNCHRONIZE
  event_->synchronize();
#else
  // No event wait in this LibTorch: the stream it was recorded on, which covers it.
  stream_->synchronize();
#endif
}

bool is_out_of_memory(const std::exception& error) {
  if (dynamic_cast<const c10::OutOfMemoryError*>(&error) != nullptr) return true;
  const std::string what = error.what();
  for (const char* sign : {"out of memory", "CUBLAS_STATUS_ALLOC_FAILED", "CUDNN_STATUS_ALLOC_FAILED",
                           "CUDNN_STATUS_NOT_ENOUGH_WORKSPACE"}) {
    if (what.find(sign) != std::string::npos) return true;
  }
  return false;
}

void release_cached_memory(const torch::Device& device) {
#ifdef FILO_TORCH_CUDA
  if (device.is_cuda()) {
    initialise_allocator(device);
    c10::cuda::CUDACachingAllocator::emptyCache();
  }
#else
  (void)device;
#endif
}

void reset_peak_memory(const torch::Device& device) {
#ifdef FILO_TORCH_CUDA
  if (device.is_cuda()) {
    initialise_allocator(device);
    c10::cuda::CUDACachingAllocator::resetPeakStats(cuda_index(device));
  }
#else
  (void)device;
#endif
}

}  // namespace filo
