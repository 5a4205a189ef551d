#pragma once
// Joining, staying and leaving: the registrar's traffic.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "messages/envelope.hpp"
#include "messages/tensor_frames.hpp"

namespace filo::msg {

struct GpuInfo {
  std::int32_t index = 0;  // the CUDA device index it has on its node (cuda:N)
  std::string name;
  std::string uuid;
  std::int32_t compute_capability_major = 0;
  std::int32_t compute_capability_minor = 0;
  std::int64_t total_memory_bytes = 0;
  std::int64_t free_memory_bytes = 0;
  // Measured by the benchmarker (empty or 0 when it was not run or failed; see benchmark_status).
  std::map<std::string, double> gemm_tflops;  // cuBLAS GEMM by precision: fp16, bf16, tf32, fp32, fp64
  double host_to_device_gbps = 0.0;           // pinned memory, GB/s (1e9 bytes)
  double device_to_host_gbps = 0.0;
  std::string benchmark_status;  // the failing call and its status string, when one failed
  MSGPACK_DEFINE_MAP(index, name, uuid, compute_capability_major, compute_capability_minor,
                     total_memory_bytes, free_memory_bytes, gemm_tflops, host_to_device_gbps,
                     device_to_host_gbps, benchmark_status)
};

// trainer → registrar, on start and whenever it must register again: who it is and what it has.
// A node is admitted only once a complete report arrives.
struct HardwareReport {
  static constexpr MessageKind kKind = MessageKind::kHardwareReport;
  std::string node;    // e.g. "node-3"
  std::string device;  // "cpu" or "cuda:0"
  std::string hostname;
  std::int32_t cpu_cores = 0;
  std::int64_t memory_available_bytes = 0;
  std::int64_t swap_available_bytes = 0;
  double cpu_gemm_gflops = 0.0;
  std::vector<GpuInfo> gpus;
  std::string gpu_status;  // why no GPU is listed, when none is
  std::int32_t priority = 0;
  std::int32_t torch_threads = 0;
  std::vector<std::string> precisions;  // what the trainer's device computes in: "fp32", "bf16", ...
  // The node's copy of the run's training set, fingerprinted in the format the registrar named
  // (empty until it has asked; dataset_problem says why there is none).
  std::string dataset_fingerprint;
  std::string dataset_format;
  std::string dataset_problem;
  // Which registration of this process the report belongs to (1, 2, ... each time it registers
  // again): a report repeated within one registration is the same to the byte, and the registrar
  // sends no second model archive for it while the first may still be on its way.
  std::uint64_t registration = 0;
  // The coordinator it lost (its heartbeats stopped) before it asks this one: to a coordinator
  // pair's passive one, a report with it is a node asking it to take over; empty otherwise.
  std::string lost_coordinator;
  MSGPACK_DEFINE_MAP(node, device, hostname, cpu_cores, memory_available_bytes, swap_available_bytes,
                     cpu_gemm_gflops, gpus, gpu_status, priority, torch_threads, precisions,
                     dataset_fingerprint, dataset_format, dataset_problem, registration, lost_coordinator)
};

// What every trainer of a run must agree on; the coordinator's configuration is the source. The
// model itself travels with the Admission that carries this, as a TorchScript archive.
struct RunSpec {
  std::string run_id;
  std::string model;                    // what the model is called: a built-in name or the user's file name
  std::string task = "classification";  // or "language_model"
  std::string model_sha256;             // of the TorchScript archive the Admission carries
  std::uint64_t model_bytes = 0;
  std::string dataset;              // built-in dataset name (idx) or the coordinator's data.path's name
  std::string data_format = "idx";  // idx, numpy, image_folder, tokens
  std::int64_t image_size = 0;      // image_folder: the side images are resized to
  std::int64_t context = 0;         // tokens: the window length
  bool augment = false;             // image data: random crop and flip while training
  std::vector<double> mean;         // per-channel normalisation of integer images
  std::vector<double> std;
  std::string dataset_fingerprint;  // of the coordinator's training set (nodes check theirs)
  std::uint64_t train_samples = 0;  // samples per epoch (a prefix of the training set)
  std::uint64_t seed = 0;           // epoch orders derive from it
  std::uint32_t micro_batch = 0;    // the micro-batch size trainers calibrate at
  std::string mode = "gradient";    // "gradient", "local-sgd" or "auto" (chosen round by round)
  std::string precision = "fp32";   // train.precision: each trainer resolves "auto" for its device
  // local-sgd: the optimizer each trainer steps locally
  std::string optimizer;
  double learning_rate = 0.0;
  double momentum = 0.0;
  double weight_decay = 0.0;
  // local-sgd: how trainers compress their change (optimizer.compression and its settings)
  std::string compression = "none";
  double compression_fraction = 0.01;
  std::int64_t compression_chunk = 4096;
  bool overlap = false;  // optimizer.overlap: rounds are planned behind open ones (RoundPlan::overlapped)
  MSGPACK_DEFINE_MAP(run_id, model, task, model_sha256, model_bytes, dataset, data_format, image_size,
                     context, augment, mean, std, dataset_fingerprint, train_samples, seed, micro_batch, mode,
                     precision, optimizer, learning_rate, momentum, weight_decay, compression,
                     compression_fraction, compression_chunk, overlap)
};

// registrar → trainer: admitted (with what the run needs, and the model's TorchScript archive as
// a uint8 tensor in frames after the body) or rejected (with why).
struct Admission {
  static constexpr MessageKind kKind = MessageKind::kAdmission;
  bool admitted = false;
  std::string reason;
  RunSpec run;
  std::string publish_endpoint;  // where events and control messages are published (monitors)
  std::string model_endpoint;    // where models, snapshots and control messages are published (trainers)
  std::int32_t heartbeat_interval_ms = 0;
  std::int32_t liveness = 0;  // missed heartbeats before a peer counts as lost
  // Not a verdict on the node: the registrar does not know this trainer (it was declared lost,
  // or the coordinator restarted) and wants its hardware report again.
  bool register_again = false;
  std::vector<TensorMeta> model_archive;  // admitted: one uint8 tensor, the archive's bytes
  // Not a verdict either: fingerprint your copy of the run's training set (run names its format;
  // its fingerprint is left out) and report again.
  bool describe_data = false;
  MSGPACK_DEFINE_MAP(admitted, reason, run, publish_endpoint, heartbeat_interval_ms, liveness, register_again,
                     model_archive, describe_data, model_endpoint)
};

// trainer → registrar every heartbeat interval, and registrar → trainer in reply: both sides
// learn that the other is alive at the application level, not just its socket. A trainer's says
// what it computes in and its device's peak memory, for the registrar's roll call.
struct Heartbeat {
  static constexpr MessageKind kKind = MessageKind::kHeartbeat;
  std::uint64_t model_version = 0;
  std::string precision;
  std::int64_t peak_memory_bytes = 0;
  MSGPACK_DEFINE_MAP(model_version, precision, peak_memory_bytes)
};

// trainer → registrar on a clean exit, so that its loss is not waited for.
struct Leave {
  static constexpr MessageKind kKind = MessageKind::kLeave;
  std::string reason;
  MSGPACK_DEFINE_MAP(reason)
};

// operator → scheduler (`filo readmit`): let a trainer excluded for lying back into the plans. Only
// an operator's key may send it, never the trainer itself.
struct Readmit {
  static constexpr MessageKind kKind = MessageKind::kReadmit;
  std::string trainer;
  MSGPACK_DEFINE_MAP(trainer)
};

// operator → scheduler (`filo failback`): a coordinator pair's active hands the run to its passive
// peer at the next round's end (README, "A standby coordinator"). An active that is not of a pair,
// or whose peer is not passive and listening, refuses it on the event stream.
struct Failback {
  static constexpr MessageKind kKind = MessageKind::kFailback;
  std::string reason;  // for the record: who asked, and why
  MSGPACK_DEFINE_MAP(reason)
};

// scheduler → each live trainer, once a failback handed the run to the pair's other coordinator
// (its peer holds the last round's checkpoint): ask that one now, rather than after `liveness`
// heartbeats of silence.
struct HandedOver {
  static constexpr MessageKind kKind = MessageKind::kHandedOver;
  std::uint64_t round = 0;  // the last round this coordinator closed
  std::string reason;
  MSGPACK_DEFINE_MAP(round, reason)
};

enum class MembershipChangeKind : std::uint8_t { kJoined = 0, kRejoined, kLost, kLeft };

// registrar → scheduler: a trainer joined, came back, was lost or left. The scheduler keeps the
// one membership view that rounds are planned and closed by.
struct MembershipChange {
  static constexpr MessageKind kKind = MessageKind::kMembershipChange;
  std::string trainer;
  MembershipChangeKind change = MembershipChangeKind::kJoined;
  std::string reason;
  double cpu_gemm_gflops = 0.0;
  std::string hostname;
  MSGPACK_DEFINE_MAP(trainer, change, reason, cpu_gemm_gflops, hostname)
};

}  // namespace filo::msg

MSGPACK_ADD_ENUM(filo::msg::MembershipChangeKind);
