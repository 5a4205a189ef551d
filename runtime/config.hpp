#pragma once
// Configuration: options structs with documented defaults, built once from a TOML file under
// configs/ plus command-line overrides ("section.key=value"). Actors receive these structs and
// never read files or the environment themselves.
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "runtime/socket_factory.hpp"

namespace filo {

struct ConfigError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct DataOptions {
  std::string format = "idx";             /// idx, numpy, image_folder or tokens (actors/learning/dataset.hpp)
  std::string dataset = "fashion-mnist";  /// idx: fashion-mnist or mnist
  std::string path = "/usr/share/datasets/fashion-mnist";  /// the dataset's directory
  std::int64_t train_limit = 0;                            /// train on the first N training samples; 0 = all
  std::int64_t test_limit = 0;                             /// evaluate on the first N test samples; 0 = all
  std::int64_t image_size = 0;  /// image_folder: images are resized to this square size (required there)
  std::int64_t context = 0;     /// tokens: window length in tokens (required there)
  bool augment = false;         /// images: random crop (pad 4) and horizontal flip of training samples
  /// Normalisation per channel (or one value for all), from "0.4914,0.4822,0.4465"; empty: the
  /// training set's own statistics for integer images, none for float inputs.
  std::vector<double> mean, std;
};

struct ModelOptions {
  /// Built in: "cnn" (two conv layers + BatchNorm), "mlp", "resnet18" (CIFAR-style), "gpt".
  std::string name = "cnn";
  /// A TorchScript file (torch.jit.script(model).save(path)) to train instead of a built-in model.
  std::string path;
  std::string task = "classification";  /// or "language_model"
  std::int64_t layers = 4;              /// gpt: transformer blocks
  std::int64_t heads = 4;               /// gpt: attention heads
  std::int64_t width = 128;             /// gpt: embedding width
  double dropout = 0.0;                 /// gpt: dropout
};

struct OptimizerOptions {
  /// "gradient": trainers send summed gradients and the aggregator steps `name` on their mean.
  /// "local-sgd": trainers step `name` locally over their share, one step per micro-batch, and
  /// send parameter deltas; the aggregator combines them by samples and steps the outer optimizer.
  /// "auto": the scheduler chooses one of the two for each round from the trainers' measured speeds
  /// and links (gradient while moving the model costs under `communication_fraction` of compute,
  /// else local-sgd with `compression`, default "topk-q8"), and says what it chose and why.
  std::string mode = "gradient";
  std::string name = "adam";  /// "sgd" (with momentum) or "adam"
  double learning_rate = 1e-3;
  double momentum = 0.9;  /// sgd only
  double weight_decay = 0.0;
  /// local-sgd: "average" (the model becomes the sample-weighted mean of the trainers' models)
  /// or "nesterov" (DiLoCo: SGD with Nesterov momentum on the mean delta as a pseudo-gradient).
  std::string outer = "average";
  double outer_learning_rate = 0.7;  /// nesterov only
  double outer_momentum = 0.9;       /// nesterov only
  /// local-sgd: the sync interval, in local steps per trainer per round on average (a round
  /// holds sync_steps x micro_batch samples per trainer; faster trainers take more steps).
  std::int64_t sync_steps = 8;
  /// sync_steps = "auto": the scheduler sets the sync interval so that a local-sgd round's exchange
  /// stays under `communication_fraction` of its compute (`sync_steps` is then the first guess).
  bool sync_steps_auto = false;
  /// mode or sync_steps "auto": the share of compute time that communication may cost.
  double communication_fraction = 0.1;
  /// local-sgd: what a trainer sends of its change. "none" (every value, fp32), "topk" (the largest
  /// `compression_fraction` of each chunk of `compression_chunk` values, fp32), "topk-q8" (the same
  /// as 8-bit codes with one scale per chunk). What is not sent stays with the trainer as an
  /// error-feedback residual and goes with a later round's change.
  std::string compression = "none";
  double compression_fraction = 0.01;
  std::int64_t compression_chunk = 4096;
  /// local-sgd: a round is planned while the one before it is still open, so that a trainer goes on
  /// with its next local steps while its change crosses the link (Streaming DiLoCo's overlap). A
  /// trainer starts each round from the model of the round before last plus its own change since;
  /// the outer update lands one round late.
  bool overlap = false;
};

struct ScheduleOptions {
  std::int64_t epochs = 3;
  std::int64_t round_samples = 128;   /// samples per round over all trainers: the global batch
  std::int64_t micro_batch = 64;      /// largest batch one forward pass takes
  std::int64_t min_trainers = 1;      /// rounds start once this many trainers are admitted
  double start_grace_seconds = 1.0;   /// after min_trainers joined, wait this long for more
  double deadline_min_seconds = 2.0;  /// a round's deadline is at least this...
  double deadline_factor = 4.0;       /// ...or this many times the last round's slowest trainer
  std::uint64_t seed = 1;
  std::string split = "proportional";  /// "proportional" to measured speed, or "equal"
  /// A trainer whose transfer time is this fraction of its compute time or more is left out of
  /// the round (the rule of the project filo grew from); 0 disables the rule.
  double max_transfer_ratio = 0.25;
  /// A live trainer that misses this many rounds in a row is taken out of the plans until it
  /// proves alive by delivering a probe (planned now and then); 0 = never taken out.
  std::int64_t max_missed_rounds = 3;
};

/// What the coordinator does with a member whose contributions cannot be honest.
struct RobustOptions {
  /// "refuse": a contribution whose norm per sample lies beyond `norm_factor` of the fleet's median
  /// (above or below), or above `norm_factor` times its sender's own recent median, does not count
  /// and its samples go back to the pool; "off": no bound.
  std::string bound = "refuse";
  double norm_factor = 8.0;
  /// A trainer with this many contributions refused as lies (norm bound, implausible report, bad
  /// tensors or numbers, a wrong sample count) within the last `refusal_window` rounds is excluded
  /// from the plans until an operator readmits it (`filo readmit`); 0 = never excluded.
  std::int64_t max_refusals = 3;
  std::int64_t refusal_window = 20;
  /// How a round's contributions combine: "mean" (weighted by samples: gradient mode stays exactly
  /// one large-batch step), "trimmed" (coordinate-wise, `trim` of the samples' weight cut from each
  /// end) or "centered-clip" (actors/learning/robust_combining). A round of fewer than 3
  /// contributions always takes the mean. centered-clip by default: a sign-flipped liar inside the
  /// norm bound took a mean run to 0.012 accuracy, and a centered-clip one to 0.754 (honest 0.752),
  /// for 3% of the time between rounds with 3 CNN trainers (README, Security).
  std::string combine = "centered-clip";
  double trim = 0.34;
  /// A trainer whose last `direction_window` scored contributions' directions (each one's cosine
  /// with the round's other contributions, clipped; shares of 16 samples or more, rounds of 3 or
  /// more) average under this scores a lie towards exclusion, round after round while it stays
  /// under; what it sent was combined already. -1 = never scored.
  double min_direction = 0.01;
  std::int64_t direction_window = 64;
};

struct TrainOptions {
  /// What trainers compute forward passes and losses in: "fp32", "bf16", "fp16", or "auto" (bf16 on
  /// a CPU or a GPU of compute capability 8.0+, fp16 on older GPUs). Parameters stay fp32.
  std::string precision = "fp32";
  double loss_scale = 65536.0;                     /// fp16: the first loss scale
  std::int64_t loss_scale_growth_interval = 2000;  /// fp16: good steps before the scale doubles
};

struct BusOptions {
  std::string listen = "tcp://127.0.0.1:5555";  /// coordinator: where actors connect
  std::string publish;        /// coordinator: events' PUB endpoint; empty = listen's port + 1 ('*' stays '*')
  std::string model_publish;  /// coordinator: models' PUB endpoint (trainers); empty = listen's port + 2
  std::string coordinator = "tcp://127.0.0.1:5555";  /// node: the coordinator's listen address
  std::int64_t heartbeat_interval_ms = 250;
  std::int64_t liveness = 4;            /// missed heartbeats before a peer counts as lost
  double connect_timeout_seconds = 30;  /// node: give up when no coordinator answers this long
  SocketLimits socket_limits;
};

struct NodeOptions {
  std::string name;                  /// empty = this machine's hostname
  std::string device = "cpu";        /// "cpu" or "cuda:N"
  std::int64_t threads = 1;          /// LibTorch intra-op threads of the trainer
  std::string cpus;                  /// CPUs to pin the node to, "0-3,8"; empty: any
  std::int64_t priority = 0;         /// user-set; carried in the hardware report
  std::int64_t max_micro_batch = 0;  /// largest micro-batch this device's memory takes; 0 = no limit
  /// TEST AID: behave this many times slower than this machine is (a micro-batch whose work took
  /// t seconds of CPU lasts slowdown * t in all). Seen by the scheduler only through measurement.
  double slowdown = 1.0;
  /// TEST AID: the trainer's computation throws in this round (a stand-in for a LibTorch or CUDA
  /// error); 0 = never.
  std::int64_t fail_at_round = 0;
  /// TEST AID: this node's trainers lie as a hostile fleet member would (the fault suite's liars
  /// scenario), a comma-separated list of: scale=X (gradients or changes times X), random (random
  /// values of the honest norm), zero-fast (zeros, reporting a millisecond of compute),
  /// wrong-samples (the right computation on other samples than planned), huge-timings (1e300 s of
  /// compute reported), fake-overflow (an fp16 overflow reported in every round). Empty: honest.
  std::string lie;
};

struct RunOptions {
  std::string run_dir = "runs/latest";  /// summary.json, rounds.jsonl, final model
  std::int64_t threads = 1;             /// LibTorch threads of the coordinator (step, evaluation)
  std::string cpus;                     /// CPUs to pin the coordinator to, "0-3,8"; empty: any
  /// Where the aggregator keeps the model and optimizer state and sums contributions: "cpu" or
  /// "cuda:N" ("cuda" = cuda:0). A device the coordinator lacks stops it with exit code 2.
  std::string device = "cpu";
  /// Rounds between checkpoints (model, optimizer, sample accounting) in run_dir/checkpoints;
  /// 0 = none. A killed coordinator loses at most this many rounds.
  std::int64_t checkpoint_every = 1;
  /// Started on a run_dir that holds checkpoints, the coordinator resumes that run.
  bool resume = true;
};

/// A coordinator pair (Binary Star): one active, one passive standby that holds the run's state as
/// of the active's last checkpoint and takes over when the active is lost and a node asks it to.
struct HaOptions {
  /// The other coordinator's bus.listen, tcp://HOST:PORT (its pair channel is PORT+3); empty: no pair.
  std::string peer;
  /// Start passive (`filo coordinator --standby-for PEER`); otherwise this one is the primary, which
  /// starts active unless it finds its peer active already.
  bool standby = false;
};

struct AdmissionOptions {
  std::int64_t min_memory_mb = 0;         /// a node needs this much available memory
  std::int64_t min_device_memory_mb = 0;  /// a cuda trainer's GPU needs this much memory
  std::string required_precisions;        /// e.g. "bf16,fp16"; empty = none required
  bool check_dataset = true;              /// a node's training labels must hash like the coordinator's
};

struct LocalOptions {
  /// 0: as many as a per-node list below names, else local_node_count()'s default.
  std::int64_t nodes = 0;
  std::string slowdowns;  /// TEST AID: "1,2,4" gives node i the i-th factor as node.slowdown
  std::string node_cpus;  /// "0/1/1" pins node i to the i-th CPU list as node.cpus
  /// "cuda:0,cpu,cpu" gives node i the i-th device as node.device (a mixed CPU+GPU fleet on one
  /// machine); nodes past the list keep node.device.
  std::string devices;
};

struct SecurityOptions {
  /// CurveZMQ on every tcp socket, with only authorized keys admitted. false is for a network you
  /// trust entirely: then anyone who reaches the port can act as a trainer (loudly warned).
  bool curve = true;
  /// A fleet's key directory on a shared file system (`filo keys fleet DIR`): the defaults for the
  /// three settings below, by role (coordinator.key, trainer.key or NODE.key, monitor.key, ...).
  std::string keys_dir;
  std::string key;                /// this process's key pair file (`filo keys new NAME` writes NAME.key)
  std::string coordinator_key;    /// node, monitor: the coordinator's public key (.pub file or Z85)
  std::string authorized_keys;    /// coordinator: a file or directory of "ROLE KEY [NODE]" lines
  std::int64_t max_peers = 1024;  /// coordinator: names outside peers may hold at once
  /// coordinator: names one node-bound key ("trainer KEY NODE") may hold at once: a node's trainers
  /// and their heartbeat connections, so that one member cannot take the room of those who join later.
  std::int64_t max_names_per_key = 32;
};

struct Config {
  DataOptions data;
  ModelOptions model;
  OptimizerOptions optimizer;
  ScheduleOptions schedule;
  RobustOptions robust;
  TrainOptions train;
  BusOptions bus;
  NodeOptions node;
  RunOptions run;
  HaOptions ha;
  AdmissionOptions admission;
  LocalOptions local;
  SecurityOptions security;
};

/// Reads `path` (none: defaults only), applies `overrides` ("schedule.epochs=3"), checks every
/// value. Throws ConfigError naming the file, the key and what was wrong.
Config load_config(const std::string& path, const std::vector<std::string>& overrides);

/// "bf16, fp16" → {"bf16", "fp16"}.
std::vector<std::string> split_list(const std::string& text);

/// "1,2,4" → {1, 2, 4}; throws ConfigError naming a bad item.
std::vector<double> parse_slowdowns(const std::string& text);

/// "0.5, 0.25" → {0.5, 0.25}; throws ConfigError naming `key` and a bad item.
std::vector<double> parse_numbers(const std::string& text, const std::string& key);
/// local.node_cpus "0/1/1" -> {"0", "1", "1"}: one CPU list per node, in node order.
std::vector<std::string> split_node_cpus(const std::string& text);

/// `filo local`'s default number of nodes, for a machine with fewer CPUs than that: beyond one
/// single-threaded trainer per CPU, trainers take turns on a core and every round waits for the
/// last one to be given a core again.
constexpr std::int64_t kDefaultLocalNodes = 3;
/// The nodes `filo local` starts: local.nodes when set; else the length of the longest per-node list
/// (slowdowns, node_cpus, devices); else kDefaultLocalNodes, or `usable_cpus` when fewer.
std::int64_t local_node_count(const LocalOptions& local, int usable_cpus);

/// The CURVE identity of a process acting as `role` (node: named `node_name`), from security.*.
/// Throws ConfigError saying which file is missing and how to make it.
CurveSettings curve_settings_for(const SecurityOptions& security, PeerRole role,
                                 const std::string& node_name = {});
/// The coordinator's authorized keys (null when CURVE is off). Throws ConfigError like the above.
std::shared_ptr<const AuthorizedKeys> authorized_keys_for(const SecurityOptions& security);

/// The PUB endpoint the coordinator binds, from bus.publish or derived from bus.listen.
std::string publish_endpoint_for(const BusOptions& bus);
/// The models' PUB endpoint the coordinator binds, from bus.model_publish or derived from bus.listen.
std::string model_endpoint_for(const BusOptions& bus);
/// The pair channel a coordinator binds (its heartbeats and replicas): bus.listen's port + 3.
std::string pair_endpoint_for(const BusOptions& bus);
/// The peer coordinator's pair channel: ha.peer's port + 3.
std::string peer_pair_endpoint_for(const HaOptions& ha);
/// bus.coordinator as the list of endpoints it names ("tcp://A:5555,tcp://B:5555": a pair).
std::vector<std::string> coordinator_endpoints(const BusOptions& bus);
/// A comma-separated list of endpoints, trimmed, empty entries dropped.
std::vector<std::string> split_endpoints(const std::string& list);

}  // namespace filo
