#pragma once
// The model itself: broadcast after every step, or sent to one trainer that asks. With a compressed
// downlink (local-sgd with compression) each step is broadcast as the update it applied instead,
// and only a trainer that joins or falls out of step is sent the whole model.
#include <cstdint>
#include <vector>

#include "messages/envelope.hpp"
#include "messages/tensor_frames.hpp"

namespace filo::msg {

// aggregator → everyone (published on topic "model") after each step, and → one trainer in reply
// to a SnapshotRequest. Parameters and buffers follow as tensor frames, one flat tensor per dtype;
// `layout` fingerprints the names, dtypes and shapes those flat tensors hold.
struct ModelState {
  static constexpr MessageKind kKind = MessageKind::kModelState;
  std::uint64_t model_version = 0;
  std::uint64_t round = 0;
  std::uint64_t epoch = 0;
  std::vector<TensorMeta> parameters;
  std::vector<TensorMeta> buffers;
  std::string layout;
  MSGPACK_DEFINE_MAP(model_version, round, epoch, parameters, buffers, layout)
};

// aggregator → everyone (topic "model") after each step of a run whose downlink is compressed:
// the change from `base_version` to `model_version`, as the aggregator applied it to its own model.
// Parameters follow as sparse tensor frames (per group "<dtype>.indices", ".values" and for q8
// ".scales", as contributions carry them), buffers as dense frames. A replica at `base_version`
// that adds the decoded values at their indices holds `model_version` bit for bit, which
// `fingerprint` (16 hex digits of the parameters' and buffers' bits) lets it check; a replica at
// any other version, or one whose fingerprint differs, asks for a snapshot.
struct ModelUpdate {
  static constexpr MessageKind kKind = MessageKind::kModelUpdate;
  std::uint64_t base_version = 0;
  std::uint64_t model_version = 0;
  std::uint64_t round = 0;
  std::uint64_t epoch = 0;
  std::vector<TensorMeta> parameters;
  std::vector<TensorMeta> buffers;
  std::string layout;
  std::string fingerprint;
  MSGPACK_DEFINE_MAP(base_version, model_version, round, epoch, parameters, buffers, layout, fingerprint)
};

// trainer → aggregator: send me the current model (a late joiner asks rather than hoping to
// catch a broadcast).
struct SnapshotRequest {
  static constexpr MessageKind kKind = MessageKind::kSnapshotRequest;
  std::uint64_t have_version = 0;
  MSGPACK_DEFINE_MAP(have_version)
};

}  // namespace filo::msg
