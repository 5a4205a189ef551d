#include "actors/learning/parameters.hpp"

namespace filo {

std::vector<NamedTensor> named_parameters(const torch::nn::Module& module) {
  std::vector<NamedTensor> tensors;
  for (const auto& item : module.named_parameters()) tensors.push_back({item.key(), item.value()});
  return tensors;
}

std::vector<NamedTensor> named_buffers(const torch::nn::Module& module) {
  std::vector<NamedTensor> tensors;
  for (const auto& item : module.named_buffers()) tensors.push_back({item.key(), item.value()});
  return tensors;
}

std::vector<NamedTensor> named_gradients(const torch::nn::Module& module) {
  std::vector<NamedTensor> tensors;
  for (const auto& item : module.named_parameters()) {
    const auto& gradient = item.value().grad();
    tensors.push_back({item.key(), gradient.defined() ? gradient : torch::zeros_like(item.value())});
  }
  return tensors;
}

std::vector<NamedTensor> snapshot(const std::vector<NamedTensor>& tensors) {
  std::vector<NamedTensor> copies;
  copies.reserve(tensors.size());
  for (const auto& named : tensors) copies.push_back({named.name, named.tensor.detach().clone()});
  return copies;
}

std::optional<std::string> layout_mismatch(const std::vector<ReceivedTensor>& received,
                                           const std::vector<NamedTensor>& expected) {
  if (received.size() != expected.size()) {
    return std::to_string(received.size()) + " tensors where the model has " +
           std::to_string(expected.size());
  }
  for (std::size_t i = 0; i < received.size(); ++i) {
    const auto& meta = received[i].meta();
    const auto& want = expected[i];
    if (meta.name != want.name)
      return "tensor " + std::to_string(i) + " is '" + meta.name + "', expected '" + want.name + "'";
    if (meta.shape != want.tensor.sizes().vec()) {
      std::ostringstream text;
      text << "tensor '" << meta.name << "' has shape " << c10::IntArrayRef(meta.shape) << ", expected "
           << want.tensor.sizes();
      return text.str();
    }
    if (to_scalar_type(meta.dtype) != want.tensor.scalar_type()) {
      std::ostringstream text;
      text << "tensor '" << meta.name << "' has dtype " << to_scalar_type(meta.dtype) << ", expected "
           << want.tensor.scalar_type();
      return text.str();
    }
  }
  return std::nullopt;
}

std::optional<std::string> non_finite(const std::vector<ReceivedTensor>& received) {
  for (const auto& tensor : received) {
    if (!torch::isFloatingType(to_scalar_type(tensor.meta().dtype))) continue;
    if (!torch::isfinite(tensor.to_tensor()).all().item<bool>()) {
      return "tensor '" + tensor.meta().name + "' holds NaN or infinity";
    }
  }
  return std::nullopt;
}

void copy_received(const std::vector<ReceivedTensor>& received, std::vector<NamedTensor>& targets) {
  torch::NoGradGuard no_grad;
  for (std::size_t i = 0; i < received.size(); ++i) {
    targets[i].tensor.copy_(received[i].to_tensor());
  }
}

}  // namespace filo
