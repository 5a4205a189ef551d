#include "messages/send_buffers.hpp"

#include "actors/learning/device.hpp"

namespace filo {
namespace {
/// Each tensor starts at a multiple of this, so that a receiver may view any of them in place.
constexpr std::size_t kAlignment = 64;

std::size_t aligned(std::size_t bytes) {
  return (bytes + kAlignment - 1) / kAlignment * kAlignment;
}

struct FrameHold {
  std::shared_ptr<void> buffer;  // keeps the buffer alive even if its SendBuffers is gone
  std::atomic<std::int64_t>* frames_out;
};

void release_frame(void*, void* hint) {
  std::unique_ptr<FrameHold> hold(static_cast<FrameHold*>(hint));
  hold->frames_out->fetch_sub(1, std::memory_order_acq_rel);
}
}  // namespace

std::size_t SendBuffers::bytes_held() const {
  std::size_t total = 0;
  for (const auto& buffer : buffers_) total += static_cast<std::size_t>(buffer->bytes.nbytes());
  return total;
}

std::shared_ptr<SendBuffers::Buffer> SendBuffers::free_buffer(std::size_t bytes) {
  for (auto& buffer : buffers_) {
    if (buffer->frames_out.load(std::memory_order_acquire) == 0 &&
        static_cast<std::size_t>(buffer->bytes.nbytes()) >= bytes) {
      return buffer;
    }
  }
  auto buffer = std::make_shared<Buffer>();
  buffer->bytes = torch::empty({static_cast<std::int64_t>(std::max<std::size_t>(bytes, 1))},
                               torch::TensorOptions().dtype(torch::kUInt8).pinned_memory(pinned_));
  ++allocations_;
  buffers_.push_back(buffer);
  return buffer;
}

std::vector<TensorMeta> SendBuffers::stage(const std::vector<NamedTensor>& tensors,
                                           std::vector<zmq::message_t>& frames) {
  std::size_t total = 0;
  for (const auto& named : tensors) total += aligned(static_cast<std::size_t>(named.tensor.nbytes()));
  std::shared_ptr<Buffer> buffer = free_buffer(total);
  auto* base = static_cast<char*>(buffer->bytes.data_ptr());

  std::vector<TensorMeta> metas;
  metas.reserve(tensors.size());
  std::optional<torch::Device> from_device;
  std::size_t offset = 0;
  std::vector<std::pair<std::size_t, std::size_t>> extents;  // (offset, bytes) per tensor
  for (const auto& named : tensors) {
    const torch::Tensor source = named.tensor.detach();
    const auto bytes = static_cast<std::size_t>(source.nbytes());
    // A view of the buffer shaped like the tensor: copy_ handles layout, and device-to-host copies
    // into pinned memory run asynchronously; one synchronisation below covers them all.
    auto target =
        torch::from_blob(base + offset, source.sizes(), torch::TensorOptions().dtype(source.scalar_type()));
    if (!source.device().is_cpu()) from_device = source.device();
    target.copy_(source, /*non_blocking=*/pinned_ && !source.device().is_cpu());
    TensorMeta meta;
    meta.name = named.name;
    meta.dtype = to_wire_dtype(source.scalar_type());
    meta.shape = source.sizes().vec();
    metas.push_back(std::move(meta));
    extents.emplace_back(offset, bytes);
    offset += aligned(bytes);
  }
  if (from_device && pinned_) {
    // zmq reads the buffer as soon as the frames are handed over: the copies from the device must
    // have landed. An event recorded after them on their device's stream, not a wait on whatever
    // device is current on this thread.
    DeviceEvent copied(*from_device);
    copied.record();
    copied.wait();
  }
  for (std::size_t i = 0; i < extents.size(); ++i) {
    const auto [start, bytes] = extents[i];
    std::size_t done = 0;
    do {  // an empty tensor still gets one (empty) frame, as append_tensor_frames does
      const std::size_t length = std::min(kChunkBytes, bytes - done);
      buffer->frames_out.fetch_add(1, std::memory_order_acq_rel);
      auto hold = std::make_unique<FrameHold>(FrameHold{buffer, &buffer->frames_out});
      frames.emplace_back(base + start + done, length, release_frame, hold.release());
      done += length;
      ++metas[i].frames;
    } while (done < bytes);
  }
  return metas;
}

}  // namespace filo
