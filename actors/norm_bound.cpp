#include "actors/norm_bound.hpp"

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <sstream>

namespace filo {
namespace {

double median_of(std::vector<double> values) {
  const auto middle = values.begin() + static_cast<std::ptrdiff_t>(values.size() / 2);
  std::nth_element(values.begin(), middle, values.end());
  if (values.size() % 2 == 1) return *middle;
  return (*middle + *std::max_element(values.begin(), middle)) / 2;
}

std::string number_text(double value) {
  std::ostringstream text;
  text << std::setprecision(3) << value;
  return text.str();
}

}  // namespace

NormVerdict judge_norms(const std::vector<NormCandidate>& candidates, const std::deque<double>& recent,
                        double factor) {
  NormVerdict verdict;
  if (candidates.empty()) return verdict;
  // The fleet's median, this round's contributions among its recent ones: an honest majority
  // sets it whatever a few liars send, and shares of different sizes compare per sample.
  std::vector<double> reference(recent.begin(), recent.end());
  double round_samples = 0.0;
  for (const auto& candidate : candidates) {
    if (std::isfinite(candidate.norm_per_sample)) reference.push_back(candidate.norm_per_sample);
    round_samples += candidate.samples;
  }
  const double fleet = reference.size() >= kMinNormsForBound ? median_of(reference) : 0.0;
  // The round's mean share, not a median of shares, measures a small share: where speeds split a
  // round 1:125:2 (three trainers sharing one GPU did), the median share is 2 samples.
  const double mean_share = round_samples / static_cast<double>(candidates.size());
  for (const auto& candidate : candidates) {
    const double norm = candidate.norm_per_sample;
    // A mean over few samples strays further from the fleet's (its noise grows as one over the
    // root of its samples): a share smaller than the mean is allowed that much more above. Below,
    // the count of samples alone decides, not the share's size next to others': the mean gradient
    // of a few samples that are all well learnt is next to nothing, honestly.
    const double upper = factor * std::sqrt(std::max(1.0, mean_share / candidate.samples));
    const bool bounded_below = candidate.samples >= kMinSamplesBoundedBelow && !candidate.residual_filling;
    const std::vector<double> own(candidate.own_recent.begin(), candidate.own_recent.end());
    const double own_median = own.size() >= kMinNormsForBound ? median_of(own) : 0.0;
    std::string why;
    if (!std::isfinite(norm)) {
      why = "its norm is not finite";
    } else if (fleet > 0 && norm > upper * fleet) {
      why = number_text(norm) + " per sample, over " + number_text(upper) + "x the fleet's median " +
            number_text(fleet);
    } else if (fleet > 0 && bounded_below && norm < fleet / factor) {
      why = number_text(norm) + " per sample, under 1/" + number_text(factor) + " of the fleet's median " +
            number_text(fleet);
    } else if (own_median > 0 && norm > upper * own_median) {
      why = number_text(norm) + " per sample, over " + number_text(upper) + "x its own recent median " +
            number_text(own_median);
    }
    if (!why.empty()) verdict.refusals[candidate.trainer] = why;
  }
  // The bound stands on an honest majority: where it would refuse half of a round or more, the
  // fleet moved faster than its recent record (or liars are the majority, which no bound helps),
  // and refusing would only send the same samples round again. The round counts as it is.
  if (!verdict.refusals.empty() && 2 * verdict.refusals.size() >= candidates.size()) {
    const auto& [trainer, why] = *verdict.refusals.begin();
    verdict.withheld = "the norm bound would refuse " + std::to_string(verdict.refusals.size()) + " of " +
                       std::to_string(candidates.size()) + " contributions (" + trainer + ": " + why +
                       "); with no majority inside it, it refuses none";
    verdict.refusals.clear();
  }
  return verdict;
}

}  // namespace filo
