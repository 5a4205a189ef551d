#include "actors/learning/host_staging.hpp"

#include <cstring>

namespace filo {

torch::Tensor HostStaging::gather(const ReceivedTensor& received) {
  const TensorMeta& meta = received.meta();
  const auto dtype = to_scalar_type(meta.dtype);
  std::int64_t numel = 1;
  for (const auto dimension : meta.shape) numel *= dimension;
  const auto bytes = numel * static_cast<std::int64_t>(element_size(meta.dtype));
  // The copy queued from the buffer last time must have read it before it is overwritten: its event.
  if (host_read_) host_read_->wait();
  if (!host_.defined() || host_.nbytes() < static_cast<std::size_t>(bytes)) {
    host_ = torch::empty({std::max<std::int64_t>(bytes, 1)},
                         torch::TensorOptions().dtype(torch::kUInt8).pinned_memory(pinned_));
    ++allocations_;
  }
  auto view = torch::from_blob(host_.data_ptr(), meta.shape, torch::TensorOptions().dtype(dtype));
  received.copy_into(view);
  return view;
}

torch::Tensor HostStaging::device_scratch(const torch::Tensor& like) {
  if (!scratch_.defined() || scratch_.device() != like.device() || scratch_.nbytes() < like.nbytes()) {
    scratch_ = torch::empty({static_cast<std::int64_t>(std::max<std::size_t>(like.nbytes(), 1))},
                            torch::TensorOptions().dtype(torch::kUInt8).device(like.device()));
    ++allocations_;
  }
  return torch::from_blob(scratch_.data_ptr(), like.sizes(),
                          torch::TensorOptions().dtype(like.scalar_type()).device(like.device()));
}

void HostStaging::copy_into(const ReceivedTensor& received, torch::Tensor& destination) {
  if (destination.device().is_cpu()) {
    received.copy_into(destination);
    return;
  }
  torch::NoGradGuard no_grad;
  destination.copy_(gather(received), /*non_blocking=*/pinned_);
  copy_queued(destination.device());
}

void HostStaging::copy_queued(const torch::Device& device) {
  if (!pinned_) return;  // a pageable copy is synchronous: the buffer is free again already
  if (!host_read_ || host_read_->device() != device) host_read_.emplace(device);
  host_read_->record();
}

void HostStaging::add_to(const ReceivedTensor& received, torch::Tensor& sum, double weight, bool first) {
  torch::NoGradGuard no_grad;
  if (sum.device().is_cpu()) {
    if (first) {
      received.scale_into(sum, weight);
    } else {
      received.add_to(sum, weight);
    }
    return;
  }
  if (first) {
    copy_into(received, sum);
    if (weight != 1.0) sum.mul_(weight);
    return;
  }
  torch::Tensor on_device = device_scratch(sum);
  on_device.copy_(gather(received), /*non_blocking=*/pinned_);
  copy_queued(sum.device());
  sum.add_(on_device, weight);
}

}  // namespace filo
