#pragma once
#include <cstdint>

#include <torch/torch.h>

namespace filo {

/// Dataset indices (int64 [size]) in the order epoch `epoch` visits them. A Fisher-Yates shuffle
/// driven by splitmix64: the same on every machine, compiler and LibTorch version, so that the
/// scheduler's positions mean the same samples on every node.
torch::Tensor epoch_order(std::uint64_t seed, std::uint64_t epoch, std::int64_t size);

}  // namespace filo
