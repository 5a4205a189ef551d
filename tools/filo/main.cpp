// filo: the command line. Subcommands start a coordinator, a node, a monitor (in the terminal or
// as a web dashboard), a whole local cluster, write a run's report, evaluate a saved model, or
// print this machine's hardware report.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <thread>
#include <utility>

#include <torch/torch.h>
#include <unistd.h>
#include <nlohmann/json.hpp>

#include "actors/benchmarker.hpp"
#include "actors/coordinator.hpp"
#include "actors/dashboard.hpp"
#include "actors/learning/compute_threads.hpp"
#include "actors/learning/dataset.hpp"
#include "actors/learning/evaluation.hpp"
#include "actors/learning/model.hpp"
#include "actors/learning/models.hpp"
#include "actors/learning/task.hpp"
#include "actors/monitor.hpp"
#include "actors/node.hpp"
#include "actors/run_report.hpp"
#include "messages/membership.hpp"
#include "messages/test_aid.hpp"
#include "runtime/bus.hpp"
#include "runtime/config.hpp"
#include "runtime/cpu_affinity.hpp"
#include "runtime/log.hpp"
#include "runtime/memory.hpp"
#include "runtime/process.hpp"
#include "runtime/safetensors.hpp"
#include "runtime/scoped_thread.hpp"

namespace {
using namespace filo;

constexpr std::chrono::seconds kCoordinatorStartTimeout{120};
constexpr std::chrono::seconds kCoordinatorExitTimeout{60};
constexpr std::chrono::seconds kNodeExitTimeout{15};
constexpr std::chrono::milliseconds kStartPoll{50};
constexpr int kExitInterrupted = 130;
constexpr std::chrono::milliseconds kSlowdownDeliveryTimeout{5000};
/// `filo local`'s dashboard: loopback, any free port, unless --web says otherwise.
constexpr const char* kLocalDashboardAddress = "127.0.0.1:0";
constexpr const char* kNoDashboard = "off";

struct CommonOptions {
  std::string config_path;
  std::vector<std::string> overrides;
  std::string log_level = "info";
};

/// The configuration file, then --set overrides, then the named flags of the subcommand.
Config load(const CommonOptions& common, const std::vector<std::string>& flag_overrides) {
  std::vector<std::string> overrides = common.overrides;
  overrides.insert(overrides.end(), flag_overrides.begin(), flag_overrides.end());
  return load_config(common.config_path, overrides);
}

std::vector<std::string> passthrough_arguments(const CommonOptions& common) {
  std::vector<std::string> arguments;
  if (!common.config_path.empty()) arguments.insert(arguments.end(), {"--config", common.config_path});
  for (const auto& assignment : common.overrides) arguments.insert(arguments.end(), {"--set", assignment});
  arguments.insert(arguments.end(), {"--log-level", common.log_level});
  return arguments;
}

std::string tail_of(const std::string& path, std::size_t lines) {
  std::ifstream file(path);
  std::vector<std::string> all;
  for (std::string line; std::getline(file, line);) all.push_back(line);
  std::string tail;
  for (std::size_t i = all.size() > lines ? all.size() - lines : 0; i < all.size(); ++i)
    tail += "  " + all[i] + "\n";
  return tail;
}

int run_local(const CommonOptions& common, const std::vector<std::string>& flag_overrides,
              const std::string& web_address, const StopFlag& stop) {
  // The children get the same file and overrides, so read the configuration once here to check it.
  std::vector<std::string> overrides = flag_overrides;
  const Config probe = load(common, overrides);
  const std::int64_t node_count = local_node_count(probe.local, usable_cpus());
  bool listen_given = false;
  for (const std::vector<std::string>* list : {&std::as_const(overrides), &common.overrides}) {
    for (const auto& assignment : *list) listen_given |= assignment.rfind("bus.listen=", 0) == 0;
  }
  const std::string run_dir = probe.run.run_dir;
  const std::string logs = run_dir + "/logs";
  std::filesystem::remove_all(logs);  // one run's logs, not appended to the last run's
  std::filesystem::create_directories(logs);
  std::filesystem::remove(run_dir + "/coordinator.json");
  std::filesystem::remove(run_dir + "/summary.json");
  std::filesystem::remove(run_dir + "/events.jsonl");
  std::filesystem::remove(run_dir + "/report.html");
  std::filesystem::remove_all(run_dir + "/checkpoints");  // `filo local` always starts a fresh run
  // Ephemeral keys for this run alone, so that a local cluster runs with CURVE like a real one and
  // still needs no set-up: every process finds its key in the one directory by its role.
  SecurityOptions security = probe.security;
  if (security.curve && security.keys_dir.empty() && security.key.empty()) {
    security.keys_dir = run_dir + "/keys";
    std::filesystem::remove_all(security.keys_dir);
    write_fleet_keys(security.keys_dir);
    overrides.push_back("security.keys_dir=" + security.keys_dir);
  }
  const auto started = std::chrono::steady_clock::now();

  const std::string self = current_executable();
  // All nodes share this machine: there is no network whose cost the transfer rule could weigh,
  // only waits for a CPU. Given first, so that the user's own --set still wins.
  std::vector<std::string> coordinator_arguments{self, "coordinator", "--set",
                                                 "schedule.max_transfer_ratio=0"};
  for (const auto& argument : passthrough_arguments(common)) coordinator_arguments.push_back(argument);
  for (const auto& assignment : overrides)
    coordinator_arguments.insert(coordinator_arguments.end(), {"--set", assignment});
  if (!listen_given)
    coordinator_arguments.insert(coordinator_arguments.end(), {"--set", "bus.listen=tcp://127.0.0.1:*"});
  coordinator_arguments.insert(coordinator_arguments.end(),
                               {"--set", "schedule.min_trainers=" + std::to_string(node_count)});
  ChildProcess coordinator(coordinator_arguments, logs + "/coordinator.log");

  // The coordinator writes its bound endpoints once its sockets are up.
  nlohmann::json endpoints;
  const auto give_up = std::chrono::steady_clock::now() + kCoordinatorStartTimeout;
  while (!std::filesystem::exists(run_dir + "/coordinator.json")) {
    if (!coordinator.running() || stop.stop_requested() || std::chrono::steady_clock::now() > give_up) {
      std::cerr << "filo local: the coordinator did not start; its log (" << logs
                << "/coordinator.log) ends:\n"
                << tail_of(logs + "/coordinator.log", 15);
      return 1;
    }
    std::this_thread::sleep_for(kStartPoll);
  }
  std::ifstream(run_dir + "/coordinator.json") >> endpoints;
  const std::string router = endpoints.at("router");
  const std::string publish = endpoints.at("publish");

  std::vector<ChildProcess> nodes;
  const std::vector<double> slowdowns = parse_slowdowns(probe.local.slowdowns);
  const std::vector<std::string> node_cpus = split_node_cpus(probe.local.node_cpus);
  const std::vector<std::string> devices = split_list(probe.local.devices);
  for (std::int64_t i = 1; i <= node_count; ++i) {
    const std::string name = "node-" + std::to_string(i);
    std::vector<std::string> arguments{self, "node"};
    for (const auto& argument : passthrough_arguments(common)) arguments.push_back(argument);
    for (const auto& assignment : overrides) arguments.insert(arguments.end(), {"--set", assignment});
    arguments.insert(arguments.end(), {"--coordinator", router, "--name", name});
    if (static_cast<std::size_t>(i) <= slowdowns.size()) {
      arguments.insert(arguments.end(), {"--set", "node.slowdown=" + std::to_string(slowdowns[i - 1])});
    }
    if (static_cast<std::size_t>(i) <= node_cpus.size()) {
      arguments.insert(arguments.end(), {"--set", "node.cpus=" + node_cpus[i - 1]});
    }
    if (static_cast<std::size_t>(i) <= devices.size()) {
      arguments.insert(arguments.end(), {"--set", "node.device=" + devices[i - 1]});
    }
    nodes.emplace_back(arguments, logs + "/" + name + ".log");
  }
  std::cout << "filo local: coordinator on " << router << " and " << node_count << " nodes"
            << (probe.local.nodes == 0 && node_count < kDefaultLocalNodes
                    ? " (one per CPU of this machine; --nodes N for more)"
                    : "")
            << "; logs in " << logs << "; watch with: filo monitor --events " << publish << std::endl;

  zmq::context_t context;
  SocketFactory sockets(context, probe.bus.socket_limits, curve_settings_for(security, PeerRole::kMonitor));
  // The dashboard is a monitor of its own, on a thread of its own: a slow browser slows neither
  // the terminal view nor, since monitors only listen, the run.
  std::atomic<bool> run_over{false};
  std::optional<Dashboard> dashboard;
  if (web_address != kNoDashboard) {
    DashboardOptions dashboard_options;
    dashboard_options.events_endpoint = publish;
    dashboard_options.web_address = web_address;
    dashboard_options.keep_going = [&run_over] { return !run_over.load(); };
    dashboard.emplace(sockets, dashboard_options, stop);
    std::cout << "filo local: dashboard at " << dashboard->url() << " (metrics at " << dashboard->url()
              << "metrics)" << std::endl;
  }
  ScopedThread dashboard_thread;
  if (dashboard) dashboard_thread = ScopedThread([&dashboard] { dashboard->run(); });
  MonitorOptions monitor_options;
  monitor_options.events_endpoint = publish;
  monitor_options.style = MonitorStyle::kText;
  monitor_options.record_path = run_dir + "/events.jsonl";  // what `filo report` reads
  // Every node failed (refused, misconfigured, crashed) leaves nothing to wait for: say so. Nodes
  // that finished the run exit 0, possibly before the coordinator has written its summary.
  bool all_nodes_failed = false;
  monitor_options.keep_going = [&coordinator, &nodes, &all_nodes_failed] {
    all_nodes_failed = std::all_of(nodes.begin(), nodes.end(), [](ChildProcess& node) {
      return !node.running() && node.exit_code() != std::optional<int>(0);
    });
    return coordinator.running() && !all_nodes_failed;
  };
  int monitor_code = 0;
  {
    Monitor monitor(sockets, monitor_options, stop);
    monitor_code = monitor.run();
  }
  if (all_nodes_failed && coordinator.running()) {
    run_over = true;
    coordinator.stop(std::chrono::seconds(3));
    std::cerr << "filo local: every node failed before the run finished; node-1's log ends:\n"
              << tail_of(logs + "/node-1.log", 15);
    return 1;
  }
  const auto coordinator_code = coordinator.wait_for(kCoordinatorExitTimeout);
  run_over = true;
  dashboard_thread.join();
  int nodes_failed = 0;
  for (auto& node : nodes) {
    auto code = node.wait_for(kNodeExitTimeout);
    if (!code) code = node.stop(std::chrono::seconds(3));
    if (*code != 0) ++nodes_failed;
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  if (stop.stop_requested()) {
    std::cerr << "filo local: interrupted; logs in " << logs << std::endl;
    return kExitInterrupted;
  }
  if (!coordinator_code || *coordinator_code != 0 || monitor_code != 0) {
    std::cerr << "filo local: the coordinator did not finish the run; its log ends:\n"
              << tail_of(logs + "/coordinator.log", 15);
    return 1;
  }
  nlohmann::json summary;
  std::ifstream(run_dir + "/summary.json") >> summary;
  const std::string metric = summary.value("metric", std::string("test_accuracy"));
  std::cout << "done in " << std::fixed << std::setprecision(1) << seconds << " s: " << metric_words(metric)
            << " " << std::setprecision(4) << summary.value("final_" + metric, 0.0) << " after "
            << summary.value("rounds", 0) << " rounds; samples per epoch "
            << summary["samples_per_epoch"].dump() << "\nsummary: " << run_dir
            << "/summary.json, model: " << summary.value("model_file", std::string()) << std::endl;
  try {
    std::cout << "report: " << write_run_report(run_dir) << std::endl;
  } catch (const std::exception& e) {
    std::cerr << "filo local: could not write the run's report: " << e.what() << std::endl;
  }
  if (nodes_failed > 0)
    std::cerr << "filo local: " << nodes_failed << " node(s) exited with an error; see " << logs << std::endl;
  return 0;
}

struct MonitorCommand {
  std::string coordinator = "tcp://127.0.0.1:5555";
  std::string events;
  bool json = false;
  bool lines = false;
  bool follow = false;
  std::string web;
  std::string record;
};

int run_monitor_command(const CommonOptions& common, const MonitorCommand& command, const StopFlag& stop) {
  const Config config = load(common, {});
  const std::string events =
      !command.events.empty() ? command.events : events_endpoint_of(command.coordinator);
  zmq::context_t context;
  SocketFactory sockets(context, config.bus.socket_limits,
                        curve_settings_for(config.security, PeerRole::kMonitor));
  if (!command.web.empty()) {
    DashboardOptions options;
    options.events_endpoint = events;
    options.web_address = command.web;
    options.record_path = command.record;
    options.exit_when_finished = !command.follow;
    Dashboard dashboard(sockets, options, stop);
    std::cout << "filo monitor: dashboard of " << events << " at " << dashboard.url() << " (metrics at "
              << dashboard.url() << "metrics)" << std::endl;
    return dashboard.run();
  }
  MonitorOptions options;
  options.events_endpoint = events;
  options.style = command.json    ? MonitorStyle::kJson
                  : command.lines ? MonitorStyle::kText
                                  : MonitorStyle::kTable;
  options.exit_when_finished = !command.follow;
  options.record_path = command.record;
  if (!command.json) std::cout << "filo monitor: listening to " << options.events_endpoint << std::endl;
  Monitor monitor(sockets, options, stop);
  return monitor.run();
}

int run_report_command(const std::string& run_dir, const std::string& output) {
  std::cout << "report: " << write_run_report(run_dir, output) << std::endl;
  return 0;
}

/// Sends one message to `to` through the coordinator's hub as a short-lived peer of `role`, and
/// waits (up to kSlowdownDeliveryTimeout, at close) until the hub has it. False when the bus would
/// not take it.
template <typename Message>
bool send_once(const Config& config, PeerRole role, const std::string& sender, const std::string& coordinator,
               const std::string& to, const Message& message) {
  SocketLimits limits = config.bus.socket_limits;
  limits.linger = kSlowdownDeliveryTimeout;  // closing waits until the hub has the message
  zmq::context_t context;
  SocketFactory sockets(context, limits, curve_settings_for(config.security, role));
  BusClient bus(sockets, sender + "-" + std::to_string(getpid()));
  bus.connect(coordinator);
  return bus.send(to, message);
}

/// TEST AID: tells one trainer of a running cluster, through the coordinator's hub, to behave
/// `factor` times slower from its next micro-batch on.
int run_slowdown(const CommonOptions& common, const std::string& coordinator, const std::string& trainer,
                 double factor) {
  const Config config = load(common, {});
  if (!(factor >= 1.0)) throw ConfigError("slowdown factor must be >= 1, not " + std::to_string(factor));
  if (!send_once(config, PeerRole::kTestAid, "slowdown-aid", coordinator, trainer,
                 msg::SetSlowdown{factor})) {
    std::cerr << "filo slowdown: could not queue the message for " << coordinator << std::endl;
    return 1;
  }
  std::cout << "asked " << trainer << " to behave " << factor << "x slower (via " << coordinator << ")"
            << std::endl;
  return 0;
}

/// Lets a trainer that the scheduler excluded for lying back into the plans. It needs an operator
/// key (role `operator` in authorized_keys): a trainer cannot readmit itself.
int run_readmit(const CommonOptions& common, const std::string& coordinator, const std::string& trainer) {
  const Config config = load(common, {});
  if (trainer.rfind("trainer@", 0) != 0) {
    throw ConfigError("--trainer must be a trainer's bus name like trainer@node-2/cpu, not \"" + trainer +
                      "\"");
  }
  if (!send_once(config, PeerRole::kOperator, "operator", coordinator, kSchedulerName,
                 msg::Readmit{trainer})) {
    std::cerr << "filo readmit: could not queue the message for " << coordinator << std::endl;
    return 1;
  }
  std::cout << "asked the scheduler at " << coordinator << " to readmit " << trainer
            << "; the event stream says \"readmitted\" once it has" << std::endl;
  return 0;
}

/// `filo failback`: the active coordinator of a pair hands the run to its passive peer at the next
/// round's close (README, "A standby coordinator"). It needs an operator key. The message goes to
/// both coordinators: the passive one takes nothing from an operator. Then it follows the pair's
/// state on the event stream until the other coordinator is active, or the active says why not.
int run_failback(const CommonOptions& common, const std::string& coordinators, double wait_seconds,
                 const StopFlag& stop) {
  const Config config = load(common, {});
  const std::vector<std::string> endpoints = split_endpoints(coordinators);
  if (endpoints.size() != 2) {
    throw ConfigError("--coordinator must name a pair's two coordinators, tcp://A:5555,tcp://B:5555, not \"" +
                      coordinators + "\"");
  }
  zmq::context_t context;
  SocketFactory sockets(context, config.bus.socket_limits,
                        curve_settings_for(config.security, PeerRole::kOperator));
  BusClient watcher(sockets, "operator-watch-" + std::to_string(getpid()));
  watcher.subscribe(events_endpoint_of(coordinators), {kEventTopic});
  // The pair's state, as its active publishes it every second.
  const auto next_pair_event = [&](Clock::time_point deadline) -> std::optional<msg::PairStatus> {
    while (Clock::now() < deadline && !stop.stop_requested()) {
      zmq::pollitem_t item{watcher.published().handle(), 0, ZMQ_POLLIN, 0};
      try {
        zmq::poll(&item, 1, Milliseconds(200));
      } catch (const zmq::error_t& e) {
        if (e.num() != EINTR) throw;
      }
      while (auto incoming = watcher.receive(watcher.published())) {
        if (incoming->envelope.kind != MessageKind::kPairStatus) continue;
        auto event = msg::decode_event(incoming->envelope.kind, incoming->body, watcher.limits());
        if (event) return std::get<msg::PairStatus>(event.value());
      }
    }
    return std::nullopt;
  };
  const Clock::time_point deadline =
      Clock::now() + to_clock_duration(std::chrono::duration<double>(wait_seconds));
  // Which one is active before asking: the handover is done once the other one says it is.
  const auto before = next_pair_event(deadline);
  if (!before) {
    std::cerr << "filo failback: no active coordinator of a pair was heard at " << coordinators << " within "
              << wait_seconds << " s" << std::endl;
    return 1;
  }
  // The coordinator start tells the two apart (their listen addresses may read alike, as
  // tcp://0.0.0.0:5555 on two machines): the one that takes over is a newer start.
  const std::uint64_t start = before->coordinator_start;
  const std::string active = before->active;
  for (const auto& endpoint : endpoints) {
    if (!send_once(config, PeerRole::kOperator, "operator", endpoint, kSchedulerName,
                   msg::Failback{"filo failback"})) {
      std::cerr << "filo failback: could not queue the message for " << endpoint << std::endl;
    }
  }
  std::cout << "asked the active coordinator, " << active
            << ", to hand the run to its peer at the next round's close" << std::endl;
  std::string said;
  bool under_way = false;  // this request's handover was heard of: an "abandoned" before it is an older one's
  while (const auto pair = next_pair_event(deadline)) {
    if (pair->coordinator_start > start) {
      std::cout << "failback done: " << pair->text << std::endl;
      return 0;
    }
    const bool refused = pair->changed && pair->handover.rfind("refused", 0) == 0;
    const bool abandoned = under_way && pair->handover.rfind("abandoned", 0) == 0;
    under_way = under_way || pair->handover.rfind("asked", 0) == 0 ||
                pair->handover.rfind("waiting", 0) == 0 || pair->handover.rfind("handed over", 0) == 0;
    if (pair->handover != said && !pair->handover.empty() && (under_way || refused)) {
      said = pair->handover;
      std::cout << pair->active << ": failback " << pair->handover << std::endl;
    }
    if (refused || abandoned) return 1;
  }
  std::cerr << "filo failback: no coordinator said the run moved within " << wait_seconds
            << " s; `filo monitor " << coordinators << "` shows the pair's state" << std::endl;
  return 1;
}

/// The configured model (model.path, or the built-in model.name for the data) with the weights of
/// a model.safetensors file, matched by name; a missing name or another shape is an error.
Model model_from_safetensors(const Config& config, const std::string& path, const Dataset& data) {
  std::optional<Model> model;
  if (!config.model.path.empty()) {
    model.emplace(Model::from_file(config.model.path));
  } else {
    ModelShape shape;
    auto [inputs, targets] = data.batch(torch::arange(std::min<std::int64_t>(1, data.size()), torch::kInt64));
    shape.sample_shape = inputs.sizes().slice(1).vec();
    shape.classes = data.num_classes();
    shape.vocabulary = data.is_tokens() ? data.num_classes() : 0;
    BuiltInModelOptions options;
    options.layers = config.model.layers;
    options.heads = config.model.heads;
    options.width = config.model.width;
    options.dropout = config.model.dropout;
    model.emplace(build_model(config.model.name, shape, options));
  }
  std::map<std::string, torch::Tensor> saved;
  for (auto& tensor : read_safetensors(path).tensors) saved[tensor.name] = tensor.tensor;
  torch::NoGradGuard no_grad;
  const auto load = [&](const std::string& name, torch::Tensor target) {
    const auto found = saved.find(name);
    if (found == saved.end())
      throw ConfigError(path + " has no tensor \"" + name + "\" of the configured model");
    if (found->second.sizes() != target.sizes()) {
      throw ConfigError(path + ": \"" + name + "\" has shape " + c10::str(found->second.sizes()) +
                        ", the configured model's is " + c10::str(target.sizes()));
    }
    target.copy_(found->second);
  };
  for (const auto& parameter : model->module().named_parameters()) load(parameter.name, parameter.value);
  for (const auto& buffer : model->module().named_buffers()) load(buffer.name, buffer.value);
  return std::move(*model);
}

int run_eval(const CommonOptions& common, const std::string& model_path) {
  const Config config = load(common, {});
  torch::set_num_threads(static_cast<int>(std::max<std::int64_t>(1, std::thread::hardware_concurrency())));
  use_plain_torchscript_execution();
  const Task task = parse_task(config.model.task);
  const Dataset test = load_dataset(dataset_spec(config.data, Split::kTest, config.schedule.seed),
                                    config.data.path, Split::kTest);
  const bool tensors_only =
      model_path.size() > 12 && model_path.substr(model_path.size() - 12) == ".safetensors";
  Model model =
      tensors_only ? model_from_safetensors(config, model_path, test) : Model::from_file(model_path);
  nlohmann::json line{{"file", model_path},
                      {"task", task_name(task)},
                      {"dataset", config.data.dataset},
                      {"test_samples", test.size()}};
  for (const auto& [name, value] : evaluate(model, task, test)) line[name] = value;
  std::cout << line.dump() << std::endl;
  return 0;
}

int run_bench(const CommonOptions& common, bool json) {
  const Config config = load(common, {});
  set_compute_threads(static_cast<int>(config.node.threads));
  BenchmarkerOptions options{node_name(config.node), config.node.device,
                             static_cast<int>(config.node.priority), static_cast<int>(config.node.threads),
                             1.0};
  options.measure_gpus = true;
  const msg::HardwareReport report = Benchmarker(options).report();
  const auto peak_json = [](const msg::GpuInfo& gpu) {
    nlohmann::json peaks = nlohmann::json::object();
    for (const auto& [precision, tflops] : gpu.gemm_tflops) {
      if (auto peak = published_peak_tflops(gpu.name, precision)) peaks[precision] = *peak;
    }
    return peaks;
  };
  if (json) {
    nlohmann::json gpus = nlohmann::json::array();
    for (const auto& gpu : report.gpus) {
      gpus.push_back({{"name", gpu.name},
                      {"uuid", gpu.uuid},
                      {"compute_capability", std::to_string(gpu.compute_capability_major) + "." +
                                                 std::to_string(gpu.compute_capability_minor)},
                      {"total_memory_bytes", gpu.total_memory_bytes},
                      {"free_memory_bytes", gpu.free_memory_bytes},
                      {"gemm_tflops", gpu.gemm_tflops},
                      {"published_dense_peak_tflops", peak_json(gpu)},
                      {"host_to_device_gbps", gpu.host_to_device_gbps},
                      {"device_to_host_gbps", gpu.device_to_host_gbps},
                      {"benchmark_status", gpu.benchmark_status}});
    }
    std::cout << nlohmann::json{{"node", report.node},
                                {"hostname", report.hostname},
                                {"cpu_cores", report.cpu_cores},
                                {"memory_available_bytes", report.memory_available_bytes},
                                {"swap_available_bytes", report.swap_available_bytes},
                                {"torch_threads", report.torch_threads},
                                {"cpu_gemm_gflops", report.cpu_gemm_gflops},
                                {"precisions", report.precisions},
                                {"gpus", gpus},
                                {"gpu_status", report.gpu_status}}
                     .dump(2)
              << std::endl;
    return 0;
  }
  constexpr double kMebibyte = 1 << 20;
  std::cout << std::left << std::setw(24) << "node" << report.node << " (" << report.hostname << ")\n"
            << std::setw(24) << "cpu cores" << report.cpu_cores << "\n"
            << std::setw(24) << "memory available" << std::fixed << std::setprecision(0)
            << report.memory_available_bytes / kMebibyte << " MiB\n"
            << std::setw(24) << "swap available" << report.swap_available_bytes / kMebibyte << " MiB\n"
            << std::setw(24) << "cpu fp32 gemm" << std::setprecision(1) << report.cpu_gemm_gflops
            << " GFLOP/s on " << report.torch_threads << " thread(s)\n";
  if (report.gpus.empty())
    std::cout << std::setw(24) << "gpus"
              << "none: " << report.gpu_status << "\n";
  for (const auto& gpu : report.gpus) {
    std::cout << std::setw(24) << "gpu" << gpu.name << " " << gpu.uuid << " cc "
              << gpu.compute_capability_major << "." << gpu.compute_capability_minor << ", "
              << std::setprecision(0) << gpu.free_memory_bytes / kMebibyte << " of "
              << gpu.total_memory_bytes / kMebibyte << " MiB free\n";
    if (!gpu.benchmark_status.empty())
      std::cout << std::setw(24) << "  benchmark" << gpu.benchmark_status << "\n";
    if (gpu.gemm_tflops.empty()) continue;
    std::cout << "  " << std::setw(22) << "cublas gemm" << std::setw(14) << "TFLOP/s" << std::setw(22)
              << "published dense peak"
              << "of peak\n";
    for (const char* precision : {"fp16", "bf16", "tf32", "fp32", "fp64"}) {
      const auto measured = gpu.gemm_tflops.find(precision);
      if (measured == gpu.gemm_tflops.end()) continue;
      const auto peak = published_peak_tflops(gpu.name, precision);
      std::cout << "  " << std::setw(22) << precision << std::setw(14) << std::setprecision(1)
                << measured->second << std::setw(22)
                << (peak ? std::to_string(static_cast<int>(*peak)) : std::string("unknown"));
      if (peak) std::cout << std::setprecision(0) << 100.0 * measured->second / *peak << "%";
      std::cout << "\n";
    }
    std::cout << "  " << std::setw(22) << "pinned host->device" << std::setprecision(1)
              << gpu.host_to_device_gbps << " GB/s\n  " << std::setw(22) << "pinned device->host"
              << gpu.device_to_host_gbps << " GB/s\n";
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"filo: train one model on a fleet of unequal machines over ZeroMQ"};
  app.require_subcommand(1);
  CommonOptions common;
  const auto add_common = [&common](CLI::App* command) {
    command->add_option("--config", common.config_path, "TOML configuration file (see configs/)")
        ->check(CLI::ExistingFile);
    command->add_option("--set", common.overrides,
                        "override a configuration value: section.key=value (repeatable)");
    command->add_option("--log-level", common.log_level, "debug, info, warn or error")
        ->check(CLI::IsMember({"debug", "info", "warn", "error"}));
  };
  std::vector<std::string> flag_overrides;
  const auto flag = [&flag_overrides](const std::string& key) {
    return [&flag_overrides, key](const std::string& value) { flag_overrides.push_back(key + "=" + value); };
  };

  auto* coordinator =
      app.add_subcommand("coordinator", "run the registrar, scheduler and aggregator of one run");
  add_common(coordinator);
  coordinator->add_option_function<std::string>("--listen", flag("bus.listen"),
                                                "endpoint to bind, tcp://HOST:PORT (events on PORT+1)");
  coordinator->add_option_function<std::string>("--epochs", flag("schedule.epochs"), "epochs to train");
  coordinator->add_option_function<std::string>("--run-dir", flag("run.run_dir"),
                                                "where summary.json, rounds.jsonl and the model go");
  coordinator->add_option_function<std::string>(
      "--standby-for",
      [&flag_overrides](const std::string& primary) {
        flag_overrides.push_back("ha.peer=" + primary);
        flag_overrides.push_back("ha.standby=true");
      },
      "start passive, as the standby of the coordinator listening at tcp://HOST:PORT (its pair)");
  coordinator->add_option_function<std::string>("--peer", flag("ha.peer"),
                                                "the primary of a pair: its standby's tcp://HOST:PORT");

  auto* node = app.add_subcommand("node", "benchmark this machine and run a trainer for a coordinator");
  add_common(node);
  node->add_option_function<std::string>(
      "--coordinator", flag("bus.coordinator"),
      "the coordinator's tcp://HOST:PORT, or a pair's two, comma-separated");
  node->add_option_function<std::string>("--name", flag("node.name"), "this node's name (default: hostname)");
  node->add_option_function<std::string>("--device", flag("node.device"), "cpu or cuda:N");
  node->add_option_function<std::string>("--threads", flag("node.threads"),
                                         "LibTorch threads of the trainer");
  node->add_option_function<std::string>("--cpus", flag("node.cpus"),
                                         "pin the node to these CPUs, e.g. 0-3,8");
  node->add_option_function<std::string>(
      "--slowdown", flag("node.slowdown"),
      "TEST AID: behave F times slower than this machine (waits after each micro-batch)");

  auto* monitor = app.add_subcommand("monitor", "show what a running cluster does");
  add_common(monitor);
  MonitorCommand monitor_command;
  monitor->add_option("coordinator", monitor_command.coordinator,
                      "the coordinator's tcp://HOST:PORT (events are read from PORT+1)");
  monitor->add_option("--events", monitor_command.events, "the exact events endpoint, when not PORT+1");
  monitor->add_flag("--json", monitor_command.json, "one JSON object per event");
  monitor->add_flag("--lines", monitor_command.lines,
                    "readable lines instead of the live table (the default away from a terminal)");
  monitor->add_flag("--follow", monitor_command.follow, "keep listening (and serving) after a run finishes");
  monitor->add_option("--web", monitor_command.web,
                      "serve a live dashboard and /metrics at HOST:PORT (PORT alone: 127.0.0.1:PORT)");
  monitor->add_option(
      "--record", monitor_command.record,
      "also append every event as a JSON line to this file (RUN_DIR/events.jsonl for filo report)");

  auto* local = app.add_subcommand("local", "start a coordinator and N nodes on this machine and train");
  add_common(local);
  local->add_option_function<std::string>(
      "--nodes", flag("local.nodes"),
      "trainer nodes to start (default 3, or one per CPU when the machine has fewer)");
  local->add_option_function<std::string>("--epochs", flag("schedule.epochs"), "epochs to train");
  local->add_option_function<std::string>("--slowdowns", flag("local.slowdowns"),
                                          "TEST AID: slowdown factor per node, e.g. 1,2,4");
  local->add_option_function<std::string>(
      "--node-cpus", flag("local.node_cpus"),
      "pin node i to the i-th CPU list, e.g. 0/1/1 (run.cpus pins the coordinator)");
  local->add_option_function<std::string>(
      "--devices", flag("local.devices"),
      "node i trains on the i-th device, e.g. cuda:0,cpu,cpu (a mixed fleet)");
  local->add_option_function<std::string>("--run-dir", flag("run.run_dir"),
                                          "where summary.json, rounds.jsonl, logs and the model go");
  std::string local_web = kLocalDashboardAddress;
  local->add_option("--web", local_web,
                    "serve the live dashboard at HOST:PORT (default 127.0.0.1:0, any free port; off: none)");

  auto* report = app.add_subcommand("report", "write a run's report: one self-contained HTML file");
  add_common(report);
  std::string report_run_dir;
  std::string report_output;
  report->add_option("run_dir", report_run_dir, "the run directory (holds rounds.jsonl and summary.json)")
      ->required()
      ->check(CLI::ExistingDirectory);
  report->add_option("--output", report_output, "where to write it (default RUN_DIR/report.html)");

  auto* eval = app.add_subcommand("eval", "evaluate a saved model on the test set");
  add_common(eval);
  std::string model_path;
  eval->add_option(
          "model", model_path,
          "model file written by a run: RUN_DIR/model.pt, or RUN_DIR/model.safetensors (with the run's "
          "model settings)")
      ->required()
      ->check(CLI::ExistingFile);

  auto* bench = app.add_subcommand("bench", "print this machine's hardware report and benchmark scores");
  add_common(bench);
  bool bench_json = false;
  bench->add_flag("--json", bench_json, "print JSON");

  auto* slowdown = app.add_subcommand("slowdown", "TEST AID: make a running trainer behave F times slower");
  add_common(slowdown);
  std::string slowdown_coordinator;
  std::string slowdown_trainer;
  double slowdown_factor = 1.0;
  slowdown->add_option("--coordinator", slowdown_coordinator, "the coordinator's tcp://HOST:PORT")
      ->required();
  slowdown->add_option("--trainer", slowdown_trainer, "the trainer's bus name, e.g. trainer@node-2/cpu")
      ->required();
  slowdown->add_option("--factor", slowdown_factor, "slowdown factor, >= 1 (1 = its own speed)")->required();

  auto* readmit =
      app.add_subcommand("readmit", "let a trainer excluded for lying back into the plans (operator key)");
  add_common(readmit);
  std::string readmit_coordinator;
  std::string readmit_trainer;
  readmit->add_option("--coordinator", readmit_coordinator, "the coordinator's tcp://HOST:PORT")->required();
  readmit->add_option("--trainer", readmit_trainer, "the trainer's bus name, e.g. trainer@node-2/cpu")
      ->required();

  auto* failback = app.add_subcommand(
      "failback", "a coordinator pair's active hands the run to its passive peer (operator key)");
  add_common(failback);
  std::string failback_coordinators;
  double failback_wait = 60.0;
  failback->add_option("--coordinator", failback_coordinators, "the pair: tcp://A:5555,tcp://B:5555")
      ->required();
  failback->add_option("--wait", failback_wait, "seconds to follow the handover before giving up")
      ->check(CLI::PositiveNumber);

  auto* keys = app.add_subcommand("keys", "make CurveZMQ key pairs for the bus");
  keys->require_subcommand(1);
  auto* keys_new = keys->add_subcommand("new", "write NAME.key (secret, mode 0600) and NAME.pub");
  std::string key_name;
  std::string key_directory = ".";
  keys_new->add_option("name", key_name, "the key's name, e.g. coordinator or node-1")->required();
  keys_new->add_option("--dir", key_directory, "where to write the two files");
  auto* keys_fleet = keys->add_subcommand("fleet",
                                          "write a whole fleet's keys into DIR (coordinator, trainer, "
                                          "monitor, test-aid, operator, authorized_keys)");
  std::string fleet_directory;
  keys_fleet->add_option("dir", fleet_directory, "a new directory, for security.keys_dir")->required();

  CLI11_PARSE(app, argc, argv);
  set_log_level(parse_log_level(common.log_level));
  keep_message_memory();
  StopFlag stop;
  install_stop_signals(stop);
  try {
    if (*coordinator) return run_coordinator(load(common, flag_overrides), stop);
    if (*node) return run_node(load(common, flag_overrides), stop);
    if (*monitor) return run_monitor_command(common, monitor_command, stop);
    if (*local) return run_local(common, flag_overrides, local_web, stop);
    if (*report) return run_report_command(report_run_dir, report_output);
    if (*keys_new) {
      const auto [secret, public_file] = write_key_pair(key_directory, key_name);
      std::cout
          << "wrote " << secret << " (secret: keep it on this machine) and " << public_file
          << "\nauthorize it on the coordinator with a line ROLE KEY [NODE] in its authorized_keys, e.g.\n"
          << "  echo \"trainer $(cat " << public_file << ")\" >> authorized_keys" << std::endl;
      return 0;
    }
    if (*keys_fleet) {
      std::cout << "wrote " << write_fleet_keys(fleet_directory)
                << " and its keys; use --set security.keys_dir=" << fleet_directory << std::endl;
      return 0;
    }
    if (*eval) return run_eval(common, model_path);
    if (*bench) return run_bench(common, bench_json);
    if (*slowdown) return run_slowdown(common, slowdown_coordinator, slowdown_trainer, slowdown_factor);
    if (*readmit) return run_readmit(common, readmit_coordinator, readmit_trainer);
    if (*failback) return run_failback(common, failback_coordinators, failback_wait, stop);
  } catch (const ConfigError& e) {
    std::cerr << "filo: " << e.what() << std::endl;
    return 2;
  } catch (const zmq::error_t& e) {
    std::cerr << "filo: bus error: " << e.what() << std::endl;
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "filo: " << e.what() << std::endl;
    return 1;
  }
  return 0;
}
