#include "actors/scheduler.hpp"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "actors/aggregator.hpp"
#include "messages/event.hpp"

namespace filo {
namespace {
constexpr Milliseconds kStartCheckInterval{50};
// Weight of the newest round: a node whose speed halves has moved about two thirds of the way to
// its new share after 3 rounds, while one preempted round moves it by less than a third.
constexpr double kSpeedSmoothing = 0.3;

constexpr std::size_t kTransferWindow = 4;  // a capped link shows within 4 rounds
/// A trainer's first rounds carry one-off costs (first model load, cold caches); its transfer
/// counts once this many rounds are measured, so that no one is left out on its first round.
constexpr std::size_t kTransferRoundsBeforeCounting = 3;
/// A trainer left out by the transfer rule is planned again this often, so that its estimate
/// follows the network instead of freezing at its worst.
constexpr std::uint64_t kLeftOutProbeRounds = 20;
/// After a probe that found the link this much faster than the transfer that kept it out, the
/// next probe comes after kQuickProbeRounds: the link is changing, likely recovering.
constexpr double kProbeImprovement = 0.75;
constexpr std::uint64_t kQuickProbeRounds = 2;

double smoothed(double previous, double measured) {
  return previous <= 0.0 ? measured : kSpeedSmoothing * measured + (1 - kSpeedSmoothing) * previous;
}
}  // namespace

void SamplePool::reset(std::uint64_t size) {
  ranges_.clear();
  if (size > 0) ranges_.push_back({0, size});
}

void SamplePool::assign(const std::vector<msg::SampleRange>& ranges) {
  ranges_.assign(ranges.begin(), ranges.end());
}

std::vector<msg::SampleRange> untrained_ranges(std::vector<msg::SampleRange> trained, std::uint64_t size) {
  std::sort(trained.begin(), trained.end(), [](const auto& a, const auto& b) { return a.begin < b.begin; });
  std::vector<msg::SampleRange> untrained;
  std::uint64_t cursor = 0;
  for (const auto& range : trained) {
    if (range.begin > cursor) untrained.push_back({cursor, std::min(range.begin, size)});
    cursor = std::max(cursor, range.end);
  }
  if (cursor < size) untrained.push_back({cursor, size});
  return untrained;
}

std::vector<msg::SampleRange> SamplePool::take(std::uint64_t count) {
  std::vector<msg::SampleRange> taken;
  while (count > 0 && !ranges_.empty()) {
    msg::SampleRange& front = ranges_.front();
    const std::uint64_t piece = std::min(count, front.size());
    taken.push_back({front.begin, front.begin + piece});
    front.begin += piece;
    count -= piece;
    if (front.size() == 0) ranges_.pop_front();
  }
  return taken;
}

void SamplePool::give_back(const std::vector<msg::SampleRange>& ranges) {
  for (auto it = ranges.rbegin(); it != ranges.rend(); ++it) {
    if (it->size() > 0) ranges_.push_front(*it);
  }
}

std::uint64_t SamplePool::remaining() const {
  std::uint64_t total = 0;
  for (const auto& range : ranges_) total += range.size();
  return total;
}

std::vector<std::uint64_t> equal_shares(std::uint64_t total, std::size_t parts) {
  std::vector<std::uint64_t> shares(parts, parts == 0 ? 0 : total / parts);
  for (std::size_t i = 0; i < parts && i < total % parts; ++i) ++shares[i];
  return shares;
}

std::vector<Share> proportional_shares(const std::vector<TrainerEstimate>& trainers, std::uint64_t total,
                                       double max_transfer_ratio) {
  const std::size_t count = trainers.size();
  std::vector<Share> shares(count);
  std::vector<double> speed(count);
  double known_sum = 0.0;
  std::size_t known = 0;
  for (const auto& trainer : trainers) {
    if (trainer.samples_per_second > 0) {
      known_sum += trainer.samples_per_second;
      ++known;
    }
  }
  const double unknown_speed = known > 0 ? known_sum / known : 1.0;
  for (std::size_t i = 0; i < count; ++i) {
    shares[i].trainer = trainers[i].trainer;
    speed[i] = trainers[i].samples_per_second > 0 ? trainers[i].samples_per_second : unknown_speed;
  }
  std::vector<bool> active(count, true);
  std::vector<double> exact(count, 0.0);
  while (true) {
    double speed_sum = 0.0;
    double speed_weighted_transfer = 0.0;
    std::size_t remaining = 0;
    for (std::size_t i = 0; i < count; ++i) {
      if (!active[i]) continue;
      speed_sum += speed[i];
      speed_weighted_transfer += speed[i] * trainers[i].transfer_seconds;
      ++remaining;
    }
    if (remaining == 0) return shares;
    // Everyone finishes at T: n_i = s_i (T - c_i) and sum n_i = total.
    const double finish = (static_cast<double>(total) + speed_weighted_transfer) / speed_sum;
    // The rule weighs what a trainer's link costs beyond the best-connected trainer's: the part
    // every trainer pays (planning, encoding, the coordinator's turn) is no reason to drop one,
    // and on small rounds it alone can exceed a quarter of the compute.
    double common_transfer = INFINITY;
    for (std::size_t i = 0; i < count; ++i) {
      if (active[i]) common_transfer = std::min(common_transfer, trainers[i].transfer_seconds);
    }
    std::size_t worst = count;
    double worst_ratio = -1.0;
    for (std::size_t i = 0; i < count; ++i) {
      if (!active[i]) continue;
      exact[i] = speed[i] * (finish - trainers[i].transfer_seconds);
      const double compute = finish - trainers[i].transfer_seconds;
      const double link = trainers[i].transfer_seconds - common_transfer;
      const double ratio = compute > 0 ? link / compute : INFINITY;
      if (ratio > worst_ratio) {
        worst_ratio = ratio;
        worst = i;
      }
    }
    const bool hopeless = exact[worst] < 1.0;
    const bool not_worth_it = max_transfer_ratio > 0 && worst_ratio >= max_transfer_ratio;
    if (remaining > 1 && (hopeless || not_worth_it)) {
      active[worst] = false;
      std::ostringstream reason;
      if (hopeless) {
        reason << "its transfer alone (" << trainers[worst].transfer_seconds << " s) outlasts the round";
      } else {
        reason << "transfer/compute ratio " << worst_ratio << " is at or above " << max_transfer_ratio;
      }
      shares[worst].left_out = reason.str();
      continue;
    }
    break;
  }
  // Whole samples: floors first, then the remainder to the largest fractions.
  std::uint64_t assigned = 0;
  std::vector<std::pair<double, std::size_t>> fractions;
  for (std::size_t i = 0; i < count; ++i) {
    if (!active[i]) continue;
    const double value = std::max(0.0, exact[i]);
    shares[i].samples = static_cast<std::uint64_t>(std::floor(value));
    assigned += shares[i].samples;
    fractions.emplace_back(value - std::floor(value), i);
  }
  std::sort(fractions.begin(), fractions.end(),
            [](const auto& a, const auto& b) { return a.first > b.first; });
  for (std::size_t k = 0; assigned < total && !fractions.empty(); k = (k + 1) % fractions.size()) {
    ++shares[fractions[k].second].samples;
    ++assigned;
  }
  return shares;
}

void SpeedEstimate::observe(std::uint64_t samples, double seconds) {
  if (samples == 0 || !(seconds > 0)) return;
  smoothed_samples_ = smoothed(smoothed_samples_, static_cast<double>(samples));
  smoothed_seconds_ = smoothed(smoothed_seconds_, seconds);
}

double SpeedEstimate::samples_per_second() const {
  return smoothed_seconds_ > 0 ? smoothed_samples_ / smoothed_seconds_ : calibrated_;
}

MicroBatchPlan micro_batches_for(std::uint64_t share, std::uint64_t configured_micro_batch,
                                 std::uint64_t max_for_device) {
  std::uint64_t micro = std::max<std::uint64_t>(1, std::min(share, configured_micro_batch));
  if (max_for_device > 0) micro = std::min(micro, max_for_device);
  return {static_cast<std::uint32_t>(micro), static_cast<std::uint32_t>((share + micro - 1) / micro)};
}

Scheduler::Scheduler(const SocketFactory& sockets, const std::string& hub_endpoint, SchedulerOptions options,
                     const StopFlag& stop)
    : options_(std::move(options)), bus_(sockets, kSchedulerName), loop_(stop) {
  bus_.connect(hub_endpoint);
  pool_.reset(options_.train_samples);
  if (options_.resume) {
    const SchedulerResume& resume = *options_.resume;
    epoch_ = resume.epoch;
    round_ = resume.round;
    model_version_ = resume.model_version;
    pool_.assign(untrained_ranges(resume.trained, options_.train_samples));
    for (const auto& range : resume.trained) epoch_trained_ += range.size();
  }
  loop_.on_readable(bus_.addressed(), [this] {
    while (auto incoming = bus_.receive(bus_.addressed()))
      dispatch(*this, *incoming, bus_.limits(), bus_.name());
  });
  loop_.every(kStartCheckInterval, [this] { maybe_start(Clock::now()); });
}

void Scheduler::run() {
  loop_.run();
}

void Scheduler::handle(const msg::MembershipChange& change, const Incoming&) {
  using Kind = msg::MembershipChangeKind;
  if (change.change == Kind::kJoined || change.change == Kind::kRejoined) {
    live_[change.trainer] = TrainerState{};  // planned once its calibration arrives
  } else {
    live_.erase(change.trainer);  // its in-flight samples return when the aggregator closes the round
  }
}

void Scheduler::handle(const msg::Calibration& calibration, const Incoming& from) {
  auto trainer = live_.find(from.from);
  if (trainer == live_.end()) {
    log(LogLevel::kWarn, bus_.name(), "ignored calibration of ", from.from, ": not a live trainer");
    return;
  }
  if (!(calibration.samples_per_second > 0) || !std::isfinite(calibration.samples_per_second)) {
    log(LogLevel::kWarn, bus_.name(), "ignored calibration of ", from.from, ": speed ",
        calibration.samples_per_second, " is not a positive number");
    return;
  }
  trainer->second.calibrated = true;
  trainer->second.speed = SpeedEstimate(calibration.samples_per_second);
  trainer->second.max_micro_batch = calibration.max_micro_batch;
  log(LogLevel::kInfo, bus_.name(), from.from,
      " calibrated: ", static_cast<int>(calibration.samples_per_second), " samples/s at micro-batch ",
      calibration.micro_batch,
      calibration.max_micro_batch ? ", memory allows " + std::to_string(calibration.max_micro_batch)
                                  : std::string());
  if (started_ && !round_open_) plan_round();  // the cluster was idle, waiting for trainers
}

std::uint64_t rounds_before_next_probe(double transfer_before_probe, double probe_transfer) {
  const bool improving = probe_transfer >= 0.0 && transfer_before_probe > 0.0 &&
                         probe_transfer < kProbeImprovement * transfer_before_probe;
  return improving ? kQuickProbeRounds : kLeftOutProbeRounds;
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
  std::vector<TrainerEstimate> estimates;
  for (auto& [trainer, state] : live_) {
    if (!state.calibrated) continue;
    double transfer = state.transfer_seconds();
    const std::uint64_t probe_after = state.probe_after > 0 ? state.probe_after : kLeftOutProbeRounds;
    if (state.left_out_since > 0 && round_ - state.left_out_since >= probe_after) {
      state.probing_from = transfer;
      transfer = 0.0;  // a probe: plan it once more and measure again
      state.left_out_since = round_;
    }
    estimates.push_back({trainer, state.speed.samples_per_second(), transfer});
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
      calibrated_trainers(), " trainers (", options_.schedule.split, " shares): ", options_.train_samples,
      " samples per epoch, ", options_.schedule.epochs, " epochs; epoch ", epoch_, " has ", pool_.remaining(),
      " samples to train");
  if (pool_.empty()) end_epoch();  // resumed just after an epoch's last round
  plan_round();
}

double Scheduler::deadline_seconds() const {
  return std::max(options_.schedule.deadline_min_seconds,
                  options_.schedule.deadline_factor * slowest_last_round_seconds_);
}

void Scheduler::plan_round() {
  if (round_open_ || finished_ || calibrated_trainers() == 0) return;
  const auto round_samples = options_.round_samples_per_trainer > 0
                                 ? options_.round_samples_per_trainer * calibrated_trainers()
                                 : static_cast<std::uint64_t>(options_.schedule.round_samples);
  std::vector<msg::SampleRange> taken = pool_.take(round_samples);
  std::uint64_t total = 0;
  for (const auto& range : taken) total += range.size();
  if (total == 0) return;

  ++round_;
  msg::RoundOpened opened;
  opened.round = round_;
  opened.epoch = epoch_;
  opened.model_version = model_version_;
  opened.deadline_seconds = deadline_seconds();
  opened.incarnation = options_.incarnation;
  SamplePool round_pool;
  round_pool.give_back(taken);
  std::vector<std::pair<std::string, msg::RoundPlan>> plans;
  double expected_seconds = 0.0;  // the slowest planned share at its trainer's measured speed
  in_flight_.clear();
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
      state.left_out_since = left_out ? round_ : 0;
      state.probe_after = 0;
      const std::string text = left_out ? share.trainer + " left out of the rounds: " + share.left_out
                                        : share.trainer + " is planned again";
      log(LogLevel::kWarn, bus_.name(), text);
      msg::Event event;
      event.type = left_out ? "left_out" : "planned_again";
      event.text = text;
      event.round = round_;
      event.labels["trainer"] = share.trainer;
      bus_.publish(kEventTopic, event);
    }
    if (left_out || share.samples == 0) continue;
    const double speed = state.speed.samples_per_second();
    if (speed > 0)
      expected_seconds = std::max(expected_seconds, state.transfer_seconds() + share.samples / speed);
    const MicroBatchPlan micro = micro_batches_for(
        share.samples, static_cast<std::uint64_t>(options_.schedule.micro_batch), state.max_micro_batch);
    msg::RoundPlan plan;
    plan.round = round_;
    plan.epoch = epoch_;
    plan.model_version = model_version_;
    plan.ranges = round_pool.take(share.samples);
    plan.micro_batch = micro.micro_batch;
    plan.accumulation_steps = micro.accumulation_steps;
    plan.incarnation = options_.incarnation;
    opened.planned_samples[share.trainer] = share.samples;
    opened.planned_ranges[share.trainer] = plan.ranges;
    in_flight_[share.trainer] = plan.ranges;
    plans.emplace_back(share.trainer, std::move(plan));
  }
  // A share the last round's times do not cover (the first round, a round after one that missed
  // its deadline, a larger share) gets a deadline from its own expected time; else a trainer
  // slower than deadline_min_seconds per share could miss every deadline.
  opened.deadline_seconds =
      std::max(opened.deadline_seconds, options_.schedule.deadline_factor * expected_seconds);
  for (auto& [trainer, plan] : plans) plan.deadline_seconds = opened.deadline_seconds;
  // The aggregator learns of the round before any trainer can answer it.
  bus_.send(kAggregatorName, opened, Stamp{round_, model_version_});
  for (const auto& [trainer, plan] : plans) bus_.send(trainer, plan, Stamp{round_, model_version_});
  round_open_ = true;
}

void Scheduler::handle(const msg::RoundClosed& closed, const Incoming&) {
  if (!round_open_ || closed.round != round_) {
    log(LogLevel::kWarn, bus_.name(), "ignored RoundClosed for round ", closed.round,
        " (open round: ", round_open_ ? std::to_string(round_) : std::string("none"), ")");
    return;
  }
  round_open_ = false;
  model_version_ = closed.model_version;
  double slowest = 0.0;
  for (const auto& outcome : closed.outcomes) {
    if (outcome.delivered) {
      epoch_trained_ += outcome.samples;
      slowest = std::max(slowest, outcome.compute_seconds);
      auto trainer = live_.find(outcome.trainer);
      if (trainer != live_.end() && outcome.compute_seconds > 0) {
        TrainerState& state = trainer->second;
        state.speed.observe(outcome.samples, outcome.compute_seconds);
        const double transfer = std::max(0.0, outcome.arrival_seconds - outcome.compute_seconds);
        state.recent_transfers.push_back(transfer);
        if (state.recent_transfers.size() > kTransferWindow) state.recent_transfers.pop_front();
        if (state.probing_from) state.probe_after = rounds_before_next_probe(*state.probing_from, transfer);
      }
    } else {
      auto trainer = live_.find(outcome.trainer);
      if (trainer != live_.end() && trainer->second.probing_from) {
        trainer->second.probe_after = rounds_before_next_probe(*trainer->second.probing_from, -1.0);
      }
      pool_.give_back(in_flight_[outcome.trainer]);
      log(LogLevel::kWarn, bus_.name(), outcome.trainer, " missed round ", closed.round, ": ",
          outcome.planned_samples, " samples return to the pool");
    }
  }
  in_flight_.clear();
  for (auto& [trainer, state] : live_) state.probing_from.reset();
  if (slowest > 0) slowest_last_round_seconds_ = slowest;
  if (pool_.empty()) end_epoch();
  plan_round();
}

void Scheduler::end_epoch() {
  const bool last = epoch_ >= static_cast<std::uint64_t>(options_.schedule.epochs);
  bus_.send(kAggregatorName, msg::EpochEnded{epoch_, epoch_trained_, last});
  if (last) {
    finished_ = true;
    return;
  }
  ++epoch_;
  epoch_trained_ = 0;
  pool_.reset(options_.train_samples);
}

}  // namespace filo
