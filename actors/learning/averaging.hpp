#pragma once
// Combining contributions weighted by samples: the arithmetic that makes gradient mode exactly one
// large-batch step, and local-sgd the sample-weighted mean of the trainers' models.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "messages/tensor_frames.hpp"

namespace filo {

/// What trainers send, and so how contributions combine.
enum class Combine {
  /// Gradient mode: per-trainer gradient sums, added and divided by the total sample count,
  /// equal one large-batch gradient, which becomes each parameter's .grad().
  kSummedGradients,
  /// Local-SGD mode: per-trainer parameter deltas, weighted by samples; the mean delta's
  /// negation becomes each parameter's .grad() (the pseudo-gradient an outer optimizer steps on).
  kParameterDeltas,
};

/// Combines contributions weighted by samples. Float buffers (BatchNorm statistics) become the
/// sample-weighted mean; integer buffers (counters) are never divided: they take the maximum.
/// Sums and gradients are allocated once and reused round after round.
class ContributionAverager {
 public:
  explicit ContributionAverager(torch::nn::Module& model, Combine combine = Combine::kSummedGradients);
  /// Why these tensors cannot be added (layout or non-finite values), or nothing.
  std::optional<std::string> problem(const std::vector<ReceivedTensor>& gradients,
                                     const std::vector<ReceivedTensor>& buffers) const;
  void add(const std::vector<ReceivedTensor>& gradients, const std::vector<ReceivedTensor>& buffers,
           std::uint64_t samples);
  /// Forgets what was added.
  void clear();
  /// Writes the mean gradient (or negated mean delta) into each parameter's .grad() and the
  /// combined buffers into the model, then clears the sums. Returns false (and changes nothing)
  /// when nothing was added.
  bool apply();
  std::uint64_t samples() const { return samples_; }

 private:
  Combine combine_;
  std::vector<NamedTensor> parameters_;
  std::vector<NamedTensor> buffers_;
  std::vector<torch::Tensor> gradient_sums_;
  std::vector<torch::Tensor> buffer_sums_;
  std::uint64_t samples_ = 0;
};

}  // namespace filo
