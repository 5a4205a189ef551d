#include "actors/learning/training.hpp"

#include <limits>

#include "actors/learning/device.hpp"

namespace filo {

torch::Tensor indices_of(const torch::Tensor& order, const std::vector<msg::SampleRange>& ranges) {
  std::vector<torch::Tensor> pieces;
  for (const auto& range : ranges) {
    TORCH_CHECK(range.begin <= range.end && range.end <= static_cast<std::uint64_t>(order.size(0)),
                "sample range [", range.begin, ", ", range.end, ") outside the epoch of ", order.size(0));
    pieces.push_back(
        order.slice(0, static_cast<std::int64_t>(range.begin), static_cast<std::int64_t>(range.end)));
  }
  return pieces.empty() ? torch::empty({0}, torch::kInt64) : torch::cat(pieces);
}

bool all_finite(const FlatTensors& tensors) {
  for (const auto& group : tensors.groups()) {
    if (group.flat.is_floating_point() && !torch::isfinite(group.flat).all().item<bool>()) return false;
  }
  return true;
}

std::string computed_precision(torch::ScalarType dtype) {
  switch (dtype) {
    case torch::kFloat32:
      return "fp32";
    case torch::kBFloat16:
      return "bf16";
    case torch::kHalf:
      return "fp16";
    default:
      return c10::toString(dtype);
  }
}

namespace {
/// The micro-batch loop both modes share. `step(inputs, targets)` does a mode's work on one
/// micro-batch and returns its loss summed over the micro-batch's samples and its correct count.
template <typename Step>
ShareResult over_micro_batches(Model& model, const Dataset& data, const torch::Tensor& indices,
                               const ShareOptions& options, const Step& step) {
  model.train(true);
  ShareResult result;
  const std::int64_t count = indices.size(0);
  const bool on_device = !model.device().is_cpu();
  for (std::int64_t start = 0; start < count; start += options.micro_batch) {
    const auto batch_indices = indices.slice(0, start, std::min(count, start + options.micro_batch));
    auto [inputs, targets] = data.batch(batch_indices, /*training=*/true, options.epoch);
    if (on_device) {
      // Through pinned memory, so that the copy to the device is asynchronous.
      inputs = inputs.pin_memory().to(model.device(), /*non_blocking=*/true);
      targets = targets.pin_memory().to(model.device(), /*non_blocking=*/true);
    }
    const auto [loss_sum, correct] = step(inputs, targets, result.output_dtype);
    result.samples += static_cast<std::uint64_t>(batch_indices.size(0));
    result.loss_sum += loss_sum;
    result.correct += static_cast<std::uint64_t>(correct);
    if (options.between_micro_batches) options.between_micro_batches();
  }
  model.reattach_buffers();
  return result;
}

/// Forward and loss under autocast; backward outside it, on the loss scaled by `scale`. Notes the
/// output's dtype in `output_dtype`.
std::pair<double, std::int64_t> forward_backward(Model& model, const torch::Tensor& inputs,
                                                 const torch::Tensor& targets, const ShareOptions& options,
                                                 double divide_loss_by, torch::ScalarType& output_dtype) {
  BatchLoss loss;
  {
    AutocastScope autocast(options.precision, model.device());
    const torch::Tensor outputs = model.forward(inputs);
    output_dtype = outputs.scalar_type();
    loss = batch_loss(options.task, outputs, targets);
  }
  torch::Tensor objective = loss.loss_sum.to(torch::kFloat32);
  if (divide_loss_by != 1.0) objective = objective / divide_loss_by;
  if (options.loss_scale != 1.0) objective = objective * options.loss_scale;
  objective.backward();
  return {loss.loss_sum.item<double>(), loss.correct};
}

/// Divides the gradients by the loss scale, or reports that they overflowed. `check`: look for an
/// overflow even at scale 1.
bool unscale_gradients(Model& model, double loss_scale, bool check = false) {
  if (loss_scale == 1.0 && !check) return true;
  if (!all_finite(model.gradients())) return false;
  if (loss_scale == 1.0) return true;
  torch::NoGradGuard no_grad;
  for (auto& group : model.gradients().groups()) group.flat.mul_(1.0 / loss_scale);
  return true;
}
}  // namespace

ShareResult train_share(Model& model, const Dataset& data, const torch::Tensor& indices,
                        const ShareOptions& options) {
  model.zero_gradients();
  // Summed, not averaged: the aggregator divides once by the round's total sample count.
  const auto step = [&](const torch::Tensor& inputs, const torch::Tensor& targets, torch::ScalarType& dtype) {
    return forward_backward(model, inputs, targets, options, 1.0, dtype);
  };
  ShareResult result = over_micro_batches(model, data, indices, options, step);
  if (options.inject_overflow && !model.gradients().empty()) {
    torch::NoGradGuard no_grad;
    model.gradients().groups().front().flat.view({-1})[0].fill_(std::numeric_limits<float>::infinity());
  }
  result.overflow = !unscale_gradients(model, options.loss_scale, options.inject_overflow);
  return result;
}

ShareResult train_local_steps(Model& model, const Dataset& data, const torch::Tensor& indices,
                              FlatOptimizer& optimizer, const ShareOptions& options) {
  bool overflow = false;
  const auto step = [&](const torch::Tensor& inputs, const torch::Tensor& targets, torch::ScalarType& dtype) {
    model.zero_gradients();
    // Each local step is an ordinary step, on the micro-batch's mean loss.
    const auto outcome =
        forward_backward(model, inputs, targets, options, static_cast<double>(targets.size(0)), dtype);
    if (unscale_gradients(model, options.loss_scale)) {
      optimizer.step(model.parameters(), model.gradients());
    } else {
      overflow = true;  // this local step is skipped; the round is reported as overflowed
    }
    return outcome;
  };
  ShareResult result = over_micro_batches(model, data, indices, options, step);
  result.overflow = overflow;
  return result;
}

std::int64_t largest_micro_batch(Model& model, const Dataset& data, const ShareOptions& options,
                                 std::int64_t first, std::int64_t limit,
                                 const std::function<void()>& between) {
  const torch::Device device = model.device();
  const std::int64_t largest = std::min<std::int64_t>(data.size(), limit);
  const auto fits_in_memory = [&](std::int64_t size) {
    try {
      ShareOptions probe = options;
      probe.micro_batch = size;
      probe.between_micro_batches = nullptr;
      train_share(model, data, torch::arange(size, torch::kInt64), probe);
      synchronize(device);
    } catch (const std::exception& e) {
      if (!is_out_of_memory(e)) throw;
      release_cached_memory(device);  // what the failed size left cached would crowd the next try
      return false;
    }
    if (between) between();
    return true;
  };
  std::int64_t fits = 0;
  std::int64_t size = std::max<std::int64_t>(1, std::min(first, largest));
  if (fits_in_memory(size)) {
    for (fits = size; fits * 2 <= largest && fits_in_memory(fits * 2);) fits *= 2;
  } else {
    while (size > 1 && fits == 0) {  // even the configured micro-batch is too large: halve
      size /= 2;
      if (fits_in_memory(size)) fits = size;
    }
  }
  model.zero_gradients();
  release_cached_memory(device);
  reset_peak_memory(device);
  return fits;
}

void parameter_deltas(const Model& model, const FlatTensors& before, FlatTensors& deltas) {
  torch::NoGradGuard no_grad;
  const auto& after = model.parameters().groups();
  TORCH_CHECK(after.size() == before.groups().size() && after.size() == deltas.groups().size(),
              "parameter_deltas: layouts differ");
  for (std::size_t i = 0; i < after.size(); ++i) {
    torch::sub_out(deltas.groups()[i].flat, after[i].flat, before.groups()[i].flat);
  }
}

}  // namespace filo
