#include "actors/node.hpp"

#include <unistd.h>

#include <torch/torch.h>

#include "actors/benchmarker.hpp"
#include "actors/learning/compute_threads.hpp"
#include "actors/learning/dataset.hpp"
#include "actors/learning/model.hpp"
#include "actors/trainer.hpp"
#include "runtime/cpu_affinity.hpp"

namespace filo {

std::string node_name(const NodeOptions& options) {
  if (!options.name.empty()) return options.name;
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  return host;
}

int run_node(const Config& config, const StopFlag& process_stop) {
  // Debian's LibTorch otherwise picks one thread, or all cores in other builds: say it.
  pin_to_cpus(0, parse_cpu_list(config.node.cpus, "node.cpus"));
  set_compute_threads(static_cast<int>(config.node.threads));
  use_plain_torchscript_execution();
  if (config.node.device != "cpu" && !torch::cuda::is_available()) {
    throw std::runtime_error("node.device is " + config.node.device +
                             " but this LibTorch build or machine has no CUDA device");
  }
  const std::string name = node_name(config.node);
  Benchmarker benchmarker(BenchmarkerOptions{name, config.node.device, static_cast<int>(config.node.priority),
                                             static_cast<int>(config.node.threads)});
  msg::HardwareReport report = benchmarker.report();
  // Fingerprinted in the format this node's configuration names, which is usually the run's; when
  // it is not, the registrar names the run's format and the trainer fingerprints again.
  try {
    report.dataset_format = config.data.format;
    report.dataset_fingerprint =
        dataset_fingerprint(dataset_spec(config.data, Split::kTrain, config.schedule.seed), config.data.path);
  } catch (const std::exception& e) {
    report.dataset_fingerprint.clear();
    log(LogLevel::kWarn, "node", name, ": no dataset to fingerprint yet (", e.what(), ")");
  }
  log(LogLevel::kInfo, "node", name, ": ", report.cpu_cores, " cores, CPU GEMM ",
      static_cast<int>(report.cpu_gemm_gflops), " GFLOP/s on ", config.node.threads, " threads; ",
      report.gpus.empty() ? report.gpu_status : std::to_string(report.gpus.size()) + " GPU(s)");

  zmq::context_t context;
  SocketFactory sockets(context, config.bus.socket_limits);
  TrainerOptions options;
  options.node = name;
  options.device = config.node.device;
  options.coordinator = config.bus.coordinator;
  options.data = config.data;
  options.heartbeat_interval = Milliseconds(config.bus.heartbeat_interval_ms);
  options.liveness = static_cast<int>(config.bus.liveness);
  options.connect_timeout_seconds = config.bus.connect_timeout_seconds;
  options.max_micro_batch = static_cast<std::uint32_t>(config.node.max_micro_batch);
  options.slowdown = config.node.slowdown;
  if (options.slowdown > 1.0)
    log(LogLevel::kWarn, "node", name, ": slowdown test aid on, ", options.slowdown, "x slower");
  Trainer trainer(sockets, options, std::move(report), process_stop);
  return trainer.run();
}

}  // namespace filo
