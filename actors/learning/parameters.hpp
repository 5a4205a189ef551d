#pragma once
// Moving a module's tensors to and from the bus.
#include <optional>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "messages/tensor_frames.hpp"

namespace filo {

std::vector<NamedTensor> named_parameters(const torch::nn::Module& module);
std::vector<NamedTensor> named_buffers(const torch::nn::Module& module);
/// Each parameter's gradient (zeros where a parameter got none).
std::vector<NamedTensor> named_gradients(const torch::nn::Module& module);
/// Copies of `tensors`, so that in-place updates cannot touch frames still being sent.
std::vector<NamedTensor> snapshot(const std::vector<NamedTensor>& tensors);

/// Why `received` cannot stand for `expected` (count, names, shapes, dtypes), or nothing.
std::optional<std::string> layout_mismatch(const std::vector<ReceivedTensor>& received,
                                           const std::vector<NamedTensor>& expected);
/// Why `received` holds a NaN or infinity, or nothing.
std::optional<std::string> non_finite(const std::vector<ReceivedTensor>& received);
/// Copies `received` into `targets` (layout already checked).
void copy_received(const std::vector<ReceivedTensor>& received, std::vector<NamedTensor>& targets);

}  // namespace filo
