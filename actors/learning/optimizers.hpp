#pragma once
// The optimizers a run names: the aggregator's (gradient mode), the outer one of local-sgd, and
// the one each local-sgd trainer steps.
#include <memory>
#include <vector>

#include <torch/torch.h>

#include "messages/membership.hpp"
#include "runtime/config.hpp"

namespace filo {

/// Builds the optimizer that configuration names ("sgd" with momentum, or "adam").
std::unique_ptr<torch::optim::Optimizer> make_optimizer(const OptimizerOptions& options,
                                                        std::vector<torch::Tensor> parameters);
/// Local-SGD's outer optimizer on the pseudo-gradient: "average" is SGD at rate 1 without
/// momentum (the model becomes the mean of the trainers' models); "nesterov" is DiLoCo's.
std::unique_ptr<torch::optim::Optimizer> make_outer_optimizer(const OptimizerOptions& options,
                                                              std::vector<torch::Tensor> parameters);
/// The optimizer a local-sgd trainer steps, as the run spec names it.
std::unique_ptr<torch::optim::Optimizer> make_local_optimizer(const msg::RunSpec& run,
                                                              std::vector<torch::Tensor> parameters);

}  // namespace filo
