#include "actors/shares.hpp"

#include <algorithm>
#include <cmath>
#include <sstream>

namespace filo {
namespace {
// Weight of the newest round: a node whose speed halves has moved about two thirds of the way to
// its new share after 3 rounds, while one preempted round moves it by less than a third.
constexpr double kSpeedSmoothing = 0.3;

/// After a probe that found the link this much faster than the transfer that kept it out, the
/// next probe comes after kQuickProbeRounds: the link is changing, likely recovering.
constexpr double kProbeImprovement = 0.75;
constexpr std::uint64_t kQuickProbeRounds = 2;

double smoothed(double previous, double measured) {
  return previous <= 0.0 ? measured : kSpeedSmoothing * measured + (1 - kSpeedSmoothing) * previous;
}
}  // namespace

void SamplePool::reset(std::uint64_t size) {
  ranges_.clear();
  if (size > 0) ranges_.push_back({0, size});
}

void SamplePool::assign(const std::vector<msg::SampleRange>& ranges) {
  ranges_.assign(ranges.begin(), ranges.end());
}

std::vector<msg::SampleRange> untrained_ranges(std::vector<msg::SampleRange> trained, std::uint64_t size) {
  std::sort(trained.begin(), trained.end(), [](const auto& a, const auto& b) { return a.begin < b.begin; });
  std::vector<msg::SampleRange> untrained;
  std::uint64_t cursor = 0;
  for (const auto& range : trained) {
    if (range.begin > cursor) untrained.push_back({cursor, std::min(range.begin, size)});
    cursor = std::max(cursor, range.end);
  }
  if (cursor < size) untrained.push_back({cursor, size});
  return untrained;
}

std::vector<msg::SampleRange> SamplePool::take(std::uint64_t count) {
  std::vector<msg::SampleRange> taken;
  while (count > 0 && !ranges_.empty()) {
    msg::SampleRange& front = ranges_.front();
    const std::uint64_t piece = std::min(count, front.size());
    taken.push_back({front.begin, front.begin + piece});
    front.begin += piece;
    count -= piece;
    if (front.size() == 0) ranges_.pop_front();
  }
  return taken;
}

void SamplePool::give_back(const std::vector<msg::SampleRange>& ranges) {
  for (auto it = ranges.rbegin(); it != ranges.rend(); ++it) {
    if (it->size() > 0) ranges_.push_front(*it);
  }
}

std::uint64_t SamplePool::remaining() const {
  std::uint64_t total = 0;
  for (const auto& range : ranges_) total += range.size();
  return total;
}

std::vector<std::uint64_t> equal_shares(std::uint64_t total, std::size_t parts) {
  std::vector<std::uint64_t> shares(parts, parts == 0 ? 0 : total / parts);
  for (std::size_t i = 0; i < parts && i < total % parts; ++i) ++shares[i];
  return shares;
}

std::vector<Share> proportional_shares(const std::vector<TrainerEstimate>& trainers, std::uint64_t total,
                                       double max_transfer_ratio) {
  const std::size_t count = trainers.size();
  std::vector<Share> shares(count);
  std::vector<double> speed(count);
  double known_sum = 0.0;
  std::size_t known = 0;
  for (const auto& trainer : trainers) {
    if (trainer.samples_per_second > 0) {
      known_sum += trainer.samples_per_second;
      ++known;
    }
  }
  const double unknown_speed = known > 0 ? known_sum / known : 1.0;
  for (std::size_t i = 0; i < count; ++i) {
    shares[i].trainer = trainers[i].trainer;
    speed[i] = trainers[i].samples_per_second > 0 ? trainers[i].samples_per_second : unknown_speed;
  }
  std::vector<bool> active(count, true);
  std::vector<double> exact(count, 0.0);
  while (true) {
    double speed_sum = 0.0;
    double speed_weighted_transfer = 0.0;
    std::size_t remaining = 0;
    for (std::size_t i = 0; i < count; ++i) {
      if (!active[i]) continue;
      speed_sum += speed[i];
      speed_weighted_transfer += speed[i] * trainers[i].transfer_seconds;
      ++remaining;
    }
    if (remaining == 0) return shares;
    // Everyone finishes at T: n_i = s_i (T - c_i) and sum n_i = total.
    const double finish = (static_cast<double>(total) + speed_weighted_transfer) / speed_sum;
    // The rule weighs what a trainer's link costs beyond the best-connected trainer's: the part
    // every trainer pays (planning, encoding, the coordinator's turn) is no reason to drop one,
    // and on small rounds it alone can exceed a quarter of the compute.
    double common_transfer = INFINITY;
    for (std::size_t i = 0; i < count; ++i) {
      if (active[i]) common_transfer = std::min(common_transfer, trainers[i].transfer_seconds);
    }
    std::size_t worst = count;
    double worst_ratio = -1.0;
    for (std::size_t i = 0; i < count; ++i) {
      if (!active[i]) continue;
      exact[i] = speed[i] * (finish - trainers[i].transfer_seconds);
      const double compute = finish - trainers[i].transfer_seconds;
      const double link = trainers[i].transfer_seconds - common_transfer;
      const double ratio = compute > 0 ? link / compute : INFINITY;
      if (ratio > worst_ratio) {
        worst_ratio = ratio;
        worst = i;
      }
    }
    const bool hopeless = exact[worst] < 1.0;
    const bool not_worth_it = max_transfer_ratio > 0 && worst_ratio >= max_transfer_ratio;
    if (remaining > 1 && (hopeless || not_worth_it)) {
      active[worst] = false;
      std::ostringstream reason;
      if (hopeless) {
        reason << "its transfer alone (" << trainers[worst].transfer_seconds << " s) outlasts the round";
      } else {
        reason << "transfer/compute ratio " << worst_ratio << " is at or above " << max_transfer_ratio;
      }
      shares[worst].left_out = reason.str();
      continue;
    }
    break;
  }
  // Whole samples: floors first, then the remainder to the largest fractions.
  std::uint64_t assigned = 0;
  std::vector<std::pair<double, std::size_t>> fractions;
  for (std::size_t i = 0; i < count; ++i) {
    if (!active[i]) continue;
    const double value = std::max(0.0, exact[i]);
    shares[i].samples = static_cast<std::uint64_t>(std::floor(value));
    assigned += shares[i].samples;
    fractions.emplace_back(value - std::floor(value), i);
  }
  std::sort(fractions.begin(), fractions.end(),
            [](const auto& a, const auto& b) { return a.first > b.first; });
  for (std::size_t k = 0; assigned < total && !fractions.empty(); k = (k + 1) % fractions.size()) {
    ++shares[fractions[k].second].samples;
    ++assigned;
  }
  return shares;
}

void SpeedEstimate::observe(std::uint64_t samples, double seconds) {
  if (samples == 0 || !(seconds > 0)) return;
  smoothed_samples_ = smoothed(smoothed_samples_, static_cast<double>(samples));
  smoothed_seconds_ = smoothed(smoothed_seconds_, seconds);
}

double SpeedEstimate::samples_per_second() const {
  return smoothed_seconds_ > 0 ? smoothed_samples_ / smoothed_seconds_ : calibrated_;
}

MicroBatchPlan micro_batches_for(std::uint64_t share, std::uint64_t configured_micro_batch,
                                 std::uint64_t max_for_device) {
  std::uint64_t micro = std::max<std::uint64_t>(1, std::min(share, configured_micro_batch));
  if (max_for_device > 0) micro = std::min(micro, max_for_device);
  return {static_cast<std::uint32_t>(micro), static_cast<std::uint32_t>((share + micro - 1) / micro)};
}

std::uint64_t rounds_before_next_probe(double transfer_before_probe, double probe_transfer) {
  const bool improving = probe_transfer >= 0.0 && transfer_before_probe > 0.0 &&
                         probe_transfer < kProbeImprovement * transfer_before_probe;
  return improving ? kQuickProbeRounds : kLeftOutProbeRounds;
}

}  // namespace filo
