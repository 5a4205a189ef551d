#pragma once
// The trainer registers its node, keeps a replica of the model at the version the aggregator
// published, trains the samples each round's plan gives it and sends back summed gradients.
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <variant>

#include <torch/torch.h>

#include "actors/learning/dataset.hpp"
#include "messages/event.hpp"
#include "messages/membership.hpp"
#include "messages/model.hpp"
#include "messages/round.hpp"
#include "messages/test_aid.hpp"
#include "runtime/actor_loop.hpp"
#include "runtime/bus.hpp"
#include "runtime/config.hpp"

namespace filo {

struct ShareResult {
  std::uint64_t samples = 0;
  double loss_sum = 0.0;
  std::uint64_t correct = 0;
};

/// Forward and backward over dataset `indices` in micro-batches, leaving the gradient of the
/// summed loss in each parameter's .grad() (fresh tensors: earlier gradients are released, not
/// zeroed, so frames still being sent keep their values). Calls `between_micro_batches` after
/// each micro-batch.
ShareResult train_share(torch::nn::Sequential& model, const Dataset& data, const torch::Tensor& indices,
                        std::int64_t micro_batch, const std::function<void()>& between_micro_batches = {});

/// Local-SGD: one `optimizer` step per micro-batch of `indices` on the micro-batch's mean loss
/// (each local step is an ordinary training step). `loss_sum` is still per sample, summed.
ShareResult train_local_steps(torch::nn::Sequential& model, const Dataset& data, const torch::Tensor& indices,
                              std::int64_t micro_batch, torch::optim::Optimizer& optimizer,
                              const std::function<void()>& between_micro_batches = {});

/// Each parameter's change since `before` (copies taken with snapshot(named_parameters(...))).
std::vector<NamedTensor> parameter_deltas(const torch::nn::Module& model,
                                          const std::vector<NamedTensor>& before);

/// The optimizer a local-sgd trainer steps, as the run spec names it.
std::unique_ptr<torch::optim::Optimizer> make_local_optimizer(const msg::RunSpec& run,
                                                              std::vector<torch::Tensor> parameters);

/// Dataset indices of `ranges` (positions in `order`).
torch::Tensor indices_of(const torch::Tensor& order, const std::vector<msg::SampleRange>& ranges);

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
};

class Trainer final {
 public:
  using Inbox = std::variant<msg::Admission, msg::Heartbeat, msg::RoundPlan, msg::ModelState,
                             msg::RunFinished, msg::SetSlowdown>;

  Trainer(const SocketFactory& sockets, TrainerOptions options, msg::HardwareReport report,
          const StopFlag& stop);
  /// Runs until the run finishes (0), the node is rejected (2), the coordinator stays silent
  /// past the connect timeout (3), or the process is asked to stop (0).
  int run();
  const std::string& name() const { return bus_.name(); }

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
  void request_snapshot_soon();
  void train_if_ready();
  void train(const msg::RoundPlan& plan);
  /// Measures the run's model at its micro-batch size and tells the scheduler.
  void calibrate();
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
  Clock::time_point registering_since_ = Clock::now();
  Clock::time_point last_report_sent_{};
  Clock::time_point last_heard_ = Clock::now();
  std::optional<msg::RunSpec> run_;
  std::string subscribed_to_;
  Dataset data_;
  torch::nn::Sequential model_{nullptr};
  std::unique_ptr<torch::optim::Optimizer> local_optimizer_;  // local-sgd only; its state spans rounds
  std::optional<std::uint64_t> model_version_;                // none: no clean replica (after training on it)
  std::uint64_t last_loaded_version_ = 0;
  std::optional<msg::RoundPlan> pending_;
  bool working_ = false;
  std::deque<Incoming> deferred_;
  std::optional<Clock::time_point> snapshot_requested_;
  torch::Tensor order_;
  std::uint64_t order_epoch_ = 0;
};

}  // namespace filo
