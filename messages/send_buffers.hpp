#pragma once
// Send buffers reused from round to round. A message's tensors are copied once into a buffer that
// was allocated once (in pinned host memory when they live on a GPU) and go out as zmq frames over
// that buffer without another copy. A buffer is used again only after zmq has released every frame
// of it; until then the next message takes another one. A freshly allocated buffer costs page faults
// (about 280 ms per 100 MB on a 2-core VM, against 6 ms for a reused one), so in steady state the
// number of buffers stops growing: it is what is in flight at once.
#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>
#include <zmq.hpp>

#include <torch/torch.h>

#include "messages/tensor_frames.hpp"

namespace filo {

class SendBuffers {
 public:
  /// `pinned`: allocate page-locked host memory (only where a CUDA device exists), so that copies
  /// from the device are asynchronous DMA.
  explicit SendBuffers(bool pinned = false) : pinned_(pinned) {}
  SendBuffers(const SendBuffers&) = delete;
  SendBuffers& operator=(const SendBuffers&) = delete;

  /// Copies `tensors` into a free buffer and appends their frames to `frames` (at most kChunkBytes
  /// each, like append_tensor_frames). Returns their descriptions for the message body.
  std::vector<TensorMeta> stage(const std::vector<NamedTensor>& tensors, std::vector<zmq::message_t>& frames);

  /// How many buffers were ever allocated: flat once rounds repeat.
  std::size_t allocations() const { return allocations_; }
  /// Bytes held by all buffers.
  std::size_t bytes_held() const;

 private:
  struct Buffer {
    torch::Tensor bytes;                      // uint8, on the host
    std::atomic<std::int64_t> frames_out{0};  // frames zmq has not released yet
  };
  std::shared_ptr<Buffer> free_buffer(std::size_t bytes);

  bool pinned_;
  std::vector<std::shared_ptr<Buffer>> buffers_;
  std::size_t allocations_ = 0;
};

}  // namespace filo
