#include "actors/learning/averaging.hpp"

namespace filo {

ContributionAverager::ContributionAverager(Model& model, Combine combine)
    : combine_(combine),
      gradients_(model.gradients()),
      buffers_(model.buffers()),
      gradient_sums_(model.gradients().zeros_like()),
      buffer_sums_(model.buffers().zeros_like()) {}

std::optional<std::string> ContributionAverager::layout_problem(
    const std::vector<ReceivedTensor>& gradients, const std::vector<ReceivedTensor>& buffers) const {
  if (auto mismatch = gradient_sums_.wire_mismatch(gradients)) return "gradients: " + *mismatch;
  if (auto mismatch = buffer_sums_.wire_mismatch(buffers)) return "buffers: " + *mismatch;
  return std::nullopt;
}

void ContributionAverager::add(const std::vector<ReceivedTensor>& gradients,
                               const std::vector<ReceivedTensor>& buffers, std::uint64_t samples) {
  torch::NoGradGuard no_grad;
  // Gradient sums are already weighted by their samples; deltas are per trainer and need it.
  const double weight = combine_ == Combine::kParameterDeltas ? static_cast<double>(samples) : 1.0;
  for (std::size_t i = 0; i < gradients.size(); ++i)
    gradients[i].add_to(gradient_sums_.groups()[i].flat, weight);
  for (std::size_t i = 0; i < buffers.size(); ++i) {
    torch::Tensor& sum = buffer_sums_.groups()[i].flat;
    if (sum.is_floating_point()) {
      buffers[i].add_to(sum, static_cast<double>(samples));
    } else if (samples_ == 0) {
      buffers[i].copy_into(sum);
    } else {
      torch::maximum_out(sum, sum, buffers[i].to_tensor());
    }
  }
  samples_ += samples;
}

bool ContributionAverager::sums_finite() const {
  for (const FlatTensors* sums : {&gradient_sums_, &buffer_sums_}) {
    for (const auto& group : sums->groups()) {
      if (group.flat.is_floating_point() && !torch::isfinite(group.flat).all().item<bool>()) return false;
    }
  }
  return true;
}

void ContributionAverager::clear() {
  gradient_sums_.zero();
  buffer_sums_.zero();
  samples_ = 0;
}

bool ContributionAverager::apply() {
  if (samples_ == 0) return false;
  torch::NoGradGuard no_grad;
  const double total = static_cast<double>(samples_);
  const double scale = combine_ == Combine::kParameterDeltas ? -1.0 / total : 1.0 / total;
  for (std::size_t i = 0; i < gradients_.groups().size(); ++i) {
    gradients_.groups()[i].flat.copy_(gradient_sums_.groups()[i].flat).mul_(scale);
  }
  for (std::size_t i = 0; i < buffers_.groups().size(); ++i) {
    torch::Tensor& buffer = buffers_.groups()[i].flat;
    buffer.copy_(buffer_sums_.groups()[i].flat);
    if (buffer.is_floating_point()) buffer.div_(total);
  }
  clear();
  return true;
}

std::optional<std::string> non_finite(const std::vector<ReceivedTensor>& received) {
  for (const auto& tensor : received) {
    if (!torch::isFloatingType(to_scalar_type(tensor.meta().dtype))) continue;
    if (!torch::isfinite(tensor.to_tensor()).all().item<bool>()) {
      return "group '" + tensor.meta().name + "' holds NaN or infinity";
    }
  }
  return std::nullopt;
}

}  // namespace filo
