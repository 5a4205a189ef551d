#include "actors/scheduler.hpp"

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <sstream>

#include "actors/learning/task.hpp"
#include "messages/event.hpp"

namespace filo {
namespace {
constexpr Milliseconds kStartCheckInterval{50};
constexpr std::size_t kTransferWindow = 4;  // a capped link shows within 4 rounds
/// A trainer's first rounds carry one-off costs (first model load, cold caches); its transfer
/// counts once this many rounds are measured, so that no one is left out on its first round.
constexpr std::size_t kTransferRoundsBeforeCounting = 3;
/// How often unanswered messages to the aggregator are looked at.
constexpr Milliseconds kResendCheckInterval{250};
/// How many times the fastest measured speed a trainer's unproven calibration may claim.
constexpr double kClaimTrust = 4.0;
/// How often the counts of refused messages are published when they grew.
constexpr Milliseconds kDroppedEventInterval{1000};
/// A CombineRound unanswered this long (or this many times the slowest combine seen) is sent
/// again: a message lost between the coordinator's actors must not stall the run.
constexpr double kCombineResendSeconds = 1.0;
constexpr double kCombineResendFactor = 8.0;
/// An evaluation takes a pass over the test set; one unanswered this long is asked for again.
constexpr double kEvaluateResendSeconds = 120.0;
/// Labels a trainer sends for the records (device, precision) are cut to this length.
constexpr std::size_t kMaxLabelLength = 16;
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

nlohmann::json ranges_json(const std::vector<msg::SampleRange>& ranges) {
  nlohmann::json list = nlohmann::json::array();
  for (const auto& range : ranges) list.push_back({range.begin, range.end});
  return list;
}
}  // namespace

nlohmann::json to_json(const RoundState& state) {
  nlohmann::json totals = nlohmann::json::object();
  for (const auto& [trainer, total] : state.totals) {
    totals[trainer] = {{"samples", total.samples},
                       {"compute_seconds", total.compute_seconds},
                       {"rounds_delivered", total.rounds_delivered},
                       {"rounds_missed", total.rounds_missed}};
  }
  return {{"epoch", state.epoch},
          {"round", state.round},
          {"model_version", state.model_version},
          {"trained", ranges_json(state.trained)},
          {"epoch_samples", state.epoch_samples},
          {"epoch_loss_sum", state.epoch_loss_sum},
          {"epoch_correct", state.epoch_correct},
          {"samples_per_epoch", state.samples_per_epoch},
          {"train_loss_per_epoch", state.train_loss_per_epoch},
          {"test_metric_per_epoch", state.test_metric_per_epoch},
          {"epoch_end_seconds", state.epoch_end_seconds},
          {"totals", totals},
          {"training_seconds", state.training_seconds},
          {"last_round_record", state.last_round_record},
          {"loss_scale", state.loss_scale},
          {"good_steps", state.good_steps}};
}

RoundState round_state_from_json(const nlohmann::json& json) {
  RoundState state;
  try {
    state.epoch = json.at("epoch").get<std::uint64_t>();
    state.round = json.at("round").get<std::uint64_t>();
    state.model_version = json.at("model_version").get<std::uint64_t>();
    for (const auto& range : json.at("trained")) {
      state.trained.push_back({range.at(0).get<std::uint64_t>(), range.at(1).get<std::uint64_t>()});
    }
    state.epoch_samples = json.at("epoch_samples").get<std::uint64_t>();
    state.epoch_loss_sum = json.at("epoch_loss_sum").get<double>();
    state.epoch_correct = json.at("epoch_correct").get<std::uint64_t>();
    state.samples_per_epoch = json.at("samples_per_epoch").get<std::vector<std::uint64_t>>();
    state.train_loss_per_epoch = json.at("train_loss_per_epoch").get<std::vector<double>>();
    state.test_metric_per_epoch = json.at("test_metric_per_epoch").get<std::vector<double>>();
    state.epoch_end_seconds = json.at("epoch_end_seconds").get<std::vector<double>>();
    for (const auto& [trainer, total] : json.at("totals").items()) {
      state.totals[trainer] = TrainerTotals{
          total.at("samples").get<std::uint64_t>(), total.at("compute_seconds").get<double>(),
          total.at("rounds_delivered").get<std::uint64_t>(), total.at("rounds_missed").get<std::uint64_t>()};
    }
    state.training_seconds = json.at("training_seconds").get<double>();
    state.last_round_record = json.at("last_round_record").get<std::string>();
    state.loss_scale = json.value("loss_scale", 0.0);
    state.good_steps = json.value("good_steps", std::uint64_t{0});
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(std::string("round state in the checkpoint is malformed: ") + e.what());
  }
  return state;
}

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
      state_(options_.resume.value_or(RoundState{})),
      epoch_started_(loop_.now()),
      started_at_(loop_.now()) {
  bus_.count_refusals_in(options_.drops);
  bus_.connect(hub_endpoint);
  pool_.reset(options_.run.train_samples);
  if (options_.resume) pool_.assign(untrained_ranges(state_.trained, options_.run.train_samples));
  if (state_.loss_scale <= 0) state_.loss_scale = options_.train.loss_scale;
  loop_.on_readable(bus_.addressed(), [this] {
    while (auto incoming = bus_.receive(bus_.addressed())) dispatch(*this, *incoming, bus_);
  });
  loop_.every(kStartCheckInterval, [this] { maybe_start(loop_.now()); });
  loop_.every(kResendCheckInterval, [this] { resend_unanswered(loop_.now()); });
  loop_.every(kDroppedEventInterval, [this] { publish_dropped(); });
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
  msg::Event event;
  event.type = "dropped";
  event.text = std::to_string(total) + " messages refused so far";
  for (const auto& [reason, count] : options_.drops->snapshot())
    event.values[reason] = static_cast<double>(count);
  bus_.publish(kEventTopic, event);
}

void Scheduler::handle(const msg::MembershipChange& change, const Incoming&) {
  using Kind = msg::MembershipChangeKind;
  if (change.change == Kind::kJoined || change.change == Kind::kRejoined) {
    TrainerState state;  // planned once its calibration arrives
    state.hostname = change.hostname;
    state.benchmark_gflops = change.cpu_gemm_gflops;
    live_[change.trainer] = state;
    // A trainer that registered again has dropped whatever plan it had.
    if (open_ && open_->planned.count(change.trainer) && !open_->answered(change.trainer)) {
      open_->refused[change.trainer] = "it registered again during the round";
    }
  } else {
    live_.erase(change.trainer);
  }
  if (open_ && every_live_planned_trainer_answered()) close_round("every live trainer answered");
}

void Scheduler::handle(const msg::Calibration& calibration, const Incoming& from) {
  auto trainer = live_.find(from.from);
  if (trainer == live_.end()) {
    log(LogLevel::kWarn, bus_.name(), "ignored calibration of ", from.from, ": not a live trainer");
    count_drop("calibration: not a live trainer");
    return;
  }
  if (!(calibration.samples_per_second > 0) || !std::isfinite(calibration.samples_per_second)) {
    log(LogLevel::kWarn, bus_.name(), "ignored calibration of ", from.from, ": speed ",
        calibration.samples_per_second, " is not a positive number");
    count_drop("calibration: speed not a positive number");
    return;
  }
  trainer->second.calibrated = true;
  trainer->second.speed = SpeedEstimate(calibration.samples_per_second);
  trainer->second.max_micro_batch = calibration.max_micro_batch;
  trainer->second.device = calibration.device.substr(0, kMaxLabelLength);
  trainer->second.precision = calibration.precision.substr(0, kMaxLabelLength);
  log(LogLevel::kInfo, bus_.name(), from.from,
      " calibrated: ", static_cast<int>(calibration.samples_per_second), " samples/s at micro-batch ",
      calibration.micro_batch,
      calibration.max_micro_batch
          ? ", at most " + std::to_string(calibration.max_micro_batch) + " per micro-batch"
          : std::string());
  if (started_ && !open_) plan_round();  // the cluster was idle, waiting for trainers
  maybe_start(loop_.now());
}

double Scheduler::TrainerState::transfer_seconds() const {
  if (recent_transfers.size() < kTransferRoundsBeforeCounting) return 0.0;
  return *std::min_element(recent_transfers.begin(), recent_transfers.end());
}

std::size_t Scheduler::calibrated_trainers() const {
  std::size_t count = 0;
  for (const auto& [trainer, state] : live_) count += state.calibrated ? 1 : 0;
  return count;
}

std::vector<Share> Scheduler::shares_for(std::uint64_t total) {
  // A calibration is only a claim: until a trainer has delivered, its speed counts for at most
  // kClaimTrust times the fastest speed measured so far (at the start, the median claim), so
  // that a trainer claiming 1e12 samples/s is not handed every sample before it shows any.
  double reference = 0.0;
  std::vector<double> claims;
  for (const auto& [trainer, state] : live_) {
    if (!state.calibrated) continue;
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
    if (!state.calibrated) continue;
    double transfer = state.transfer_seconds();
    const std::uint64_t probe_after = state.probe_after > 0 ? state.probe_after : kLeftOutProbeRounds;
    if (state.left_out_since > 0 && state_.round + 1 - state.left_out_since >= probe_after) {
      state.probing_from = transfer;
      transfer = 0.0;  // a probe: plan it once more and measure again
      state.left_out_since = state_.round + 1;
    }
    double speed = state.speed.samples_per_second();
    if (!state.speed.measured() && reference > 0.0) speed = std::min(speed, kClaimTrust * reference);
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
  if (seconds_between(*enough_trainers_since_, now) < options_.schedule.start_grace_seconds) return;
  started_ = true;
  log(LogLevel::kInfo, bus_.name(), options_.resume ? "resuming" : "starting", " with ",
      calibrated_trainers(), " trainers (", options_.schedule.split, " shares): ", options_.run.train_samples,
      " samples per epoch, ", options_.schedule.epochs, " epochs; epoch ", state_.epoch, " has ",
      pool_.remaining(), " samples to train");
  if (options_.resume) {
    // Announced with the first round rather than at start-up, when monitors have reconnected.
    msg::Event event;
    event.type = "resumed";
    event.round = state_.round;
    event.epoch = state_.epoch;
    event.text = "coordinator restarted (start " + std::to_string(options_.incarnation) +
                 "): resumed after round " + std::to_string(state_.round) + " from its checkpoint";
    event.values["resumed_after_round"] = static_cast<double>(state_.round);
    event.values["coordinator_start"] = static_cast<double>(options_.incarnation);
    bus_.publish(kEventTopic, event);
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
  plan_round();
}

double Scheduler::deadline_seconds() const {
  return std::max(options_.schedule.deadline_min_seconds,
                  options_.schedule.deadline_factor * slowest_last_round_seconds_);
}

double Scheduler::training_seconds() const {
  return state_.training_seconds + (first_round_ ? seconds_between(*first_round_, loop_.now()) : 0.0);
}

void Scheduler::plan_round() {
  if (open_ || planning_done_ || calibrated_trainers() == 0 || pool_.empty()) return;
  const auto round_samples = options_.round_samples_per_trainer > 0
                                 ? options_.round_samples_per_trainer * calibrated_trainers()
                                 : static_cast<std::uint64_t>(options_.schedule.round_samples);
  std::vector<msg::SampleRange> taken = pool_.take(round_samples);
  std::uint64_t total = 0;
  for (const auto& range : taken) total += range.size();
  if (total == 0) return;

  OpenRound round;
  round.round = state_.round + 1;
  round.epoch = state_.epoch;
  round.model_version = state_.model_version;
  msg::RoundOpened opened;
  opened.round = round.round;
  opened.epoch = round.epoch;
  opened.model_version = round.model_version;
  opened.incarnation = options_.incarnation;
  SamplePool round_pool;
  round_pool.give_back(taken);
  std::vector<std::pair<std::string, msg::RoundPlan>> plans;
  double expected_seconds = 0.0;  // the slowest planned share at its trainer's measured speed
  for (const Share& share : shares_for(total)) {
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
      const std::string text = left_out ? share.trainer + " left out of the rounds: " + share.left_out
                                        : share.trainer + " is planned again";
      log(LogLevel::kWarn, bus_.name(), text);
      msg::Event event;
      event.type = left_out ? "left_out" : "planned_again";
      event.text = text;
      event.round = round.round;
      event.labels["trainer"] = share.trainer;
      if (left_out) event.labels["reason"] = share.left_out;
      bus_.publish(kEventTopic, event);
    }
    if (left_out || share.samples == 0) continue;
    const double speed = state.speed.samples_per_second();
    if (speed > 0)
      expected_seconds = std::max(expected_seconds, state.transfer_seconds() + share.samples / speed);
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
    opened.planned_samples[share.trainer] = share.samples;
    round.planned[share.trainer] = plan.ranges;
    plans.emplace_back(share.trainer, std::move(plan));
  }
  // A share the last round's times do not cover (the first round, a round after one that missed
  // its deadline, a larger share) gets a deadline from its own expected time; else a trainer
  // slower than deadline_min_seconds per share could miss every deadline.
  round.deadline_seconds = std::max(deadline_seconds(), options_.schedule.deadline_factor * expected_seconds);
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
  const std::uint64_t number = round.round;
  round.deadline_timer =
      loop_.at(round.opened + to_clock_duration(std::chrono::duration<double>(round.deadline_seconds)),
               [this, number] {
                 if (open_ && open_->round == number) close_round("deadline passed");
               });
  open_ = std::move(round);
}

void Scheduler::handle(const msg::ContributionReceived& received, const Incoming&) {
  if (!open_ || received.round != open_->round) {
    log(LogLevel::kDebug, bus_.name(), "ignored the aggregator's report of ", received.trainer, " for round ",
        received.round, ": that round is closed");
    count_drop("contribution: arrived after its round closed");
    return;
  }
  if (!open_->planned.count(received.trainer) || open_->answered(received.trainer)) {
    log(LogLevel::kWarn, bus_.name(), "ignored a report of ", received.trainer, " for round ", received.round,
        ": not planned, or reported before");
    return;
  }
  if (received.accepted) {
    open_->arrived[received.trainer] = Arrival{received, seconds_between(open_->opened, loop_.now())};
  } else {
    open_->refused[received.trainer] = received.reason;
    log(LogLevel::kWarn, bus_.name(), received.trainer, "'s contribution to round ", received.round,
        " was refused: ", received.reason);
  }
  if (every_live_planned_trainer_answered()) close_round("every live trainer answered");
}

bool Scheduler::every_live_planned_trainer_answered() const {
  for (const auto& [trainer, ranges] : open_->planned) {
    if (live_.count(trainer) && !open_->answered(trainer)) return false;
  }
  return true;
}

void Scheduler::close_round(const std::string& why) {
  OpenRound round = std::move(*open_);
  open_.reset();
  loop_.cancel(round.deadline_timer);
  const double seconds = seconds_between(round.opened, loop_.now());

  msg::CombineRound combine;
  combine.round = round.round;
  combine.epoch = round.epoch;
  std::uint64_t samples = 0;
  double loss_sum = 0.0;
  std::uint64_t correct = 0;
  double slowest = 0.0;
  double idle_sum = 0.0;
  nlohmann::json trainers = nlohmann::json::array();
  msg::Event event;
  event.type = "round";
  event.round = round.round;
  event.epoch = round.epoch;
  // fp16: one overflow anywhere skips the round's step for everyone (every replica stays equal), and
  // its samples go back to the pool to be trained again at half the loss scale.
  const bool overflow = std::any_of(round.arrived.begin(), round.arrived.end(),
                                    [](const auto& arrival) { return arrival.second.report.overflow; });
  for (const auto& [trainer, ranges] : round.planned) {
    std::uint64_t planned = 0;
    for (const auto& range : ranges) planned += range.size();
    const auto arrived = round.arrived.find(trainer);
    const bool delivered = arrived != round.arrived.end() && !overflow;
    auto live = live_.find(trainer);
    TrainerTotals& totals = state_.totals[trainer];
    nlohmann::json line{{"name", trainer}, {"planned", planned}, {"delivered", delivered}};
    if (delivered) {
      const msg::ContributionReceived& report = arrived->second.report;
      const double arrival = arrived->second.arrival_seconds;
      combine.trainers.push_back(trainer);
      samples += report.samples;
      loss_sum += report.loss_sum;
      correct += report.correct;
      for (const auto& range : ranges) add_trained(state_.trained, range);
      totals.samples += report.samples;
      totals.compute_seconds += report.compute_seconds;
      ++totals.rounds_delivered;
      slowest = std::max(slowest, report.compute_seconds);
      // Waiting for the slowest: the time between this contribution and the round's close.
      const double idle = std::max(0.0, seconds - arrival);
      idle_sum += idle;
      const double samples_per_second =
          report.compute_seconds > 0 ? report.samples / report.compute_seconds : 0.0;
      if (live != live_.end() && report.compute_seconds > 0) {
        TrainerState& state = live->second;
        state.speed.observe(report.samples, report.compute_seconds);
        const double transfer = std::max(0.0, arrival - report.compute_seconds);
        state.recent_transfers.push_back(transfer);
        if (state.recent_transfers.size() > kTransferWindow) state.recent_transfers.pop_front();
        if (state.probing_from) state.probe_after = rounds_before_next_probe(*state.probing_from, transfer);
      }
      line.update({{"samples", report.samples},
                   {"compute_seconds", report.compute_seconds},
                   {"model_wait_seconds", report.model_wait_seconds},
                   {"staging_seconds", report.staging_seconds},
                   {"samples_per_second", samples_per_second},
                   {"arrival_seconds", arrival},
                   {"idle_seconds", idle},
                   {"ranges", ranges_json(ranges)}});
      event.values["samples_per_second/" + trainer] = samples_per_second;
      event.values["idle_seconds/" + trainer] = idle;
      event.values["compute_seconds/" + trainer] = report.compute_seconds;
      event.values["arrival_seconds/" + trainer] = arrival;
    } else {
      if (live != live_.end() && live->second.probing_from) {
        live->second.probe_after = rounds_before_next_probe(*live->second.probing_from, -1.0);
      }
      pool_.give_back(ranges);
      ++totals.rounds_missed;
      const auto refused = round.refused.find(trainer);
      std::string reason = "no contribution by the close (" + why + ")";
      if (overflow) {
        reason = "fp16 gradients overflowed in the fleet: step skipped";
      } else if (refused != round.refused.end()) {
        reason = refused->second;
      } else if (live == live_.end()) {
        reason = "lost";
      }
      log(LogLevel::kWarn, bus_.name(), trainer, " missed round ", round.round, " (", reason, "): ", planned,
          " samples return to the pool");
      event.labels["missed/" + trainer] = std::to_string(planned) + " samples reassigned: " + reason;
      line.update({{"samples", 0}, {"missed_reason", reason}, {"ranges", nlohmann::json::array()}});
    }
    if (live != live_.end()) {
      TrainerState& state = live->second;
      if (arrived != round.arrived.end()) {
        const auto& report = arrived->second.report;
        if (!report.precision.empty()) state.precision = report.precision;
        state.peak_memory_bytes = report.peak_memory_bytes;
      }
      line.update({{"benchmark_gflops", state.benchmark_gflops},
                   {"device", state.device},
                   {"precision", state.precision},
                   {"peak_memory_bytes", state.peak_memory_bytes}});
      event.labels["device/" + trainer] = state.device;
      event.labels["precision/" + trainer] = state.precision;
      event.values["peak_memory_bytes/" + trainer] = static_cast<double>(state.peak_memory_bytes);
    }
    event.values["planned/" + trainer] = static_cast<double>(planned);
    trainers.push_back(std::move(line));
    if (live != live_.end()) live->second.probing_from.reset();
  }
  if (slowest > 0) slowest_last_round_seconds_ = slowest;
  if (overflow) {
    state_.loss_scale = std::max(kMinLossScale, state_.loss_scale / 2);
    state_.good_steps = 0;
    log(LogLevel::kWarn, bus_.name(), "round ", round.round,
        ": fp16 gradients overflowed; step skipped, loss scale ", state_.loss_scale);
    msg::Event skipped;
    skipped.type = "overflow";
    skipped.round = round.round;
    skipped.epoch = round.epoch;
    skipped.text = "round " + std::to_string(round.round) +
                   ": fp16 overflow, step skipped for every trainer; loss "
                   "scale halved to " +
                   std::to_string(state_.loss_scale);
    skipped.values["loss_scale"] = state_.loss_scale;
    bus_.publish(kEventTopic, skipped);
  } else if (!combine.trainers.empty() &&
             ++state_.good_steps >= static_cast<std::uint64_t>(options_.train.loss_scale_growth_interval)) {
    state_.loss_scale = std::min(kMaxLossScale, state_.loss_scale * 2);
    state_.good_steps = 0;
  }
  state_.round = round.round;
  state_.model_version = round.model_version + (combine.trainers.empty() ? 0 : 1);
  state_.epoch_samples += samples;
  state_.epoch_loss_sum += loss_sum;
  state_.epoch_correct += correct;
  combine.model_version = state_.model_version;

  const double idle_fraction = seconds > 0 && !round.arrived.empty()
                                   ? idle_sum / (seconds * static_cast<double>(round.arrived.size()))
                                   : 0.0;
  const double loss = samples ? loss_sum / static_cast<double>(samples) : 0.0;
  const nlohmann::json record{
      {"round", round.round},
      {"epoch", round.epoch},
      {"model_version", state_.model_version},
      {"seconds", seconds},
      {"closed_seconds", first_round_ ? seconds_between(*first_round_, loop_.now()) : 0.0},
      {"samples", samples},
      {"idle_fraction", idle_fraction},
      {"loss", loss},
      {"closed_because", why},
      {"loss_scale", state_.loss_scale},
      {"trainers", trainers}};
  event.values["samples"] = static_cast<double>(samples);
  event.values["loss"] = loss;
  event.values["seconds"] = seconds;
  event.values["idle_fraction"] = idle_fraction;
  event.values["epoch_samples_done"] = static_cast<double>(state_.epoch_samples);
  event.values["epoch_samples_total"] = static_cast<double>(options_.run.train_samples);
  event.values["epochs"] = static_cast<double>(options_.schedule.epochs);
  event.values["model_version"] = static_cast<double>(state_.model_version);
  event.text = "round " + std::to_string(round.round) + ": " + std::to_string(samples) + " samples, loss " +
               std::to_string(loss);

  // The epoch is over once its pool is empty: every position was counted (nothing is in flight,
  // since this was the only open round).
  std::optional<msg::Evaluate> evaluate;
  const bool epoch_done = pool_.empty();
  const bool evaluation_under_way = !evaluations_.empty();
  if (epoch_done) {
    state_.samples_per_epoch.push_back(state_.epoch_samples);
    state_.train_loss_per_epoch.push_back(
        state_.epoch_samples ? state_.epoch_loss_sum / static_cast<double>(state_.epoch_samples) : 0.0);
    state_.epoch_end_seconds.push_back(training_seconds());
    const bool last = state_.epoch >= static_cast<std::uint64_t>(options_.schedule.epochs);
    evaluate = msg::Evaluate{state_.epoch, state_.model_version, last};
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
  }
  // Checkpoints wait while an evaluation is under way: a coordinator resumed from the epoch's last
  // round then scores that epoch's own final model.
  const auto every = static_cast<std::uint64_t>(std::max<std::int64_t>(0, options_.checkpoint_every));
  combine.checkpoint = every > 0 && !evaluation_under_way && (round.round % every == 0 || epoch_done);
  if (combine.checkpoint) {
    state_.last_round_record = record.dump();
    RoundState saved = state_;
    saved.training_seconds = training_seconds();
    combine.round_state = to_json(saved).dump();
  }
  // The aggregator first: it combines while the next round is planned and the record written.
  if (!bus_.send(kAggregatorName, combine, Stamp{round.round, state_.model_version})) {
    log(LogLevel::kError, bus_.name(), "CombineRound ", round.round,
        " was not taken by the bus; sending it again soon");
  }
  unanswered_[round.round] = Unanswered{combine, loop_.now()};
  if (evaluate) send_evaluate(*evaluate);
  plan_round();

  record_.append_round(record);
  bus_.publish(kEventTopic, event);
  if (epoch_done) epoch_started_ = loop_.now();
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
  combine_timing_sums_["combine_seconds"] += combined.combine_seconds;
  combine_timing_sums_["step_seconds"] += combined.step_seconds;
  combine_timing_sums_["publish_seconds"] += combined.publish_seconds;
  slowest_combine_seconds_ = std::max(
      slowest_combine_seconds_, combined.combine_seconds + combined.step_seconds + combined.publish_seconds);
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
  msg::Event event;
  event.type = "epoch";
  event.epoch = evaluated.epoch;
  event.round = state_.round;
  for (const auto& [name, figure] : evaluated.metrics) event.values[name] = figure;
  event.values[metric] = value;
  event.values["train_loss"] = train_loss;
  event.values["samples"] = static_cast<double>(samples);
  event.values["epochs"] = static_cast<double>(options_.schedule.epochs);
  const double ended_at = index < state_.epoch_end_seconds.size() ? state_.epoch_end_seconds[index] : 0.0;
  event.values["training_seconds"] = ended_at;
  std::ostringstream text;
  text << "epoch " << evaluated.epoch << "/" << options_.schedule.epochs << ": " << metric_words(metric)
       << " " << value << ", train loss " << train_loss << ", " << samples << " samples, " << std::fixed
       << std::setprecision(1) << ended_at << " s of training";
  event.text = text.str();
  log(LogLevel::kInfo, bus_.name(), event.text);
  bus_.publish(kEventTopic, event);
  if (last) finish(evaluated);
}

void Scheduler::finish(const msg::Evaluated& evaluated) {
  if (finished_) return;
  finished_ = true;
  const double wall_seconds = seconds_between(started_at_, loop_.now());
  nlohmann::json nodes = nlohmann::json::array();
  for (const auto& [trainer, totals] : state_.totals) {
    nodes.push_back({{"name", node_of_trainer(trainer)},
                     {"trainer", trainer},
                     {"samples", totals.samples},
                     {"compute_seconds", totals.compute_seconds},
                     {"rounds_delivered", totals.rounds_delivered},
                     {"rounds_missed", totals.rounds_missed}});
  }
  const std::string& metric = metric_;
  const double value = state_.test_metric_per_epoch.empty() ? 0.0 : state_.test_metric_per_epoch.back();
  const double accuracy = metric == "test_accuracy" ? value : 0.0;
  nlohmann::json timing = nlohmann::json::object();
  if (combines_answered_ > 0) {
    for (const char* part : {"combine_seconds", "step_seconds", "publish_seconds"}) {
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
      {"outer_optimizer", options_.run.mode == "local-sgd" ? options_.optimizer.outer : std::string()},
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
      {"dropped", drops},
  };
  record_.write_summary(summary);
  msg::Event event;
  event.type = "finished";
  event.text = "run finished: " + metric_words(metric) + " " + std::to_string(value) + " after " +
               std::to_string(state_.round) + " rounds in " + std::to_string(wall_seconds) + " s";
  event.values["final_" + metric] = value;
  event.values["wall_seconds"] = wall_seconds;
  event.labels["run_dir"] = record_.run_dir();
  bus_.publish(kEventTopic, event);
  // Last: monitors and nodes end when they see it.
  bus_.publish(kControlTopic,
               msg::RunFinished{"all " + std::to_string(state_.samples_per_epoch.size()) + " epochs trained",
                                accuracy});
  log(LogLevel::kInfo, bus_.name(), event.text, "; summary in ", record_.path("summary.json"));
  if (on_finished_) on_finished_();
}

}  // namespace filo
