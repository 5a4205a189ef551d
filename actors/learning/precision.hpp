#pragma once
// Mixed precision: what a trainer computes its forward pass and loss in. Parameters, optimizer
// state and contributions stay fp32; autocast runs the heavy operations (convolutions, matrix
// products) in bf16 or fp16 while it is on. LibTorch has no GradScaler in C++: fp16's dynamic loss
// scaling is filo's own and decided for the whole fleet by the scheduler (RoundPlan::loss_scale).
#include <string>

#include <torch/torch.h>

namespace filo {

enum class Precision { kFp32, kBf16, kFp16 };

/// "fp32", "bf16", "fp16", or "auto" resolved for `device`: bf16 on a CPU or a GPU of compute
/// capability 8.0 or newer, fp16 on older GPUs. Throws std::invalid_argument naming a bad value, or
/// fp16 on a CPU where this LibTorch cannot autocast a CPU to fp16 (1.13).
Precision resolve_precision(const std::string& name, const torch::Device& device);
std::string precision_name(Precision precision);

/// Autocast on `device`'s kind in `precision` while it lives (nothing for fp32); the previous
/// settings come back when it ends. Guarded for LibTorch 1.13's per-backend calls and 2.x's
/// device-typed ones.
class AutocastScope {
 public:
  AutocastScope(Precision precision, const torch::Device& device);
  ~AutocastScope();
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  bool active_ = false;
  torch::DeviceType device_type_ = torch::kCPU;
  bool previous_enabled_ = false;
  torch::ScalarType previous_dtype_ = torch::kFloat32;
};

}  // namespace filo
