#pragma once
// Combining contributions weighted by samples: the arithmetic that makes gradient mode exactly one
// large-batch step, and local-sgd the sample-weighted mean of the trainers' models. Contributions
// arrive as flat groups (one tensor per dtype), so adding one is one operation per frame.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "actors/learning/compression.hpp"
#include "actors/learning/host_staging.hpp"
#include "actors/learning/model.hpp"
#include "messages/tensor_frames.hpp"

namespace filo {

/// What trainers send, and so how contributions combine.
enum class Combine {
  /// Gradient mode: per-trainer gradient sums, added and divided by the total sample count,
  /// equal one large-batch gradient, which becomes each parameter's gradient.
  kSummedGradients,
  /// Local-SGD mode: per-trainer parameter deltas, weighted by samples; the mean delta's
  /// negation becomes each parameter's gradient (the pseudo-gradient an outer optimizer steps on).
  kParameterDeltas,
};

/// Combines contributions into `model`'s gradients and buffers. Float buffers (BatchNorm
/// statistics) become the sample-weighted mean; integer buffers (counters) are never divided: they
/// take the maximum. Sums are allocated once and reused round after round, on the model's device:
/// on a GPU, received frames go through a reused pinned buffer and are added there.
class ContributionAverager {
 public:
  ContributionAverager(Model& model, Combine combine = Combine::kSummedGradients);
  /// Combines into `gradients` and `buffers` (a model's, or bare flat tensors in benchmarks).
  ContributionAverager(FlatTensors& gradients, FlatTensors& buffers, Combine combine);
  /// Why these received groups are not the model's layout, or nothing.
  std::optional<std::string> layout_problem(const std::vector<ReceivedTensor>& gradients,
                                            const std::vector<ReceivedTensor>& buffers) const;
  void add(const std::vector<ReceivedTensor>& gradients, const std::vector<ReceivedTensor>& buffers,
           std::uint64_t samples);
  /// Compressed local-sgd: parameter deltas as sparse groups (checked by sparse_from_wire against
  /// the model's layout), added into the sums without a dense copy of each.
  void add(const std::vector<SparseGroup>& deltas, const std::vector<ReceivedTensor>& buffers,
           std::uint64_t samples);
  /// Why these received buffers are not the model's, or nothing (for compressed contributions,
  /// whose deltas are checked by sparse_from_wire).
  std::optional<std::string> buffers_problem(const std::vector<ReceivedTensor>& buffers) const;
  /// Whether the sums hold only finite values: one check per group, so that a NaN or infinity from
  /// any contribution shows without looking at each one.
  bool sums_finite() const;
  /// Forgets what was added (nothing is zeroed: the next add overwrites the sums).
  void clear();
  /// What the next contributions are (auto mode changes it between rounds); a change forgets the sums.
  void set_combine(Combine combine);
  /// Writes the mean gradient (or negated mean delta) into the model's gradients and the combined
  /// buffers into its buffers, then clears the sums. Returns false, changing nothing, when nothing
  /// was added.
  bool apply();
  std::uint64_t samples() const { return samples_; }

 private:
  void add_buffers(const std::vector<ReceivedTensor>& buffers, std::uint64_t samples, bool first);

  Combine combine_;
  FlatTensors& gradients_;
  FlatTensors& buffers_;
  FlatTensors gradient_sums_;
  FlatTensors buffer_sums_;
  HostStaging staging_;
  std::uint64_t samples_ = 0;  // 0: the sums hold nothing; the next add overwrites them
};

/// Why `received` holds a NaN or an infinity, naming the group, or nothing.
std::optional<std::string> non_finite(const std::vector<ReceivedTensor>& received);
/// The L2 norm of all of `received` together, in double (read in place, frame by frame).
double l2_norm(const std::vector<ReceivedTensor>& received);
/// The L2 norm of compressed groups' values, as decoded.
double l2_norm(const std::vector<SparseGroup>& groups);

}  // namespace filo
