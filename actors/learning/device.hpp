#pragma once
// The devices a node trains on: parsed from node.device, checked before anything starts (a node
// asked for a device it does not have stops with the reason; it never falls back to the CPU), and
// their peak memory for the records.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <c10/core/Event.h>
#include <c10/core/Stream.h>
#include <torch/torch.h>

namespace filo {

/// "cpu" → {cpu}; "cuda:N" → {cuda:N}; "cuda" → every visible GPU, one trainer each. Returns the
/// reason instead when the device does not exist here (no CUDA in this LibTorch, no GPU, N too big),
/// naming `setting` (node.device, run.device) and the device asked for.
struct DeviceChoice {
  std::vector<torch::Device> devices;
  std::string problem;  /// set when `devices` is empty
};
DeviceChoice choose_devices(const std::string& name, const std::string& setting = "node.device");

/// "cpu" or "cuda:N", as trainers are named.
std::string device_name(const torch::Device& device);

/// The peak memory allocated on `device` by this process so far: the CUDA caching allocator's peak
/// on a GPU (where this LibTorch has CUDA), the process's peak resident set on a CPU.
std::int64_t peak_memory_bytes(const torch::Device& device);

// A thread's current CUDA device is its own (cudaSetDevice is per thread, device 0 unless set): a
// thread that works on cuda:1 and synchronises "the device" would wait for cuda:0. These take the
// device explicitly, and are no-ops on a CPU, so the same code runs on both.

/// Makes `device` this thread's current device (for threads that work on one device all their life).
void use_device_on_this_thread(const torch::Device& device);
/// Waits until the work queued on `device`'s current stream (of this thread) has finished.
void synchronize(const torch::Device& device);

/// A point in `device`'s current stream (CUDA event): recorded after copies are queued, and waited
/// for before the memory they read or write is used again. Nothing on a CPU.
class DeviceEvent {
 public:
  explicit DeviceEvent(const torch::Device& device);
  /// Marks the end of what was queued on the device's current stream so far.
  void record();
  /// Waits until the work before the last record() has finished (at once if never recorded).
  void wait();
  const torch::Device& device() const { return device_; }

 private:
  torch::Device device_;
  std::optional<c10::Event> event_;
  std::optional<c10::Stream> stream_;  // where it was last recorded
};

/// Whether `error` says the device ran out of memory: the caching allocator's own error, or an
/// allocation failure reported by cuBLAS or cuDNN (their workspaces come from the same memory).
bool is_out_of_memory(const std::exception& error);
/// Returns the caching allocator's unused blocks on `device` to the driver (a GPU; else nothing).
void release_cached_memory(const torch::Device& device);
/// Starts `device`'s peak memory over from what is allocated now (a GPU; else nothing).
void reset_peak_memory(const torch::Device& device);

}  // namespace filo
