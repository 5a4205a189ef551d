#include "actors/scheduler.hpp"

#include <algorithm>
#include <cmath>

#include "actors/aggregator.hpp"

namespace filo {
namespace {
constexpr Milliseconds kStartCheckInterval{50};
constexpr double kSpeedSmoothing = 0.3;  // weight of the newest measurement
}  // namespace

void SamplePool::reset(std::uint64_t size) {
  ranges_.clear();
  if (size > 0) ranges_.push_back({0, size});
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

Scheduler::Scheduler(const SocketFactory& sockets, const std::string& hub_endpoint,
                     SchedulerOptions options, const StopFlag& stop)
    : options_(std::move(options)), bus_(sockets, kSchedulerName), loop_(stop) {
  bus_.connect(hub_endpoint);
  pool_.reset(options_.train_samples);
  loop_.on_readable(bus_.addressed(), [this] {
    while (auto incoming = bus_.receive(bus_.addressed())) dispatch(*this, *incoming, bus_.limits(), bus_.name());
  });
  loop_.every(kStartCheckInterval, [this] { maybe_start(Clock::now()); });
}

void Scheduler::run() { loop_.run(); }

void Scheduler::handle(const msg::MembershipChange& change, const Incoming&) {
  using Kind = msg::MembershipChangeKind;
  if (change.change == Kind::kJoined || change.change == Kind::kRejoined) {
    live_[change.trainer] = TrainerState{};
    if (started_ && !round_open_) plan_round();  // the cluster was idle, waiting for trainers
  } else {
    live_.erase(change.trainer);  // its in-flight samples return when the aggregator closes the round
  }
}

void Scheduler::maybe_start(Clock::time_point now) {
  if (started_) return;
  if (live_.size() < static_cast<std::size_t>(options_.schedule.min_trainers)) {
    enough_trainers_since_.reset();
    return;
  }
  if (!enough_trainers_since_) enough_trainers_since_ = now;
  if (seconds_between(*enough_trainers_since_, now) < options_.schedule.start_grace_seconds) return;
  started_ = true;
  log(LogLevel::kInfo, bus_.name(), "starting with ", live_.size(), " trainers: ",
      options_.train_samples, " samples per epoch, ", options_.schedule.epochs, " epochs");
  plan_round();
}

double Scheduler::deadline_seconds() const {
  return std::max(options_.schedule.deadline_min_seconds,
                  options_.schedule.deadline_factor * slowest_last_round_seconds_);
}

void Scheduler::plan_round() {
  if (round_open_ || finished_ || live_.empty()) return;
  const auto round_samples = static_cast<std::uint64_t>(options_.schedule.round_samples);
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
  std::vector<msg::RoundPlan> plans;
  const auto shares = equal_shares(total, live_.size());
  SamplePool round_pool;
  round_pool.give_back(taken);
  std::size_t index = 0;
  in_flight_.clear();
  for (const auto& [trainer, state] : live_) {
    const std::uint64_t share = shares[index++];
    if (share == 0) continue;
    msg::RoundPlan plan;
    plan.round = round_;
    plan.epoch = epoch_;
    plan.model_version = model_version_;
    plan.ranges = round_pool.take(share);
    plan.micro_batch = static_cast<std::uint32_t>(
        std::min<std::uint64_t>(share, static_cast<std::uint64_t>(options_.schedule.micro_batch)));
    plan.accumulation_steps = static_cast<std::uint32_t>((share + plan.micro_batch - 1) / plan.micro_batch);
    plan.deadline_seconds = opened.deadline_seconds;
    opened.planned_samples[trainer] = share;
    in_flight_[trainer] = plan.ranges;
    plans.push_back(std::move(plan));
  }
  // The aggregator learns of the round before any trainer can answer it.
  bus_.send(kAggregatorName, opened, Stamp{round_, model_version_});
  index = 0;
  for (const auto& [trainer, share] : opened.planned_samples) {
    bus_.send(trainer, plans[index++], Stamp{round_, model_version_});
  }
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
        const double measured = static_cast<double>(outcome.samples) / outcome.compute_seconds;
        double& speed = trainer->second.samples_per_second;
        speed = speed == 0.0 ? measured : kSpeedSmoothing * measured + (1 - kSpeedSmoothing) * speed;
      }
    } else {
      pool_.give_back(in_flight_[outcome.trainer]);
      log(LogLevel::kWarn, bus_.name(), outcome.trainer, " missed round ", closed.round, ": ",
          outcome.planned_samples, " samples return to the pool");
    }
  }
  in_flight_.clear();
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
