#include "actors/learning/optimizers.hpp"

#include <cmath>
#include <stdexcept>

namespace filo {
namespace {

/// One tensor per group, named "<prefix>.<group index>".
void add_groups(std::vector<NamedTensor>& state, const std::string& prefix, const FlatTensors& tensors) {
  for (std::size_t i = 0; i < tensors.groups().size(); ++i) {
    state.push_back({prefix + "." + std::to_string(i), tensors.groups()[i].flat});
  }
}

/// Restores what add_groups named into `tensors`, made like `layout`; false when absent.
bool restore_groups(const std::map<std::string, torch::Tensor>& state, const std::string& prefix,
                    FlatTensors& tensors, const FlatTensors& layout) {
  if (!state.count(prefix + ".0")) return false;
  tensors = layout.zeros_like();
  torch::NoGradGuard no_grad;
  for (std::size_t i = 0; i < tensors.groups().size(); ++i) {
    const auto found = state.find(prefix + "." + std::to_string(i));
    if (found == state.end() || found->second.numel() != tensors.groups()[i].flat.numel()) {
      throw std::runtime_error("optimizer state '" + prefix + "' does not fit the model");
    }
    tensors.groups()[i].flat.copy_(found->second.view({-1}));
  }
  return true;
}

}  // namespace

namespace {
class FlatSgd final : public FlatOptimizer {
 public:
  FlatSgd(double learning_rate, double momentum, double weight_decay, bool nesterov)
      : learning_rate_(learning_rate),
        momentum_(momentum),
        weight_decay_(weight_decay),
        nesterov_(nesterov) {}

  void step(FlatTensors& parameters, const FlatTensors& gradients) override {
    torch::NoGradGuard no_grad;
    if (momentum_ != 0.0 && momentum_buffers_.empty()) {
      momentum_buffers_ = gradients.zeros_like();
      first_ = true;
    }
    for (std::size_t g = 0; g < parameters.groups().size(); ++g) {
      torch::Tensor parameter = parameters.groups()[g].flat;
      torch::Tensor direction = gradients.groups()[g].flat;
      if (!parameter.is_floating_point()) continue;
      if (weight_decay_ != 0.0) direction = direction.add(parameter, weight_decay_);
      if (momentum_ != 0.0) {
        torch::Tensor& buffer = momentum_buffers_.groups()[g].flat;
        if (first_) {
          buffer.copy_(direction);
        } else {
          buffer.mul_(momentum_).add_(direction);
        }
        direction = nesterov_ ? direction.add(buffer, momentum_) : buffer;
      }
      parameter.add_(direction, -learning_rate_);
    }
    first_ = false;
  }

  std::vector<NamedTensor> state() const override {
    std::vector<NamedTensor> state;
    if (!momentum_buffers_.empty()) add_groups(state, "optimizer.momentum", momentum_buffers_);
    return state;
  }
  void load_state(const std::map<std::string, torch::Tensor>& state, const FlatTensors& layout) override {
    if (momentum_ != 0.0 && restore_groups(state, "optimizer.momentum", momentum_buffers_, layout))
      first_ = false;
  }

 private:
  double learning_rate_;
  double momentum_;
  double weight_decay_;
  bool nesterov_;
  bool first_ = true;
  FlatTensors momentum_buffers_;
};

class FlatAdam final : public FlatOptimizer {
 public:
  FlatAdam(double learning_rate, double weight_decay)
      : learning_rate_(learning_rate), weight_decay_(weight_decay) {}

  void step(FlatTensors& parameters, const FlatTensors& gradients) override {
    torch::NoGradGuard no_grad;
    if (exp_avg_.empty()) {
      exp_avg_ = gradients.zeros_like();
      exp_avg_sq_ = gradients.zeros_like();
    }
    ++steps_;
    const double bias_correction1 = 1.0 - std::pow(kBeta1, static_cast<double>(steps_));
    const double bias_correction2_sqrt = std::sqrt(1.0 - std::pow(kBeta2, static_cast<double>(steps_)));
    const double step_size = learning_rate_ / bias_correction1;
    for (std::size_t g = 0; g < parameters.groups().size(); ++g) {
      torch::Tensor parameter = parameters.groups()[g].flat;
      if (!parameter.is_floating_point()) continue;
      torch::Tensor gradient = gradients.groups()[g].flat;
      if (weight_decay_ != 0.0) gradient = gradient.add(parameter, weight_decay_);
      torch::Tensor& exp_avg = exp_avg_.groups()[g].flat;
      torch::Tensor& exp_avg_sq = exp_avg_sq_.groups()[g].flat;
      exp_avg.mul_(kBeta1).add_(gradient, 1.0 - kBeta1);
      exp_avg_sq.mul_(kBeta2).addcmul_(gradient, gradient, 1.0 - kBeta2);
      const torch::Tensor denominator = exp_avg_sq.sqrt().div_(bias_correction2_sqrt).add_(kEpsilon);
      parameter.addcdiv_(exp_avg, denominator, -step_size);
    }
  }

  std::vector<NamedTensor> state() const override {
    std::vector<NamedTensor> state{{"optimizer.adam_steps", torch::tensor(steps_, torch::kInt64)}};
    if (!exp_avg_.empty()) {
      add_groups(state, "optimizer.exp_avg", exp_avg_);
      add_groups(state, "optimizer.exp_avg_sq", exp_avg_sq_);
    }
    return state;
  }
  void load_state(const std::map<std::string, torch::Tensor>& state, const FlatTensors& layout) override {
    const auto steps = state.find("optimizer.adam_steps");
    if (steps != state.end()) steps_ = steps->second.item<std::int64_t>();
    restore_groups(state, "optimizer.exp_avg", exp_avg_, layout);
    restore_groups(state, "optimizer.exp_avg_sq", exp_avg_sq_, layout);
  }

 private:
  static constexpr double kBeta1 = 0.9;
  static constexpr double kBeta2 = 0.999;
  static constexpr double kEpsilon = 1e-8;
  double learning_rate_;
  double weight_decay_;
  std::int64_t steps_ = 0;
  FlatTensors exp_avg_;
  FlatTensors exp_avg_sq_;
};

}  // namespace

std::unique_ptr<FlatOptimizer> make_optimizer(const OptimizerOptions& options) {
  if (options.name == "sgd") {
    return std::make_unique<FlatSgd>(options.learning_rate, options.momentum, options.weight_decay, false);
  }
  if (options.name == "adam") return std::make_unique<FlatAdam>(options.learning_rate, options.weight_decay);
  throw std::invalid_argument("unknown optimizer '" + options.name + "' (known: sgd, adam)");
}

std::unique_ptr<FlatOptimizer> make_outer_optimizer(const OptimizerOptions& options) {
  if (options.outer == "average") return std::make_unique<FlatSgd>(1.0, 0.0, 0.0, false);
  if (options.outer == "nesterov") {
    return std::make_unique<FlatSgd>(options.outer_learning_rate, options.outer_momentum, 0.0, true);
  }
  throw std::invalid_argument("unknown outer optimizer '" + options.outer + "' (known: average, nesterov)");
}

std::unique_ptr<FlatOptimizer> make_local_optimizer(const msg::RunSpec& run) {
  OptimizerOptions options;
  options.name = run.optimizer;
  options.learning_rate = run.learning_rate;
  options.momentum = run.momentum;
  options.weight_decay = run.weight_decay;
  return make_optimizer(options);
}

}  // namespace filo
