#pragma once
// The aggregator combines the trainers' contributions weighted by samples, steps the model,
// keeps the model version and the run record, and publishes each new model.
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include <torch/torch.h>

#include "actors/learning/dataset.hpp"
#include "actors/scheduler.hpp"
#include "messages/event.hpp"
#include "messages/membership.hpp"
#include "messages/model.hpp"
#include "messages/round.hpp"
#include "runtime/actor_loop.hpp"
#include "runtime/bus.hpp"
#include "runtime/checkpoint.hpp"
#include "runtime/config.hpp"
#include "runtime/run_record.hpp"

namespace filo {

constexpr const char* kAggregatorName = "aggregator";

/// What trainers send, and so how contributions combine.
enum class Combine {
  /// Gradient mode: per-trainer gradient sums, added and divided by the total sample count,
  /// equal one large-batch gradient, which becomes each parameter's .grad().
  kSummedGradients,
  /// Local-SGD mode: per-trainer parameter deltas, weighted by samples; the mean delta's
  /// negation becomes each parameter's .grad() (the pseudo-gradient an outer optimizer steps on).
  kParameterDeltas,
};

/// Combines contributions weighted by samples. Float buffers (BatchNorm statistics) become the
/// sample-weighted mean; integer buffers (counters) are never divided: they take the maximum.
class ContributionAverager {
 public:
  explicit ContributionAverager(torch::nn::Module& model, Combine combine = Combine::kSummedGradients);
  /// Why these tensors cannot be added (layout or non-finite values), or nothing.
  std::optional<std::string> problem(const std::vector<ReceivedTensor>& gradients,
                                     const std::vector<ReceivedTensor>& buffers) const;
  void add(const std::vector<ReceivedTensor>& gradients, const std::vector<ReceivedTensor>& buffers,
           std::uint64_t samples);
  /// Writes the mean gradient (or negated mean delta) into each parameter's .grad() and the
  /// combined buffers into the model, then clears the sums. Returns false (and changes nothing)
  /// when nothing was added.
  bool apply();
  std::uint64_t samples() const { return samples_; }

 private:
  Combine combine_;
  std::vector<NamedTensor> parameters_;
  std::vector<NamedTensor> buffers_;
  std::vector<torch::Tensor> gradient_sums_;
  std::vector<torch::Tensor> buffer_sums_;
  std::uint64_t samples_ = 0;
};

/// Builds the optimizer that configuration names.
std::unique_ptr<torch::optim::Optimizer> make_optimizer(const OptimizerOptions& options,
                                                        std::vector<torch::Tensor> parameters);
/// Local-SGD's outer optimizer on the pseudo-gradient: "average" is SGD at rate 1 without
/// momentum (the model becomes the mean of the trainers' models); "nesterov" is DiLoCo's.
std::unique_ptr<torch::optim::Optimizer> make_outer_optimizer(const OptimizerOptions& options,
                                                              std::vector<torch::Tensor> parameters);

struct AggregatorOptions {
  msg::RunSpec run;
  OptimizerOptions optimizer;
  DataOptions data;  /// the test set evaluated after each epoch
  std::string run_dir;
  std::int64_t epochs = 1;
  std::int64_t checkpoint_every = 1;  /// rounds between checkpoints; 0 = none
  std::uint64_t incarnation = 1;      /// this start of the coordinator
  std::optional<Checkpoint> resume;   /// continue from this checkpoint
};

/// The scheduler's part of a checkpoint: where the epoch stands.
SchedulerResume scheduler_resume_of(const Checkpoint& checkpoint);
/// The run a checkpoint belongs to.
msg::RunSpec run_spec_of(const Checkpoint& checkpoint);

class Aggregator final {
 public:
  using Inbox = std::variant<msg::RoundOpened, msg::Contribution, msg::MembershipChange, msg::EpochEnded,
                             msg::SnapshotRequest>;

  /// `on_finished` is called once the run is over and everything is written.
  Aggregator(const SocketFactory& sockets, const std::string& hub_endpoint, AggregatorOptions options,
             const StopFlag& stop, std::function<void()> on_finished);
  void run();

  void handle(const msg::RoundOpened& opened, const Incoming& from);
  void handle(const msg::Contribution& contribution, const Incoming& from);
  void handle(const msg::MembershipChange& change, const Incoming& from);
  void handle(const msg::EpochEnded& ended, const Incoming& from);
  void handle(const msg::SnapshotRequest& request, const Incoming& from);

 private:
  struct Arrival {
    std::uint64_t samples = 0;
    double compute_seconds = 0.0;
    double arrival_seconds = 0.0;  // since the round opened
  };
  struct OpenRound {
    msg::RoundOpened plan;
    Clock::time_point opened;
    ActorLoop::TimerId deadline_timer = 0;
    std::map<std::string, Arrival> arrived;
    double loss_sum = 0.0;
    std::uint64_t correct = 0;
  };
  struct TrainerTotals {
    std::uint64_t samples = 0;
    double compute_seconds = 0.0;
  };

  void accept(const msg::Contribution& contribution, const Incoming& from);
  bool every_live_trainer_answered() const;
  void close_round(const char* why);
  void publish_model(const std::string& to);
  void finish();
  void write_checkpoint();
  void restore(const Checkpoint& checkpoint);

  AggregatorOptions options_;
  BusClient bus_;
  ActorLoop loop_;
  std::function<void()> on_finished_;
  torch::nn::Sequential model_;
  std::unique_ptr<torch::optim::Optimizer> optimizer_;
  ContributionAverager averager_;
  Dataset test_set_;
  RunRecord record_;
  std::uint64_t model_version_ = 0;
  std::optional<OpenRound> open_;
  std::vector<Incoming> early_;  // contributions for a round not yet opened
  std::map<std::string, bool> live_;
  std::map<std::string, double> benchmark_gflops_;  // from each trainer's hardware report
  std::map<std::string, TrainerTotals> totals_;
  std::vector<std::uint64_t> samples_per_epoch_;
  std::vector<double> test_accuracy_per_epoch_;
  std::uint64_t epoch_samples_ = 0;
  double epoch_loss_sum_ = 0.0;
  std::uint64_t rounds_closed_ = 0;
  std::uint64_t epoch_ = 1;
  std::vector<msg::SampleRange> epoch_trained_;  // positions of this epoch delivered and counted
  CheckpointStore checkpoints_;
  double training_seconds_before_ = 0.0;  // of earlier incarnations of this run
  Clock::time_point started_ = Clock::now();
  std::optional<Clock::time_point> first_round_;
  Clock::time_point epoch_started_ = Clock::now();
};

}  // namespace filo
