#pragma once
// One round of training. The scheduler owns every round from plan to close; the aggregator holds
// and combines contributions when told which to combine:
//
//   scheduler  --RoundOpened-->           aggregator   (who may contribute, on which version)
//   scheduler  --RoundPlan-->             trainer      (what to train)
//   trainer    --Contribution-->          aggregator   (gradients as tensor frames)
//   aggregator --ContributionReceived-->  scheduler    (accepted or refused, and what it cost)
//   scheduler  --CombineRound-->          aggregator   (exactly these, then step and publish)
//   aggregator --RoundCombined-->         scheduler    (done; the scheduler sends again until then)
//   scheduler  --Evaluate-->              aggregator   (at an epoch's end)
//   aggregator --Evaluated-->             scheduler
//   trainer    --TrainerFailed-->         scheduler    (its computation failed: out of the plans)
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "messages/envelope.hpp"
#include "messages/tensor_frames.hpp"

namespace filo::msg {

/// Positions [begin, end) in the epoch's shuffled order (not dataset indices), so that every
/// sample is planned exactly once per epoch whatever the shares.
struct SampleRange {
  std::uint64_t begin = 0;
  std::uint64_t end = 0;
  std::uint64_t size() const { return end - begin; }
  bool operator==(const SampleRange& other) const { return begin == other.begin && end == other.end; }
  MSGPACK_DEFINE(begin, end)
};

// scheduler → trainer: what to train this round, on which model version, by when.
struct RoundPlan {
  static constexpr MessageKind kKind = MessageKind::kRoundPlan;
  std::uint64_t round = 0;
  std::uint64_t epoch = 0;
  std::uint64_t model_version = 0;
  std::vector<SampleRange> ranges;
  std::uint32_t micro_batch = 0;
  std::uint32_t accumulation_steps = 0;
  double deadline_seconds = 0.0;
  // Which start of the coordinator planned it: a contribution is counted only by the same one,
  // so that work queued for a coordinator that died is never counted by its successor.
  std::uint64_t incarnation = 0;
  // fp16 trainers multiply their loss by this before backward and divide their gradients by it
  // after; the scheduler halves it after an overflow anywhere and doubles it after a run of good steps.
  double loss_scale = 1.0;
  // How this round's work is done and sent: "gradient" or "local-sgd", and whether a local-sgd
  // change is compressed as the run's compression settings say. The run's optimizer.mode fixes
  // them, except in "auto" mode, where the scheduler chooses them round by round.
  std::string mode;
  bool compressed = false;
  // optimizer.overlap: planned while round `round - 1` was still open, on the model round `round - 2`
  // produced. The trainer starts from that model plus its own change in round `round - 1` (which
  // the model does not hold yet), and its change lands one round late.
  bool overlapped = false;
  MSGPACK_DEFINE_MAP(round, epoch, model_version, ranges, micro_batch, accumulation_steps, deadline_seconds,
                     incarnation, loss_scale, mode, compressed, overlapped)
};

// scheduler → aggregator, before the round's plans go out: which trainers may contribute to this
// round, how many samples each, computed on which model version. Anything else is refused.
struct RoundOpened {
  static constexpr MessageKind kKind = MessageKind::kRoundOpened;
  std::uint64_t round = 0;
  std::uint64_t epoch = 0;
  std::uint64_t model_version = 0;
  std::uint64_t incarnation = 0;
  std::map<std::string, std::uint64_t> planned_samples;
  std::string mode;  // as in the round's plans: how its contributions are read and combined
  bool compressed = false;
  MSGPACK_DEFINE_MAP(round, epoch, model_version, incarnation, planned_samples, mode, compressed)
};

// trainer → aggregator: gradients summed over its samples and its BatchNorm-style buffers after its
// forward passes (as tensor frames, one flat tensor per dtype, laid out as `layout` fingerprints),
// and what the work cost. In local-sgd mode `gradients` holds the parameters' change over the
// round's local steps (after minus before) instead.
struct Contribution {
  static constexpr MessageKind kKind = MessageKind::kContribution;
  std::uint64_t round = 0;
  std::uint64_t epoch = 0;
  std::uint64_t model_version = 0;
  std::uint64_t samples = 0;
  double loss_sum = 0.0;
  std::uint64_t correct = 0;
  double compute_seconds = 0.0;     // forward and backward over the share (slowdown aid included)
  double model_wait_seconds = 0.0;  // from the plan's arrival to the start of training (model not there yet)
  double staging_seconds = 0.0;     // copying the results into send buffers
  std::vector<TensorMeta> gradients;
  std::vector<TensorMeta> buffers;
  std::string layout;
  std::uint64_t incarnation = 0;  // the plan's
  bool overflow = false;          // fp16: a gradient overflowed at the plan's loss scale; no tensors follow
  std::string precision;          // what it computed in
  std::int64_t peak_memory_bytes =
      0;  // its device's peak allocation so far (the process's peak RSS on a CPU)
  MSGPACK_DEFINE_MAP(round, epoch, model_version, samples, loss_sum, correct, compute_seconds,
                     model_wait_seconds, staging_seconds, gradients, buffers, layout, incarnation, overflow,
                     precision, peak_memory_bytes)
};

// aggregator → scheduler, for each contribution from a trainer planned in an open round: accepted
// (held for combining) or refused with the reason, and what its sender reported. The scheduler
// records arrivals from these alone.
struct ContributionReceived {
  static constexpr MessageKind kKind = MessageKind::kContributionReceived;
  std::uint64_t round = 0;
  std::string trainer;
  bool accepted = false;
  std::string reason;  // why it was refused
  std::uint64_t samples = 0;
  double loss_sum = 0.0;
  std::uint64_t correct = 0;
  double compute_seconds = 0.0;
  double model_wait_seconds = 0.0;
  double staging_seconds = 0.0;
  bool overflow = false;
  std::string precision;
  std::int64_t peak_memory_bytes = 0;
  std::uint64_t tensor_bytes = 0;  // the contribution's tensor frames, counted by the aggregator
  /// The L2 norm of its gradient sum (gradient mode) or its parameter change (local-sgd), as
  /// received and measured by the aggregator; the scheduler bounds it against the fleet's.
  double norm = 0.0;
  MSGPACK_DEFINE_MAP(round, trainer, accepted, reason, samples, loss_sum, correct, compute_seconds,
                     model_wait_seconds, staging_seconds, overflow, precision, peak_memory_bytes,
                     tensor_bytes, norm)
};

// scheduler → aggregator when it closes a round: add exactly these trainers' contributions, step,
// and publish `model_version` (the version stays when `trainers` is empty). Rounds are combined in
// order; the scheduler sends it again until RoundCombined answers, and a repeat of a combined round
// is answered again, never applied twice. With `checkpoint`, the aggregator then writes a
// checkpoint holding the model, the optimizer and `round_state` (the scheduler's state after this
// round, JSON), so that both halves describe the same moment.
struct CombineRound {
  static constexpr MessageKind kKind = MessageKind::kCombineRound;
  std::uint64_t round = 0;
  std::uint64_t epoch = 0;
  std::vector<std::string> trainers;
  std::uint64_t model_version = 0;
  bool checkpoint = false;
  std::string round_state;
  // With a compressed downlink: broadcast the whole model this time, not the update (auto mode
  // measures what a whole model costs on each trainer's link this way).
  bool whole_model = false;
  MSGPACK_DEFINE_MAP(round, epoch, trainers, model_version, checkpoint, round_state, whole_model)
};

// aggregator → scheduler: the round is combined and its model published; what that took.
struct RoundCombined {
  static constexpr MessageKind kKind = MessageKind::kRoundCombined;
  std::uint64_t round = 0;
  std::uint64_t model_version = 0;
  double combine_seconds = 0.0;  // adding the contributions and writing the mean gradient
  double step_seconds = 0.0;     // the optimizer step
  double publish_seconds = 0.0;  // copying the model into send buffers and handing it to the bus
  std::string problem;           // set when the round could not be combined as asked
  // The broadcast's frames (the whole model, or a compressed downlink's update): what each
  // subscribed trainer receives for this round.
  std::uint64_t publish_bytes = 0;
  bool whole_model = false;  // the broadcast was the whole model (else an update, or nothing)
  // Each scored contribution's direction: its cosine with the centre the round's other
  // contributions make (rounds of 3 or more; shares of 16 samples or more).
  std::map<std::string, double> directions;
  // Scoring them, after the publish: off this round's path, but the aggregator's time all the same
  // (a next round's combine waits behind it).
  double score_seconds = 0.0;
  MSGPACK_DEFINE_MAP(round, model_version, combine_seconds, step_seconds, publish_seconds, problem,
                     publish_bytes, whole_model, directions, score_seconds)
};

// scheduler → aggregator at an epoch's end: score model version `model_version` on the test set;
// when `last`, also write the final model files.
struct Evaluate {
  static constexpr MessageKind kKind = MessageKind::kEvaluate;
  std::uint64_t epoch = 0;
  std::uint64_t model_version = 0;
  bool last = false;
  MSGPACK_DEFINE_MAP(epoch, model_version, last)
};

// aggregator → scheduler: the test-set scores of an epoch's model (e.g. "test_accuracy"), and the
// files written when it was the last.
struct Evaluated {
  static constexpr MessageKind kKind = MessageKind::kEvaluated;
  std::uint64_t epoch = 0;
  std::uint64_t model_version = 0;
  std::map<std::string, double> metrics;
  std::vector<std::string> model_files;
  std::string problem;  // why the evaluation or the model files failed, when they did
  MSGPACK_DEFINE_MAP(epoch, model_version, metrics, model_files, problem)
};

// trainer → scheduler, after admission and before its first round: the real model's speed on
// this trainer at the run's micro-batch size (warm-up excluded), and the largest micro-batch its
// memory allows (0: no limit known).
struct Calibration {
  static constexpr MessageKind kKind = MessageKind::kCalibration;
  double samples_per_second = 0.0;
  std::uint32_t micro_batch = 0;
  std::uint32_t max_micro_batch = 0;
  std::string device;     // "cpu", "cuda:0", ...
  std::string precision;  // what it computes in (train.precision resolved for its device)
  // From its last hardware report to its admission, which carried the model's archive: a first
  // measure of what a whole model costs on its link (auto mode), before any round has.
  double admission_seconds = 0.0;
  MSGPACK_DEFINE_MAP(samples_per_second, micro_batch, max_micro_batch, device, precision, admission_seconds)
};

// trainer → scheduler: its own computation failed (a LibTorch or CUDA error, a failed check), not
// anything it was sent. The scheduler takes it out of the plans at once, closes the round without
// it (its samples go back to the pool) and says why on the event stream and in summary.json.
struct TrainerFailed {
  static constexpr MessageKind kKind = MessageKind::kTrainerFailed;
  std::uint64_t round = 0;  // the round it was computing, or 0 (calibration)
  std::string reason;
  bool exiting = false;  // it cannot recover: the node process exits non-zero
  MSGPACK_DEFINE_MAP(round, reason, exiting)
};

}  // namespace filo::msg
