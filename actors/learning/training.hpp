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
#include "actors/learning/precision.hpp"
#include "actors/learning/task.hpp"
#include "messages/round.hpp"

namespace filo {

struct ShareOptions {
  Task task = Task::kClassification;
  std::int64_t micro_batch = 64;
  std::uint64_t epoch = 0;                 /// drives the data's training augmentation
  Precision precision = Precision::kFp32;  /// forward and loss under autocast; gradients stay fp32
  /// fp16: the loss is multiplied by this before backward and the gradients divided after, so that
  /// small gradients survive fp16; an overflow at this scale is reported, not sent.
  double loss_scale = 1.0;
  std::function<void()> between_micro_batches;  /// called after each micro-batch
  /// TEST AID (TrainerOptions::overflow_rounds): train_share writes an infinity into the gradients
  /// after backward and checks them for overflow as fp16 does, whatever the precision.
  bool inject_overflow = false;
};

struct ShareResult {
  std::uint64_t samples = 0;
  double loss_sum = 0.0;
  std::uint64_t correct = 0;
  bool overflow = false;  /// a gradient was not finite at the loss scale
  /// The dtype of the model's output in the last forward pass: what autocast really computed in
  /// (kFloat32 when it did nothing), not what was asked for.
  torch::ScalarType output_dtype = torch::kFloat32;
};

/// "fp32", "bf16", "fp16" (or the dtype's own name) of a forward pass's output dtype.
std::string computed_precision(torch::ScalarType dtype);

/// Forward and backward over dataset `indices` in micro-batches, leaving the gradient of the
/// summed loss in the model's flat gradients (zeroed first).
ShareResult train_share(Model& model, const Dataset& data, const torch::Tensor& indices,
                        const ShareOptions& options);

/// Local-SGD: one `optimizer` step per micro-batch of `indices` on the micro-batch's mean loss
/// (each local step is an ordinary training step). `loss_sum` is still per sample, summed.
ShareResult train_local_steps(Model& model, const Dataset& data, const torch::Tensor& indices,
                              FlatOptimizer& optimizer, const ShareOptions& options);

/// On a GPU, the largest micro-batch of `model` the device holds: trains doubling micro-batches of
/// `data` from `first` up to `limit` (each a whole forward and backward, as a round would) until the
/// device runs out of memory (the caching allocator's, or cuBLAS's or cuDNN's workspaces), and
/// returns the largest that fitted (0: not even `first`). `between` runs after each size (a
/// cancellation check). Afterwards the probe's cached blocks go back to the device and the device's
/// peak memory starts over, so that neither counts as the run's. Gradients are left zeroed.
std::int64_t largest_micro_batch(Model& model, const Dataset& data, const ShareOptions& options,
                                 std::int64_t first, std::int64_t limit,
                                 const std::function<void()>& between);

/// deltas = the model's parameters - before (same layout).
void parameter_deltas(const Model& model, const FlatTensors& before, FlatTensors& deltas);

/// Whether every floating element of `tensors` is finite: one pass, nothing allocated per element.
bool all_finite(const FlatTensors& tensors);

/// Dataset indices of `ranges` (positions in `order`).
torch::Tensor indices_of(const torch::Tensor& order, const std::vector<msg::SampleRange>& ranges);

}  // namespace filo
