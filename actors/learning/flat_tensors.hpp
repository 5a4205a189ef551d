#pragma once
// A model's tensors laid end to end: one flat tensor per dtype, in a fixed order, that the module's
// own tensors are views of. Training then writes straight into them, and every other step touches a
// handful of large tensors instead of one small tensor per layer: a model crosses the bus as a few
// frames, averaging adds a few tensors per contribution, an optimizer step is a few fused
// operations, and a GPU copy is one transfer per group.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "actors/learning/host_staging.hpp"
#include "messages/send_buffers.hpp"
#include "messages/tensor_frames.hpp"

namespace filo {

/// Where one tensor lives in its group's flat tensor.
struct FlatEntry {
  std::string name;
  std::vector<std::int64_t> shape;
  std::int64_t offset = 0;  // in elements
  std::int64_t numel = 0;
};

/// Tensors of one dtype, end to end in `flat`.
struct FlatGroup {
  torch::ScalarType dtype = torch::kFloat32;
  std::vector<FlatEntry> entries;
  torch::Tensor flat;
  /// The group's name on the wire: its dtype ("float32", "int64", ...).
  std::string wire_name() const;
  /// The tensor of `entry` as a view of `flat`.
  torch::Tensor view(const FlatEntry& entry) const;
};

/// The groups of one kind of a model's tensors (its parameters, or its buffers).
class FlatTensors {
 public:
  FlatTensors() = default;
  /// Lays `tensors` out by dtype (groups in order of first appearance), copies their values into
  /// fresh flat tensors on `device`, and points each tensor at its place (set_data), so that the
  /// module that owns them keeps working on the flat storage.
  static FlatTensors adopt(const std::vector<NamedTensor>& tensors, torch::Device device);
  /// Zero tensors of the same layout, owned by no module (gradients, sums, optimizer state).
  FlatTensors zeros_like() const;

  std::vector<FlatGroup>& groups() { return groups_; }
  const std::vector<FlatGroup>& groups() const { return groups_; }
  bool empty() const { return groups_.empty(); }
  /// One view per tensor, in layout order.
  std::vector<NamedTensor> named() const;
  /// One tensor per group (its flat tensor), named by dtype: what travels on the bus.
  std::vector<NamedTensor> wire() const;
  /// Names, dtypes and shapes in order: equal layouts can exchange flat tensors.
  std::string layout() const;
  std::size_t bytes() const;
  std::int64_t numel() const;
  /// A fingerprint of the groups' bits, continuing from `seed` (a GPU's are copied to the host
  /// first): replicas that agree on it hold the same values, bit for bit.
  std::uint64_t fingerprint(std::uint64_t seed = 0) const;

  void zero();
  /// this = other (same layout).
  void copy_from(const FlatTensors& other);
  /// Copies a message's groups into this (layout checked by wire_mismatch first); on a GPU through
  /// `staging`'s reused pinned buffer, asynchronously.
  void copy_from(const std::vector<ReceivedTensor>& received, HostStaging& staging);
  /// Why `received` is not this layout's wire form (count, names, dtypes, sizes), or nothing.
  std::optional<std::string> wire_mismatch(const std::vector<ReceivedTensor>& received) const;

 private:
  std::vector<FlatGroup> groups_;
};

/// Stages `tensors`' wire form into `buffers` and appends its frames.
std::vector<TensorMeta> stage(const FlatTensors& tensors, SendBuffers& buffers,
                              std::vector<zmq::message_t>& frames);

}  // namespace filo
