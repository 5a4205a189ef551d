#pragma once
// What a trainer does with its share: forward and backward in micro-batches (gradient mode) or
// local optimizer steps (local-sgd), over positions of the epoch's shuffled order.
#include <cstdint>
#include <functional>
#include <vector>

#include <torch/torch.h>

#include "actors/learning/dataset.hpp"
#include "actors/learning/model.hpp"
#include "actors/learning/optimizers.hpp"
#include "actors/learning/task.hpp"
#include "messages/round.hpp"

namespace filo {

struct ShareResult {
  std::uint64_t samples = 0;
  double loss_sum = 0.0;
  std::uint64_t correct = 0;
};

/// Forward and backward over dataset `indices` in micro-batches, leaving the gradient of the
/// summed loss in the model's flat gradients (zeroed first). `epoch` drives the data's training
/// augmentation. Calls `between_micro_batches` after each micro-batch.
ShareResult train_share(Model& model, Task task, const Dataset& data, const torch::Tensor& indices,
                        std::int64_t micro_batch, std::uint64_t epoch = 0,
                        const std::function<void()>& between_micro_batches = {});

/// Local-SGD: one `optimizer` step per micro-batch of `indices` on the micro-batch's mean loss
/// (each local step is an ordinary training step). `loss_sum` is still per sample, summed.
ShareResult train_local_steps(Model& model, Task task, const Dataset& data, const torch::Tensor& indices,
                              std::int64_t micro_batch, FlatOptimizer& optimizer, std::uint64_t epoch = 0,
                              const std::function<void()>& between_micro_batches = {});

/// deltas = the model's parameters - before (same layout).
void parameter_deltas(const Model& model, const FlatTensors& before, FlatTensors& deltas);

/// Dataset indices of `ranges` (positions in `order`).
torch::Tensor indices_of(const torch::Tensor& order, const std::vector<msg::SampleRange>& ranges);

}  // namespace filo
