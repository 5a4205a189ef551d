#include "actors/learning/training.hpp"

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

namespace {
/// The micro-batch loop both modes share. `step(inputs, targets)` does a mode's work on one
/// micro-batch and returns its loss summed over the micro-batch's samples and its correct count.
template <typename Step>
ShareResult over_micro_batches(Model& model, const Dataset& data, const torch::Tensor& indices,
                               std::int64_t micro_batch, std::uint64_t epoch, const Step& step,
                               const std::function<void()>& between_micro_batches) {
  model.train(true);
  ShareResult result;
  const std::int64_t count = indices.size(0);
  for (std::int64_t start = 0; start < count; start += micro_batch) {
    const auto batch_indices = indices.slice(0, start, std::min(count, start + micro_batch));
    auto [inputs, targets] = data.batch(batch_indices, /*training=*/true, epoch);
    const auto [loss_sum, correct] = step(inputs.to(model.device()), targets.to(model.device()));
    result.samples += static_cast<std::uint64_t>(batch_indices.size(0));
    result.loss_sum += loss_sum;
    result.correct += static_cast<std::uint64_t>(correct);
    if (between_micro_batches) between_micro_batches();
  }
  model.reattach_buffers();
  return result;
}
}  // namespace

ShareResult train_share(Model& model, Task task, const Dataset& data, const torch::Tensor& indices,
                        std::int64_t micro_batch, std::uint64_t epoch,
                        const std::function<void()>& between_micro_batches) {
  model.zero_gradients();
  const auto step = [&](const torch::Tensor& inputs, const torch::Tensor& targets) {
    // Summed, not averaged: the aggregator divides once by the round's total sample count.
    BatchLoss loss = batch_loss(task, model.forward(inputs), targets);
    loss.loss_sum.backward();
    return std::make_pair(loss.loss_sum.item<double>(), loss.correct);
  };
  return over_micro_batches(model, data, indices, micro_batch, epoch, step, between_micro_batches);
}

ShareResult train_local_steps(Model& model, Task task, const Dataset& data, const torch::Tensor& indices,
                              std::int64_t micro_batch, FlatOptimizer& optimizer, std::uint64_t epoch,
                              const std::function<void()>& between_micro_batches) {
  const auto step = [&](const torch::Tensor& inputs, const torch::Tensor& targets) {
    model.zero_gradients();
    BatchLoss loss = batch_loss(task, model.forward(inputs), targets);
    const double samples = static_cast<double>(targets.size(0));
    (loss.loss_sum / samples).backward();  // each local step is an ordinary step on the mean loss
    optimizer.step(model.parameters(), model.gradients());
    return std::make_pair(loss.loss_sum.item<double>(), loss.correct);
  };
  return over_micro_batches(model, data, indices, micro_batch, epoch, step, between_micro_batches);
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
