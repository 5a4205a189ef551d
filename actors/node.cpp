#include "actors/node.hpp"

#include <unistd.h>

#include <torch/torch.h>

#include "actors/benchmarker.hpp"
#include "actors/learning/compute_threads.hpp"
#include "actors/learning/dataset.hpp"
#include "actors/learning/device.hpp"
#include "actors/learning/model.hpp"
#include "actors/trainer.hpp"
#include "runtime/actor_thread.hpp"
#include "runtime/cpu_affinity.hpp"

namespace filo {

std::string node_name(const NodeOptions& options) {
  if (!options.name.empty()) return options.name;
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  return host;
}

int run_node(const Config& config, const StopFlag& process_stop) {
  TrainerOptions lie_check;
  apply_lie(config.node.lie, lie_check);  // a bad node.lie is refused before any work
  // Debian's LibTorch otherwise picks one thread, or all cores in other builds: say it.
  pin_to_cpus(0, parse_cpu_list(config.node.cpus, "node.cpus"));
  set_compute_threads(static_cast<int>(config.node.threads));
  use_plain_torchscript_execution();
  // A node asked for a device it does not have stops here, naming it; it never trains on the CPU
  // instead.
  const DeviceChoice devices = choose_devices(config.node.device);
  if (devices.devices.empty()) {
    log(LogLevel::kError, "node", devices.problem);
    return kExitRejected;
  }
  const std::string name = node_name(config.node);
  // Fingerprinted in the format this node's configuration names, which is usually the run's; when
  // it is not, the registrar names the run's format and the trainer fingerprints again.
  std::string fingerprint;
  try {
    fingerprint =
        dataset_fingerprint(dataset_spec(config.data, Split::kTrain, config.schedule.seed), config.data.path);
  } catch (const std::exception& e) {
    log(LogLevel::kWarn, "node", name, ": no dataset to fingerprint yet (", e.what(), ")");
  }

  const CurveSettings curve = curve_settings_for(config.security, PeerRole::kTrainer, name);
  if (!curve.enabled) {
    log(LogLevel::kWarn, "node", name,
        ": security.curve = false: this node's traffic is unencrypted and "
        "anyone on the network can read or send in its name");
  }
  zmq::context_t context;
  SocketFactory sockets(context, config.bus.socket_limits, curve);
  std::vector<std::unique_ptr<Trainer>> trainers;
  for (const torch::Device& device : devices.devices) {
    Benchmarker benchmarker(BenchmarkerOptions{name, device_name(device),
                                               static_cast<int>(config.node.priority),
                                               static_cast<int>(config.node.threads)});
    msg::HardwareReport report = benchmarker.report();
    report.dataset_format = config.data.format;
    report.dataset_fingerprint = fingerprint;
    log(LogLevel::kInfo, "node", name, ": ", report.cpu_cores, " cores, CPU GEMM ",
        static_cast<int>(report.cpu_gemm_gflops), " GFLOP/s on ", config.node.threads, " threads; ",
        report.gpus.empty() ? report.gpu_status : report.gpus.front().name);
    TrainerOptions options;
    options.node = name;
    options.device = device_name(device);
    options.coordinator = config.bus.coordinator;
    options.data = config.data;
    options.heartbeat_interval = Milliseconds(config.bus.heartbeat_interval_ms);
    options.liveness = static_cast<int>(config.bus.liveness);
    options.connect_timeout_seconds = config.bus.connect_timeout_seconds;
    options.max_micro_batch = static_cast<std::uint32_t>(config.node.max_micro_batch);
    options.slowdown = config.node.slowdown;
    options.fail_at_round = static_cast<std::uint64_t>(config.node.fail_at_round);
    apply_lie(config.node.lie, options);
    if (!config.node.lie.empty())
      log(LogLevel::kWarn, "node", name, ": lying test aid on (", config.node.lie, ")");
    if (options.slowdown > 1.0) {
      log(LogLevel::kWarn, "node", name, ": slowdown test aid on, ", options.slowdown, "x slower");
    }
    trainers.push_back(std::make_unique<Trainer>(sockets, options, std::move(report), process_stop));
  }
  if (trainers.size() == 1) return trainers.front()->run();
  // node.device = "cuda": one trainer actor per GPU, each on its own thread, in this one process (the
  // dataset files are mapped once per process by the page cache; each trainer has its own replica).
  std::vector<int> codes(trainers.size(), 0);
  StopFlag unused_stop;
  ActorFailures failures;
  {
    std::vector<std::unique_ptr<ActorThread>> threads;
    for (std::size_t i = 0; i < trainers.size(); ++i) {
      threads.push_back(std::make_unique<ActorThread>(
          trainers[i]->name(), [&codes, &trainers, i] { codes[i] = trainers[i]->run(); }, failures,
          unused_stop));
    }
  }
  if (failures.any()) {
    log(LogLevel::kError, "node", name, ": a trainer failed: ", failures.describe());
    return kExitActorFailed;
  }
  for (int code : codes) {
    if (code != kExitFinished) return code;
  }
  return kExitFinished;
}

}  // namespace filo
