#include "actors/scheduler.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <iomanip>
#include <numeric>
#include <sstream>

#include "actors/learning/task.hpp"
#include "actors/norm_bound.hpp"
#include "messages/event.hpp"

namespace filo {
namespace {
/// How soon a scheduler held back by its pair link (may_act) tries again.
constexpr Milliseconds kGateRetry{20};
constexpr Milliseconds kStartCheckInterval{50};
// A trainer's reported times must fit in the time its round has lasted, give or take clock rates
// and timer grain on two machines.
constexpr double kReportedTimeSlack = 1.05;
constexpr double kReportedTimeGrainSeconds = 0.05;
constexpr std::size_t kTransferWindow = 4;  // a capped link shows within 4 rounds
/// A trainer's first rounds carry one-off costs (first model load, cold caches); its transfer
/// counts once this many rounds are measured, so that no one is left out on its first round.
constexpr std::size_t kTransferRoundsBeforeCounting = 3;
/// Auto mode: a link's whole-model time is the least of its last four measures and its local
/// exchange the least of its last four rounds (scheduling jitter only adds: on this 2-core VM a
/// loopback link measured 0.4 ms and, now and then, 6 ms, and the mode flipped on those).
constexpr std::size_t kWholeModelWindow = 4;
constexpr std::size_t kLocalExchangeWindow = 4;
/// A whole-model time beyond this (an hour) is no link's: refused as a measure.
constexpr double kMaxWholeModelSeconds = 3600.0;
constexpr double kMinTrustedAdmissionSeconds = 0.25;
/// Whole-model measures under kMinTrustedAdmissionSeconds that auto mode needs to leave gradient mode.
constexpr std::size_t kWholeModelMeasuresToLeave = 2;
constexpr double kAdmissionSlackSeconds = 1.0;
/// Auto mode in local-sgd without any link measured: a whole model every this often.
constexpr double kUnmeasuredProbeSeconds = 10.0;
/// Auto mode in local-sgd: the whole model is broadcast now and then to measure what gradient mode
/// would cost, at most this share of the wall time (one broadcast's time over the time since the last).
constexpr double kWholeModelProbeShare = 0.05;
/// How often unanswered messages to the aggregator are looked at.
constexpr Milliseconds kResendCheckInterval{250};
/// How many times the fastest measured speed a trainer's unproven calibration may claim.
constexpr double kClaimTrust = 4.0;
/// How many times the speed its share was planned at a trainer's report of one round may show.
constexpr double kMaxSpeedGrowth = 2.0;
/// How often the counts of refused messages are published when they grew.
constexpr Milliseconds kDroppedEventInterval{1000};
/// A pair's active looks at its link this often, and publishes the pair's state at least this often.
constexpr Milliseconds kPairCheckInterval{100};
constexpr double kPairStatusSeconds = 1.0;
/// After telling its trainers that the run moved, a handing-over active gives way this much later.
constexpr Milliseconds kHandoverTellTime{50};
/// A failback asked, until its round closes: what the pair event says of it.
constexpr const char* kFailbackAsked = "asked: the run goes to the peer at the next round's close";
/// A failback hands over at a round's close: one asked where no round closes this long (no trainer
/// left, or the run's last evaluation under way) is abandoned, as a handover the peer never
/// acknowledged is.
constexpr double kFailbackRoundSeconds = 30.0;
/// A CombineRound unanswered this long (or this many times the slowest combine seen) is sent
/// again: a message lost between the coordinator's actors must not stall the run.
constexpr double kCombineResendSeconds = 1.0;
constexpr double kCombineResendFactor = 8.0;
/// An evaluation takes a pass over the test set; one unanswered this long is asked for again.
constexpr double kEvaluateResendSeconds = 120.0;
/// Labels a trainer sends for the records (device, precision) are cut to this length.
constexpr std::size_t kMaxLabelLength = 16;
/// A round closed by its deadline while live trainers still owed their share makes the next deadline
/// twice as long (up to this): whatever the links, some deadline is long enough, and a missed one
/// is never repeated as it was. Each round that every trainer delivers in halves it again.
constexpr double kMaxDeadlineSeconds = 600.0;
/// A trainer taken out for missing rounds is planned this often, with at most one micro-batch, to
/// see whether it delivers again.
constexpr std::uint64_t kTakenOutProbeRounds = 10;
/// Longest failure reason kept from a trainer (a LibTorch message with its backtrace is long).
constexpr std::size_t kMaxFailureReason = 400;
// An fp16 overflow that one trainer alone reports in this many rounds in a row is honoured (an
// unlucky batch, a scale not yet halved far enough); the next such is refused as implausible.
constexpr std::uint32_t kMaxLoneOverflows = 2;
constexpr std::size_t kFleetNormWindow = 16;  // the fleet's recent combined contributions
constexpr std::size_t kOwnNormWindow = 8;     // a trainer's own
/// A calibration that came before the registrar's news of its trainer's admission is held this
/// long for that news (the two take different ways through the hub); at most this many at once.
constexpr double kEarlyCalibrationSeconds = 5.0;
constexpr std::size_t kMaxEarlyCalibrations = 256;
/// Random values have no direction: their score (a cosine with the others' sum) is 0 ± 1/sqrt of
/// the model's parameters, 0.0058 for the built-in CNN, while honest scores spread over tenths
/// (README, Security: "Direction scores": single rounds from -0.67 to 0.9). A trainer whose last
/// kNoiseScores scores stay within kNoiseFactor times that spread, in root mean square, sent noise:
/// a lie in each such round, judged in kNoiseScores rounds where a mean under
/// robust.min_direction takes robust.direction_window. Only models as large as those measured are
/// judged so: the built-in CNN's 29,034 parameters give a bound of 0.0235, and a smaller model's
/// wider bound was never set against its honest scores.
constexpr std::size_t kNoiseScores = 6;
constexpr double kNoiseFactor = 4.0;
constexpr double kMaxNoiseBound = 0.025;
// The refusals that no honest trainer earns: what it sent or said cannot be true. (A wrong model
// version or a late contribution can be honest; those are misses, not lies.)
constexpr std::array<const char*, 5> kLies{"norm bound", "implausible report", "bad tensors", "bad numbers",
                                           "wrong sample count"};
/// The fp16 loss scale stays within these (GradScaler's defaults start at 2^16).
constexpr double kMinLossScale = 1.0;
constexpr double kMaxLossScale = 16777216.0;

/// Appends `range` to an epoch's trained positions, merging it with a neighbour where it continues
/// one: the list stays a handful of ranges, so checkpointing it every round stays cheap.
void add_trained(std::vector<msg::SampleRange>& trained, const msg::SampleRange& range) {
  for (auto& existing : trained) {
    if (existing.end == range.begin) {
      existing.end = range.end;
      return;
    }
    if (range.end == existing.begin) {
      existing.begin = range.begin;
      return;
    }
  }
  trained.push_back(range);
}

bool is_lie(const std::string& missed_reason) {
  return std::any_of(kLies.begin(), kLies.end(),
                     [&](const char* lie) { return missed_reason.rfind(lie, 0) == 0; });
}

/// How a run of `optimizer`'s mode starts exchanging (auto mode: gradient, until it has measured).
Exchange first_exchange(const msg::RunSpec& run, const OptimizerOptions& optimizer) {
  Exchange exchange;
  exchange.local = run.mode == "local-sgd";
  exchange.compressed = exchange.local && run.compression != "none";
  exchange.sync_steps = static_cast<std::uint64_t>(std::max<std::int64_t>(1, optimizer.sync_steps));
  return exchange;
}

void keep_last(std::deque<double>& values, double value, std::size_t window) {
  values.push_back(value);
  while (values.size() > window) values.pop_front();
}

std::uint64_t planned_samples(const std::vector<msg::SampleRange>& ranges) {
  std::uint64_t planned = 0;
  for (const auto& range : ranges) planned += range.size();
  return planned;
}
}  // namespace

Scheduler::Scheduler(const SocketFactory& sockets, const std::string& hub_endpoint, SchedulerOptions options,
                     const StopFlag& stop, std::function<void()> on_finished, const TimeSource& time)
    : options_(std::move(options)),
      metric_(headline_metric(parse_task(options_.run.task))),
      bus_(sockets, kSchedulerName),
      loop_(stop, time),
      on_finished_(std::move(on_finished)),
      record_(options_.run_dir,
              options_.resume ? std::optional<std::uint64_t>(options_.resume->round) : std::nullopt,
              options_.resume ? options_.resume->last_round_record : std::string()),
      state_(options_.resume.value_or(RunState{})),
      epoch_started_(loop_.now()),
      started_at_(loop_.now()) {
  bus_.count_refusals_in(options_.drops);
  bus_.connect(hub_endpoint);
  pool_.reset(options_.run.train_samples);
  if (options_.resume) pool_.assign(untrained_ranges(state_.trained, options_.run.train_samples));
  if (state_.loss_scale <= 0) state_.loss_scale = options_.train.loss_scale;
  if (options_.failover) state_.failovers.push_back(*options_.failover);
  if (options_.resume) resumed_speeds_ = state_.measured_speeds;
  if (options_.resume) {
    const auto last = nlohmann::json::parse(state_.last_round_record, nullptr, /*allow_exceptions=*/false);
    if (last.is_object() && last.contains("trainers") && last.at("trainers").is_array())
      resumed_fleet_ = last.at("trainers").size();
  }
  // A fixed mode is what the configuration says; auto mode resumes where it was.
  if (!auto_exchange() || state_.exchange.sync_steps == 0)
    state_.exchange = first_exchange(options_.run, options_.optimizer);
  loop_.on_readable(bus_.addressed(), [this] {
    while (auto incoming = bus_.receive(bus_.addressed())) dispatch(*this, *incoming, bus_);
  });
  loop_.every(kStartCheckInterval, [this] { maybe_start(loop_.now()); });
  loop_.every(kResendCheckInterval, [this] { resend_unanswered(loop_.now()); });
  loop_.every(kDroppedEventInterval, [this] { publish_dropped(); });
  if (options_.pair) loop_.every(kPairCheckInterval, [this] { follow_pair(); });
}

void Scheduler::run() {
  loop_.run();
}

void Scheduler::count_drop(const std::string& reason) {
  if (options_.drops) options_.drops->count(reason);
}

void Scheduler::publish_dropped() {
  // Everything this process refused so far (hub, ZAP handler, actors), by reason, whenever it grew:
  // what a monitor shows and a test asserts, without reading logs.
  if (!options_.drops) return;
  const std::uint64_t total = options_.drops->total();
  if (total == dropped_published_) return;
  dropped_published_ = total;
  msg::RefusalCounts counts;
  counts.by_reason = options_.drops->snapshot();
  counts.total = total;
  counts.text = std::to_string(total) + " messages refused so far";
  bus_.publish(kEventTopic, counts);
}

void Scheduler::announce(msg::MemberChange change, const std::string& trainer, const std::string& reason) {
  msg::MemberNews news;
  news.change = change;
  news.trainer = trainer;
  news.reason = reason;
  news.round = state_.round + 1;
  switch (change) {
    case msg::MemberChange::kLeftOut:
      news.text = trainer + " left out of the rounds: " + reason;
      break;
    case msg::MemberChange::kPlannedAgain:
      news.text = trainer + " is planned again" + (reason.empty() ? std::string() : ": " + reason);
      break;
    case msg::MemberChange::kFailed:
      news.text = trainer + " failed: " + reason;
      break;
    case msg::MemberChange::kTakenOut:
      news.text = trainer + " taken out of the plans: " + reason;
      break;
    case msg::MemberChange::kExcluded:
      news.text = trainer + " excluded from the plans: " + reason;
      break;
    case msg::MemberChange::kReadmitted:
      news.text = trainer + " readmitted " + reason;
      break;
    default:
      news.text = trainer + " " + msg::member_change_name(change) + ": " + reason;
  }
  const bool good_news =
      change == msg::MemberChange::kPlannedAgain || change == msg::MemberChange::kReadmitted;
  log(good_news ? LogLevel::kInfo : LogLevel::kWarn, bus_.name(), news.text);
  bus_.publish(kEventTopic, news);
}

void Scheduler::handle(const msg::MembershipChange& change, const Incoming&) {
  using Kind = msg::MembershipChangeKind;
  if (change.change == Kind::kJoined || change.change == Kind::kRejoined) {
    TrainerState state;  // planned once its calibration arrives
    state.joined = loop_.now();
    state.hostname = change.hostname;
    state.benchmark_gflops = change.cpu_gemm_gflops;
    // Leaving and joining again does not undo an exclusion; only an operator does.
    state.excluded =
        std::any_of(state_.exclusions.begin(), state_.exclusions.end(),
                    [&](const TrainerFailure& exclusion) { return exclusion.trainer == change.trainer; });
    // Nor does it wipe its record: lies and direction scores carry over, so that registering again
    // now and then never keeps a liar from being judged.
    const auto record = departed_records_.find(change.trainer);
    if (record != departed_records_.end()) {
      state.lies = std::move(record->second.lies);
      state.recent_directions = std::move(record->second.recent_directions);
      departed_records_.erase(record);
    }
    live_[change.trainer] = state;
    // A trainer that registered again has dropped whatever plan it had.
    for (OpenRound* round : open_rounds()) {
      if (round->planned.count(change.trainer) && !round->answered(change.trainer))
        round->refused[change.trainer] = "it registered again during the round";
    }
    const auto early = early_calibrations_.find(change.trainer);
    if (early != early_calibrations_.end()) {
      const EarlyCalibration held = early->second;
      early_calibrations_.erase(early);
      if (seconds_between(held.at, loop_.now()) <= kEarlyCalibrationSeconds)
        calibrate(change.trainer, held.calibration);
    }
  } else {
    const auto gone = live_.find(change.trainer);
    if (gone != live_.end()) {
      if (!gone->second.lies.empty() || !gone->second.recent_directions.empty()) {
        // Bounded: a key holds at most security.max_names_per_key names, and each name one record.
        departed_records_[change.trainer] = {gone->second.lies, gone->second.recent_directions};
      }
      live_.erase(gone);
    }
  }
  if (open_ && every_live_planned_trainer_answered()) close_round("every live trainer answered");
}

void Scheduler::handle(const msg::Calibration& calibration, const Incoming& from) {
  if (live_.count(from.from)) {
    calibrate(from.from, calibration);
    return;
  }
  // A trainer admitted again sends its standing calibration at once, and it can overtake the
  // registrar's news of that admission on the way here (faults-link-down, 2026-12-05: ignored,
  // the trainer was never planned again). Held a moment for the news; bounded, since names are.
  const Clock::time_point now = loop_.now();
  for (auto held = early_calibrations_.begin(); held != early_calibrations_.end();) {
    held = seconds_between(held->second.at, now) > kEarlyCalibrationSeconds ? early_calibrations_.erase(held)
                                                                            : std::next(held);
  }
  if (early_calibrations_.size() >= kMaxEarlyCalibrations && !early_calibrations_.count(from.from)) {
    log(LogLevel::kWarn, bus_.name(), "ignored calibration of ", from.from, ": not a live trainer");
    count_drop("calibration: not a live trainer");
    return;
  }
  early_calibrations_[from.from] = EarlyCalibration{calibration, now};
  log(LogLevel::kInfo, bus_.name(), "holding the calibration of ", from.from,
      " until the registrar says it is live");
}

void Scheduler::calibrate(const std::string& name, const msg::Calibration& calibration) {
  auto trainer = live_.find(name);
  if (!(calibration.samples_per_second > 0) || !std::isfinite(calibration.samples_per_second)) {
    log(LogLevel::kWarn, bus_.name(), "ignored calibration of ", name, ": speed ",
        calibration.samples_per_second, " is not a positive number");
    count_drop("calibration: speed not a positive number");
    return;
  }
  if (!trainer->second.failed.empty()) {
    // It recovered (say, from running out of memory at a smaller micro-batch) and measured itself again.
    trainer->second.failed.clear();
    announce(msg::MemberChange::kPlannedAgain, name, "calibrated again after its failure");
  }
  trainer->second.calibrated = true;
  // Back after a coordinator restart or failover: planned at the speed measured before it, not at
  // its calibration's claim (once; a later calibration follows a failure, and measures anew).
  const auto measured = resumed_speeds_.find(name);
  const bool resumed_speed = measured != resumed_speeds_.end() && measured->second > 0;
  trainer->second.speed = SpeedEstimate(resumed_speed ? measured->second : calibration.samples_per_second);
  if (measured != resumed_speeds_.end()) resumed_speeds_.erase(measured);
  trainer->second.max_micro_batch = calibration.max_micro_batch;
  trainer->second.device = calibration.device.substr(0, kMaxLabelLength);
  trainer->second.precision = calibration.precision.substr(0, kMaxLabelLength);
  // Its admission carried the model's archive: a first measure of its link, until a round waits for
  // a whole model. Shorter admissions than kMinTrustedAdmissionSeconds say little (the registrar's
  // own time, a busy machine): the run starts in gradient mode then and measures its first rounds.
  // The figure is the trainer's own, and it cannot have waited longer than it has been admitted
  // (plus the report's way): a liar can claim a slow link only by being slow to start.
  trainer->second.whole_model_seconds.clear();
  const double admitted_for = seconds_between(trainer->second.joined, loop_.now()) + kAdmissionSlackSeconds;
  if (calibration.admission_seconds >= kMinTrustedAdmissionSeconds &&
      calibration.admission_seconds < kMaxWholeModelSeconds)
    trainer->second.whole_model_seconds.push_back(std::min(calibration.admission_seconds, admitted_for));
  log(LogLevel::kInfo, bus_.name(), name, " calibrated: ", static_cast<int>(calibration.samples_per_second),
      " samples/s at micro-batch ", calibration.micro_batch,
      calibration.max_micro_batch
          ? ", at most " + std::to_string(calibration.max_micro_batch) + " per micro-batch"
          : std::string(),
      resumed_speed
          ? "; planned at " + std::to_string(static_cast<int>(trainer->second.speed.samples_per_second())) +
                " samples/s, as measured before the coordinator's restart"
          : std::string());
  if (started_ && !open_) plan_round();  // the cluster was idle, waiting for trainers
  maybe_start(loop_.now());
}

void Scheduler::handle(const msg::TrainerFailed& failed, const Incoming& from) {
  auto trainer = live_.find(from.from);
  const std::string reason = failed.reason.substr(0, kMaxFailureReason);
  state_.failures.push_back({from.from, failed.round, reason});
  if (trainer == live_.end()) {
    log(LogLevel::kWarn, bus_.name(), from.from, " reported a failure but is not live: ", reason);
    return;
  }
  trainer->second.failed = reason.empty() ? std::string("its computation failed") : reason;
  announce(msg::MemberChange::kFailed, from.from,
           reason + (failed.exiting ? " (its node exits)" : " (out of the plans until it calibrates again)"));
  for (OpenRound* round : open_rounds()) {
    if (round->planned.count(from.from) && !round->answered(from.from))
      round->refused[from.from] = "its computation failed: " + reason;
  }
  if (open_ && every_live_planned_trainer_answered()) close_round("every live trainer answered");
}

void Scheduler::handle(const msg::Readmit& readmit, const Incoming& from) {
  const auto excluded =
      std::find_if(state_.exclusions.begin(), state_.exclusions.end(),
                   [&](const TrainerFailure& exclusion) { return exclusion.trainer == readmit.trainer; });
  if (excluded == state_.exclusions.end()) {
    log(LogLevel::kWarn, bus_.name(), from.from, " asked to readmit ", readmit.trainer,
        ", which is not excluded");
    count_drop("readmit: not excluded");
    return;
  }
  state_.exclusions.erase(excluded);
  departed_records_.erase(readmit.trainer);
  auto trainer = live_.find(readmit.trainer);
  if (trainer != live_.end()) {
    trainer->second.excluded = false;
    trainer->second.lies.clear();
    trainer->second.recent_norms.clear();
    trainer->second.recent_directions.clear();
    trainer->second.consecutive_misses = 0;  // its lies were misses too: it starts afresh
    trainer->second.taken_out_since = 0;
  }
  announce(msg::MemberChange::kReadmitted, readmit.trainer, "by " + from.from);
  if (started_ && !open_) plan_round();
}

double Scheduler::TrainerState::whole_model_floor() const {
  return whole_model_seconds.empty()
             ? 0.0
             : *std::min_element(whole_model_seconds.begin(), whole_model_seconds.end());
}

double Scheduler::TrainerState::local_exchange_floor() const {
  return local_exchanges.empty() ? 0.0 : *std::min_element(local_exchanges.begin(), local_exchanges.end());
}

double Scheduler::TrainerState::transfer_seconds() const {
  if (recent_transfers.size() < kTransferRoundsBeforeCounting) return 0.0;
  return *std::min_element(recent_transfers.begin(), recent_transfers.end());
}

std::size_t Scheduler::calibrated_trainers() const {
  std::size_t count = 0;
  for (const auto& [trainer, state] : live_) count += state.plannable() ? 1 : 0;
  return count;
}

std::vector<Share> Scheduler::shares_for(std::uint64_t total, bool taken_out_too,
                                         const std::set<std::string>& except) {
  // A calibration is only a claim: until a trainer has delivered, its speed counts for at most
  // kClaimTrust times the fastest speed measured so far (at the start, the median claim), so
  // that a trainer claiming 1e12 samples/s is not handed every sample before it shows any.
  double reference = 0.0;
  std::vector<double> claims;
  for (const auto& [trainer, state] : live_) {
    if (!state.plannable()) continue;
    if (state.speed.measured())
      reference = std::max(reference, state.speed.samples_per_second());
    else
      claims.push_back(state.speed.samples_per_second());
  }
  if (reference == 0.0 && !claims.empty()) {
    const std::size_t lower_median = (claims.size() - 1) / 2;
    std::nth_element(claims.begin(), claims.begin() + static_cast<std::ptrdiff_t>(lower_median),
                     claims.end());
    reference = claims[lower_median];
  }
  std::vector<TrainerEstimate> estimates;
  for (auto& [trainer, state] : live_) {
    if (!state.plannable() || (state.taken_out_since > 0 && !taken_out_too) || except.count(trainer))
      continue;
    double transfer = state.transfer_seconds();
    const std::uint64_t probe_after = state.probe_after > 0 ? state.probe_after : kLeftOutProbeRounds;
    if (state.left_out_since > 0 && state_.round + 1 - state.left_out_since >= probe_after) {
      state.probing_from = transfer;
      transfer = 0.0;  // a probe: plan it once more and measure again
      state.left_out_since = state_.round + 1;
    }
    double speed = state.speed.samples_per_second();
    if (!state.speed.measured() && reference > 0.0) speed = std::min(speed, kClaimTrust * reference);
    state.planned_speed = speed;
    estimates.push_back({trainer, speed, transfer});
  }
  if (options_.schedule.split == "equal") {
    std::vector<Share> shares;
    const auto equal = equal_shares(total, estimates.size());
    for (std::size_t i = 0; i < estimates.size(); ++i) shares.push_back({estimates[i].trainer, equal[i], {}});
    return shares;
  }
  return proportional_shares(estimates, total, options_.schedule.max_transfer_ratio);
}

void Scheduler::maybe_start(Clock::time_point now) {
  if (started_) return;
  if (calibrated_trainers() < static_cast<std::size_t>(options_.schedule.min_trainers)) {
    enough_trainers_since_.reset();
    return;
  }
  if (!enough_trainers_since_) enough_trainers_since_ = now;
  // Resumed (a restart, or a pair's standby that took over): once as many trainers are back as the
  // last round planned, waiting for more only keeps the fleet idle.
  const bool fleet_back = resumed_fleet_ > 0 && calibrated_trainers() >= resumed_fleet_;
  if (!fleet_back && seconds_between(*enough_trainers_since_, now) < options_.schedule.start_grace_seconds)
    return;
  started_ = true;
  log(LogLevel::kInfo, bus_.name(), options_.resume ? "resuming" : "starting", " with ",
      calibrated_trainers(), " trainers (", options_.schedule.split, " shares): ", options_.run.train_samples,
      " samples per epoch, ", options_.schedule.epochs, " epochs; epoch ", state_.epoch, " has ",
      pool_.remaining(), " samples to train");
  if (options_.resume) {
    // Announced with the first round rather than at start-up, when monitors have reconnected.
    msg::CoordinatorResumed resumed;
    resumed.round = state_.round;
    resumed.epoch = state_.epoch;
    resumed.resumed_after_round = state_.round;
    resumed.coordinator_start = options_.incarnation;
    resumed.text = options_.failover
                       ? "the pair's other coordinator took over (start " +
                             std::to_string(options_.incarnation) + "): resumed after round " +
                             std::to_string(state_.round) + " from its replica; " + options_.failover->reason
                       : "coordinator restarted (start " + std::to_string(options_.incarnation) +
                             "): resumed after round " + std::to_string(state_.round) +
                             " from its checkpoint";
    bus_.publish(kEventTopic, resumed);
    // An epoch that ended just before the coordinator died was never scored. Checkpoints wait
    // while an evaluation is under way, so the restored model is that epoch's final one.
    if (state_.test_metric_per_epoch.size() < state_.samples_per_epoch.size()) {
      const std::uint64_t epoch = state_.samples_per_epoch.size();
      const bool last = epoch >= static_cast<std::uint64_t>(options_.schedule.epochs);
      planning_done_ = last;
      send_evaluate(msg::Evaluate{epoch, state_.model_version, last});
    }
  }
  first_round_ = now;
  epoch_started_ = now;
  last_whole_model_ = now;  // every trainer's admission carried the whole model
  plan_round();
}

double Scheduler::deadline_seconds() const {
  return std::max(options_.schedule.deadline_min_seconds,
                  options_.schedule.deadline_factor * slowest_last_round_seconds_);
}

double Scheduler::training_seconds() const {
  return state_.training_seconds + (first_round_ ? seconds_between(*first_round_, loop_.now()) : 0.0);
}

bool Scheduler::auto_exchange() const {
  return options_.run.mode == "auto" ||
         (options_.run.mode == "local-sgd" && options_.optimizer.sync_steps_auto);
}

double Scheduler::slowest_whole_model_seconds() const {
  double slowest = 0.0;
  for (const auto& [trainer, state] : live_) {
    if (state.plannable()) slowest = std::max(slowest, state.whole_model_floor());
  }
  return slowest;
}

void Scheduler::choose_exchange_now() {
  ExchangeRule rule;
  rule.fraction = options_.optimizer.communication_fraction;
  rule.gradient_round_samples = static_cast<std::uint64_t>(options_.schedule.round_samples);
  rule.micro_batch = static_cast<std::uint64_t>(options_.schedule.micro_batch);
  rule.sync_steps_auto = options_.optimizer.sync_steps_auto;
  rule.first_sync_steps =
      static_cast<std::uint64_t>(std::max<std::int64_t>(1, options_.optimizer.sync_steps));
  rule.compression = options_.run.compression != "none";
  rule.allow_gradient = options_.run.mode == "auto";
  std::vector<LinkMeasure> fleet;
  for (const auto& [trainer, state] : live_) {
    if (!state.plannable() || state.taken_out_since > 0 || state.left_out_since > 0) continue;
    LinkMeasure measure;
    measure.trainer = trainer;
    measure.samples_per_second = state.speed.samples_per_second();
    measure.whole_model_seconds = state.whole_model_floor();
    // One short measure is mostly the machine's noise (a busy core delays a trainer's start by
    // milliseconds: the fault suite's auto-links once left gradient mode on free links at 6.5 ms
    // against 1 ms after): gradient mode is left on two measures, or on one as long as a trusted
    // admission's, which is the link's.
    if (!state_.exchange.local && state.whole_model_seconds.size() < kWholeModelMeasuresToLeave &&
        measure.whole_model_seconds < kMinTrustedAdmissionSeconds)
      measure.whole_model_seconds = 0.0;
    measure.local_exchange_seconds = state.local_exchange_floor();
    fleet.push_back(std::move(measure));
  }
  const ExchangeChoice choice = choose_exchange(rule, state_.exchange, fleet);
  if (choice.exchange == state_.exchange && !state_.exchanges.empty()) return;
  const bool mode_changed = choice.exchange.local != state_.exchange.local;
  state_.exchange = choice.exchange;
  if (mode_changed) {
    // A round's transfer is the mode's own: gradient mode's whole models say nothing of local-sgd's
    // rounds, and the other way round.
    // So are norms and directions: a gradient sum and a parameter change are not measured against
    // each other.
    for (auto& [trainer, state] : live_) {
      state.recent_transfers.clear();
      state.local_exchanges.clear();
      state.recent_norms.clear();
      state.recent_directions.clear();
    }
    fleet_norms_.clear();
  }
  const std::string described = state_.exchange.describe(options_.run.compression);
  state_.exchanges.push_back({state_.round + 1, described, choice.reason});
  msg::ExchangeChosen chosen;
  chosen.round = state_.round + 1;
  chosen.mode = state_.exchange.mode();
  chosen.compression = state_.exchange.compressed ? options_.run.compression : "none";
  chosen.sync_steps = state_.exchange.local ? state_.exchange.sync_steps : 0;
  chosen.gradient_fraction = choice.gradient_fraction.value_or(-1.0);
  chosen.local_fraction = choice.local_fraction.value_or(-1.0);
  chosen.reason = choice.reason;
  chosen.text = "from round " + std::to_string(chosen.round) + ": " + described + " (" + choice.reason + ")";
  log(LogLevel::kInfo, bus_.name(), "exchange ", chosen.text);
  bus_.publish(kEventTopic, chosen);
}

void Scheduler::measure_link(const OpenRound& round, TrainerState& state,
                             const msg::ContributionReceived& report, double arrival_seconds) {
  if (round.waits_for_whole_model) {
    // From its plan's arrival to its start it waited for the whole model: that broadcast's time on
    // its link, less the aggregator's combine, step and publish, which the wait also held.
    const auto aggregator = aggregator_seconds_.find(round.round - 1);
    const double seconds =
        std::max(1e-4, report.model_wait_seconds -
                           (aggregator != aggregator_seconds_.end() ? aggregator->second : 0.0));
    keep_last(state.whole_model_seconds, seconds, kWholeModelWindow);
  } else if (round.exchange.local) {
    keep_last(state.local_exchanges, std::max(0.0, arrival_seconds - report.compute_seconds),
              kLocalExchangeWindow);
  }
}

bool Scheduler::may_act() {
  if (!options_.pair || options_.pair->may_act()) return true;
  // A coordinator pair's active that was frozen (SIGSTOP, a stalled machine) waits until it has
  // heard whether its peer took over meanwhile: acting first would make two actives for a round.
  if (!gate_retry_armed_) {
    gate_retry_armed_ = true;
    loop_.at(loop_.now() + kGateRetry, [this] {
      gate_retry_armed_ = false;
      if (open_ && !open_->closing_why.empty()) {
        close_round(open_->closing_why);
      } else if (started_ && !open_) {
        plan_round();
      }
    });
  }
  return false;
}

void Scheduler::plan_round() {
  plan_one_round();
  if (options_.optimizer.overlap && open_ && !next_) plan_one_round();
}

std::vector<Scheduler::OpenRound*> Scheduler::open_rounds() {
  std::vector<OpenRound*> rounds;
  if (open_) rounds.push_back(&*open_);
  if (next_) rounds.push_back(&*next_);
  return rounds;
}

void Scheduler::plan_one_round() {
  // optimizer.overlap plans one round behind the open one, from the same epoch's pool (an empty
  // pool ends the epoch only once no round is open). Not while the open one waits to close, nor
  // once a failback was asked: the handover hands the run over at a close, with nothing behind it.
  const bool overlapped = open_.has_value();
  if (overlapped && (!options_.optimizer.overlap || next_ || !open_->closing_why.empty() || failback_asked_))
    return;
  if (planning_done_ || handover_round_ || calibrated_trainers() == 0 || pool_.empty()) return;
  if (!may_act()) return;
  if (auto_exchange()) choose_exchange_now();
  const Exchange exchange = state_.exchange;
  std::uint64_t round_samples = static_cast<std::uint64_t>(options_.schedule.round_samples);
  if (auto_exchange() && exchange.local) {
    round_samples = exchange.sync_steps * static_cast<std::uint64_t>(options_.schedule.micro_batch) *
                    calibrated_trainers();
  } else if (!auto_exchange() && options_.round_samples_per_trainer > 0) {
    round_samples = options_.round_samples_per_trainer * calibrated_trainers();
  }
  std::vector<msg::SampleRange> taken = pool_.take(round_samples);
  std::uint64_t total = 0;
  for (const auto& range : taken) total += range.size();
  if (total == 0) return;

  OpenRound round;
  round.round = (overlapped ? open_->round : state_.round) + 1;
  round.overlapped = overlapped;
  round.epoch = state_.epoch;
  round.model_version = state_.model_version;
  round.exchange = exchange;
  round.waits_for_whole_model = next_model_whole_;
  msg::RoundOpened opened;
  opened.mode = exchange.mode();
  opened.compressed = exchange.compressed;
  opened.round = round.round;
  opened.epoch = round.epoch;
  opened.model_version = round.model_version;
  opened.incarnation = options_.incarnation;
  SamplePool round_pool;
  round_pool.give_back(taken);

  // Trainers taken out for missing rounds get one micro-batch now and then, carved out of the
  // round before the others share the rest: delivering it proves them alive. While every plannable
  // trainer is taken out, all of them are planned as usual: a run never stops for want of trainers.
  std::set<std::string> probes;
  std::size_t planned_normally = 0;
  for (const auto& [trainer, state] : live_) {
    if (!state.plannable()) continue;
    if (state.taken_out_since == 0) {
      ++planned_normally;
    } else if ((round.round - state.taken_out_since) % kTakenOutProbeRounds == 0) {
      probes.insert(trainer);
    }
  }
  if (planned_normally == 0) {
    for (auto& [trainer, state] : live_) {
      if (state.plannable() && state.taken_out_since > 0) probes.insert(trainer);
    }
  }
  std::vector<Share> shares;
  if (planned_normally > 0) {
    const std::uint64_t probe_samples = std::min<std::uint64_t>(
        static_cast<std::uint64_t>(options_.schedule.micro_batch), total / (probes.size() + 1));
    std::uint64_t rest = total;
    for (const auto& trainer : probes) {
      shares.push_back({trainer, probe_samples, {}});
      rest -= probe_samples;
    }
    for (auto& share : shares_for(rest, /*taken_out_too=*/false, probes)) shares.push_back(std::move(share));
  } else {
    shares = shares_for(total, /*taken_out_too=*/true, {});
  }
  round.probes = probes;

  std::vector<std::pair<std::string, msg::RoundPlan>> plans;
  double expected_seconds = 0.0;  // the slowest planned share at its trainer's measured speed
  for (const Share& share : shares) {
    TrainerState& state = live_.at(share.trainer);
    const bool left_out = !share.left_out.empty();
    // A probe plans a left-out trainer for one round without taking it back: it is planned again
    // only once its measured link passes the rule.
    const bool probe = state.probing_from.has_value();
    if (probe)
      log(LogLevel::kInfo, bus_.name(), "probing ", share.trainer, "'s link with ", share.samples,
          " samples");
    if (!probe && left_out != (state.left_out_since > 0)) {  // announced on entering and on leaving only
      state.left_out_since = left_out ? round.round : 0;
      state.probe_after = 0;
      announce(left_out ? msg::MemberChange::kLeftOut : msg::MemberChange::kPlannedAgain, share.trainer,
               left_out ? share.left_out : "its link passes the transfer rule");
    }
    if (left_out || share.samples == 0) continue;
    // Its link both ways (the model down, its contribution up), as measured from its first round:
    // the transfer rule waits for a few rounds before it counts, a deadline must not.
    const double speed = state.speed.samples_per_second();
    const double transfer = state.recent_transfers.empty() ? 0.0
                                                           : *std::max_element(state.recent_transfers.begin(),
                                                                               state.recent_transfers.end());
    if (speed > 0) expected_seconds = std::max(expected_seconds, transfer + share.samples / speed);
    const MicroBatchPlan micro = micro_batches_for(
        share.samples, static_cast<std::uint64_t>(options_.schedule.micro_batch), state.max_micro_batch);
    msg::RoundPlan plan;
    plan.round = round.round;
    plan.epoch = round.epoch;
    plan.model_version = round.model_version;
    plan.ranges = round_pool.take(share.samples);
    plan.micro_batch = micro.micro_batch;
    plan.accumulation_steps = micro.accumulation_steps;
    plan.incarnation = options_.incarnation;
    plan.loss_scale = state_.loss_scale;
    plan.mode = opened.mode;
    plan.compressed = opened.compressed;
    plan.overlapped = overlapped;
    opened.planned_samples[share.trainer] = share.samples;
    round.planned[share.trainer] = plan.ranges;
    plans.emplace_back(share.trainer, std::move(plan));
  }
  // Whatever no share took (every trainer left out) is planned again next round.
  pool_.give_back(round_pool.take(round_pool.remaining()));
  if (plans.empty()) return;
  // A whole model on its way (auto mode's gradient rounds and probes) takes what it took before.
  if (auto_exchange() && round.waits_for_whole_model) expected_seconds += slowest_whole_model_seconds();
  // A share the last round's times do not cover (the first round, a round after one that missed
  // its deadline, a larger share) gets a deadline from its own expected time; else a trainer
  // slower than deadline_min_seconds per share could miss every deadline.
  round.deadline_seconds = std::min(
      kMaxDeadlineSeconds, std::max({deadline_seconds(), options_.schedule.deadline_factor * expected_seconds,
                                     deadline_backoff_seconds_}));
  for (auto& [trainer, plan] : plans) plan.deadline_seconds = round.deadline_seconds;
  const Stamp stamp{round.round, round.model_version};
  // The aggregator learns of the round before any trainer can answer it (the hub keeps the order).
  if (!bus_.send(kAggregatorName, opened, stamp)) {
    log(LogLevel::kError, bus_.name(), "round ", round.round,
        " could not be announced to the aggregator; its "
        "contributions will be refused and its samples planned again");
  }
  for (const auto& [trainer, plan] : plans) bus_.send(trainer, plan, stamp);
  round.opened = loop_.now();
  if (overlapped) {
    next_ = std::move(round);  // its deadline runs once the round before it has closed
    return;
  }
  arm_deadline(round);
  open_ = std::move(round);
}

void Scheduler::arm_deadline(OpenRound& round) {
  round.front_since = loop_.now();
  const std::uint64_t number = round.round;
  round.deadline_timer =
      loop_.at(round.front_since + to_clock_duration(std::chrono::duration<double>(round.deadline_seconds)),
               [this, number] {
                 if (open_ && open_->round == number) close_round("deadline passed");
               });
}

void Scheduler::promote_next() {
  if (open_ || !next_) return;
  open_ = std::move(next_);
  next_.reset();
  // A trainer that did not answer the round before (it missed it, or was lost) is free from now:
  // its plan for that round is dropped as superseded by the next plan it receives.
  for (const auto& [trainer, ranges] : open_->planned) open_->free_at.try_emplace(trainer, loop_.now());
  // Planned with the deadline of its time: a miss since then lengthens this one too, rather than
  // have it repeat the deadline that was just missed.
  open_->deadline_seconds = std::max(open_->deadline_seconds, deadline_backoff_seconds_);
  arm_deadline(*open_);
}

void Scheduler::handle(const msg::ContributionReceived& received, const Incoming&) {
  OpenRound* round = nullptr;
  for (OpenRound* open : open_rounds())
    if (open->round == received.round) round = open;
  if (!round) {
    log(LogLevel::kDebug, bus_.name(), "ignored the aggregator's report of ", received.trainer, " for round ",
        received.round, ": that round is closed");
    count_drop("contribution: arrived after its round closed");
    return;
  }
  if (!round->planned.count(received.trainer) || round->answered(received.trainer)) {
    log(LogLevel::kWarn, bus_.name(), received.trainer, " reported for round ", received.round,
        ": not planned, or reported before");
    return;
  }
  const Clock::time_point now = loop_.now();
  // Its work began no earlier than its plan went out: honest times add up to less than that.
  std::optional<std::string> implausible;
  if (received.accepted) implausible = implausible_report(received, seconds_between(round->opened, now));
  // Its arrival counts from when it could start: behind another round (overlap), once it answered
  // that one, so that what it shows beyond its compute is the transfer its compute did not hide.
  const auto free = round->free_at.find(received.trainer);
  const double arrival_seconds = seconds_between(
      free != round->free_at.end() ? std::max(free->second, round->opened) : round->opened, now);
  if (implausible) {
    // A trainer's own numbers steer the next plans and deadlines: one that claims what cannot
    // have happened is refused like a malformed contribution, its samples back to the pool.
    count_drop("contribution: implausible report");
    round->refused[received.trainer] = "implausible report: " + *implausible;
    log(LogLevel::kWarn, bus_.name(), received.trainer, "'s contribution to round ", received.round,
        " was refused: implausible report: ", *implausible);
  } else if (received.accepted) {
    round->arrived[received.trainer] = Arrival{received, arrival_seconds};
  } else {
    round->refused[received.trainer] = received.reason;
    log(LogLevel::kWarn, bus_.name(), received.trainer, "'s contribution to round ", received.round,
        " was refused: ", received.reason);
  }
  if (round == &*open_ && next_) next_->free_at[received.trainer] = now;
  if (open_ && every_live_planned_trainer_answered()) close_round("every live trainer answered");
}

std::optional<std::string> Scheduler::implausible_report(const msg::ContributionReceived& received,
                                                         double arrival_seconds) const {
  // The plan left after the round opened and the contribution arrived before now: no honest
  // trainer's times add up to more than the round has lasted (a little slack for clock grain).
  const double reported = received.compute_seconds + received.model_wait_seconds + received.staging_seconds;
  if (!(reported <= arrival_seconds * kReportedTimeSlack + kReportedTimeGrainSeconds)) {
    std::ostringstream why;
    why << "reports " << std::setprecision(4) << reported << " s of work in a round that had lasted "
        << arrival_seconds << " s";
    return why.str();
  }
  // Only fp16 scales its loss, so only an fp16 trainer's gradients can overflow: a report of an
  // overflow in a run set to fp32 or bf16 would skip the whole fleet's step for nothing.
  if (received.overflow && (options_.run.precision == "fp32" || options_.run.precision == "bf16")) {
    return "an fp16 overflow in a run whose precision is " + options_.run.precision;
  }
  return std::nullopt;
}

bool Scheduler::every_live_planned_trainer_answered() const {
  for (const auto& [trainer, ranges] : open_->planned) {
    if (live_.count(trainer) && !open_->answered(trainer)) return false;
  }
  return true;
}

msg::TrainerInRound Scheduler::account_trainer(const OpenRound& round, const std::string& trainer,
                                               const std::vector<msg::SampleRange>& ranges, bool overflow,
                                               const std::string& why, double seconds) {
  msg::TrainerInRound line;
  line.name = trainer;
  line.planned = planned_samples(ranges);
  const auto arrived = round.arrived.find(trainer);
  line.delivered = arrived != round.arrived.end() && !overflow;
  auto live = live_.find(trainer);
  TrainerTotals& totals = state_.totals[trainer];
  if (line.delivered) {
    const msg::ContributionReceived& report = arrived->second.report;
    line.samples = report.samples;
    line.compute_seconds = report.compute_seconds;
    line.model_wait_seconds = report.model_wait_seconds;
    line.staging_seconds = report.staging_seconds;
    line.tensor_bytes = report.tensor_bytes;
    line.norm_per_sample = report.samples ? report.norm / static_cast<double>(report.samples) : 0.0;
    line.arrival_seconds = arrived->second.arrival_seconds;
    line.idle_seconds = std::max(0.0, seconds - line.arrival_seconds);  // waiting for the slowest
    line.samples_per_second = report.compute_seconds > 0 ? report.samples / report.compute_seconds : 0.0;
    line.ranges = ranges;
    for (const auto& range : ranges) add_trained(state_.trained, range);
    totals.samples += report.samples;
    totals.compute_seconds += report.compute_seconds;
    ++totals.rounds_delivered;
    if (live != live_.end() && report.compute_seconds > 0) {
      TrainerState& state = live->second;
      // Its speed comes from its own report: one round may show at most kMaxSpeedGrowth times the
      // speed it was planned at, so a trainer claiming next to no compute time (honest or not) is
      // handed twice its share, not the whole round, and must deliver that in time to grow again.
      double seconds = report.compute_seconds;
      if (state.planned_speed > 0)
        seconds =
            std::max(seconds, static_cast<double>(report.samples) / (kMaxSpeedGrowth * state.planned_speed));
      state.speed.observe(report.samples, seconds);
      if (auto_exchange()) measure_link(round, state, report, line.arrival_seconds);
      const double transfer = std::max(0.0, line.arrival_seconds - report.compute_seconds);
      state.recent_transfers.push_back(transfer);
      if (state.recent_transfers.size() > kTransferWindow) state.recent_transfers.pop_front();
      if (state.probing_from) state.probe_after = rounds_before_next_probe(*state.probing_from, transfer);
    }
  } else {
    if (live != live_.end() && live->second.probing_from) {
      live->second.probe_after = rounds_before_next_probe(*live->second.probing_from, -1.0);
    }
    pool_.give_back(ranges);
    ++totals.rounds_missed;
    const auto refused = round.refused.find(trainer);
    line.missed_reason = "no contribution by the close (" + why + ")";
    if (overflow) {
      line.missed_reason = "fp16 gradients overflowed in the fleet: step skipped";
    } else if (refused != round.refused.end()) {
      line.missed_reason = refused->second;
    } else if (live == live_.end()) {
      line.missed_reason = "lost";
    }
    log(LogLevel::kWarn, bus_.name(), trainer, " missed round ", round.round, " (", line.missed_reason,
        "): ", line.planned, " samples return to the pool");
  }
  if (live != live_.end()) {
    TrainerState& state = live->second;
    if (arrived != round.arrived.end()) {
      const auto& report = arrived->second.report;
      if (!report.precision.empty()) state.precision = report.precision;
      state.peak_memory_bytes = report.peak_memory_bytes;
    }
    line.benchmark_gflops = state.benchmark_gflops;
    line.device = state.device;
    line.precision = state.precision;
    line.peak_memory_bytes = state.peak_memory_bytes;
    state.probing_from.reset();
  }
  return line;
}

void Scheduler::follow_misses(const OpenRound& round, const msg::RoundClosed& closed) {
  const auto limit =
      static_cast<std::uint32_t>(std::max<std::int64_t>(0, options_.schedule.max_missed_rounds));
  for (const auto& line : closed.trainers) {
    auto live = live_.find(line.name);
    if (live == live_.end()) continue;
    TrainerState& state = live->second;
    // A skipped fp16 step is no trainer's miss; nor is the share of a failure already announced.
    const bool skipped_step = !line.delivered && round.arrived.count(line.name) > 0;
    const bool missed = !line.delivered && !skipped_step && state.failed.empty();
    if (!missed) {
      state.consecutive_misses = 0;
      if (state.taken_out_since > 0 && round.probes.count(line.name)) {
        state.taken_out_since = 0;
        announce(msg::MemberChange::kPlannedAgain, line.name, "it delivered a probe: alive again");
      }
      continue;
    }
    ++state.consecutive_misses;
    if (limit > 0 && state.consecutive_misses >= limit && state.taken_out_since == 0) {
      state.taken_out_since = round.round;
      announce(msg::MemberChange::kTakenOut, line.name,
               "missed " + std::to_string(state.consecutive_misses) + " rounds in a row (last: " +
                   line.missed_reason + "); planned again once it delivers a probe");
    }
  }
}

void Scheduler::bound_norms(OpenRound& round) {
  if (options_.robust.bound == "off") return;
  std::vector<NormCandidate> candidates;
  for (const auto& [trainer, arrival] : round.arrived) {
    const auto& report = arrival.report;
    if (report.overflow || report.samples == 0) continue;
    const auto samples = static_cast<double>(report.samples);
    NormCandidate candidate{trainer, report.norm / samples, samples, {}};
    const auto live = live_.find(trainer);
    if (live != live_.end()) candidate.own_recent = live->second.recent_norms;
    candidate.residual_filling = round.exchange.compressed && candidate.own_recent.size() < kMinNormsForBound;
    candidates.push_back(std::move(candidate));
  }
  const NormVerdict verdict = judge_norms(candidates, fleet_norms_, options_.robust.norm_factor);
  if (!verdict.withheld.empty())
    log(LogLevel::kWarn, bus_.name(), "round ", round.round, ": ", verdict.withheld);
  for (const auto& [trainer, why] : verdict.refusals) {
    count_drop("contribution: norm bound");
    round.refused[trainer] = "norm bound: " + why;
    round.arrived.erase(trainer);
    log(LogLevel::kWarn, bus_.name(), trainer, "'s contribution to round ", round.round,
        " was refused: norm bound: ", why);
  }
}

void Scheduler::bound_overflows(OpenRound& round) {
  std::vector<std::string> reporters;
  for (const auto& [trainer, arrival] : round.arrived)
    if (arrival.report.overflow) reporters.push_back(trainer);
  // Alone: the others computed the same model at the same loss scale and did not overflow.
  const bool alone = reporters.size() == 1 && round.arrived.size() > 1;
  for (auto& [trainer, state] : live_) {
    const bool reported = std::find(reporters.begin(), reporters.end(), trainer) != reporters.end();
    if (!reported || !alone) {
      if (round.arrived.count(trainer)) state.lone_overflows = 0;
      continue;
    }
    if (++state.lone_overflows <= kMaxLoneOverflows) continue;
    const std::string why = "implausible report: an fp16 overflow in " +
                            std::to_string(state.lone_overflows) +
                            " rounds in a row where no other trainer's overflowed at the same loss scale";
    count_drop("contribution: implausible report");
    round.refused[trainer] = why;
    round.arrived.erase(trainer);
    log(LogLevel::kWarn, bus_.name(), trainer, "'s contribution to round ", round.round,
        " was refused: ", why);
  }
}

void Scheduler::follow_lies(const OpenRound& round, const msg::RoundClosed& closed) {
  for (const auto& line : closed.trainers) {
    auto live = live_.find(line.name);
    if (live == live_.end()) continue;
    TrainerState& state = live->second;
    if (line.delivered && line.norm_per_sample > 0 && std::isfinite(line.norm_per_sample)) {
      fleet_norms_.push_back(line.norm_per_sample);
      if (fleet_norms_.size() > kFleetNormWindow) fleet_norms_.pop_front();
      state.recent_norms.push_back(line.norm_per_sample);
      if (state.recent_norms.size() > kOwnNormWindow) state.recent_norms.pop_front();
    }
    if (line.delivered || !is_lie(line.missed_reason)) continue;
    note_lie(line.name, state, round.round, line.missed_reason);
  }
}

void Scheduler::note_lie(const std::string& trainer, TrainerState& state, std::uint64_t round,
                         const std::string& why) {
  const auto limit = static_cast<std::size_t>(std::max<std::int64_t>(0, options_.robust.max_refusals));
  const auto window = static_cast<std::uint64_t>(std::max<std::int64_t>(1, options_.robust.refusal_window));
  state.lies.push_back(round);
  while (!state.lies.empty() && state.lies.front() + window <= round) state.lies.pop_front();
  if (limit == 0 || state.lies.size() < limit || state.excluded) return;
  // Exclusion, like the bound, stands on an honest majority: it never takes out half of the
  // live fleet, which would stall the run on a reference gone wrong.
  const auto excluded_live = static_cast<std::size_t>(
      std::count_if(live_.begin(), live_.end(), [](const auto& entry) { return entry.second.excluded; }));
  if (2 * (excluded_live + 1) >= live_.size()) {
    log(LogLevel::kWarn, bus_.name(), trainer, " has ", state.lies.size(),
        " contributions refused or scored as lies, but excluding it would take out half of the live fleet or "
        "more");
    return;
  }
  state.excluded = true;
  const std::string reason = std::to_string(state.lies.size()) +
                             " contributions refused or scored as lies in " + std::to_string(window) +
                             " rounds (last: " + why +
                             "); out of the plans until an operator runs filo readmit";
  state_.exclusions.push_back({trainer, round, reason});
  announce(msg::MemberChange::kExcluded, trainer, reason);
}

nlohmann::json Scheduler::directions_json() const {
  nlohmann::json directions = nlohmann::json::object();
  for (const auto& [trainer, scores] : direction_scores_) {
    directions[trainer] = {{"scored", scores.scored},
                           {"below_min_direction", scores.below},
                           {"uncorrelated", scores.uncorrelated},
                           {"mean", scores.scored ? scores.sum / static_cast<double>(scores.scored) : 0.0},
                           {"min", scores.min}};
  }
  return directions;
}

void Scheduler::score_direction(std::uint64_t round, const std::string& trainer, double cosine) {
  if (!std::isfinite(cosine)) return;
  DirectionScores& scores = direction_scores_[trainer];
  ++scores.scored;
  scores.sum += cosine;
  scores.min = std::min(scores.min, cosine);
  const auto live = live_.find(trainer);
  if (live == live_.end()) return;
  // One round's cosine is noisy: a few dozen samples' gradient is mostly noise once a model has
  // learnt. In a 3-epoch run of 3 CNN trainers (README, Security: "Direction scores") honest single
  // rounds fell to -0.67 and honest means of 16 to -0.07; means of 64 stayed above 0.032.
  std::deque<double>& recent = live->second.recent_directions;
  const auto window = static_cast<std::size_t>(std::max<std::int64_t>(1, options_.robust.direction_window));
  keep_last(recent, cosine, std::max(window, kNoiseScores));
  if (const auto noise = noise_verdict(recent)) {
    ++scores.uncorrelated;
    log(LogLevel::kWarn, bus_.name(), trainer, "'s contribution to round ", round,
        " scored as a lie: ", *noise);
    note_lie(trainer, live->second, round, *noise);
    return;
  }
  if (recent.size() < window) return;
  const auto last = recent.end() - static_cast<std::ptrdiff_t>(window);
  const double mean = std::accumulate(last, recent.end(), 0.0) / static_cast<double>(window);
  if (mean >= options_.robust.min_direction) return;
  ++scores.below;
  std::ostringstream why;
  why << "direction: the mean cosine of its last " << window << " contributions with the others', "
      << std::setprecision(3) << mean << ", is under robust.min_direction " << options_.robust.min_direction;
  log(LogLevel::kWarn, bus_.name(), trainer, "'s contribution to round ", round,
      " scored as a lie: ", why.str());
  note_lie(trainer, live->second, round, why.str());
}

std::optional<std::string> Scheduler::noise_verdict(const std::deque<double>& recent) const {
  if (options_.model_parameters <= 0 || recent.size() < kNoiseScores) return std::nullopt;
  const double spread = 1.0 / std::sqrt(static_cast<double>(options_.model_parameters));
  if (kNoiseFactor * spread > kMaxNoiseBound) return std::nullopt;
  double squares = 0.0;
  for (auto score = recent.end() - static_cast<std::ptrdiff_t>(kNoiseScores); score != recent.end(); ++score)
    squares += *score * *score;
  const double spread_seen = std::sqrt(squares / static_cast<double>(kNoiseScores));
  if (!(spread_seen <= kNoiseFactor * spread)) return std::nullopt;
  std::ostringstream why;
  why << "direction: its last " << kNoiseScores << " contributions are uncorrelated with the others' (scores "
      << std::setprecision(2) << spread_seen << " from 0 in root mean square, within " << kNoiseFactor
      << "x the " << spread << " of random values of the model's " << options_.model_parameters
      << " parameters): noise, not gradients";
  return why.str();
}

void Scheduler::update_loss_scale(const OpenRound& round, bool overflow, bool stepped) {
  if (overflow) {
    state_.loss_scale = std::max(kMinLossScale, state_.loss_scale / 2);
    state_.good_steps = 0;
    msg::LossScaleOverflow skipped;
    skipped.round = round.round;
    skipped.epoch = round.epoch;
    skipped.loss_scale = state_.loss_scale;
    skipped.text = "round " + std::to_string(round.round) +
                   ": fp16 overflow, step skipped for every trainer; loss scale halved to " +
                   std::to_string(state_.loss_scale);
    log(LogLevel::kWarn, bus_.name(), skipped.text);
    bus_.publish(kEventTopic, skipped);
  } else if (stepped &&
             ++state_.good_steps >= static_cast<std::uint64_t>(options_.train.loss_scale_growth_interval)) {
    state_.loss_scale = std::min(kMaxLossScale, state_.loss_scale * 2);
    state_.good_steps = 0;
  }
}

std::optional<msg::Evaluate> Scheduler::end_epoch_if_done() {
  // The epoch is over once its pool is empty and no round of it is open: every position was
  // counted (with optimizer.overlap, the round behind the one that just closed has yet to be).
  if (!pool_.empty() || next_) return std::nullopt;
  state_.samples_per_epoch.push_back(state_.epoch_samples);
  state_.train_loss_per_epoch.push_back(
      state_.epoch_samples ? state_.epoch_loss_sum / static_cast<double>(state_.epoch_samples) : 0.0);
  state_.epoch_end_seconds.push_back(training_seconds());
  const bool last = state_.epoch >= static_cast<std::uint64_t>(options_.schedule.epochs);
  const msg::Evaluate evaluate{state_.epoch, state_.model_version, last};
  if (last) {
    planning_done_ = true;
  } else {
    ++state_.epoch;
    state_.trained.clear();
    state_.epoch_samples = 0;
    state_.epoch_loss_sum = 0.0;
    state_.epoch_correct = 0;
    pool_.reset(options_.run.train_samples);
  }
  return evaluate;
}

void Scheduler::close_round(const std::string& why) {
  if (!may_act()) {
    open_->closing_why = why;  // closed once it may act
    return;
  }
  OpenRound round = std::move(*open_);
  open_.reset();
  loop_.cancel(round.deadline_timer);
  time_failover(round.round);
  if (round.overlapped) ++overlapped_rounds_;
  const double seconds = seconds_between(round.front_since, loop_.now());
  bound_norms(round);
  bound_overflows(round);
  ClosedRound closed = settle(round, why, seconds);
  adapt_deadline(round, closed.event, why);
  follow_misses(round, closed.event);
  follow_lies(round, closed.event);
  update_loss_scale(round, closed.overflow, !closed.combine.trainers.empty());
  advance_state(round, closed);
  choose_next_model(round, closed.combine);
  complete_record(round, closed, seconds);
  const nlohmann::json record = msg::round_record_json(closed.event);
  const bool evaluation_under_way = !evaluations_.empty();
  const std::optional<msg::Evaluate> evaluate = end_epoch_if_done();
  choose_checkpoint(round, closed.combine, record, evaluation_under_way, evaluate.has_value());

  // The aggregator first: it combines while the next round is planned and the record written.
  const msg::CombineRound& combine = closed.combine;
  if (!bus_.send(kAggregatorName, combine, Stamp{round.round, state_.model_version})) {
    log(LogLevel::kError, bus_.name(), "CombineRound ", round.round,
        " was not taken by the bus; sending it again soon");
  }
  unanswered_[round.round] = Unanswered{combine, loop_.now()};
  if (evaluate) send_evaluate(*evaluate);
  promote_next();
  plan_round();

  record_.append_round(record);
  bus_.publish(kEventTopic, closed.event);
  if (evaluate) epoch_started_ = loop_.now();
  // The round that was behind this one may have heard from every trainer already.
  if (open_ && open_->closing_why.empty() && every_live_planned_trainer_answered())
    close_round("every live trainer answered");
}

void Scheduler::time_failover(std::uint64_t round) {
  if (!options_.failover || failover_timed_ || state_.failovers.empty()) return;
  failover_timed_ = true;
  state_.failovers.back().to_first_round_seconds = seconds_between(options_.failover_decided, Clock::now());
  log(LogLevel::kInfo, bus_.name(), "round ", round, " is the first this coordinator closes, ",
      state_.failovers.back().to_first_round_seconds, " s after it decided to take over");
}

Scheduler::ClosedRound Scheduler::settle(const OpenRound& round, const std::string& why, double seconds) {
  ClosedRound closed;
  // fp16: one overflow anywhere skips the round's step for everyone (every replica stays equal), and
  // its samples go back to the pool to be trained again at half the loss scale.
  closed.overflow = std::any_of(round.arrived.begin(), round.arrived.end(),
                                [](const auto& arrival) { return arrival.second.report.overflow; });
  closed.event.round = round.round;
  closed.event.epoch = round.epoch;
  closed.event.seconds = seconds;
  closed.event.closed_because = why;
  closed.event.deadline_seconds = round.deadline_seconds;
  closed.combine.round = round.round;
  closed.combine.epoch = round.epoch;
  double slowest = 0.0;
  for (const auto& [trainer, ranges] : round.planned) {
    msg::TrainerInRound line = account_trainer(round, trainer, ranges, closed.overflow, why, seconds);
    if (line.delivered) {
      const auto& report = round.arrived.at(trainer).report;
      closed.combine.trainers.push_back(trainer);
      closed.event.samples += report.samples;
      closed.loss_sum += report.loss_sum;
      state_.epoch_correct += report.correct;
      slowest = std::max(slowest, report.compute_seconds);
      closed.idle_sum += line.idle_seconds;
    }
    closed.event.trainers.push_back(std::move(line));
  }
  if (slowest > 0) slowest_last_round_seconds_ = slowest;
  return closed;
}

void Scheduler::adapt_deadline(const OpenRound& round, const msg::RoundClosed& closed,
                               const std::string& why) {
  const bool live_trainer_missed =
      std::any_of(closed.trainers.begin(), closed.trainers.end(), [&](const auto& line) {
        const auto live = live_.find(line.name);
        return !line.delivered && live != live_.end() && live->second.failed.empty() &&
               !round.refused.count(line.name);
      });
  if (why == "deadline passed" && live_trainer_missed) {
    deadline_backoff_seconds_ = std::min(kMaxDeadlineSeconds, 2 * round.deadline_seconds);
    log(LogLevel::kWarn, bus_.name(), "round ", round.round, " missed its deadline of ",
        round.deadline_seconds, " s: the next one waits up to ", deadline_backoff_seconds_, " s");
  } else if (!live_trainer_missed) {
    deadline_backoff_seconds_ /= 2;
  }
}

void Scheduler::advance_state(const OpenRound& round, ClosedRound& closed) {
  state_.round = round.round;
  // The last close's version, not the round's own: a round planned behind another (overlap) was
  // planned on the version before that one.
  state_.model_version += closed.combine.trainers.empty() ? 0 : 1;
  state_.epoch_samples += closed.event.samples;
  state_.epoch_loss_sum += closed.loss_sum;
  closed.combine.model_version = state_.model_version;
  closed.event.model_version = state_.model_version;
}

void Scheduler::choose_next_model(const OpenRound& round, msg::CombineRound& combine) {
  // Auto mode in compressed local-sgd: now and then the whole model goes down instead of the
  // update, to measure what gradient mode would cost on each link now (links change).
  // (local-sgd with sync_steps = "auto" never goes to gradient mode: nothing to measure for.)
  if (options_.run.mode == "auto" && round.exchange.compressed && !combine.trainers.empty()) {
    const double whole = slowest_whole_model_seconds();
    const double since = last_whole_model_ ? seconds_between(*last_whole_model_, loop_.now()) : 0.0;
    combine.whole_model =
        whole > 0 ? since * kWholeModelProbeShare >= whole : since >= kUnmeasuredProbeSeconds;
    if (combine.whole_model)
      log(LogLevel::kInfo, bus_.name(), "round ", round.round,
          "'s model goes out whole, to measure what gradient mode would cost on each link now");
  }
  // A round that combined nothing leaves the version as it was: the next round waits for the same
  // model, whole or not.
  if (!combine.trainers.empty()) {
    next_model_whole_ = !round.exchange.compressed || combine.whole_model;
    if (next_model_whole_) last_whole_model_ = loop_.now();
  }
}

void Scheduler::complete_record(const OpenRound& round, ClosedRound& closed, double seconds) {
  msg::RoundClosed& event = closed.event;
  event.exchange = round.exchange.describe(options_.run.compression);
  event.closed_seconds = first_round_ ? seconds_between(*first_round_, loop_.now()) : 0.0;
  event.idle_fraction = seconds > 0 && !round.arrived.empty()
                            ? closed.idle_sum / (seconds * static_cast<double>(round.arrived.size()))
                            : 0.0;
  event.loss = event.samples ? closed.loss_sum / static_cast<double>(event.samples) : 0.0;
  event.loss_scale = state_.loss_scale;
  event.epoch_samples_done = state_.epoch_samples;
  event.epoch_samples_total = options_.run.train_samples;
  event.epochs = static_cast<std::uint64_t>(options_.schedule.epochs);
  event.text = "round " + std::to_string(round.round) + ": " + std::to_string(event.samples) +
               " samples, loss " + std::to_string(event.loss);
}

void Scheduler::choose_checkpoint(const OpenRound& round, msg::CombineRound& combine,
                                  const nlohmann::json& record, bool evaluation_under_way, bool epoch_ended) {
  // Checkpoints wait while an evaluation is under way: a coordinator resumed from the epoch's last
  // round then scores that epoch's own final model.
  const auto every = static_cast<std::uint64_t>(std::max<std::int64_t>(0, options_.checkpoint_every));
  // `filo failback` hands the run over at a round's close with a checkpoint, not at an epoch's end
  // (its evaluation belongs to this coordinator) nor while one is under way.
  // Nor with a round open behind this one (overlap): the handover waits for that one's close, so
  // that no round the aggregator opened is left behind should the handover fail and planning go on.
  const bool hand_over = failback_asked_ && !evaluation_under_way && !epoch_ended && !next_;
  combine.checkpoint =
      hand_over || (every > 0 && !evaluation_under_way && (round.round % every == 0 || epoch_ended));
  if (hand_over) {
    handover_round_ = round.round;
    log(LogLevel::kInfo, bus_.name(), "failback ", *failback_asked_, ": round ", round.round,
        " is this coordinator's last; its checkpoint goes to the peer, which takes over");
    failback_asked_.reset();
    options_.pair->hand_over(round.round);
  }
  if (combine.checkpoint) {
    state_.last_round_record = record.dump();
    // Trainers not back since a resume keep the speed they had; those measured since, the new one.
    state_.measured_speeds = resumed_speeds_;
    for (const auto& [name, trainer] : live_)
      if (trainer.speed.measured()) state_.measured_speeds[name] = trainer.speed.samples_per_second();
    RunState saved = state_;
    saved.training_seconds = training_seconds();
    combine.round_state = to_json(saved).dump();
  }
}

void Scheduler::handle(const msg::Failback& failback, const Incoming& from) {
  const std::string asked =
      "asked by " + from.from + (failback.reason.empty() ? "" : " (" + failback.reason + ")");
  if (!options_.pair) {
    log(LogLevel::kWarn, bus_.name(), "failback ", asked, " refused: this coordinator has no peer");
    count_drop("failback: not a coordinator pair");
    return;
  }
  if (failback_asked_ || handover_round_) return;  // under way already
  const PairLink::Status status = options_.pair->status();
  if (status.peer_state != "passive" || status.peer_round == 0) {
    const std::string refused = "refused: the peer at " + options_.peer_listen + " is " + status.peer_state +
                                (status.peer_state == "passive" ? " and holds no checkpoint yet" : "");
    log(LogLevel::kWarn, bus_.name(), "failback ", asked, " ", refused);
    publish_pair_status(status, true, refused);
    return;
  }
  failback_asked_ = asked;
  failback_outcome_.clear();
  log(LogLevel::kInfo, bus_.name(), "failback ", asked, ": the run goes to the peer at ",
      options_.peer_listen, " at the next round's close");
  publish_pair_status(status, true, kFailbackAsked);
  arm_failback_timer(++failback_requests_);
}

void Scheduler::arm_failback_timer(std::uint64_t request) {
  loop_.at(loop_.now() + to_clock_duration(std::chrono::duration<double>(kFailbackRoundSeconds)),
           [this, request] { abandon_failback_without_round(request); });
}

void Scheduler::abandon_failback_without_round(std::uint64_t request) {
  if (!failback_asked_ || request != failback_requests_) return;  // handed over, or a newer request
  // A round in flight closes by its deadline at the latest, and hands the run over then (or, at an
  // epoch's end or during an evaluation, lets a later one): only a coordinator with no round open
  // has nothing that will.
  if (open_) {
    arm_failback_timer(request);
    return;
  }
  std::ostringstream abandoned;
  abandoned << "abandoned: no round open " << kFailbackRoundSeconds << " s after the request ("
            << (planning_done_ ? "the run's last evaluation is under way" : "no trainer to plan one")
            << "); this coordinator stays active";
  log(LogLevel::kWarn, bus_.name(), "failback ", *failback_asked_, " ", abandoned.str());
  failback_asked_.reset();
  failback_outcome_ = abandoned.str();  // follow_pair says it, and keeps saying it
}

void Scheduler::follow_pair() {
  const PairLink::Status status = options_.pair->status();
  if (handover_round_ && status.handover_failed) {
    log(LogLevel::kWarn, bus_.name(), "failback ", status.handover, ": planning goes on");
    handover_round_ = 0;
    plan_round();
  }
  if (handover_round_ && status.handed_over && !trainers_told_of_handover_) {
    // The peer holds the run: the trainers ask it now instead of after `liveness` heartbeats of
    // silence, and this coordinator gives way once the hub has had a moment to pass that on.
    trainers_told_of_handover_ = true;
    const msg::HandedOver handed{handover_round_,
                                 "the run moved to the coordinator at " + options_.peer_listen};
    for (const auto& [trainer, state] : live_) bus_.send(trainer, handed);
    log(LogLevel::kInfo, bus_.name(), "failback: told ", live_.size(), " trainers to ask ",
        options_.peer_listen);
    loop_.at(loop_.now() + kHandoverTellTime, [this] { options_.pair->give_way(); });
  }
  std::string handover = status.handover;
  if (failback_asked_) {
    handover = kFailbackAsked;
  } else if (!failback_outcome_.empty()) {
    handover = failback_outcome_;
  }
  const std::string shape = status.peer_state + "|" + handover;
  const bool changed = shape != pair_shape_;
  if (!changed && pair_published_ && seconds_between(*pair_published_, loop_.now()) < kPairStatusSeconds)
    return;
  pair_shape_ = shape;
  pair_published_ = loop_.now();
  publish_pair_status(status, changed, handover);
}

void Scheduler::publish_pair_status(const PairLink::Status& status, bool changed,
                                    const std::string& handover) {
  msg::PairStatus event;
  event.active = options_.pair_listen;
  event.peer = options_.peer_listen;
  event.peer_state = status.peer_state;
  event.peer_silent_seconds = status.peer_silent_seconds;
  event.round = state_.round;
  event.peer_round = status.peer_round;
  event.replicas = status.replicas;
  event.replica_bytes = status.replica_bytes;
  event.replica_milliseconds = status.replica_milliseconds;
  event.coordinator_start = options_.incarnation;
  event.failovers = state_.failovers.size();
  event.handover = handover;
  event.changed = changed;
  std::ostringstream text;
  text << "coordinator pair: " << event.active << " active at round " << event.round << "; its peer "
       << event.peer << " " << event.peer_state;
  if (event.peer_state == "passive")
    text << ", holding round " << event.peer_round << " ("
         << (event.round - std::min(event.round, event.peer_round)) << " behind)";
  else if (event.peer_state == "silent")
    text << " for " << std::fixed << std::setprecision(1) << event.peer_silent_seconds << " s";
  if (event.failovers > 0) text << "; " << event.failovers << " failover" << (event.failovers > 1 ? "s" : "");
  if (!handover.empty()) text << "; failback " << handover;
  event.text = text.str();
  bus_.publish(kEventTopic, event);
}

void Scheduler::send_evaluate(const msg::Evaluate& evaluate) {
  evaluations_[evaluate.epoch] = PendingEvaluation{evaluate, loop_.now()};
  if (!bus_.send(kAggregatorName, evaluate)) {
    log(LogLevel::kError, bus_.name(), "Evaluate of epoch ", evaluate.epoch,
        " was not taken by the bus; sending it again later");
  }
}

void Scheduler::resend_unanswered(Clock::time_point now) {
  const double patience = std::max(kCombineResendSeconds, kCombineResendFactor * slowest_combine_seconds_);
  for (auto& [round, unanswered] : unanswered_) {
    if (seconds_between(unanswered.sent, now) < patience) continue;
    log(LogLevel::kWarn, bus_.name(), "no answer to CombineRound ", round, " after ", patience,
        " s: sending it again");
    count_drop("combine: sent again, unanswered");
    bus_.send(kAggregatorName, unanswered.message, Stamp{round, unanswered.message.model_version});
    unanswered.sent = now;
  }
  for (auto& [epoch, evaluation] : evaluations_) {
    if (seconds_between(evaluation.sent, now) < kEvaluateResendSeconds) continue;
    log(LogLevel::kWarn, bus_.name(), "no answer to Evaluate of epoch ", epoch, ": asking again");
    bus_.send(kAggregatorName, evaluation.message);
    evaluation.sent = now;
  }
}

void Scheduler::handle(const msg::RoundCombined& combined, const Incoming&) {
  const auto unanswered = unanswered_.find(combined.round);
  if (unanswered == unanswered_.end()) return;  // an answer to a repeat
  if (combined.model_version != unanswered->second.message.model_version || !combined.problem.empty()) {
    log(LogLevel::kError, bus_.name(), "round ", combined.round, " combined into version ",
        combined.model_version, " where ", unanswered->second.message.model_version, " was expected",
        combined.problem.empty() ? std::string() : ": " + combined.problem);
  }
  unanswered_.erase(unanswered);
  ++combines_answered_;
  for (const auto& [trainer, cosine] : combined.directions) score_direction(combined.round, trainer, cosine);
  combine_timing_sums_["combine_seconds"] += combined.combine_seconds;
  combine_timing_sums_["step_seconds"] += combined.step_seconds;
  combine_timing_sums_["publish_seconds"] += combined.publish_seconds;
  combine_timing_sums_["score_seconds"] += combined.score_seconds;
  model_broadcast_bytes_ += combined.publish_bytes;
  aggregator_seconds_[combined.round] =
      combined.combine_seconds + combined.step_seconds + combined.publish_seconds;
  while (aggregator_seconds_.size() > kTransferWindow) aggregator_seconds_.erase(aggregator_seconds_.begin());
  // The answer leaves after the scoring: a resend waits for that too.
  slowest_combine_seconds_ =
      std::max(slowest_combine_seconds_, combined.combine_seconds + combined.step_seconds +
                                             combined.publish_seconds + combined.score_seconds);
}

void Scheduler::handle(const msg::Evaluated& evaluated, const Incoming&) {
  const auto pending = evaluations_.find(evaluated.epoch);
  if (pending == evaluations_.end()) return;  // an answer to a repeat
  const bool last = pending->second.message.last;
  evaluations_.erase(pending);
  if (!evaluated.problem.empty())
    log(LogLevel::kError, bus_.name(), "epoch ", evaluated.epoch, ": ", evaluated.problem);
  const std::string& metric = metric_;
  const auto found = evaluated.metrics.find(metric);
  const double value = found == evaluated.metrics.end() ? 0.0 : found->second;
  if (state_.test_metric_per_epoch.size() < evaluated.epoch)
    state_.test_metric_per_epoch.resize(evaluated.epoch);
  state_.test_metric_per_epoch[evaluated.epoch - 1] = value;
  const std::size_t index = evaluated.epoch - 1;
  const std::uint64_t samples = index < state_.samples_per_epoch.size() ? state_.samples_per_epoch[index] : 0;
  const double train_loss =
      index < state_.train_loss_per_epoch.size() ? state_.train_loss_per_epoch[index] : 0.0;
  msg::EpochScored scored;
  scored.epoch = evaluated.epoch;
  scored.epochs = static_cast<std::uint64_t>(options_.schedule.epochs);
  scored.round = state_.round;
  scored.metric = metric;
  scored.value = value;
  scored.metrics = evaluated.metrics;
  scored.train_loss = train_loss;
  scored.samples = samples;
  scored.training_seconds = index < state_.epoch_end_seconds.size() ? state_.epoch_end_seconds[index] : 0.0;
  std::ostringstream text;
  text << "epoch " << evaluated.epoch << "/" << options_.schedule.epochs << ": " << metric_words(metric)
       << " " << value << ", train loss " << train_loss << ", " << samples << " samples, " << std::fixed
       << std::setprecision(1) << scored.training_seconds << " s of training";
  scored.text = text.str();
  log(LogLevel::kInfo, bus_.name(), scored.text);
  bus_.publish(kEventTopic, scored);
  if (last) finish(evaluated);
}

void Scheduler::finish(const msg::Evaluated& evaluated) {
  if (finished_) return;
  finished_ = true;
  const double wall_seconds = seconds_between(started_at_, loop_.now());
  nlohmann::json nodes = nlohmann::json::array();
  for (const auto& [trainer, totals] : state_.totals) {
    nlohmann::json node{{"name", node_of_trainer(trainer)},
                        {"trainer", trainer},
                        {"samples", totals.samples},
                        {"compute_seconds", totals.compute_seconds},
                        {"rounds_delivered", totals.rounds_delivered},
                        {"rounds_missed", totals.rounds_missed}};
    for (const auto& failure : state_.failures)
      if (failure.trainer == trainer) node["failure"] = failure.reason;  // its last
    nodes.push_back(std::move(node));
  }
  const std::string& metric = metric_;
  const double value = state_.test_metric_per_epoch.empty() ? 0.0 : state_.test_metric_per_epoch.back();
  const double accuracy = metric == "test_accuracy" ? value : 0.0;
  nlohmann::json timing = nlohmann::json::object();
  if (combines_answered_ > 0) {
    for (const char* part : {"combine_seconds", "step_seconds", "publish_seconds", "score_seconds"}) {
      timing[part] = combine_timing_sums_[part] / static_cast<double>(combines_answered_);
    }
  }
  nlohmann::json drops = nlohmann::json::object();
  if (options_.drops) {
    for (const auto& [reason, count] : options_.drops->snapshot()) drops[reason] = count;
  }
  const std::string model_file =
      evaluated.model_files.empty() ? std::string() : evaluated.model_files.front();
  // Training ends with the last epoch's last round; the final evaluation after it is not training.
  const double until_now = training_seconds();
  const double trained = state_.epoch_end_seconds.empty() ? until_now : state_.epoch_end_seconds.back();
  nlohmann::json summary = {
      {"run_id", options_.run.run_id},
      {"model", options_.run.model},
      {"dataset", options_.run.dataset},
      {"mode", options_.run.mode},
      {"optimizer", options_.optimizer.name},
      {"outer_optimizer", options_.run.mode != "gradient" ? options_.optimizer.outer : std::string()},
      {"overlap", options_.optimizer.overlap},
      {"overlapped_rounds", overlapped_rounds_},
      {"task", options_.run.task},
      {"metric", metric},  // test_accuracy or test_perplexity: the keys below are named after it
      {"final_" + metric, value},
      {metric + "_per_epoch", state_.test_metric_per_epoch},
      {"train_loss_per_epoch", state_.train_loss_per_epoch},
      {"epoch_end_seconds", state_.epoch_end_seconds},
      {"epochs", state_.samples_per_epoch.size()},
      {"wall_seconds", wall_seconds},
      {"training_seconds", trained},
      {"final_evaluation_seconds", until_now - trained},
      {"coordinator_starts", options_.incarnation},
      {"rounds", state_.round},
      {"model_version", state_.model_version},
      {"samples_per_epoch", state_.samples_per_epoch},
      {"train_samples", options_.run.train_samples},
      {"nodes", nodes},
      {"model_file", model_file},
      {"model_files", evaluated.model_files},
      {"aggregator_timing", timing},
      {"model_broadcast_bytes", model_broadcast_bytes_},
      {"exchange", state_.exchange.describe(options_.run.compression)},
      {"exchanges", exchanges_json(state_.exchanges)},
      {"failovers", failovers_json(state_.failovers)},
      {"communication_fraction", auto_exchange() ? options_.optimizer.communication_fraction : 0.0},
      {"dropped", drops},
      {"failures", failures_json(state_.failures)},
      {"exclusions", failures_json(state_.exclusions)},
      {"robust",
       {{"bound", options_.robust.bound},
        {"norm_factor", options_.robust.norm_factor},
        {"max_refusals", options_.robust.max_refusals},
        {"refusal_window", options_.robust.refusal_window},
        {"combine", options_.robust.combine},
        {"min_direction", options_.robust.min_direction},
        {"direction_window", options_.robust.direction_window}}},
      {"directions", directions_json()},
  };
  record_.write_summary(summary);
  msg::RunEnded ended;
  ended.rounds = state_.round;
  ended.metric = metric;
  ended.value = value;
  ended.wall_seconds = wall_seconds;
  ended.run_dir = record_.run_dir();
  ended.text = "run finished: " + metric_words(metric) + " " + std::to_string(value) + " after " +
               std::to_string(state_.round) + " rounds in " + std::to_string(wall_seconds) + " s";
  bus_.publish(kEventTopic, ended);
  // Last: monitors and nodes end when they see it. Each live trainer is told directly too: its
  // copy on the model publisher queues behind the models still crossing its link (at 10 Mbit/s,
  // 7.4 MB models took longer than the coordinator lingers, and every node exited as if the
  // coordinator were lost), or is dropped where that queue is full.
  const msg::RunFinished finished{
      "all " + std::to_string(state_.samples_per_epoch.size()) + " epochs trained", accuracy};
  bus_.publish(kControlTopic, finished);
  for (const auto& [trainer, state] : live_) bus_.send(trainer, finished);
  log(LogLevel::kInfo, bus_.name(), ended.text, "; summary in ", record_.path("summary.json"));
  if (on_finished_) on_finished_();
}

}  // namespace filo
