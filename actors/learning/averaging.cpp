#include "actors/learning/averaging.hpp"

namespace filo {

namespace {
bool on_gpu(const FlatTensors& tensors) {
  return !tensors.groups().empty() && tensors.groups().front().flat.device().is_cuda();
}
}  // namespace

ContributionAverager::ContributionAverager(Model& model, Combine combine)
    : ContributionAverager(model.gradients(), model.buffers(), combine) {}

ContributionAverager::ContributionAverager(FlatTensors& gradients, FlatTensors& buffers, Combine combine)
    : combine_(combine),
      gradients_(gradients),
      buffers_(buffers),
      gradient_sums_(gradients.zeros_like()),
      buffer_sums_(buffers.zeros_like()),
      staging_(on_gpu(gradients)) {}

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
  // The first contribution of a round is written, not added: no zeroing pass, no read of the sums.
  const bool first = samples_ == 0;
  for (std::size_t i = 0; i < gradients.size(); ++i)
    staging_.add_to(gradients[i], gradient_sums_.groups()[i].flat, weight, first);
  add_buffers(buffers, samples, first);
  samples_ += samples;
}

void ContributionAverager::add(const std::vector<SparseGroup>& deltas,
                               const std::vector<ReceivedTensor>& buffers, std::uint64_t samples) {
  torch::NoGradGuard no_grad;
  const bool first = samples_ == 0;
  for (std::size_t i = 0; i < deltas.size(); ++i) {
    torch::Tensor& sum = gradient_sums_.groups()[i].flat;
    if (first) sum.zero_();  // a sparse add touches only its own indices
    add_sparse(sum, deltas[i], static_cast<double>(samples));
  }
  add_buffers(buffers, samples, first);
  samples_ += samples;
}

std::optional<std::string> ContributionAverager::buffers_problem(
    const std::vector<ReceivedTensor>& buffers) const {
  if (auto mismatch = buffer_sums_.wire_mismatch(buffers)) return "buffers: " + *mismatch;
  return std::nullopt;
}

void ContributionAverager::add_buffers(const std::vector<ReceivedTensor>& buffers, std::uint64_t samples,
                                       bool first) {
  for (std::size_t i = 0; i < buffers.size(); ++i) {
    torch::Tensor& sum = buffer_sums_.groups()[i].flat;
    if (sum.is_floating_point()) {
      staging_.add_to(buffers[i], sum, static_cast<double>(samples), first);
    } else if (first) {
      staging_.copy_into(buffers[i], sum);
    } else {
      torch::maximum_out(sum, sum, buffers[i].to_tensor().to(sum.device()));
    }
  }
}

bool ContributionAverager::sums_finite() const {
  if (samples_ == 0) return true;  // the sums hold stale values, not contributions
  for (const FlatTensors* sums : {&gradient_sums_, &buffer_sums_}) {
    for (const auto& group : sums->groups()) {
      if (!group.flat.is_floating_point() || group.flat.numel() == 0) continue;
      // Minimum and maximum propagate NaN and show infinities, in one pass with no temporary the
      // size of the model (isfinite(x).all() would allocate one byte per element).
      const auto [low, high] = torch::aminmax(group.flat);
      if (!torch::isfinite(torch::stack({low, high})).all().item<bool>()) return false;
    }
  }
  return true;
}

void ContributionAverager::set_combine(Combine combine) {
  if (combine == combine_) return;
  clear();
  combine_ = combine;
}

void ContributionAverager::clear() {
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

double l2_norm(const std::vector<ReceivedTensor>& received) {
  double squares = 0.0;
  for (const auto& tensor : received) {
    if (!torch::isFloatingType(to_scalar_type(tensor.meta().dtype))) continue;
    // On the round's path: read in place, one dot product per frame. A sum of squares past fp32's
    // range is infinite, which no honest gradient's is.
    squares += tensor.squared_norm();
  }
  return std::sqrt(squares);
}

double l2_norm(const std::vector<SparseGroup>& groups) {
  double squares = 0.0;
  for (const auto& group : groups) {
    const torch::Tensor values = group.decoded();
    squares += torch::dot(values, values).item<double>();
  }
  return std::sqrt(squares);
}

}  // namespace filo
