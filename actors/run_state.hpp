#pragma once
// The run's state after each closed round (RunState) and the records it carries. One value with
// one owner, the scheduler: what a checkpoint holds besides the model's and optimizer's tensors,
// what a coordinator pair's standby holds, and what a restart reads.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "actors/exchange_choice.hpp"
#include "messages/round.hpp"

namespace filo {

/// A trainer's totals over the run.
struct TrainerTotals {
  std::uint64_t samples = 0;
  double compute_seconds = 0.0;
  std::uint64_t rounds_delivered = 0;
  std::uint64_t rounds_missed = 0;
};

/// A trainer whose own computation failed, for the run's record.
struct TrainerFailure {
  std::string trainer;
  std::uint64_t round = 0;
  std::string reason;
};

/// optimizer.mode or sync_steps = "auto": a change of how rounds exchange their work.
struct ExchangeRecord {
  std::uint64_t round = 0;  /// the first round planned this way
  std::string exchange;     /// Exchange::describe
  std::string reason;
};

/// A coordinator pair's standby took over the run (README, "A standby coordinator").
struct FailoverRecord {
  std::uint64_t after_round = 0;        /// the round of the replica it resumed from
  std::uint64_t coordinator_start = 0;  /// the start of the coordinator that took over
  std::string at;                       /// UTC, ISO 8601
  std::string reason;
  double peer_silent_seconds = 0.0;  /// the old active's silence when the standby decided
  /// From the decision to the first round this coordinator closed (-1: none closed yet).
  double to_first_round_seconds = -1.0;
};

/// The run's state as of its last closed round: one value, owned by the scheduler, changed only
/// in its close_round's steps. A checkpoint holds it (as JSON, beside the aggregator's model and
/// optimizer tensors of the same round), a coordinator pair's standby holds it inside its replicas,
/// and a restarted or taking-over coordinator resumes from it.
struct RunState {
  std::uint64_t epoch = 1;                /// the epoch in progress
  std::uint64_t round = 0;                /// the last closed round
  std::uint64_t model_version = 0;        /// the version that round's combination produces
  std::vector<msg::SampleRange> trained;  /// positions of `epoch` counted so far
  std::uint64_t epoch_samples = 0;
  double epoch_loss_sum = 0.0;
  std::uint64_t epoch_correct = 0;
  std::vector<std::uint64_t> samples_per_epoch;  /// of finished epochs
  std::vector<double> train_loss_per_epoch;      /// of finished epochs
  std::vector<double>
      test_metric_per_epoch;              /// the task's headline metric of evaluated epochs (may lag by one)
  std::vector<double> epoch_end_seconds;  /// training seconds when each epoch's last round closed
  std::map<std::string, TrainerTotals> totals;
  double training_seconds = 0.0;         /// of earlier starts of the coordinator
  std::string last_round_record;         /// the rounds.jsonl line of `round`
  double loss_scale = 0.0;               /// fp16 trainers' loss scale for the next round (0: not set yet)
  std::uint64_t good_steps = 0;          /// steps since the loss scale last changed
  std::vector<TrainerFailure> failures;  /// trainers whose computation failed, in order
  /// Trainers excluded for lying (too many contributions refused as lies) and not readmitted since:
  /// a restarted coordinator keeps them out too.
  std::vector<TrainerFailure> exclusions;
  /// How rounds exchange their work now (auto mode chooses; fixed modes never change it), and
  /// every change auto mode made, in order.
  Exchange exchange;
  std::vector<ExchangeRecord> exchanges;
  std::vector<FailoverRecord> failovers;  /// a coordinator pair's takeovers, in order
  /// Each trainer's speed as measured in delivered rounds (samples/s): a resumed coordinator plans
  /// a returning trainer at its measured speed, not at its calibration's claim.
  std::map<std::string, double> measured_speeds;
};
nlohmann::json to_json(const RunState& state);
/// Throws std::runtime_error naming the field that is missing or malformed.
RunState run_state_from_json(const nlohmann::json& json);

/// Pieces of the state as summary.json writes them too.
nlohmann::json ranges_json(const std::vector<msg::SampleRange>& ranges);
nlohmann::json failures_json(const std::vector<TrainerFailure>& failures);
nlohmann::json exchanges_json(const std::vector<ExchangeRecord>& exchanges);
nlohmann::json failovers_json(const std::vector<FailoverRecord>& failovers);

}  // namespace filo
