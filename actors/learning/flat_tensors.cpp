#include "actors/learning/flat_tensors.hpp"

#include <sstream>

#include "runtime/digest.hpp"

namespace filo {

std::string FlatGroup::wire_name() const {
  switch (dtype) {
    case torch::kFloat32:
      return "float32";
    case torch::kFloat64:
      return "float64";
    case torch::kFloat16:
      return "float16";
    case torch::kBFloat16:
      return "bfloat16";
    case torch::kInt64:
      return "int64";
    case torch::kInt32:
      return "int32";
    case torch::kUInt8:
      return "uint8";
    default:
      break;
  }
  TORCH_CHECK(false, "tensors of dtype ", dtype, " cannot be trained by filo");
}

torch::Tensor FlatGroup::view(const FlatEntry& entry) const {
  return flat.slice(0, entry.offset, entry.offset + entry.numel).view(entry.shape);
}

FlatTensors FlatTensors::adopt(const std::vector<NamedTensor>& tensors, torch::Device device) {
  FlatTensors result;
  std::vector<std::size_t> group_of(tensors.size());
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const auto dtype = tensors[i].tensor.scalar_type();
    std::size_t group = 0;
    while (group < result.groups_.size() && result.groups_[group].dtype != dtype) ++group;
    if (group == result.groups_.size()) result.groups_.push_back(FlatGroup{dtype, {}, {}});
    FlatGroup& target = result.groups_[group];
    const std::int64_t offset =
        target.entries.empty() ? 0 : target.entries.back().offset + target.entries.back().numel;
    target.entries.push_back(
        {tensors[i].name, tensors[i].tensor.sizes().vec(), offset, tensors[i].tensor.numel()});
    group_of[i] = group;
  }
  for (auto& group : result.groups_) {
    const std::int64_t total =
        group.entries.empty() ? 0 : group.entries.back().offset + group.entries.back().numel;
    group.flat = torch::empty({total}, torch::TensorOptions().dtype(group.dtype).device(device));
  }
  torch::NoGradGuard no_grad;
  std::vector<std::size_t> next(result.groups_.size(), 0);
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    FlatGroup& group = result.groups_[group_of[i]];
    const FlatEntry& entry = group.entries[next[group_of[i]]++];
    auto view = group.view(entry);
    view.copy_(tensors[i].tensor);
    // The tensor keeps its identity (the module's slot, autograd's leaf) and now lives in `flat`.
    torch::Tensor handle = tensors[i].tensor;
    handle.set_data(view);
  }
  return result;
}

FlatTensors FlatTensors::zeros_like() const {
  FlatTensors result;
  result.groups_ = groups_;
  for (auto& group : result.groups_) group.flat = torch::zeros_like(group.flat);
  return result;
}

std::vector<NamedTensor> FlatTensors::named() const {
  std::vector<NamedTensor> tensors;
  for (const auto& group : groups_) {
    for (const auto& entry : group.entries) tensors.push_back({entry.name, group.view(entry)});
  }
  return tensors;
}

std::vector<NamedTensor> FlatTensors::wire() const {
  std::vector<NamedTensor> tensors;
  for (const auto& group : groups_) tensors.push_back({group.wire_name(), group.flat});
  return tensors;
}

std::string FlatTensors::layout() const {
  std::ostringstream text;
  for (const auto& group : groups_) {
    text << group.wire_name() << "{";
    for (const auto& entry : group.entries) {
      text << entry.name << c10::IntArrayRef(entry.shape) << ";";
    }
    text << "}";
  }
  return text.str();
}

std::size_t FlatTensors::bytes() const {
  std::size_t total = 0;
  for (const auto& group : groups_) total += static_cast<std::size_t>(group.flat.nbytes());
  return total;
}

std::int64_t FlatTensors::numel() const {
  std::int64_t total = 0;
  for (const auto& group : groups_) total += group.flat.numel();
  return total;
}

std::uint64_t FlatTensors::fingerprint(std::uint64_t seed) const {
  std::uint64_t hash = seed;
  for (const auto& group : groups_) {
    const torch::Tensor host = group.flat.to(torch::kCPU).contiguous();
    hash = fingerprint_words(host.data_ptr(), host.nbytes(), hash);
  }
  return hash;
}

void FlatTensors::zero() {
  for (auto& group : groups_) group.flat.zero_();
}

void FlatTensors::copy_from(const FlatTensors& other) {
  TORCH_CHECK(other.groups_.size() == groups_.size(), "copy_from: layouts differ");
  torch::NoGradGuard no_grad;
  for (std::size_t i = 0; i < groups_.size(); ++i) groups_[i].flat.copy_(other.groups_[i].flat);
}

void FlatTensors::copy_from(const std::vector<ReceivedTensor>& received, HostStaging& staging) {
  for (std::size_t i = 0; i < groups_.size(); ++i) staging.copy_into(received[i], groups_[i].flat);
}

std::optional<std::string> FlatTensors::wire_mismatch(const std::vector<ReceivedTensor>& received) const {
  if (received.size() != groups_.size()) {
    return std::to_string(received.size()) + " tensors where this model has " +
           std::to_string(groups_.size()) + " groups";
  }
  for (std::size_t i = 0; i < groups_.size(); ++i) {
    const TensorMeta& meta = received[i].meta();
    const FlatGroup& group = groups_[i];
    if (meta.name != group.wire_name() || to_scalar_type(meta.dtype) != group.dtype) {
      return "group " + std::to_string(i) + " is '" + meta.name + "', expected '" + group.wire_name() + "'";
    }
    if (meta.shape != std::vector<std::int64_t>{group.flat.numel()}) {
      std::ostringstream text;
      text << "group '" << meta.name << "' has shape " << c10::IntArrayRef(meta.shape) << ", expected ["
           << group.flat.numel() << "]";
      return text.str();
    }
  }
  return std::nullopt;
}

std::vector<TensorMeta> stage(const FlatTensors& tensors, SendBuffers& buffers,
                              std::vector<zmq::message_t>& frames) {
  return buffers.stage(tensors.wire(), frames);
}

}  // namespace filo
