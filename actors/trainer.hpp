#pragma once
// The trainer registers its node, keeps a replica of the model at the version the aggregator
// published, trains the samples each round's plan gives it and sends back summed gradients (or, in
// local-sgd, its parameters' change).
//
// Two threads: the trainer's actor thread serves the bus (heartbeats, plans, models, control) and
// never computes; its WorkerThread runs every piece of LibTorch work (loading a model into the
// replica, calibrating, training a share) one job at a time. The replica and everything a job
// touches (marked "worker's" below) belong to the job while one runs; the actor reads them only
// once take_finished() handed the job back. So a micro-batch of any length never makes the trainer
// deaf, and a model that arrives mid-share waits, whole, until the share is done.
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <variant>

#include <torch/torch.h>

#include "actors/learning/compression.hpp"
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
#include "runtime/worker_thread.hpp"

namespace filo {

/// Exit codes of a node process.
constexpr int kExitFinished = 0;
constexpr int kExitRejected = 2;
constexpr int kExitCoordinatorUnreachable = 3;
/// The trainer's own computation failed (LibTorch, CUDA); the reason is in its log and was sent
/// to the coordinator.
constexpr int kExitTrainerFailed = 4;

struct TrainerOptions {
  std::string node;
  std::string device = "cpu";
  /// The coordinator's listen endpoint, or a pair's two, comma-separated (the node asks the next
  /// one when it loses the one it has).
  std::string coordinator;
  DataOptions data;  /// where this node finds the dataset
  Milliseconds heartbeat_interval{250};
  int liveness = 4;
  double connect_timeout_seconds = 30;
  std::uint32_t max_micro_batch = 0;  /// reported to the scheduler; 0 = no memory limit known
  double slowdown = 1.0;              /// TEST AID: see NodeOptions::slowdown
  std::uint64_t fail_at_round = 0;    /// TEST AID: see NodeOptions::fail_at_round
  /// TEST AID (in-process tests only; no configuration sets it): in these rounds an infinity is
  /// written into this trainer's gradients after backward, as an fp16 overflow would leave there,
  /// and the gradients are checked as fp16's are whatever the precision. Gradient mode only.
  std::set<std::uint64_t> overflow_rounds;
  /// TEST AID (node.lie, or in-process tests): when above 0, reported as every contribution's compute
  /// time instead of the time measured, as a lying fleet member would.
  double claimed_compute_seconds = 0.0;
  /// TEST AID (node.lie, or in-process tests): every contribution's gradients (or parameter changes) are
  /// multiplied by this before they are sent, as a lying fleet member's would be (1 = honest).
  double gradient_scale = 1.0;
  /// TEST AID (node.lie, or in-process tests): every contribution's gradients (or parameter changes) are
  /// replaced by random values of the same norm, group by group, as a lying fleet member's would be.
  bool random_gradients = false;
  /// TEST AID: trains the right way on other samples than planned (the epoch's order rolled by
  /// half), as a member that skips its share's data while sending plausible gradients would.
  bool wrong_samples = false;
  /// TEST AID: reports an fp16 overflow (no tensors) in every round, as overflow_rounds does in some.
  bool fake_overflows = false;
};

/// Sets `options`' lying test aids from node.lie (see NodeOptions::lie); a ConfigError names an
/// item it does not know.
void apply_lie(const std::string& lie, TrainerOptions& options);

class Trainer final {
 public:
  using Inbox = std::variant<msg::Admission, msg::Heartbeat, msg::RoundPlan, msg::ModelState,
                             msg::ModelUpdate, msg::RunFinished, msg::SetSlowdown, msg::HandedOver>;

  Trainer(const SocketFactory& sockets, TrainerOptions options, msg::HardwareReport report,
          const StopFlag& stop, const TimeSource& time = steady_time());
  /// Runs until the run finishes (0), the node is rejected (2), the coordinator stays silent
  /// past the connect timeout (3), its computation fails (4), or the process is asked to stop (0).
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
  void handle(const msg::ModelUpdate& update, const Incoming& from);
  void handle(const msg::RunFinished& finished, const Incoming& from);
  void handle(const msg::HandedOver& handed, const Incoming& from);
  void handle(const msg::SetSlowdown& slowdown, const Incoming& from);

 private:
  enum class State { kRegistering, kAdmitted, kDone };
  /// A model broadcast or snapshot, kept whole until the worker is free to load it.
  struct HeldModel {
    msg::ModelState state;
    FrameList frames;
  };
  /// A compressed downlink's update, kept until the replica reaches its base version.
  struct HeldUpdate {
    msg::ModelUpdate update;
    FrameList frames;
  };
  /// What a training job hands back to the actor.
  struct TrainOutcome {
    std::optional<msg::Contribution> contribution;  // none: its plan could not be trained (see problem)
    std::vector<zmq::message_t> frames;
    std::string problem;  // why a held model was not loaded (bad layout, bad frames)
  };

  void tick(Clock::time_point now);
  void register_again(const std::string& why);
  /// A coordinator pair: moves this trainer's connections to the other coordinator.
  void ask_next_coordinator(const std::string& why);
  const std::string& coordinator() const { return coordinators_[coordinator_index_]; }
  /// Fingerprints this node's copy of the run's training set, as the registrar asked.
  void describe_data(const msg::RunSpec& run);
  void request_snapshot_soon();
  /// The run's steps come as compressed updates to apply (ModelUpdate), not whole models.
  bool downlink_compressed() const;
  /// The newest version the replica reaches by what it holds: the model being loaded or its
  /// base, then every held update that follows on.
  std::optional<std::uint64_t> reachable_version() const;
  /// Forgets the replica's versions and whatever was held to update it (a new run or admission).
  void forget_model();
  void check_snapshot_at(Clock::time_point when);
  /// Starts the next job the worker can do: calibrate first, then load the newest model and train
  /// the pending plan on it. Does nothing while a job runs.
  void advance();
  /// A job ended: its result goes out, or its failure is reported.
  void on_job_finished();
  void fail(const std::string& what, std::uint64_t round, const std::string& reason);
  void finish(int exit_code);

  // Jobs, run on the worker's thread.
  msg::Calibration calibrate();
  /// On a GPU, the largest micro-batch of the run's model the device holds, less a margin.
  std::uint32_t probe_max_micro_batch(std::int64_t micro_batch);
  /// Loads `model` into the replica (when given), applies `updates` in order, then trains `plan`
  /// on the result (when given), whose model is then `version`.
  TrainOutcome load_and_train(const std::optional<HeldModel>& model, const std::vector<HeldUpdate>& updates,
                              const std::optional<msg::RoundPlan>& plan, double model_wait_seconds,
                              std::uint64_t version);
  /// Why this trainer cannot do what `plan` asks (a mode its run does not allow), or nothing.
  std::optional<std::string> plan_problem(const msg::RoundPlan& plan) const;
  const std::string& plan_mode(const msg::RoundPlan& plan) const;
  std::optional<std::string> load_model(const HeldModel& model);
  /// Adds `update` to the base (local_before_) and makes the replica that, checked by fingerprint.
  std::optional<std::string> apply_update(const HeldUpdate& update);
  TrainOutcome train(const msg::RoundPlan& plan, double model_wait_seconds, std::uint64_t version);
  /// An overlapped plan (optimizer.overlap): the replica becomes the model kept in local_before_
  /// (version `version`) plus this trainer's own change in the round before, when that model does
  /// not hold it yet; returns what the round starts from.
  FlatTensors& start_overlapped(const msg::RoundPlan& plan, std::uint64_t version);
  /// local-sgd keeps the model last loaded in local_before_ (the base a compressed update applies to,
  /// and what an overlapped round starts from), its version in base_version_.
  bool keeps_base() const { return run_ && run_->mode != "gradient"; }
  ShareOptions share_options(std::int64_t micro_batch, std::uint64_t epoch, double loss_scale,
                             std::function<void()> between) const;
  /// With --slowdown F, stretches the work `timer` measured to F x its busy time t in all: it
  /// waits (F - 1) x t less whatever the work spent waiting for a CPU. t is the work's CPU time
  /// where that is less than its wall time. A slowed device's micro-batch takes F t however busy
  /// the host is; on a machine shared by several simulated nodes, waiting for a CPU a neighbour
  /// holds is an artefact of sharing, not of the device, and adding it on top made slowed trainers
  /// slower together than apart (their rounds start at the same moment).
  void simulate_slowdown(const WorkTimer& timer) const;
  /// Between micro-batches: ends the job early when the actor cancelled it.
  void check_cancelled() const;

  // The actor's.
  TrainerOptions options_;
  msg::HardwareReport report_;
  BusClient bus_;
  /// Heartbeats on a connection of their own: a contribution crossing a slow link on bus_'s
  /// connection must not hold them up until the registrar counts this trainer lost.
  BusClient heartbeat_bus_;
  ActorLoop loop_;
  ActorLoop::TimerId heartbeat_timer_{};
  State state_ = State::kRegistering;
  int exit_code_ = kExitFinished;
  Clock::time_point registering_since_;
  std::vector<std::string> coordinators_;  // options_.coordinator, split; one unless a pair
  std::size_t coordinator_index_ = 0;      // the one connected to now
  Clock::time_point asked_since_;          // when this trainer last moved to another coordinator
  Clock::time_point admitted_at_;          // its latest admission
  Clock::time_point last_report_sent_{};
  Milliseconds register_retry_{1000};  // how long an unanswered report waits, doubling up to 8 s
  Clock::time_point last_heard_;
  std::optional<msg::RunSpec> run_;
  std::string subscribed_to_;
  std::string described_;  // the dataset spec report_'s fingerprint was computed for
  bool calibrated_ = false;
  std::optional<HeldModel> held_model_;               // the newest model not yet loaded
  std::map<std::uint64_t, HeldUpdate> held_updates_;  // compressed downlink: by base version
  std::optional<std::uint64_t> model_version_;        // the replica's version; none when it is not clean
  /// local-sgd (keeps_base): the version the worker's local_before_ holds (the replica's as loaded,
  /// kept while local steps move the replica); none until a model loads or after one failed to.
  std::optional<std::uint64_t> base_version_;
  std::uint64_t last_loaded_version_ = 0;
  std::optional<msg::RoundPlan> pending_;
  Clock::time_point
      pending_since_{};  // when the pending plan arrived (or, behind a round, the trainer was free)
  /// optimizer.overlap: a plan that came while pending_'s (an earlier round, still open) waited.
  std::optional<msg::RoundPlan> queued_;
  std::optional<msg::RoundPlan> training_;        // the plan the running job trains
  std::optional<std::uint64_t> loading_version_;  // the model version the running job loads
  std::optional<Clock::time_point> snapshot_requested_;
  Milliseconds snapshot_grace_{50};         // how long a plan waits for its model before asking
  Milliseconds snapshot_retry_{500};        // how long an unanswered snapshot request waits
  double admission_seconds_ = 0.0;          // its last report to its admission (the model archive's trip)
  Milliseconds snapshot_first_retry_{500};  // ... the first time: twice how long registering took
  bool snapshot_asked_for_plan_ = false;    // a snapshot was asked for while the plan waited
  std::optional<Clock::time_point> snapshot_check_;  // when the armed check runs
  std::string precision_label_;                      // what the forward pass computed in, once measured
  std::atomic<double> slowdown_{1.0};
  // The running job's results, read once it is handed back.
  std::optional<msg::Calibration> calibration_result_;
  /// The last calibration this trainer sent: admitted again to the same run (by a restarted
  /// coordinator, or a pair's standby that took over), it sends this at once instead of measuring
  /// again: the device's speed did not change with the coordinator.
  std::optional<msg::Calibration> last_calibration_;
  std::optional<TrainOutcome> train_result_;

  // The worker's (see the top of this file).
  Dataset data_;
  std::optional<Model> model_;
  Task task_ = Task::kClassification;
  Precision precision_ = Precision::kFp32;
  std::string layout_;                              // fingerprint of the model's flat layout
  std::unique_ptr<FlatOptimizer> local_optimizer_;  // local-sgd only; its state spans rounds
  /// local-sgd: the model as last loaded (what a compressed update applies to, and an overlapped
  /// round starts from), which is also what a round not overlapped starts from
  FlatTensors local_before_;
  FlatTensors local_deltas_;
  /// optimizer.overlap: what an overlapped round started from, and this trainer's own change in
  /// the last round it trained (its number in own_change_round_), until the model holds it.
  bool overlap_ = false;  // the run's optimizer.overlap
  FlatTensors round_start_;
  FlatTensors own_change_;
  std::uint64_t own_change_round_ = 0;
  std::uint64_t own_change_incarnation_ = 0;
  CompressionOptions compression_;               // local-sgd: what of the change is sent
  std::optional<ErrorFeedback> error_feedback_;  // compressed local-sgd: what was not sent yet
  SendBuffers send_buffers_;                     // pinned on a GPU: device → pinned buffer → zmq frames
  HostStaging model_staging_;                    // pinned on a GPU: zmq frames → pinned buffer → device
  torch::Tensor order_;
  std::uint64_t order_epoch_ = 0;
  /// Last: its thread is joined before anything a job uses goes.
  std::unique_ptr<WorkerThread> worker_;
};

}  // namespace filo
