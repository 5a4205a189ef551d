#pragma once
// The receiving half of the wire path for device tensors: frames → one reused (pinned) host buffer →
// the device. zmq frames live in ordinary memory that a GPU cannot read asynchronously, and a
// tensor cut into several frames is not one block either, so each received tensor is gathered into
// a page-locked buffer allocated once per run and copied to the device from there without blocking
// the host. On the CPU nothing is staged: received bytes are copied or added straight from the frames.
#include <cstddef>
#include <optional>

#include <torch/torch.h>

#include "actors/learning/device.hpp"

#include "messages/tensor_frames.hpp"

namespace filo {

class HostStaging {
 public:
  /// `pinned`: page-locked host memory, so that copies to the device are asynchronous DMA.
  explicit HostStaging(bool pinned = false) : pinned_(pinned) {}
  HostStaging(const HostStaging&) = delete;
  HostStaging& operator=(const HostStaging&) = delete;

  /// destination = `received` (same shape and dtype) on any device; the copy to a GPU is queued on
  /// its stream and may still run when this returns.
  void copy_into(const ReceivedTensor& received, torch::Tensor& destination);
  /// sum += weight * received on any device (the aggregator's sums). `first`: sum = weight *
  /// received, so that a round's sums need no zeroing pass and the first contribution no read.
  void add_to(const ReceivedTensor& received, torch::Tensor& sum, double weight, bool first);

  /// Host and device buffers allocated so far: flat once rounds repeat.
  std::size_t allocations() const { return allocations_; }

 private:
  /// `received`'s bytes in the host buffer, as a tensor of its shape; waits for the device to be
  /// done with the buffer's previous contents first.
  torch::Tensor gather(const ReceivedTensor& received);
  /// A reused device tensor shaped like `like`, valid until the next call.
  torch::Tensor device_scratch(const torch::Tensor& like);

  /// After a copy from host_ is queued: host_ is overwritten only once it has read the buffer.
  void copy_queued(const torch::Device& device);

  bool pinned_;
  std::optional<DeviceEvent> host_read_;  // recorded after the last copy queued from host_
  torch::Tensor host_;                    // uint8
  torch::Tensor scratch_;                 // uint8, on the device of the last sum
  std::size_t allocations_ = 0;
};

}  // namespace filo
