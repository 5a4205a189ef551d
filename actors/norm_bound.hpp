#pragma once
// The norm bound: which of a round's contributions are refused because their size, per sample,
// cannot be an honest gradient's next to the fleet's. A pure function of numbers, so that tests
// can pin its rules down; the scheduler owns the history it is given and acts on the verdict.
#include <cstdint>
#include <deque>
#include <map>
#include <string>
#include <vector>

namespace filo {

/// A median of fewer norms than this tells nothing (with two, a liar is half of it).
constexpr std::size_t kMinNormsForBound = 3;
/// A share of fewer samples than this is never bounded below: the mean gradient of a handful of
/// well-learnt samples is next to nothing, honestly.
constexpr double kMinSamplesBoundedBelow = 16;

/// One contribution of the round being closed.
struct NormCandidate {
  std::string trainer;
  double norm_per_sample = 0.0;  // its L2 norm over its samples; may be infinite
  double samples = 0.0;
  std::deque<double> own_recent;  // norms per sample of its recent combined contributions
  /// Compressed local-sgd, and fewer than kMinNormsForBound of its contributions combined: not
  /// bounded below. What it sends is the top of its change plus an error-feedback residual that
  /// fills over its first rounds, while the fleet's carry everything they did not send before: a
  /// trainer that joined mid-run sent 0.0009 per sample against the fleet's 0.0151 and was refused.
  bool residual_filling = false;
};

struct NormVerdict {
  std::map<std::string, std::string> refusals;  // trainer -> why
  /// Set where the bound would have refused half of the round or more and so refuses none.
  std::string withheld;
};

/// Bounds each candidate's norm per sample: above `factor` times the median of this round's norms
/// among the fleet's `recent` ones, or of its own recent median; below 1/`factor` of the fleet's
/// median for a share of kMinSamplesBoundedBelow samples or more.
/// A share smaller than the mean is allowed √(mean ÷ its samples) more above. No refusal where
/// fewer than kMinNormsForBound norms are known, or where it would refuse half the round or more.
NormVerdict judge_norms(const std::vector<NormCandidate>& candidates, const std::deque<double>& recent,
                        double factor);

}  // namespace filo
