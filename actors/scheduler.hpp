#pragma once
// The scheduler plans each round: which positions of the epoch's shuffled order each live trainer
// trains, in what micro-batches, by when. Samples of a trainer that missed a round go back to the
// front of the pool, so every sample is trained exactly once per epoch.
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "messages/membership.hpp"
#include "messages/round.hpp"
#include "runtime/actor_loop.hpp"
#include "runtime/bus.hpp"
#include "runtime/config.hpp"

namespace filo {

constexpr const char* kSchedulerName = "scheduler";

/// The epoch's not-yet-trained positions, as ranges.
class SamplePool {
 public:
  void reset(std::uint64_t size);
  /// Removes and returns up to `count` positions from the front.
  std::vector<msg::SampleRange> take(std::uint64_t count);
  /// Puts `ranges` back at the front (they are retried first).
  void give_back(const std::vector<msg::SampleRange>& ranges);
  std::uint64_t remaining() const;
  bool empty() const { return ranges_.empty(); }

 private:
  std::deque<msg::SampleRange> ranges_;
};

/// Splits `total` into `parts` shares that differ by at most one, larger ones first.
std::vector<std::uint64_t> equal_shares(std::uint64_t total, std::size_t parts);

struct SchedulerOptions {
  ScheduleOptions schedule;
  std::uint64_t train_samples = 0;  /// samples per epoch
};

class Scheduler final {
 public:
  using Inbox = std::variant<msg::MembershipChange, msg::RoundClosed>;

  Scheduler(const SocketFactory& sockets, const std::string& hub_endpoint, SchedulerOptions options,
            const StopFlag& stop);
  void run();

  void handle(const msg::MembershipChange& change, const Incoming& from);
  void handle(const msg::RoundClosed& closed, const Incoming& from);

 private:
  struct TrainerState {
    double samples_per_second = 0.0;  // smoothed from measured compute times
  };
  void maybe_start(Clock::time_point now);
  void plan_round();
  void end_epoch();
  double deadline_seconds() const;

  SchedulerOptions options_;
  BusClient bus_;
  ActorLoop loop_;
  std::map<std::string, TrainerState> live_;
  SamplePool pool_;
  std::map<std::string, std::vector<msg::SampleRange>> in_flight_;
  std::optional<Clock::time_point> enough_trainers_since_;
  bool started_ = false;
  bool round_open_ = false;
  bool finished_ = false;
  std::uint64_t epoch_ = 1;
  std::uint64_t round_ = 0;
  std::uint64_t model_version_ = 0;
  std::uint64_t epoch_trained_ = 0;
  double slowest_last_round_seconds_ = 0.0;
};

}  // namespace filo
