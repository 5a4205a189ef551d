#pragma once
// One round of training: plan out, contributions in, round closed.
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
  MSGPACK_DEFINE_MAP(round, epoch, model_version, ranges, micro_batch, accumulation_steps, deadline_seconds,
                     incarnation)
};

// scheduler → aggregator: the round is open; these trainers owe these many samples.
struct RoundOpened {
  static constexpr MessageKind kKind = MessageKind::kRoundOpened;
  std::uint64_t round = 0;
  std::uint64_t epoch = 0;
  std::uint64_t model_version = 0;
  std::map<std::string, std::uint64_t> planned_samples;
  double deadline_seconds = 0.0;
  std::uint64_t incarnation = 0;
  // The positions each trainer trains: the aggregator records what was delivered, per epoch,
  // so that a checkpoint knows exactly which samples are done.
  std::map<std::string, std::vector<SampleRange>> planned_ranges;
  MSGPACK_DEFINE_MAP(round, epoch, model_version, planned_samples, deadline_seconds, incarnation,
                     planned_ranges)
};

// trainer → aggregator: gradients summed over its samples (as tensor frames), its BatchNorm-style
// buffers after its forward passes, and what the work cost. In local-sgd mode `gradients` holds
// each parameter's delta over the round's local steps (after minus before) instead.
struct Contribution {
  static constexpr MessageKind kKind = MessageKind::kContribution;
  std::uint64_t round = 0;
  std::uint64_t epoch = 0;
  std::uint64_t model_version = 0;
  std::uint64_t samples = 0;
  double loss_sum = 0.0;
  std::uint64_t correct = 0;
  double compute_seconds = 0.0;
  std::vector<TensorMeta> gradients;
  std::vector<TensorMeta> buffers;
  std::uint64_t incarnation = 0;  // the plan's
  MSGPACK_DEFINE_MAP(round, epoch, model_version, samples, loss_sum, correct, compute_seconds, gradients,
                     buffers, incarnation)
};

struct TrainerOutcome {
  std::string trainer;
  std::uint64_t planned_samples = 0;
  std::uint64_t samples = 0;     // counted into the model; 0 when it missed the round
  double compute_seconds = 0.0;  // the trainer's own measure of its share, waits included
  double arrival_seconds = 0.0;  // from the round's opening to its contribution's arrival
  bool delivered = false;
  MSGPACK_DEFINE_MAP(trainer, planned_samples, samples, compute_seconds, arrival_seconds, delivered)
};

// trainer → scheduler, after admission and before its first round: the real model's speed on
// this trainer at the run's micro-batch size (warm-up excluded), and the largest micro-batch its
// memory allows (0: no limit known).
struct Calibration {
  static constexpr MessageKind kKind = MessageKind::kCalibration;
  double samples_per_second = 0.0;
  std::uint32_t micro_batch = 0;
  std::uint32_t max_micro_batch = 0;
  MSGPACK_DEFINE_MAP(samples_per_second, micro_batch, max_micro_batch)
};

// aggregator → scheduler: the round is closed and the model stepped; who delivered what.
struct RoundClosed {
  static constexpr MessageKind kKind = MessageKind::kRoundClosed;
  std::uint64_t round = 0;
  std::uint64_t epoch = 0;
  std::uint64_t model_version = 0;  // the version the step produced
  double round_seconds = 0.0;
  std::vector<TrainerOutcome> outcomes;
  MSGPACK_DEFINE_MAP(round, epoch, model_version, round_seconds, outcomes)
};

// scheduler → aggregator: every sample of the epoch has been trained.
struct EpochEnded {
  static constexpr MessageKind kKind = MessageKind::kEpochEnded;
  std::uint64_t epoch = 0;
  std::uint64_t samples = 0;
  bool last = false;
  MSGPACK_DEFINE_MAP(epoch, samples, last)
};

}  // namespace filo::msg
