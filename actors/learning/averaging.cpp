#include "actors/learning/averaging.hpp"

#include "actors/learning/parameters.hpp"

namespace filo {

ContributionAverager::ContributionAverager(torch::nn::Module& model, Combine combine)
    : combine_(combine), parameters_(named_parameters(model)), buffers_(named_buffers(model)) {
  for (const auto& parameter : parameters_) gradient_sums_.push_back(torch::zeros_like(parameter.tensor));
  for (const auto& buffer : buffers_) buffer_sums_.push_back(torch::zeros_like(buffer.tensor));
}

std::optional<std::string> ContributionAverager::problem(const std::vector<ReceivedTensor>& gradients,
                                                         const std::vector<ReceivedTensor>& buffers) const {
  if (auto mismatch = layout_mismatch(gradients, parameters_)) return "gradients: " + *mismatch;
  if (auto mismatch = layout_mismatch(buffers, buffers_)) return "buffers: " + *mismatch;
  if (auto bad = non_finite(gradients)) return "gradients: " + *bad;
  if (auto bad = non_finite(buffers)) return "buffers: " + *bad;
  return std::nullopt;
}

void ContributionAverager::add(const std::vector<ReceivedTensor>& gradients,
                               const std::vector<ReceivedTensor>& buffers, std::uint64_t samples) {
  torch::NoGradGuard no_grad;
  // Gradient sums are already weighted by their samples; deltas are per trainer and need it.
  const double weight = combine_ == Combine::kParameterDeltas ? static_cast<double>(samples) : 1.0;
  for (std::size_t i = 0; i < gradients.size(); ++i) gradients[i].add_to(gradient_sums_[i], weight);
  for (std::size_t i = 0; i < buffers.size(); ++i) {
    if (torch::isFloatingType(buffer_sums_[i].scalar_type())) {
      buffers[i].add_to(buffer_sums_[i], static_cast<double>(samples));
    } else if (samples_ == 0) {
      buffers[i].copy_into(buffer_sums_[i]);
    } else {
      const auto buffer = buffers[i].to_tensor();
      torch::maximum_out(buffer_sums_[i], buffer_sums_[i], buffer);
    }
  }
  samples_ += samples;
}

void ContributionAverager::clear() {
  for (auto& sum : gradient_sums_) sum.zero_();
  for (auto& sum : buffer_sums_) sum.zero_();
  samples_ = 0;
}

bool ContributionAverager::apply() {
  if (samples_ == 0) return false;
  torch::NoGradGuard no_grad;
  const double total = static_cast<double>(samples_);
  const double scale = combine_ == Combine::kParameterDeltas ? -1.0 / total : 1.0 / total;
  for (std::size_t i = 0; i < parameters_.size(); ++i) {
    auto& parameter = parameters_[i].tensor;
    if (!parameter.grad().defined()) parameter.mutable_grad() = torch::empty_like(parameter);
    torch::mul_out(parameter.mutable_grad(), gradient_sums_[i], scale);
  }
  for (std::size_t i = 0; i < buffers_.size(); ++i) {
    buffers_[i].tensor.copy_(buffer_sums_[i]);
    if (torch::isFloatingType(buffers_[i].tensor.scalar_type())) buffers_[i].tensor.div_(total);
  }
  clear();
  return true;
}

}  // namespace filo
