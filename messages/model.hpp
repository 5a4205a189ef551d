#pragma once
// The model itself: broadcast after every step, or sent to one trainer that asks.
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

// trainer → aggregator: send me the current model (a late joiner asks rather than hoping to
// catch a broadcast).
struct SnapshotRequest {
  static constexpr MessageKind kKind = MessageKind::kSnapshotRequest;
  std::uint64_t have_version = 0;
  MSGPACK_DEFINE_MAP(have_version)
};

}  // namespace filo::msg
