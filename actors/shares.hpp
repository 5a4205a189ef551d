#pragma once
// How a round's samples are shared out: the epoch's pool of untrained positions, shares that make
// every trainer finish together, speed estimates, micro-batches, and when to probe a trainer that
// the transfer rule left out. Pure functions and small values, so that tests can pin them down.
#include <cstdint>
#include <deque>
#include <string>
#include <vector>

#include "messages/round.hpp"

namespace filo {

/// A trainer left out by the transfer rule is planned again this often, so that its estimate
/// follows the network instead of freezing at its worst.
constexpr std::uint64_t kLeftOutProbeRounds = 20;

/// The epoch's not-yet-trained positions, as ranges.
class SamplePool {
 public:
  void reset(std::uint64_t size);
  /// Exactly `ranges` remain.
  void assign(const std::vector<msg::SampleRange>& ranges);
  /// Removes and returns up to `count` positions from the front.
  std::vector<msg::SampleRange> take(std::uint64_t count);
  /// Puts `ranges` back at the front (they are retried first).
  void give_back(const std::vector<msg::SampleRange>& ranges);
  std::uint64_t remaining() const;
  bool empty() const { return ranges_.empty(); }

 private:
  std::deque<msg::SampleRange> ranges_;
};

/// Splits `total` into `parts` shares that differ by at most one, larger ones first.
std::vector<std::uint64_t> equal_shares(std::uint64_t total, std::size_t parts);

/// What the scheduler believes about one trainer.
struct TrainerEstimate {
  std::string trainer;
  double samples_per_second = 0.0;  /// 0: not known yet
  double transfer_seconds = 0.0;    /// per round: model down, contribution up, latency
};

struct Share {
  std::string trainer;
  std::uint64_t samples = 0;
  std::string left_out;  /// why the trainer gets nothing this round, when it does not
};

/// Shares of `total` samples such that every trainer finishes together: transfer_i + n_i / s_i
/// is the same T for all, with sum n_i = total. A trainer whose transfer time beyond the
/// best-connected trainer's would be `max_transfer_ratio` of its compute time or more (or whose
/// transfer outlasts the round) is left out, worst first, while others remain; 0 disables that rule. Unknown
/// speeds count as the mean of the known ones.
std::vector<Share> proportional_shares(const std::vector<TrainerEstimate>& trainers, std::uint64_t total,
                                       double max_transfer_ratio);

/// A trainer's speed from its delivered rounds: a ratio of exponentially smoothed sums, so that
/// a short round, whose time is mostly jitter, weighs less than a long one.
class SpeedEstimate {
 public:
  SpeedEstimate() = default;
  /// Starts from a calibration (samples/s).
  explicit SpeedEstimate(double calibrated_samples_per_second) : calibrated_(calibrated_samples_per_second) {}
  void observe(std::uint64_t samples, double seconds);
  /// 0 while nothing is known.
  double samples_per_second() const;
  /// Whether a delivered round has been measured (otherwise the speed is only the claim).
  bool measured() const { return smoothed_seconds_ > 0.0; }

 private:
  double calibrated_ = 0.0;
  double smoothed_samples_ = 0.0;
  double smoothed_seconds_ = 0.0;
};

struct MicroBatchPlan {
  std::uint32_t micro_batch = 0;
  std::uint32_t accumulation_steps = 0;
};
/// A share larger than what one forward pass may take (configuration or device memory) runs as
/// micro-batches whose gradients accumulate. `max_for_device` 0 means no device limit is known.
MicroBatchPlan micro_batches_for(std::uint64_t share, std::uint64_t configured_micro_batch,
                                 std::uint64_t max_for_device);

/// A trainer left out by the transfer rule is planned once more now and then to measure its link
/// again (a probe). How many rounds it waits for the next one, from the transfer that kept it out
/// and what its last probe measured: a link clearly faster than before (a cap lifted, TCP still
/// regrowing its window) is probed again soon; one as slow as before waits the long interval.
/// `probe_transfer` < 0: the probe delivered nothing.
std::uint64_t rounds_before_next_probe(double transfer_before_probe, double probe_transfer);

/// The positions of [0, size) not in `trained` (which may be unsorted, never overlapping).
std::vector<msg::SampleRange> untrained_ranges(std::vector<msg::SampleRange> trained, std::uint64_t size);

}  // namespace filo
