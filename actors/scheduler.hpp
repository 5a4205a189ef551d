#pragma once
// The scheduler plans each round: which positions of the epoch's shuffled order each live trainer
// trains, in what micro-batches, by when. Samples of a trainer that missed a round go back to the
// front of the pool, so every sample is trained exactly once per epoch.
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "messages/membership.hpp"
#include "messages/round.hpp"
#include "runtime/actor_loop.hpp"
#include "runtime/bus.hpp"
#include "runtime/config.hpp"

namespace filo {

constexpr const char* kSchedulerName = "scheduler";

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

/// Where a resumed run stands: the last closed round and the positions of its epoch trained.
struct SchedulerResume {
  std::uint64_t epoch = 1;
  std::uint64_t round = 0;
  std::uint64_t model_version = 0;
  std::vector<msg::SampleRange> trained;
};

/// The positions of [0, size) not in `trained` (which may be unsorted, never overlapping).
std::vector<msg::SampleRange> untrained_ranges(std::vector<msg::SampleRange> trained, std::uint64_t size);

struct SchedulerOptions {
  ScheduleOptions schedule;
  std::uint64_t train_samples = 0;  /// samples per epoch
  /// local-sgd: a round holds this many samples per planned trainer (the sync interval), in place
  /// of schedule.round_samples; 0 = gradient mode's fixed global batch.
  std::uint64_t round_samples_per_trainer = 0;
  std::uint64_t incarnation = 1;          /// this start of the coordinator (1 = fresh run)
  std::optional<SchedulerResume> resume;  /// continue a checkpointed run
};

class Scheduler final {
 public:
  using Inbox = std::variant<msg::MembershipChange, msg::Calibration, msg::RoundClosed>;

  Scheduler(const SocketFactory& sockets, const std::string& hub_endpoint, SchedulerOptions options,
            const StopFlag& stop);
  void run();

  void handle(const msg::MembershipChange& change, const Incoming& from);
  void handle(const msg::Calibration& calibration, const Incoming& from);
  void handle(const msg::RoundClosed& closed, const Incoming& from);

 private:
  struct TrainerState {
    bool calibrated = false;              // planned only once its calibration arrived
    SpeedEstimate speed;                  // calibration, then measured compute times
    std::deque<double> recent_transfers;  // arrival minus compute time of recent rounds
    std::uint32_t max_micro_batch = 0;    // 0: no memory limit known
    std::uint64_t left_out_since = 0;     // round it was last left out in (0: it is not)
    std::uint64_t probe_after = 0;        // rounds left out before its next probe (0: the long interval)
    std::optional<double> probing_from;   // during a probe: the transfer that kept it out
    /// Scheduling jitter only ever adds time, so the floor of recent rounds is the transfer.
    double transfer_seconds() const;
  };
  std::size_t calibrated_trainers() const;
  std::vector<Share> shares_for(std::uint64_t total);
  void maybe_start(Clock::time_point now);
  void plan_round();
  void end_epoch();
  double deadline_seconds() const;

  SchedulerOptions options_;
  BusClient bus_;
  ActorLoop loop_;
  std::map<std::string, TrainerState> live_;
  SamplePool pool_;
  std::map<std::string, std::vector<msg::SampleRange>> in_flight_;
  std::optional<Clock::time_point> enough_trainers_since_;
  bool started_ = false;
  bool round_open_ = false;
  bool finished_ = false;
  std::uint64_t epoch_ = 1;
  std::uint64_t round_ = 0;
  std::uint64_t model_version_ = 0;
  std::uint64_t epoch_trained_ = 0;
  double slowest_last_round_seconds_ = 0.0;
};

}  // namespace filo
