#pragma once
// Tensors travel as frames of their own after the msgpack body: dtype and shape in the body
// (TensorMeta), raw bytes in frames of at most kChunkBytes. Sending never copies the bytes;
// a tensor that arrived in one frame is a view into it.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>
#include <zmq.hpp>

#include <torch/torch.h>

#include "messages/codec.hpp"

namespace filo {

/// Large tensors are cut into frames of this size: one huge frame moves ~10x slower over tcp.
constexpr std::size_t kChunkBytes = std::size_t{1} << 20;

enum class WireDType : std::uint8_t {
  kFloat32 = 0,
  kFloat64,
  kFloat16,
  kBFloat16,
  kInt64,
  kInt32,
  kUInt8,
  kInt8
};

struct TensorMeta {
  std::string name;
  WireDType dtype = WireDType::kFloat32;
  std::vector<std::int64_t> shape;
  std::uint32_t frames = 0;  // how many frames carry its bytes
  MSGPACK_DEFINE_MAP(name, dtype, shape, frames)
};

struct NamedTensor {
  std::string name;
  torch::Tensor tensor;
};

/// Appends `tensors` as frames to `frames` (zero-copy; CPU copies only for non-CPU or
/// non-contiguous tensors) and returns their descriptions for the body.
std::vector<TensorMeta> append_tensor_frames(const std::vector<NamedTensor>& tensors,
                                             std::vector<zmq::message_t>& frames);

/// Appends `bytes` as one uint8 tensor named `name` (frames of at most kChunkBytes that point into
/// the string, which stays alive until zmq has sent them) and returns its description.
TensorMeta append_bytes_frames(const std::string& name, std::shared_ptr<const std::string> bytes,
                               std::vector<zmq::message_t>& frames);

/// Frames received after a body; shared so that tensor views can keep them alive.
using FrameList = std::shared_ptr<std::vector<zmq::message_t>>;

/// One tensor of a received message, still in its frames.
class ReceivedTensor {
 public:
  ReceivedTensor(TensorMeta meta, FrameList frames, std::size_t first_frame)
      : meta_(std::move(meta)), frames_(std::move(frames)), first_frame_(first_frame) {}
  const TensorMeta& meta() const { return meta_; }
  /// A tensor over the received bytes: a view when it came in one aligned frame, else a copy.
  torch::Tensor to_tensor() const;
  /// Copies into `destination` (same shape and dtype), reusing its memory.
  void copy_into(torch::Tensor& destination) const;
  /// sum += weight * this, frame by frame: no temporary for a tensor spread over several frames.
  /// `sum` must be a contiguous CPU tensor of the same shape and dtype.
  void add_to(torch::Tensor& sum, double weight) const;
  /// destination = weight * this, frame by frame (a plain copy when weight is 1): how a sum starts,
  /// with no zeroing pass before it and no read of what it held.
  void scale_into(torch::Tensor& destination, double weight) const;
  /// The sum of its squared elements, frame by frame with no copy of the whole (a floating dtype;
  /// summed in double, each frame's dot product in its own dtype, fp32 for fp16 and bf16).
  double squared_norm() const;

 private:
  /// Calls `apply(offset, frame's elements)` for each non-empty frame, offset in elements.
  template <typename Apply>
  void for_each_piece(const Apply& apply) const;
  /// Calls `apply(slice of flat destination, frame's elements)` for each non-empty frame.
  template <typename Apply>
  void for_each_frame(torch::Tensor& destination, const char* what, const Apply& apply) const;

  TensorMeta meta_;
  FrameList frames_;
  std::size_t first_frame_;
};

struct TensorFrameLimits {
  std::uint32_t max_tensors = 4096;
  std::int64_t max_tensor_bytes = std::int64_t{1} << 31;
};

/// Matches `metas` against `frames` starting at `first_frame`; checks that every tensor's shape
/// and dtype account for exactly the bytes of its frames and that no frame is left over.
Decoded<std::vector<ReceivedTensor>> read_tensor_frames(const std::vector<TensorMeta>& metas,
                                                        const FrameList& frames, std::size_t first_frame,
                                                        const TensorFrameLimits& limits = {});

torch::ScalarType to_scalar_type(WireDType dtype);
/// The wire code of `type`; throws for dtypes the bus does not carry.
WireDType to_wire_dtype(torch::ScalarType type);
std::size_t element_size(WireDType dtype);

}  // namespace filo

MSGPACK_ADD_ENUM(filo::WireDType);
