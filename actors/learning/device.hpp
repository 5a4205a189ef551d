#pragma once
// The devices a node trains on: parsed from node.device, checked before anything starts (a node
// asked for a device it does not have stops with the reason; it never falls back to the CPU), and
// their peak memory for the records.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

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

}  // namespace filo
