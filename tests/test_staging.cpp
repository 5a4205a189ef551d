// The wire path allocates its buffers once per run, not per round: a trainer staging its
// contribution, the aggregator summing contributions, a trainer loading a broadcast model. LibTorch's
// CPU allocator is wrapped by a counting one, so the test sees every host tensor allocation.
#include <doctest/doctest.h>

#include <atomic>

#include <c10/core/CPUAllocator.h>
#include <torch/version.h>

#include "actors/learning/averaging.hpp"
#include "actors/learning/model.hpp"
#include "actors/learning/models.hpp"

using namespace filo;

namespace {
/// Counts what LibTorch allocates on the host while it is installed, and passes everything on.
class CountingAllocator final : public c10::Allocator {
 public:
  /// Installed over LibTorch's CPU allocator while it lives.
  CountingAllocator() : inner_(c10::GetCPUAllocator()) { c10::SetCPUAllocator(this, kPriority); }
  ~CountingAllocator() override { c10::SetCPUAllocator(inner_, kPriority); }
  CountingAllocator(const CountingAllocator&) = delete;
  CountingAllocator& operator=(const CountingAllocator&) = delete;

// LibTorch 2.3 made allocate non-const and added copy_data.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 3)
  c10::DataPtr allocate(std::size_t bytes) override {
    count(bytes);
    return inner_->allocate(bytes);
  }
  void copy_data(void* destination, const void* source, std::size_t bytes) const override {
    inner_->copy_data(destination, source, bytes);
  }
#else
  c10::DataPtr allocate(std::size_t bytes) const override {
    count(bytes);
    return inner_->allocate(bytes);
  }
#endif
  c10::DeleterFnPtr raw_deleter() const override {
    return inner_->raw_deleter();
  }

  std::size_t bytes() const {
    return bytes_.load();
  }
  void reset() {
    bytes_ = 0;
  }

 private:
  /// Above what anything else registers, so that installing and restoring both take effect.
  static constexpr std::uint8_t kPriority = 255;
  void count(std::size_t bytes) const {
    bytes_ += bytes;
  }

  c10::Allocator* inner_;
  mutable std::atomic<std::size_t> bytes_{0};
};

Model cnn(std::uint64_t seed) {
  torch::manual_seed(seed);
  return Model(build_model("cnn", ModelShape{{1, 28, 28}, 10, 0}));
}

/// Scalars (a finiteness check's minimum and maximum) may be allocated; a model-sized buffer may not.
constexpr std::size_t kScalarBytesPerRound = 4096;
constexpr int kRounds = 5;
}  // namespace

TEST_CASE("after the first round, staging, summing and loading models allocate no host buffers") {
  Model trainer_replica = cnn(1);
  Model aggregator_model = cnn(1);
  REQUIRE(trainer_replica.parameters().bytes() > 16 * kScalarBytesPerRound);
  SendBuffers contribution_buffers;
  SendBuffers broadcast_buffers;
  HostStaging model_staging;
  ContributionAverager averager(aggregator_model);
  for (auto& group : trainer_replica.gradients().groups()) group.flat.fill_(0.25);

  CountingAllocator allocator;
  for (int round = 1; round <= kRounds; ++round) {
    CAPTURE(round);
    allocator.reset();
    {
      // A trainer's contribution: gradients and buffers into reused send buffers, then frames.
      std::vector<zmq::message_t> frames;
      auto metas = stage(trainer_replica.gradients(), contribution_buffers, frames);
      const auto buffer_metas = stage(trainer_replica.buffers(), contribution_buffers, frames);
      metas.insert(metas.end(), buffer_metas.begin(), buffer_metas.end());
      auto received =
          read_tensor_frames(metas, std::make_shared<std::vector<zmq::message_t>>(std::move(frames)), 0);
      REQUIRE(received);
      const auto& all = received.value();
      const auto split =
          all.begin() + static_cast<std::ptrdiff_t>(trainer_replica.gradients().groups().size());
      // The aggregator sums it (twice: two trainers), checks the sums and steps nothing here.
      const std::vector<ReceivedTensor> gradients(all.begin(), split);
      const std::vector<ReceivedTensor> buffers(split, all.end());
      averager.add(gradients, buffers, 10);
      averager.add(gradients, buffers, 30);
      CHECK(averager.sums_finite());
      REQUIRE(averager.apply());
    }
    {
      // Its broadcast, loaded into the trainer's replica.
      std::vector<zmq::message_t> frames;
      auto metas = stage(aggregator_model.parameters(), broadcast_buffers, frames);
      const auto buffer_metas = stage(aggregator_model.buffers(), broadcast_buffers, frames);
      metas.insert(metas.end(), buffer_metas.begin(), buffer_metas.end());
      auto received =
          read_tensor_frames(metas, std::make_shared<std::vector<zmq::message_t>>(std::move(frames)), 0);
      REQUIRE(received);
      const auto& all = received.value();
      const auto split =
          all.begin() + static_cast<std::ptrdiff_t>(aggregator_model.parameters().groups().size());
      trainer_replica.parameters().copy_from(std::vector<ReceivedTensor>(all.begin(), split), model_staging);
      trainer_replica.buffers().copy_from(std::vector<ReceivedTensor>(split, all.end()), model_staging);
    }
    if (round > 1) CHECK(allocator.bytes() <= kScalarBytesPerRound);
  }
  // One buffer for the gradients (or parameters), one for the buffers: both in flight at once.
  CHECK(contribution_buffers.allocations() == 2);
  CHECK(broadcast_buffers.allocations() == 2);
  CHECK(model_staging.allocations() == 0);  // on the CPU, frames are copied straight into the model
  // And the rounds did what they say: the replica holds the aggregator's model.
  CHECK(torch::equal(trainer_replica.parameters().groups()[0].flat,
                     aggregator_model.parameters().groups()[0].flat));
  // Two contributions of gradient sums 0.25 over 10 + 30 samples.
  CHECK(torch::allclose(aggregator_model.gradients().groups()[0].flat,
                        torch::full_like(aggregator_model.gradients().groups()[0].flat, 0.5 / 40)));
}
