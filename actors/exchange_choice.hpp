#pragma once
// optimizer.mode = "auto": how the fleet exchanges each round's work, chosen from what the
// scheduler measured. Pure functions and small values, so that tests can pin the rule down.
//
// The rule keeps communication under a fraction f of compute (optimizer.communication_fraction):
// - gradient mode while moving the whole model down and the gradient up costs at most f of a
//   gradient round's compute on every planned trainer's link (it steps on every global batch, so it
//   learns the most per sample);
// - otherwise local-sgd with the run's compression, whose sync interval (sync_steps = "auto")
//   grows until a round's measured exchange is at most f of its compute, and shrinks again (more
//   rounds learn more per sample) when it is under a quarter of that.
// Switching back to gradient mode asks for 0.7 of the fraction, so that a link near the threshold
// does not flip the mode every round.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace filo {

/// How rounds exchange their work.
struct Exchange {
  bool local = false;            /// local-sgd (parameter changes), else gradient mode
  bool compressed = false;       /// local-sgd: the change (and the downlink) compressed
  std::uint64_t sync_steps = 0;  /// local-sgd: local steps per trainer per round, on average
  std::string mode() const { return local ? "local-sgd" : "gradient"; }
  /// "gradient", "local-sgd x16", "local-sgd topk-q8 x16".
  std::string describe(const std::string& compression) const;
  bool operator==(const Exchange& other) const {
    return local == other.local && compressed == other.compressed && sync_steps == other.sync_steps;
  }
  bool operator!=(const Exchange& other) const { return !(*this == other); }
};

/// One plannable trainer, as measured.
struct LinkMeasure {
  std::string trainer;
  double samples_per_second = 0.0;
  /// What a whole model took to reach it (0: not measured yet): a gradient round moves that much
  /// down and as much up.
  double whole_model_seconds = 0.0;
  /// local-sgd rounds: its round's exchange as measured (arrival minus compute; 0: none yet).
  double local_exchange_seconds = 0.0;
};

struct ExchangeRule {
  double fraction = 0.1;                     /// communication under this share of compute
  std::uint64_t gradient_round_samples = 0;  /// schedule.round_samples: a gradient round's global batch
  std::uint64_t micro_batch = 0;             /// a local step's samples
  bool sync_steps_auto = false;              /// else local-sgd keeps `first_sync_steps`
  std::uint64_t first_sync_steps = 8;        /// optimizer.sync_steps
  bool compression = false;                  /// the run compresses local-sgd's changes
  bool allow_gradient = true;                /// false: local-sgd only (optimizer.mode = "local-sgd")
};

constexpr std::uint64_t kMaxAutoSyncSteps = 64;
/// Back to gradient mode only under this share of the fraction: a link near the threshold does
/// not flip the mode every round.
constexpr double kReturnShare = 0.7;

struct ExchangeChoice {
  Exchange exchange;
  /// Estimated share of a gradient round's compute its exchange would cost (nullopt: unknown).
  std::optional<double> gradient_fraction;
  /// Measured share of a local-sgd round's compute its exchange cost (nullopt: unknown).
  std::optional<double> local_fraction;
  std::string reason;  /// for people: what was measured, and why this follows
};

/// The exchange for the next round, from `current` and the fleet's measures. Unknown figures keep
/// the current choice.
ExchangeChoice choose_exchange(const ExchangeRule& rule, const Exchange& current,
                               const std::vector<LinkMeasure>& fleet);

}  // namespace filo
