#pragma once
// Optimizers that step flat parameter groups (flat_tensors.hpp) in a few fused operations, with
// state that checkpoints save and restore. Their arithmetic is torch.optim's: SGD with momentum
// (dampening 0, optional Nesterov, weight decay added to the gradient) and Adam (bias-corrected,
// eps added to the corrected root), so that a step here is the same step a Python script takes.
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "actors/learning/flat_tensors.hpp"
#include "messages/membership.hpp"
#include "runtime/config.hpp"

namespace filo {

class FlatOptimizer {
 public:
  virtual ~FlatOptimizer() = default;
  /// One step of `parameters` along `gradients` (same layout).
  virtual void step(FlatTensors& parameters, const FlatTensors& gradients) = 0;
  /// State (moments, step count) as named tensors, for checkpoints; empty before the first step.
  virtual std::vector<NamedTensor> state() const = 0;
  /// Restores what state() gave, for parameters laid out like `layout`; throws std::runtime_error
  /// when a tensor does not fit.
  virtual void load_state(const std::map<std::string, torch::Tensor>& state, const FlatTensors& layout) = 0;
};

/// The optimizer configuration names: "sgd" or "adam".
std::unique_ptr<FlatOptimizer> make_optimizer(const OptimizerOptions& options);
/// Local-SGD's outer optimizer on the pseudo-gradient: "average" is SGD at rate 1 without
/// momentum (the model becomes the mean of the trainers' models); "nesterov" is DiLoCo's.
std::unique_ptr<FlatOptimizer> make_outer_optimizer(const OptimizerOptions& options);
/// The optimizer a local-sgd trainer steps, as the run spec names it.
std::unique_ptr<FlatOptimizer> make_local_optimizer(const msg::RunSpec& run);

}  // namespace filo
