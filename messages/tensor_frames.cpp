#include "messages/tensor_frames.hpp"

#include <cstring>

namespace filo {
namespace {

bool known_dtype(WireDType dtype) {
  return static_cast<std::uint8_t>(dtype) <= static_cast<std::uint8_t>(WireDType::kInt8);
}

// zmq calls this when it is done with a frame; the hint owns a reference to the tensor.
void release_tensor_reference(void*, void* hint) {
  std::unique_ptr<torch::Tensor> owned(static_cast<torch::Tensor*>(hint));
}

}  // namespace

WireDType to_wire_dtype(torch::ScalarType type) {
  switch (type) {
    case torch::kFloat32:
      return WireDType::kFloat32;
    case torch::kFloat64:
      return WireDType::kFloat64;
    case torch::kFloat16:
      return WireDType::kFloat16;
    case torch::kBFloat16:
      return WireDType::kBFloat16;
    case torch::kInt64:
      return WireDType::kInt64;
    case torch::kInt32:
      return WireDType::kInt32;
    case torch::kUInt8:
      return WireDType::kUInt8;
    case torch::kInt8:
      return WireDType::kInt8;
    default:
      break;
  }
  TORCH_CHECK(false, "tensor dtype ", type, " cannot travel on the filo bus");
}

torch::ScalarType to_scalar_type(WireDType dtype) {
  switch (dtype) {
    case WireDType::kFloat32:
      return torch::kFloat32;
    case WireDType::kFloat64:
      return torch::kFloat64;
    case WireDType::kFloat16:
      return torch::kFloat16;
    case WireDType::kBFloat16:
      return torch::kBFloat16;
    case WireDType::kInt64:
      return torch::kInt64;
    case WireDType::kInt32:
      return torch::kInt32;
    case WireDType::kUInt8:
      return torch::kUInt8;
    case WireDType::kInt8:
      return torch::kInt8;
  }
  TORCH_CHECK(false, "unknown wire dtype ", static_cast<int>(dtype));
}

std::size_t element_size(WireDType dtype) {
  switch (dtype) {
    case WireDType::kFloat64:
    case WireDType::kInt64:
      return 8;
    case WireDType::kFloat32:
    case WireDType::kInt32:
      return 4;
    case WireDType::kFloat16:
    case WireDType::kBFloat16:
      return 2;
    case WireDType::kUInt8:
    case WireDType::kInt8:
      return 1;
  }
  return 0;
}

std::vector<TensorMeta> append_tensor_frames(const std::vector<NamedTensor>& tensors,
                                             std::vector<zmq::message_t>& frames) {
  std::vector<TensorMeta> metas;
  metas.reserve(tensors.size());
  for (const auto& named : tensors) {
    torch::Tensor tensor = named.tensor.detach();
    if (!tensor.device().is_cpu()) tensor = tensor.to(torch::kCPU);
    tensor = tensor.contiguous();
    TensorMeta meta;
    meta.name = named.name;
    meta.dtype = to_wire_dtype(tensor.scalar_type());
    meta.shape = tensor.sizes().vec();
    const auto total = static_cast<std::size_t>(tensor.nbytes());
    auto* bytes = static_cast<char*>(tensor.data_ptr());
    std::size_t offset = 0;
    do {  // an empty tensor still gets one (empty) frame, so frame counting stays simple
      const std::size_t length = std::min(kChunkBytes, total - offset);
      auto reference = std::make_unique<torch::Tensor>(tensor);
      frames.emplace_back(bytes + offset, length, release_tensor_reference, reference.release());
      offset += length;
      ++meta.frames;
    } while (offset < total);
    metas.push_back(std::move(meta));
  }
  return metas;
}

namespace {
void release_bytes_reference(void*, void* hint) {
  std::unique_ptr<std::shared_ptr<const std::string>> owned(
      static_cast<std::shared_ptr<const std::string>*>(hint));
}
}  // namespace

TensorMeta append_bytes_frames(const std::string& name, std::shared_ptr<const std::string> bytes,
                               std::vector<zmq::message_t>& frames) {
  TensorMeta meta;
  meta.name = name;
  meta.dtype = WireDType::kUInt8;
  meta.shape = {static_cast<std::int64_t>(bytes->size())};
  std::size_t offset = 0;
  do {
    const std::size_t length = std::min(kChunkBytes, bytes->size() - offset);
    auto reference = std::make_unique<std::shared_ptr<const std::string>>(bytes);
    // zmq takes a non-const pointer but never writes through it for a message it sends.
    frames.emplace_back(const_cast<char*>(bytes->data()) + offset, length, release_bytes_reference,
                        reference.release());
    offset += length;
    ++meta.frames;
  } while (offset < bytes->size());
  return meta;
}

torch::Tensor ReceivedTensor::to_tensor() const {
  const auto options = torch::TensorOptions().dtype(to_scalar_type(meta_.dtype));
  if (meta_.frames == 1) {
    zmq::message_t& frame = (*frames_)[first_frame_];
    const auto address = reinterpret_cast<std::uintptr_t>(frame.data());
    if (address % element_size(meta_.dtype) == 0 && frame.size() > 0) {
      FrameList keep_alive = frames_;
      return torch::from_blob(
          frame.data(), meta_.shape, [keep_alive](void*) {}, options);
    }
  }
  torch::Tensor copy = torch::empty(meta_.shape, options);
  copy_into(copy);
  return copy;
}

void ReceivedTensor::copy_into(torch::Tensor& destination) const {
  TORCH_CHECK(destination.is_contiguous() && destination.device().is_cpu(),
              "copy_into needs a contiguous CPU destination for ", meta_.name);
  TORCH_CHECK(
      destination.sizes().vec() == meta_.shape && destination.scalar_type() == to_scalar_type(meta_.dtype),
      "destination for ", meta_.name, " has shape ", destination.sizes(), " and dtype ",
      destination.scalar_type(), ", the tensor on the wire differs");
  auto* target = static_cast<char*>(destination.data_ptr());
  for (std::uint32_t i = 0; i < meta_.frames; ++i) {
    const zmq::message_t& frame = (*frames_)[first_frame_ + i];
    std::memcpy(target, frame.data(), frame.size());
    target += frame.size();
  }
}

template <typename Apply>
void ReceivedTensor::for_each_piece(const Apply& apply) const {
  const auto options = torch::TensorOptions().dtype(to_scalar_type(meta_.dtype));
  const auto element = static_cast<std::int64_t>(element_size(meta_.dtype));
  std::int64_t offset = 0;
  for (std::uint32_t i = 0; i < meta_.frames; ++i) {
    zmq::message_t& frame = (*frames_)[first_frame_ + i];
    const std::int64_t count = static_cast<std::int64_t>(frame.size()) / element;
    if (count == 0) continue;
    torch::Tensor piece;
    if (reinterpret_cast<std::uintptr_t>(frame.data()) % static_cast<std::uintptr_t>(element) == 0) {
      piece = torch::from_blob(frame.data(), {count}, options);
    } else {  // a frame that zmq placed off an element boundary: read it through an aligned copy
      piece = torch::empty({count}, options);
      std::memcpy(piece.data_ptr(), frame.data(), frame.size());
    }
    apply(offset, piece);
    offset += count;
  }
}

template <typename Apply>
void ReceivedTensor::for_each_frame(torch::Tensor& destination, const char* what, const Apply& apply) const {
  TORCH_CHECK(destination.is_contiguous() && destination.device().is_cpu() &&
                  destination.sizes().vec() == meta_.shape &&
                  destination.scalar_type() == to_scalar_type(meta_.dtype),
              what, ": the destination for ", meta_.name, " does not match the tensor on the wire");
  auto flat = destination.view({-1});
  for_each_piece([&](std::int64_t offset, const torch::Tensor& piece) {
    auto target = flat.slice(0, offset, offset + piece.numel());
    apply(target, piece);
  });
}

double ReceivedTensor::squared_norm() const {
  double squares = 0.0;
  for_each_piece([&squares](std::int64_t, const torch::Tensor& piece) {
    // A dot product: a third of a norm's time on this VM's CPU, and no temporary.
    const torch::Tensor values =
        piece.scalar_type() == torch::kHalf || piece.scalar_type() == torch::kBFloat16
            ? piece.to(torch::kFloat)
            : piece;
    squares += torch::dot(values, values).item<double>();
  });
  return squares;
}

void ReceivedTensor::add_to(torch::Tensor& sum, double weight) const {
  for_each_frame(sum, "add_to", [weight](torch::Tensor& target, const torch::Tensor& piece) {
    if (weight == 1.0) {
      target.add_(piece);  // no multiply by alpha in the kernel
    } else {
      target.add_(piece, weight);
    }
  });
}

void ReceivedTensor::scale_into(torch::Tensor& destination, double weight) const {
  // LibTorch's copy, not memcpy: it runs on the intra-op threads, as the adds that follow do.
  for_each_frame(destination, "scale_into", [weight](torch::Tensor& target, const torch::Tensor& piece) {
    target.copy_(piece);
    if (weight != 1.0) target.mul_(weight);  // the frame's slice is still in cache for the multiply
  });
}

Decoded<std::vector<ReceivedTensor>> read_tensor_frames(const std::vector<TensorMeta>& metas,
                                                        const FrameList& frames, std::size_t first_frame,
                                                        const TensorFrameLimits& limits) {
  using Result = Decoded<std::vector<ReceivedTensor>>;
  if (metas.size() > limits.max_tensors) {
    return Result::failure(std::to_string(metas.size()) + " tensors exceed the limit of " +
                           std::to_string(limits.max_tensors));
  }
  std::vector<ReceivedTensor> received;
  received.reserve(metas.size());
  std::size_t frame = first_frame;
  for (const auto& meta : metas) {
    if (!known_dtype(meta.dtype)) {
      return Result::failure("tensor '" + meta.name + "' has unknown dtype code " +
                             std::to_string(static_cast<int>(meta.dtype)));
    }
    std::int64_t elements = 1;
    for (std::int64_t dimension : meta.shape) {
      if (dimension < 0 || (dimension > 0 && elements > limits.max_tensor_bytes / dimension)) {
        return Result::failure("tensor '" + meta.name + "' has an invalid or oversized shape");
      }
      elements *= dimension;
    }
    const auto expected_bytes = elements * static_cast<std::int64_t>(element_size(meta.dtype));
    if (expected_bytes > limits.max_tensor_bytes) {
      return Result::failure("tensor '" + meta.name + "' of " + std::to_string(expected_bytes) +
                             " bytes exceeds the limit");
    }
    if (meta.frames == 0 || frame + meta.frames > frames->size()) {
      return Result::failure("tensor '" + meta.name + "' announces " + std::to_string(meta.frames) +
                             " frames but the message has " +
                             std::to_string(frames->size() - std::min(frame, frames->size())) + " left");
    }
    std::int64_t arrived_bytes = 0;
    for (std::uint32_t i = 0; i < meta.frames; ++i)
      arrived_bytes += static_cast<std::int64_t>((*frames)[frame + i].size());
    if (arrived_bytes != expected_bytes) {
      return Result::failure("tensor '" + meta.name + "' should have " + std::to_string(expected_bytes) +
                             " bytes for its shape and dtype, " + std::to_string(arrived_bytes) + " arrived");
    }
    received.emplace_back(meta, frames, frame);
    frame += meta.frames;
  }
  if (frame != frames->size()) {
    return Result::failure(std::to_string(frames->size() - frame) +
                           " frames follow the tensors the body describes");
  }
  return Result::ok(std::move(received));
}

}  // namespace filo
