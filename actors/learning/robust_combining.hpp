#pragma once
// Combining a round's contributions when a fleet member may lie. Each contribution is one row: its
// per-sample vector (a gradient sum divided by its samples, or a parameter change negated, so that
// every row points the way a gradient does), fp32, all of the model's parameters end to end, weighted
// by its share of the round's samples.
//
// - Centered clipping (Karimireddy, He and Jaggi 2021, as in Hivemind's BTARD) starts from the
//   weighted medoid (the row nearest the others) and moves towards every row by at most a radius:
//   the median distance of the rows from that start. An honest majority's rows lie within it and
//   count whole; a liar's pull is capped at its weight times the radius, however far it lies.
//   Every centre it visits is a weighted sum of the rows, so it runs on the rows' inner products
//   (one n×n matrix) and touches the rows themselves only to build that matrix and the result.
// - The trimmed mean cuts a fraction of the samples' weight from each end of every coordinate
//   (a sort per coordinate: much dearer).
// - A row's direction is its cosine with the weighted sum of the other rows, each clipped to the
//   radius around the centre: honest gradients of one model point roughly the same way, a
//   sign-flipped one the other way, a random one nowhere. (The centre alone will not do as the
//   reference: started from the coordinate-wise median, a third of whose coordinates came from
//   the row scored, it gave a random row 0.13.)
#include <optional>
#include <string>
#include <vector>

#include <torch/torch.h>

namespace filo {

enum class RobustCombine {
  kMean,          // the sample-weighted mean: gradient mode stays exactly one large-batch step
  kTrimmed,       // coordinate-wise trimmed mean
  kCenteredClip,  // centered clipping from the weighted medoid
};

/// "mean", "trimmed" or "centered-clip"; nothing for any other name.
std::optional<RobustCombine> parse_robust_combine(const std::string& name);

/// Fewer rows than this are combined by the mean and not scored: with two, neither is a majority.
constexpr std::size_t kMinRobustRows = 3;
/// Centered clipping's iterations (the paper finds 1-3 enough from a good start).
constexpr int kCenteredClipIterations = 3;

/// `rows` [n, P] fp32, `weights` [n] (summing to 1): the weighted coordinate-wise mean of what is
/// left once `trim` (in [0, 0.5)) of the weight is cut from each end of every coordinate.
torch::Tensor trimmed_mean(const torch::Tensor& rows, const torch::Tensor& weights, double trim);

/// Centered clipping's result, as a weighted sum of the rows.
struct ClippedCentre {
  torch::Tensor gram;                // [n, n] fp64 on the CPU: the rows' inner products
  std::vector<double> weights;       // the rows' weights
  std::vector<double> coefficients;  // the centre = Σ coefficients[i] × rows[i]
  double radius = 0.0;               // the clipping radius: the rows' median distance from the start
  bool finite = true;                // false: the inner products overflowed; nothing else is set
};
ClippedCentre centered_clip(const torch::Tensor& rows, const torch::Tensor& weights,
                            int iterations = kCenteredClipIterations);
/// The centre itself [P], on the rows' device.
torch::Tensor centre_of(const torch::Tensor& rows, const ClippedCentre& clipped);

/// Each row's cosine with the weighted sum of the other rows, each clipped to `clipped.radius`
/// around the centre; 0 where either has zero length.
std::vector<double> directions(const ClippedCentre& clipped);

}  // namespace filo
