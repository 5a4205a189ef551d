#pragma once
// The trainer registers its node, keeps a replica of the model at the version the aggregator
// published, trains the samples each round's plan gives it and sends back summed gradients.
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <variant>

#include <torch/torch.h>

#include "actors/learning/dataset.hpp"
#include "actors/learning/model.hpp"
#include "actors/learning/optimizers.hpp"
#include "actors/learning/task.hpp"
#include "actors/learning/training.hpp"
#include "messages/event.hpp"
#include "messages/membership.hpp"
#include "messages/model.hpp"
#include "messages/round.hpp"
#include "messages/send_buffers.hpp"
#include "messages/test_aid.hpp"
#include "runtime/actor_loop.hpp"
#include "runtime/bus.hpp"
#include "runtime/config.hpp"

namespace filo {

/// Exit codes of a node process.
constexpr int kExitFinished = 0;
constexpr int kExitRejected = 2;
constexpr int kExitCoordinatorUnreachable = 3;

struct TrainerOptions {
  std::string node;
  std::string device = "cpu";
  std::string coordinator;  /// the coordinator's listen endpoint
  DataOptions data;         /// where this node finds the dataset
  Milliseconds heartbeat_interval{250};
  int liveness = 4;
  double connect_timeout_seconds = 30;
  std::uint32_t max_micro_batch = 0;  /// reported to the scheduler; 0 = no memory limit known
  double slowdown = 1.0;              /// TEST AID: see NodeOptions::slowdown
  /// TEST AID (in-process tests only; no configuration sets it): in these rounds an infinity is
  /// written into this trainer's gradients after backward, as an fp16 overflow would leave there,
  /// and the gradients are checked as fp16's are whatever the precision. Gradient mode only.
  std::set<std::uint64_t> overflow_rounds;
};

class Trainer final {
 public:
  using Inbox = std::variant<msg::Admission, msg::Heartbeat, msg::RoundPlan, msg::ModelState,
                             msg::RunFinished, msg::SetSlowdown>;

  Trainer(const SocketFactory& sockets, TrainerOptions options, msg::HardwareReport report,
          const StopFlag& stop, const TimeSource& time = steady_time());
  /// Runs until the run finishes (0), the node is rejected (2), the coordinator stays silent
  /// past the connect timeout (3), or the process is asked to stop (0).
  int run();
  const std::string& name() const { return bus_.name(); }
  /// Host buffers allocated for contributions so far: flat once rounds repeat.
  std::size_t send_buffer_allocations() const { return send_buffers_.allocations(); }
  /// Host (and device) buffers allocated to receive models so far: flat once rounds repeat.
  std::size_t model_staging_allocations() const { return model_staging_.allocations(); }
  /// The replica and the version last loaded into it (tests, once the trainer's thread stopped).
  const Model* replica() const { return model_ ? &*model_ : nullptr; }
  std::uint64_t loaded_model_version() const { return last_loaded_version_; }

  void handle(const msg::Admission& admission, const Incoming& from);
  void handle(const msg::Heartbeat& heartbeat, const Incoming& from);
  void handle(const msg::RoundPlan& plan, const Incoming& from);
  void handle(const msg::ModelState& state, const Incoming& from);
  void handle(const msg::RunFinished& finished, const Incoming& from);
  void handle(const msg::SetSlowdown& slowdown, const Incoming& from);

 private:
  enum class State { kRegistering, kAdmitted, kDone };
  void tick(Clock::time_point now);
  void register_again(const std::string& why);
  /// Fingerprints this node's copy of the run's training set, as the registrar asked.
  void describe_data(const msg::RunSpec& run);
  void request_snapshot_soon();
  void train_if_ready();
  void train(const msg::RoundPlan& plan, double model_wait_seconds);
  /// Measures the run's model at its micro-batch size and tells the scheduler.
  /// The largest micro-batch up to `largest` whose step leaves the bus served in time.
  std::int64_t time_bounded_micro_batch(std::int64_t largest);
  void calibrate();
  /// On a GPU, the largest micro-batch of the run's model the device holds, less a margin.
  std::uint32_t probe_max_micro_batch(std::int64_t micro_batch);
  ShareOptions share_options(std::int64_t micro_batch, std::uint64_t epoch, double loss_scale,
                             std::function<void()> between) const;
  /// With --slowdown F, stretches the work `timer` measured to F x its busy time t in all, serving
  /// the bus: it waits (F - 1) x t less whatever the work spent waiting for a CPU. t is the
  /// work's CPU time where that is less than its wall time. A slowed device's micro-batch takes
  /// F t however busy the host is; on a machine shared by several simulated nodes, waiting for a
  /// CPU a neighbour holds is an artefact of sharing, not of the device, and adding it on top made
  /// slowed trainers slower together than apart (their rounds start at the same moment).
  void simulate_slowdown(const WorkTimer& timer);
  /// Reads both sockets; while working, only liveness and test-aid messages are handled and the
  /// rest wait in `deferred_` (a model arriving mid-share must not overwrite the replica).
  void read_mailbox(zmq::socket_t& socket);
  /// Between micro-batches: due timers (heartbeats out) and the mailbox (heartbeats in), so that
  /// a share longer than the liveness timeout does not look like a silent coordinator.
  void serve_bus_while_working();
  /// Runs `work` with the mailbox deferring, then handles what was deferred, in order.
  void work(const std::function<void()>& job);

  TrainerOptions options_;
  msg::HardwareReport report_;
  BusClient bus_;
  ActorLoop loop_;
  ActorLoop::TimerId heartbeat_timer_{};
  State state_ = State::kRegistering;
  int exit_code_ = kExitFinished;
  Clock::time_point registering_since_;
  Clock::time_point last_report_sent_{};
  Clock::time_point last_heard_;
  std::optional<msg::RunSpec> run_;
  std::string subscribed_to_;
  std::string described_;  // the dataset spec report_'s fingerprint was computed for
  Dataset data_;
  std::optional<Model> model_;
  Task task_ = Task::kClassification;
  Precision precision_ = Precision::kFp32;
  std::string layout_;                              // fingerprint of the model's flat layout
  std::unique_ptr<FlatOptimizer> local_optimizer_;  // local-sgd only; its state spans rounds
  FlatTensors local_before_;                        // local-sgd: the parameters a round started from
  FlatTensors local_deltas_;
  std::optional<std::uint64_t> model_version_;  // none: no clean replica (after training on it)
  std::uint64_t last_loaded_version_ = 0;
  std::optional<msg::RoundPlan> pending_;
  Clock::time_point pending_since_{};  // when the pending plan arrived
  SendBuffers send_buffers_;           // pinned on a GPU: device → pinned buffer → zmq frames
  HostStaging model_staging_;          // pinned on a GPU: zmq frames → pinned buffer → device
  bool working_ = false;
  std::deque<Incoming> deferred_;
  std::optional<Clock::time_point> snapshot_requested_;
  torch::Tensor order_;
  std::uint64_t order_epoch_ = 0;
};

}  // namespace filo
