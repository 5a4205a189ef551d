#pragma once
// The aggregator keeps the model, its optimizer and its version. It accepts contributions only
// from trainers the scheduler planned for an open round (and says so to the scheduler, accepted or
// refused), holds them, and when the scheduler closes the round combines exactly the ones it names,
// steps, and publishes the new model at once. It also evaluates an epoch's model, answers
// snapshot requests, and writes checkpoints from a snapshot taken between rounds on a thread of
// their own. It does not decide which contributions count, when a round ends or what an epoch is:
// the scheduler does.
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <variant>
#include <vector>

#include <torch/torch.h>

#include "actors/learning/averaging.hpp"
#include "actors/learning/dataset.hpp"
#include "actors/learning/evaluation.hpp"
#include "actors/learning/model.hpp"
#include "actors/learning/optimizers.hpp"
#include "actors/learning/robust_combining.hpp"
#include "messages/membership.hpp"
#include "messages/model.hpp"
#include "messages/round.hpp"
#include "messages/send_buffers.hpp"
#include "runtime/actor_loop.hpp"
#include "runtime/bus.hpp"
#include "runtime/checkpoint.hpp"
#include "runtime/config.hpp"
#include "runtime/drop_counters.hpp"

namespace filo {

struct AggregatorOptions {
  msg::RunSpec run;
  std::string model_archive;  /// the run's model as TorchScript bytes: its initial weights
  OptimizerOptions optimizer;
  DataOptions data;  /// the test set evaluated after each epoch
  std::string run_dir;
  /// Where the model, the optimizer state and the sums live (run.device): on a GPU, received
  /// frames are staged through reused pinned buffers and summed there, and broadcasts leave
  /// through pinned buffers too.
  torch::Device device = torch::kCPU;
  std::uint64_t incarnation = 1;     /// this start of the coordinator
  std::optional<Checkpoint> resume;  /// continue from this checkpoint's model and optimizer
  /// Told of each checkpoint written (on the writer's thread): a coordinator pair replicates it.
  CheckpointWriter::Written checkpoint_written;
  DropCounters* drops = nullptr;  /// refused messages of this process; may be null
  /// bound "off": norms are not measured (reported as 0); combine and trim: how a round of 3 or
  /// more combines; min_direction above -1: each contribution's direction is scored.
  RobustOptions robust;
};

/// What a checkpoint written by the aggregator says about the run and the round state it carries.
msg::RunSpec checkpoint_run_spec(const Checkpoint& checkpoint);
nlohmann::json checkpoint_round_state(const Checkpoint& checkpoint);

class Aggregator final {
 public:
  using Inbox = std::variant<msg::RoundOpened, msg::Contribution, msg::CombineRound, msg::Evaluate,
                             msg::SnapshotRequest>;

  Aggregator(const SocketFactory& sockets, const std::string& hub_endpoint, AggregatorOptions options,
             const StopFlag& stop, const TimeSource& time = steady_time());
  void run();

  void handle(const msg::RoundOpened& opened, const Incoming& from);
  void handle(const msg::Contribution& contribution, const Incoming& from);
  void handle(const msg::CombineRound& combine, const Incoming& from);
  void handle(const msg::Evaluate& evaluate, const Incoming& from);
  void handle(const msg::SnapshotRequest& request, const Incoming& from);

  /// Waits until the checkpoints asked for so far are on disk (tests; the end of a run).
  bool wait_for_checkpoints(std::chrono::milliseconds timeout) { return checkpoints_.wait_idle(timeout); }
  /// Host buffers allocated for model broadcasts so far: flat once rounds repeat.
  std::size_t model_buffer_allocations() const { return model_buffers_.allocations(); }
  /// The model as combined so far (tests, once the aggregator's thread has stopped).
  const Model& model() const { return model_; }

 private:
  struct Held {
    msg::Contribution header;
    std::vector<ReceivedTensor> gradients;  // views into the message's frames, kept alive with them
    std::vector<ReceivedTensor> buffers;
    std::vector<SparseGroup> sparse;  // compressed local-sgd: the deltas, read from `gradients`
  };
  /// How a round's contributions are read and combined (its RoundOpened says; auto mode chooses
  /// round by round).
  struct Exchange {
    bool local = false;       // local-sgd's parameter changes, else gradients
    bool compressed = false;  // local-sgd's changes, compressed (and then the downlink too)
  };
  struct HeldRound {
    msg::RoundOpened plan;
    std::map<std::string, Held> held;
  };

  void refuse(const Incoming& from, const msg::Contribution& contribution, const std::string& reason);
  /// Tells the scheduler that `contribution` was accepted (held, or an fp16 overflow report), with
  /// the norm of its tensors.
  void report_received(const Incoming& from, const msg::Contribution& contribution, bool overflow,
                       double norm);
  /// Sums of round `round` again from the contributions held for it, leaving out `without`.
  void average_again(std::uint64_t round, const std::string& without);
  /// Adds one held contribution to the averager's sums, dense or compressed.
  void add_to_sums(const msg::RoundOpened& plan, const Held& held);
  Exchange exchange_of(const msg::RoundOpened& opened) const;
  void combine(const msg::CombineRound& combine);
  /// A round's contributions as robust combining takes them (actors/learning/robust_combining):
  /// one row each, its per-sample vector pointing the way a gradient does, and its share of the
  /// samples. Nothing for fewer than kMinRobustRows.
  struct RobustRows {
    torch::Tensor rows;     // [n, parameters] fp32, on the model's device
    torch::Tensor weights;  // [n], summing to 1
    std::vector<double> samples;
  };
  std::optional<RobustRows> robust_rows(const HeldRound& round, const std::set<std::string>& present);
  /// robust.combine "trimmed" or "centered-clip": replaces the mean gradient the averager wrote
  /// (keeping the clipped centre in `clipped`, for the scores).
  void combine_robustly(const RobustRows& rows, std::optional<ClippedCentre>& clipped);
  /// Each contribution's direction against the others', into `answer` (shares of
  /// kMinSamplesBoundedBelow or more).
  void score_directions(const RobustRows& rows, std::optional<ClippedCentre>& clipped,
                        const std::set<std::string>& present, msg::RoundCombined& answer);
  void answer(const msg::RoundCombined& answer);
  /// Publishes the whole model (to every trainer, or as `to`'s snapshot); the bytes of its frames.
  std::uint64_t publish_model(const std::string& to);
  /// A compressed downlink: the step just taken, as the update every replica applies; its bytes.
  std::uint64_t publish_update(std::uint64_t base_version, const std::vector<SparseGroup>& sent);
  void checkpoint(const msg::CombineRound& combine);
  void collect_evaluation();
  void restore(const Checkpoint& checkpoint);
  /// Writes `model` as RUN_DIR/model.pt and RUN_DIR/model.safetensors (each atomically); their paths.
  std::vector<std::string> write_model_files(const Model& model, std::uint64_t model_version) const;
  /// On the checkpoint writer's thread: the model files beside each checkpoint, from its snapshot.
  void export_checkpoint(const nlohmann::json& meta, const std::vector<NamedTensor>& snapshot);
  void count_drop(const std::string& reason);

  AggregatorOptions options_;
  BusClient bus_;
  ActorLoop loop_;
  CompressionOptions compression_;  // from the run: how trainers send their deltas
  RobustCombine combine_;           // from options_.robust.combine
  Model model_;
  std::string layout_;  // fingerprint of the model's flat layout, checked on every message
  /// Compressed local-sgd: the replicas' model and what of the steps has not reached them yet
  /// (none otherwise: each step publishes the whole model).
  std::optional<CompressedDownlink> downlink_;
  std::unique_ptr<FlatOptimizer>
      optimizer_;  // gradient mode's (auto: its gradient rounds'), or local-sgd's outer
  std::unique_ptr<FlatOptimizer> outer_optimizer_;  // auto mode: the outer optimizer of its local-sgd rounds
  Exchange last_exchange_;                          // of the last round combined
  ContributionAverager averager_;
  /// robust_rows' rows, reused round after round (on the MLP, 3 × 7.4 MB a round), and its staging.
  torch::Tensor robust_buffer_;
  HostStaging robust_staging_;
  /// Which round's contributions the averager's sums hold, and whose: added as they arrive, so
  /// that a round's close usually finds its sum ready.
  std::uint64_t averaged_round_ = 0;
  std::set<std::string> averaged_;
  SendBuffers model_buffers_;
  std::uint64_t model_version_ = 0;
  std::uint64_t last_combined_round_ = 0;
  std::optional<msg::RoundCombined> last_answer_;                // sent again to a repeated CombineRound
  std::map<std::uint64_t, HeldRound> rounds_;                    // opened, not yet combined
  std::map<std::uint64_t, msg::CombineRound> waiting_combines_;  // arrived before an earlier round's
  std::map<std::uint64_t, msg::Evaluate> evaluating_;            // by epoch, submitted to the evaluator
  std::map<std::uint64_t, msg::Evaluated> evaluated_;            // kept to answer a repeated Evaluate
  /// A CPU copy of the model that only the checkpoint writer's thread uses, to write the model
  /// files from each checkpoint's snapshot; declared before checkpoints_, so it outlives that thread.
  Model exported_model_;
  CheckpointWriter checkpoints_;
  EvaluationWorker evaluator_;
};

}  // namespace filo
