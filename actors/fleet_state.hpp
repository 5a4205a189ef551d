#pragma once
// What monitors know about a run, kept from the event stream alone: every trainer with its state
// and latest measurements, loss and accuracy over time, the last rounds' timeline, membership and
// fault events. The live dashboard, the terminal table and `filo report` all read it, so the
// browser, the terminal and the report show the same numbers. Not thread-safe: one owner feeds it.
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "messages/event.hpp"

namespace filo {

/// A trainer's state as monitors show it. kTraining covers "admitted and planned"; a trainer
/// that came back after a loss is kTraining with rejoins > 0.
enum class TrainerState { kTraining, kLost, kLeft, kRejected, kLeftOut, kFailed, kTakenOut, kExcluded };
const char* state_name(TrainerState state);

struct TrainerView {
  std::string name;     // bus name, trainer@node-2/cpu
  std::string machine;  // the node's name (node-2)
  std::string host;     // hostname, once a members event names it
  std::string device;   // cpu, cuda:0
  std::string precision;
  TrainerState state = TrainerState::kTraining;
  std::string reason;  // why lost, left, rejected, left out, failed or taken out
  double planned_samples = 0.0;
  double share = 0.0;                            // planned ÷ the round's planned total
  double samples_per_second = 0.0;               // last delivered round
  double recent_samples_per_second = 0.0;        // last kRecentRounds delivered rounds: steadier to read
  std::deque<std::pair<double, double>> recent;  // (samples, compute seconds) of those rounds
  double idle_seconds = 0.0;                     // waiting for the slowest, last delivered round
  double idle_seconds_total = 0.0;
  std::optional<double> compute_seconds;
  std::optional<double> arrival_seconds;
  std::optional<double> peak_memory_bytes;
  std::optional<double> heartbeat_age_seconds;  // from the registrar's roll call (FleetMembers)
  double heartbeat_age_at = 0.0;                // when that age was true (run time)
  double last_delivery_at = -1.0;               // run time of its last delivered round
  std::uint64_t rounds_delivered = 0;
  std::uint64_t rounds_missed = 0;
  std::uint64_t samples = 0;
  std::uint64_t losses = 0;
  std::uint64_t rejoins = 0;
};

struct SeriesPoint {
  double time;  // run seconds
  double x;     // round or epoch
  double value;
};

struct TimelineEntry {
  std::string trainer;
  double planned = 0.0;
  double samples = 0.0;
  double arrival_seconds = 0.0;  // since the plan went out
  double compute_seconds = 0.0;
  double idle_seconds = 0.0;
  bool delivered = false;
};

struct RoundView {
  std::uint64_t round = 0;
  std::uint64_t epoch = 0;
  double time = 0.0;
  double seconds = 0.0;
  std::vector<TimelineEntry> trainers;
};

struct EventView {
  double time = 0.0;
  std::uint64_t round = 0;
  std::string type;
  std::string trainer;
  std::string text;
};

struct RunView {
  std::uint64_t round = 0;
  std::uint64_t epoch = 0;
  std::uint64_t epochs = 0;
  double epoch_samples_done = 0.0;
  double epoch_samples_total = 0.0;
  double loss = 0.0;
  double idle_fraction = 0.0;
  std::optional<double> test_accuracy;
  std::optional<double> test_perplexity;  // language models
  std::uint64_t samples = 0;
  std::uint64_t rounds_seen = 0;
  bool finished = false;
  std::string finished_text;
  std::string run_dir;
  std::map<std::string, double> dropped;  // refused messages by reason
  std::string exchange;                   // how the last round exchanged its work
  std::optional<msg::PairStatus> pair;    // a coordinator pair's state, as its active last said
};

class FleetState {
 public:
  /// Points kept per series before older ones are thinned (every other one dropped).
  static constexpr std::size_t kMaxSeriesPoints = 1200;
  static constexpr std::size_t kTimelineRounds = 40;
  static constexpr std::size_t kMaxEvents = 400;
  static constexpr std::size_t kRecentRounds = 10;

  /// Takes one event seen at `time` (seconds on the owner's clock: since the monitor started,
  /// or the run's training time when replaying a run directory).
  void apply(const msg::AnyEvent& event, double time);

  const std::map<std::string, TrainerView>& trainers() const { return trainers_; }
  const RunView& run() const { return run_; }
  const std::vector<SeriesPoint>& loss() const { return loss_; }
  const std::vector<SeriesPoint>& accuracy() const { return accuracy_; }
  const std::deque<RoundView>& timeline() const { return timeline_; }
  const std::deque<EventView>& events() const { return events_; }
  std::uint64_t events_seen() const { return events_seen_; }

  /// Everything the page draws, as of `now`.
  nlohmann::json to_json(double now) const;
  /// The Prometheus text exposition format (version 0.0.4).
  std::string prometheus_text(double now) const;
  /// A run line and one row per trainer, for a terminal.
  std::string table_text(double now) const;
  /// The heartbeat age at `now`: the registrar's figure, aged since it came; else nothing.
  std::optional<double> heartbeat_age(const TrainerView& trainer, double now) const;

 private:
  TrainerView& trainer(const std::string& name);
  void apply_event(const msg::RoundClosed& event, double time);
  void apply_event(const msg::EpochScored& event, double time);
  void apply_event(const msg::MemberNews& event, double time);
  void apply_event(const msg::FleetMembers& event, double time);
  void apply_event(const msg::RefusalCounts& event, double time);
  void apply_event(const msg::CoordinatorResumed& event, double time);
  void apply_event(const msg::LossScaleOverflow& event, double time);
  void apply_event(const msg::RunEnded& event, double time);
  void apply_event(const msg::SecurityNotice& event, double time);
  void apply_event(const msg::ExchangeChosen& event, double time);
  void apply_event(const msg::PairStatus& event, double time);
  void note(const std::string& type, std::uint64_t round, double time, const std::string& trainer,
            const std::string& text);

  std::map<std::string, TrainerView> trainers_;
  RunView run_;
  std::vector<SeriesPoint> loss_;
  std::vector<SeriesPoint> accuracy_;
  std::map<std::string, std::vector<SeriesPoint>> speed_;
  std::deque<RoundView> timeline_;
  std::deque<EventView> events_;
  std::uint64_t events_seen_ = 0;
};

/// Seconds since 1970 now, for event lines.
double unix_time_now();

/// "trainer@node-2/cuda:0" → {"node-2", "cuda:0"}; other names → {name, ""}.
std::pair<std::string, std::string> machine_and_device(const std::string& trainer);

}  // namespace filo
