#include "actors/learning/training.hpp"

#include "actors/learning/parameters.hpp"

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
/// The micro-batch loop both modes share. `step(images, labels)` does a mode's work on one
/// micro-batch and returns its logits and its loss summed over the micro-batch's samples.
template <typename Step>
ShareResult over_micro_batches(torch::nn::Sequential& model, const Dataset& data,
                               const torch::Tensor& indices, std::int64_t micro_batch, const Step& step,
                               const std::function<void()>& between_micro_batches) {
  model->train();
  ShareResult result;
  const std::int64_t count = indices.size(0);
  for (std::int64_t start = 0; start < count; start += micro_batch) {
    const auto batch_indices = indices.slice(0, start, std::min(count, start + micro_batch));
    auto [images, labels] = data.batch(batch_indices);
    const auto [logits, loss_sum] = step(images, labels);
    result.samples += static_cast<std::uint64_t>(batch_indices.size(0));
    result.loss_sum += loss_sum;
    result.correct +=
        static_cast<std::uint64_t>(logits.argmax(1).eq(labels).sum().template item<std::int64_t>());
    if (between_micro_batches) between_micro_batches();
  }
  return result;
}
}  // namespace

ShareResult train_share(torch::nn::Sequential& model, const Dataset& data, const torch::Tensor& indices,
                        std::int64_t micro_batch, const std::function<void()>& between_micro_batches) {
  for (auto& parameter : model->parameters()) {
    if (parameter.grad().defined()) parameter.mutable_grad().zero_();
  }
  const auto step = [&](const torch::Tensor& images, const torch::Tensor& labels) {
    const auto logits = model->forward(images);
    // Summed, not averaged: the aggregator divides once by the round's total sample count.
    const auto loss = torch::nn::functional::cross_entropy(
        logits, labels, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum));
    loss.backward();
    return std::make_pair(logits, loss.item<double>());
  };
  return over_micro_batches(model, data, indices, micro_batch, step, between_micro_batches);
}

ShareResult train_local_steps(torch::nn::Sequential& model, const Dataset& data, const torch::Tensor& indices,
                              std::int64_t micro_batch, torch::optim::Optimizer& optimizer,
                              const std::function<void()>& between_micro_batches) {
  const auto step = [&](const torch::Tensor& images, const torch::Tensor& labels) {
    optimizer.zero_grad();
    const auto logits = model->forward(images);
    const auto loss =
        torch::nn::functional::cross_entropy(logits, labels);  // each local step is an ordinary step
    loss.backward();
    optimizer.step();
    return std::make_pair(logits, loss.item<double>() * static_cast<double>(labels.size(0)));
  };
  return over_micro_batches(model, data, indices, micro_batch, step, between_micro_batches);
}

std::vector<NamedTensor> parameter_deltas(const torch::nn::Module& model,
                                          const std::vector<NamedTensor>& before) {
  torch::NoGradGuard no_grad;
  std::vector<NamedTensor> deltas;
  const auto after = named_parameters(model);
  TORCH_CHECK(after.size() == before.size(), "parameter_deltas: ", after.size(), " parameters, ",
              before.size(), " before");
  for (std::size_t i = 0; i < after.size(); ++i)
    deltas.push_back({after[i].name, after[i].tensor - before[i].tensor});
  return deltas;
}

}  // namespace filo
