#pragma once
// The scheduler owns every round from plan to close. It keeps the one membership view (from the
// registrar's announcements), each trainer's measured speed and link, the epoch's pool of
// untrained positions and the run record. It plans a round, records arrivals as the aggregator
// reports them, decides when the round closes (every live planned trainer answered, or the
// deadline), returns missed samples to the pool, and tells the aggregator exactly which
// contributions to combine. It plans the next round at once, while the aggregator combines.
//
// It owns the run's state (RunState, actors/run_state.hpp): it changes only in close_round's steps,
// travels to the aggregator inside CombineRound and is checkpointed there beside the model and
// optimizer of the same moment.
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "actors/coordinator_pair.hpp"
#include "actors/exchange_choice.hpp"
#include "actors/run_state.hpp"
#include "actors/shares.hpp"
#include "messages/event.hpp"
#include "messages/membership.hpp"
#include "messages/round.hpp"
#include "runtime/actor_loop.hpp"
#include "runtime/bus.hpp"
#include "runtime/config.hpp"
#include "runtime/drop_counters.hpp"
#include "runtime/run_record.hpp"

namespace filo {

struct SchedulerOptions {
  ScheduleOptions schedule;
  msg::RunSpec run;
  OptimizerOptions optimizer;  /// named in summary.json
  std::string run_dir;
  /// local-sgd: a round holds this many samples per planned trainer (the sync interval), in place
  /// of schedule.round_samples; 0 = gradient mode's fixed global batch.
  std::uint64_t round_samples_per_trainer = 0;
  std::uint64_t incarnation = 1;      /// this start of the coordinator (1 = fresh run)
  std::int64_t checkpoint_every = 1;  /// rounds between checkpoints; 0 = none
  TrainOptions train;                 /// the fleet's fp16 loss scale starts and grows by these
  RobustOptions robust;               /// bounds on contributions, and when a liar is excluded
  /// The model's parameters: random values' direction scores spread over 1/sqrt of it, and a
  /// trainer whose scores stay that close to 0 sent noise (0: unknown, not judged so).
  std::int64_t model_parameters = 0;
  std::optional<RunState> resume;  /// continue a checkpointed run
  /// This start is a standby's takeover (the record's to_first_round_seconds counts from
  /// `failover_decided` and is filled by the first round this scheduler closes).
  std::optional<FailoverRecord> failover;
  Clock::time_point failover_decided{};
  /// A coordinator pair's active: its link to the peer (null: a lone coordinator). The scheduler
  /// asks it whether it may close and plan rounds now, publishes the pair's state on the event
  /// stream, and hands the run over through it on `filo failback`.
  PairLink* pair = nullptr;
  std::string pair_listen;  /// this coordinator's bus.listen, and its peer's: for the event stream
  std::string peer_listen;
  DropCounters* drops = nullptr;  /// refused messages of this process, for records; may be null
};

class Scheduler final {
 public:
  using Inbox =
      std::variant<msg::MembershipChange, msg::Calibration, msg::ContributionReceived, msg::RoundCombined,
                   msg::Evaluated, msg::TrainerFailed, msg::Readmit, msg::Failback>;

  /// `on_finished` is called once the run is over and its summary written.
  Scheduler(const SocketFactory& sockets, const std::string& hub_endpoint, SchedulerOptions options,
            const StopFlag& stop, std::function<void()> on_finished = {},
            const TimeSource& time = steady_time());
  void run();

  void handle(const msg::MembershipChange& change, const Incoming& from);
  void handle(const msg::Calibration& calibration, const Incoming& from);
  void handle(const msg::ContributionReceived& received, const Incoming& from);
  void handle(const msg::RoundCombined& combined, const Incoming& from);
  void handle(const msg::Evaluated& evaluated, const Incoming& from);
  void handle(const msg::TrainerFailed& failed, const Incoming& from);
  void handle(const msg::Readmit& readmit, const Incoming& from);
  void handle(const msg::Failback& failback, const Incoming& from);

 private:
  /// A live trainer's calibration: planned from now on, at that speed (or the one measured before
  /// a coordinator's restart).
  void calibrate(const std::string& name, const msg::Calibration& calibration);
  struct TrainerState {
    bool calibrated = false;              // planned only once its calibration arrived
    SpeedEstimate speed;                  // calibration, then measured compute times
    double planned_speed = 0.0;           // samples/s its latest share was planned at
    std::deque<double> recent_transfers;  // arrival minus compute time of recent rounds
    // Auto mode: what a whole model took to reach it (its admission's archive, then each round that
    // waited for a whole model), and its recent local-sgd rounds' exchange (arrival minus compute).
    std::deque<double> whole_model_seconds;
    std::deque<double> local_exchanges;
    Clock::time_point joined;            // when the registrar admitted it (its admission was then on its way)
    std::uint32_t max_micro_batch = 0;   // 0: no memory limit known
    std::uint64_t left_out_since = 0;    // round it was last left out in (0: it is not)
    std::uint64_t probe_after = 0;       // rounds left out before its next probe (0: the long interval)
    std::optional<double> probing_from;  // during a probe: the transfer that kept it out
    std::string hostname;
    double benchmark_gflops = 0.0;
    std::string device;     // from its calibration
    std::string precision;  // from its calibration, then its contributions
    std::int64_t peak_memory_bytes = 0;
    std::string failed;  // why its computation failed; not planned until it calibrates again
    std::uint32_t consecutive_misses = 0;
    std::uint64_t taken_out_since = 0;     // round it was taken out in for missing too many (0: it is not)
    std::deque<double> recent_norms;       // per sample, of its recent combined contributions
    std::deque<double> recent_directions;  // the aggregator's direction scores of its last contributions
    std::deque<std::uint64_t> lies;    // rounds in which a contribution of it was refused or scored as a lie
    bool excluded = false;             // out of the plans until an operator readmits it
    std::uint32_t lone_overflows = 0;  // rounds in a row in which it alone reported an fp16 overflow
    /// Scheduling jitter only ever adds time, so the floor of recent rounds is the transfer.
    double transfer_seconds() const;
    /// Auto mode: the floors of whole_model_seconds and local_exchanges (0: none measured).
    double whole_model_floor() const;
    double local_exchange_floor() const;
    bool plannable() const { return calibrated && failed.empty() && !excluded; }
  };
  struct Arrival {
    msg::ContributionReceived report;
    double arrival_seconds = 0.0;  // from the plans going out to the aggregator's report
  };
  struct OpenRound {
    std::uint64_t round = 0;
    std::uint64_t epoch = 0;
    std::uint64_t model_version = 0;
    Clock::time_point opened;       // its plans went out
    Clock::time_point front_since;  // it became the oldest open round: its deadline runs from then
    bool overlapped = false;        // planned while the round before it was open (optimizer.overlap)
    /// When each planned trainer could start it: when it answered the round before (overlap), else
    /// when it was planned. Its arrival counts from then.
    std::map<std::string, Clock::time_point> free_at;
    double deadline_seconds = 0.0;
    ActorLoop::TimerId deadline_timer = 0;
    std::map<std::string, std::vector<msg::SampleRange>> planned;
    std::map<std::string, Arrival> arrived;
    std::map<std::string, std::string> refused;  // trainer → why its contribution does not count
    std::set<std::string> probes;                // taken-out trainers planned to prove they are alive
    Exchange exchange;                           // how its work is done and sent
    bool waits_for_whole_model = false;          // its model version arrives whole, not as an update
    std::string closing_why;                     // why it closes, while its close waits for may_act
    bool answered(const std::string& trainer) const {
      return arrived.count(trainer) || refused.count(trainer);
    }
  };
  struct Unanswered {
    msg::CombineRound message;
    Clock::time_point sent;
  };
  struct PendingEvaluation {
    msg::Evaluate message;
    Clock::time_point sent;
  };

  std::size_t calibrated_trainers() const;
  /// Shares of `total` among plannable trainers but `except`; taken-out ones only if `taken_out_too`.
  std::vector<Share> shares_for(std::uint64_t total, bool taken_out_too, const std::set<std::string>& except);
  void maybe_start(Clock::time_point now);
  /// Plans the next round where none is open; with optimizer.overlap, also the one behind it.
  void plan_round();
  void plan_one_round();
  /// The round planned behind the one that just closed becomes the front: its deadline runs from now.
  void promote_next();
  void arm_deadline(OpenRound& round);
  /// The open rounds, oldest first (two with optimizer.overlap).
  std::vector<OpenRound*> open_rounds();
  /// Auto mode, before a round is planned: how it exchanges its work, announced when that changes.
  void choose_exchange_now();
  bool auto_exchange() const;
  /// Auto mode: what a whole model takes to reach the slowest-linked plannable trainer (0: unknown).
  double slowest_whole_model_seconds() const;
  /// Auto mode, a delivered trainer's round: what its link showed.
  void measure_link(const OpenRound& round, TrainerState& state, const msg::ContributionReceived& report,
                    double arrival_seconds);
  bool every_live_planned_trainer_answered() const;
  /// Whether this coordinator may act now (its pair link's may_act); when not, a retry is armed.
  bool may_act();
  /// A pair's active: publishes the pair's state (every kPairStatusInterval, and at once when the
  /// peer's state or a failback's changes), and goes on planning when a failback was abandoned.
  void follow_pair();
  /// Why a trainer's recent direction scores read as random values', if they do.
  std::optional<std::string> noise_verdict(const std::deque<double>& recent) const;
  /// A failback asked `kFailbackRoundSeconds` ago is given up where no round is open to hand over at.
  void abandon_failback_without_round(std::uint64_t request);
  void arm_failback_timer(std::uint64_t request);
  void publish_pair_status(const PairLink::Status& status, bool changed, const std::string& handover);
  /// A closing round's outcome as its steps build it: the event and record line, what the
  /// aggregator combines, and the sums the run's state takes.
  struct ClosedRound {
    msg::RoundClosed event;
    msg::CombineRound combine;
    bool overflow = false;  // fp16: someone's gradients overflowed; nobody steps
    double loss_sum = 0.0;
    double idle_sum = 0.0;  // of the delivered trainers, waiting for the slowest
  };
  /// Closes the open round, one step per job below: bounds, accounting, deadline, members, loss
  /// scale, the run's state, the next model's form, the record, the epoch's end and the
  /// checkpoint; then tells the aggregator what to combine, plans the next round, and records and
  /// announces this one.
  void close_round(const std::string& why);
  /// A pair's takeover: the first round this coordinator closes ends the failover's record.
  void time_failover(std::uint64_t round);
  /// Every planned trainer accounted (account_trainer): what was delivered, and what is combined.
  ClosedRound settle(const OpenRound& round, const std::string& why, double seconds);
  /// A deadline that a live trainer missed doubles the next (up to kMaxDeadlineSeconds); a round
  /// that every live trainer made halves the back-off again.
  void adapt_deadline(const OpenRound& round, const msg::RoundClosed& closed, const std::string& why);
  /// The run's state after the round: its number, the model version, the epoch's sums.
  void advance_state(const OpenRound& round, ClosedRound& closed);
  /// Whether the next model goes out whole or as an update (auto mode probes links now and then).
  void choose_next_model(const OpenRound& round, msg::CombineRound& combine);
  /// The record's remaining fields and the line for people.
  void complete_record(const OpenRound& round, ClosedRound& closed, double seconds);
  /// Whether the aggregator checkpoints this round, with the run's state in it; a failback's
  /// handover happens at such a round.
  void choose_checkpoint(const OpenRound& round, msg::CombineRound& combine, const nlohmann::json& record,
                         bool evaluation_under_way, bool epoch_ended);
  /// One planned trainer's part in a closing round: its samples counted (or back to the pool), its
  /// totals, speed and link estimates, and its line of the round's record.
  msg::TrainerInRound account_trainer(const OpenRound& round, const std::string& trainer,
                                      const std::vector<msg::SampleRange>& ranges, bool overflow,
                                      const std::string& why, double seconds);
  /// After a round: a trainer that missed too many in a row is taken out; one that delivered a probe
  /// is planned again.
  void follow_misses(const OpenRound& round, const msg::RoundClosed& closed);
  /// Before a round's accounting: contributions whose norm per sample no honest trainer's could have
  /// (against the fleet's median and the sender's own) are refused, their samples back to the pool.
  void bound_norms(OpenRound& round);
  /// Before a round's accounting: an fp16 overflow that one trainer alone reports round after round,
  /// while the others compute at the same loss scale, is refused as implausible (else one liar
  /// skips the whole fleet's step every round).
  void bound_overflows(OpenRound& round);
  /// After a round: a trainer with too many contributions refused as lies is excluded until an
  /// operator readmits it; the norms of what was combined join the references.
  void follow_lies(const OpenRound& round, const msg::RoundClosed& closed);
  /// Counts a lie of `trainer` (a contribution refused as one, or combined and then scored against
  /// the fleet) in `round`, and excludes it at robust.max_refusals within robust.refusal_window.
  void note_lie(const std::string& trainer, TrainerState& state, std::uint64_t round, const std::string& why);
  /// The aggregator's score of a combined contribution's direction (robust.min_direction).
  void score_direction(std::uint64_t round, const std::string& trainer, double cosine);
  nlohmann::json directions_json() const;
  /// fp16's fleet-wide loss scale after a round that overflowed or stepped.
  void update_loss_scale(const OpenRound& round, bool overflow, bool stepped);
  /// Why an accepted contribution's report cannot be true (times longer than the round has
  /// lasted, an overflow where no loss is scaled), or nothing when it may be.
  std::optional<std::string> implausible_report(const msg::ContributionReceived& received,
                                                double arrival_seconds) const;
  /// The epoch's end once its pool is empty: its totals are kept and its model is to be scored.
  std::optional<msg::Evaluate> end_epoch_if_done();
  void announce(msg::MemberChange change, const std::string& trainer, const std::string& reason);
  void resend_unanswered(Clock::time_point now);
  void send_evaluate(const msg::Evaluate& evaluate);
  void finish(const msg::Evaluated& evaluated);
  double deadline_seconds() const;
  double training_seconds() const;
  void count_drop(const std::string& reason);
  void publish_dropped();

  SchedulerOptions options_;
  std::string metric_;  // the task's headline metric: test_accuracy or test_perplexity
  BusClient bus_;
  ActorLoop loop_;
  std::function<void()> on_finished_;
  RunRecord record_;
  RunState state_;
  std::map<std::string, TrainerState> live_;
  SamplePool pool_;
  std::optional<OpenRound> open_;
  /// optimizer.overlap: the round planned behind open_, whose trainers go on computing while
  /// open_'s changes cross their links. It closes only after open_ (rounds combine in order), and
  /// never across an epoch's end.
  std::optional<OpenRound> next_;
  std::uint64_t overlapped_rounds_ = 0;                     // closed rounds that were planned behind another
  std::map<std::uint64_t, Unanswered> unanswered_;          // combines the aggregator has not confirmed
  std::map<std::uint64_t, PendingEvaluation> evaluations_;  // by epoch, not yet answered
  std::optional<Clock::time_point> enough_trainers_since_;
  bool started_ = false;
  bool planning_done_ = false;  // the last epoch's last round has closed
  bool finished_ = false;
  double slowest_last_round_seconds_ = 0.0;
  double deadline_backoff_seconds_ = 0.0;  // after a missed deadline, the next is at least this
  // Auto mode: whether the next round's model arrives whole (the last combine broadcast it so),
  // when a whole model was last broadcast, and the aggregator's time for recent rounds' combines.
  bool next_model_whole_ = false;
  std::optional<Clock::time_point> last_whole_model_;
  std::map<std::uint64_t, double> aggregator_seconds_;
  std::deque<double> fleet_norms_;  // per sample, of the fleet's recent combined contributions
  std::optional<Clock::time_point> first_round_;
  Clock::time_point epoch_started_;
  Clock::time_point started_at_;
  /// Means over the run of what the aggregator reported (combine, step, publish).
  std::map<std::string, double> combine_timing_sums_;
  std::uint64_t combines_answered_ = 0;
  /// Each trainer's direction scores from the aggregator (summary.json "directions").
  struct DirectionScores {
    std::uint64_t scored = 0;
    std::uint64_t below = 0;         // under robust.min_direction
    std::uint64_t uncorrelated = 0;  // judged noise: its last scores as close to 0 as random values'
    double sum = 0.0;
    double min = 1.0;
  };
  std::map<std::string, DirectionScores> direction_scores_;
  /// What a trainer that left or was lost had against it, restored when it registers again.
  struct DepartedRecord {
    std::deque<std::uint64_t> lies;
    std::deque<double> recent_directions;
  };
  std::map<std::string, DepartedRecord> departed_records_;
  double slowest_combine_seconds_ = 0.0;
  std::uint64_t model_broadcast_bytes_ = 0;  // every combined round's broadcast, as one trainer receives it
  std::uint64_t dropped_published_ = 0;      // refusals counted in the last RefusalCounts
  bool failover_timed_ = false;
  /// `filo failback`: asked (who, for the log), and the round whose close handed the run over (0:
  /// none); no round is planned after it unless the handover is abandoned.
  std::optional<std::string> failback_asked_;
  std::uint64_t failback_requests_ = 0;  // accepted so far: a timer knows whether its request is current
  std::string failback_outcome_;         // the last request's end where the scheduler gave it up
  /// Calibrations that came before their trainer's admission news, by trainer.
  struct EarlyCalibration {
    msg::Calibration calibration;
    Clock::time_point at;
  };
  std::map<std::string, EarlyCalibration> early_calibrations_;
  std::uint64_t handover_round_ = 0;
  bool trainers_told_of_handover_ = false;
  std::string pair_shape_;  // the peer's state and the handover's, as last published
  std::optional<Clock::time_point> pair_published_;
  bool gate_retry_armed_ = false;
  std::map<std::string, double> resumed_speeds_;  // a resumed run's measured speeds, until each calibrates
  std::size_t resumed_fleet_ = 0;                 // trainers the last round before a resume planned
};

}  // namespace filo
