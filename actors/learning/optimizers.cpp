#include "actors/learning/optimizers.hpp"

#include <stdexcept>

namespace filo {

std::unique_ptr<torch::optim::Optimizer> make_optimizer(const OptimizerOptions& options,
                                                        std::vector<torch::Tensor> parameters) {
  if (options.name == "sgd") {
    return std::make_unique<torch::optim::SGD>(std::move(parameters),
                                               torch::optim::SGDOptions(options.learning_rate)
                                                   .momentum(options.momentum)
                                                   .weight_decay(options.weight_decay));
  }
  if (options.name == "adam") {
    return std::make_unique<torch::optim::Adam>(
        std::move(parameters),
        torch::optim::AdamOptions(options.learning_rate).weight_decay(options.weight_decay));
  }
  throw std::invalid_argument("unknown optimizer '" + options.name + "' (known: sgd, adam)");
}

std::unique_ptr<torch::optim::Optimizer> make_outer_optimizer(const OptimizerOptions& options,
                                                              std::vector<torch::Tensor> parameters) {
  if (options.outer == "average") {
    return std::make_unique<torch::optim::SGD>(std::move(parameters), torch::optim::SGDOptions(1.0));
  }
  if (options.outer == "nesterov") {
    return std::make_unique<torch::optim::SGD>(std::move(parameters),
                                               torch::optim::SGDOptions(options.outer_learning_rate)
                                                   .momentum(options.outer_momentum)
                                                   .nesterov(true));
  }
  throw std::invalid_argument("unknown outer optimizer '" + options.outer + "' (known: average, nesterov)");
}

std::unique_ptr<torch::optim::Optimizer> make_local_optimizer(const msg::RunSpec& run,
                                                              std::vector<torch::Tensor> parameters) {
  OptimizerOptions options;
  options.name = run.optimizer;
  options.learning_rate = run.learning_rate;
  options.momentum = run.momentum;
  options.weight_decay = run.weight_decay;
  return make_optimizer(options, std::move(parameters));
}

}  // namespace filo
