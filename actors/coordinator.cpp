#include "actors/coordinator.hpp"

#include <unistd.h>
#include <condition_variable>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <mutex>

#include "actors/aggregator.hpp"
#include "actors/coordinator_pair.hpp"
#include "actors/learning/compute_threads.hpp"
#include "actors/learning/dataset.hpp"
#include "actors/learning/device.hpp"
#include "actors/learning/model.hpp"
#include "actors/learning/models.hpp"
#include "actors/learning/task.hpp"
#include "actors/registrar.hpp"
#include "actors/scheduler.hpp"
#include "runtime/actor_thread.hpp"
#include "runtime/bus.hpp"
#include "runtime/cpu_affinity.hpp"
#include "runtime/digest.hpp"
#include "runtime/drop_counters.hpp"
#include "runtime/run_record.hpp"

namespace filo {
namespace {
constexpr Milliseconds kWaitSlice{50};
/// After the run ends, the hub keeps forwarding this long so RunFinished reaches every node.
constexpr Milliseconds kFinishLinger{500};
constexpr int kExitInterrupted = 130;
/// run.device names a device this machine lacks (as a node's missing device does).
constexpr int kExitDeviceMissing = 2;
/// Training samples the model is tried on before the run starts.
constexpr std::int64_t kProbeSamples = 2;
/// Room above twice the model's size for the largest message a node may send (envelope, body).
constexpr std::int64_t kInboundHeadroomBytes = std::int64_t{1} << 20;
/// ZeroMQ I/O threads of the coordinator. Each trainer's connection lives on one of them, and
/// CurveZMQ encrypts the model's broadcast per connection: with two, two trainers' copies are
/// encrypted at once. Measured on the default filo local run (2 trainers on 2 cores, four runs
/// each): the last trainer waited 0.85 ms for the model instead of 1.11 ms.
constexpr int kIoThreads = 2;

/// A listen endpoint as others can tell it apart: a wildcard host (tcp://0.0.0.0:5555, tcp://*:5555)
/// reads alike on every machine, so the pair's event and metrics name this machine's host instead.
std::string reachable_name(const std::string& listen) {
  const std::string scheme = "tcp://";
  if (listen.rfind(scheme, 0) != 0) return listen;
  const auto colon = listen.rfind(':');
  if (colon == std::string::npos || colon < scheme.size()) return listen;
  const std::string host = listen.substr(scheme.size(), colon - scheme.size());
  if (host != "0.0.0.0" && host != "*" && host != "[::]" && host != "::") return listen;
  char name[256] = {};
  if (gethostname(name, sizeof name - 1) != 0 || name[0] == '\0') return listen;
  return scheme + name + listen.substr(colon);
}

/// A coordinator of a pair while it is active: its link to the peer, and how it became active.
struct ActivePair {
  PairOptions options;
  std::optional<FailoverRecord> failover;  // this start takes over from a lost active
  Clock::time_point decided{};
  bool yielded = false;  // it stopped acting because its peer is active with a newer start
};

std::string make_run_id() {
  return utc_now("%Y%m%dT%H%M%SZ") + "-" + std::to_string(getpid());
}

/// The run's model as TorchScript bytes: the user's file (model.path) or a built-in model built
/// from the seed. Before any socket opens, it is loaded and run on one batch of the training set, so
/// that a model filo cannot train is refused at once with the reason.
std::string prepare_model(const Config& config, msg::RunSpec& run, std::int64_t& parameters) {
  const Task task = parse_task(config.model.task);
  DatasetSpec probe_spec = dataset_spec(config.data, Split::kTrain, config.schedule.seed);
  probe_spec.limit = kProbeSamples;
  const Dataset probe = load_dataset(probe_spec, config.data.path, Split::kTrain);
  if ((task == Task::kLanguageModel) != probe.is_tokens()) {
    throw ConfigError("model.task is " + task_name(task) + " but data.format \"" + config.data.format +
                      "\" holds " +
                      (probe.is_tokens() ? "token windows (use model.task = \"language_model\")"
                                         : "labelled samples (use model.task = \"classification\")"));
  }
  auto [inputs, targets] = probe.batch(torch::arange(probe.size(), torch::kInt64));
  const std::int64_t classes = probe.num_classes();
  // Nodes normalise with the coordinator's statistics, so that every copy of the data is fed alike.
  run.mean = probe.mean();
  run.std = probe.std();
  std::string archive;
  std::string source;
  std::optional<Model> model;
  try {
    if (!config.model.path.empty()) {
      source = config.model.path;
      std::ifstream file(source, std::ios::binary);
      if (!file) throw ConfigError("model.path: cannot read " + source);
      archive.assign(std::istreambuf_iterator<char>(file), {});
      model.emplace(Model::from_archive(archive, source));
      run.model = std::filesystem::path(source).filename().string();
    } else {
      source = "built-in model '" + config.model.name + "'";
      ModelShape shape;
      shape.sample_shape = inputs.sizes().slice(1).vec();
      shape.classes = classes;
      shape.vocabulary = probe.is_tokens() ? classes : 0;
      BuiltInModelOptions options;
      options.layers = config.model.layers;
      options.heads = config.model.heads;
      options.width = config.model.width;
      options.dropout = config.model.dropout;
      torch::manual_seed(config.schedule.seed);  // the initial weights are the run's, the same every start
      model.emplace(build_model(config.model.name, shape, options));
      archive = model->archive();  // before the probe below moves BatchNorm's statistics
      run.model = config.model.name;
    }
    torch::NoGradGuard no_grad;
    const torch::Tensor outputs = model->forward(inputs);
    if (auto problem = output_problem(task, outputs, targets, classes)) throw ModelError(*problem);
  } catch (const ModelError& e) {
    throw ConfigError("cannot train " + source + ": " + e.what());
  } catch (const std::invalid_argument& e) {
    throw std::runtime_error(e.what());  // an unknown model name or a shape it cannot take
  } catch (const c10::Error& e) {
    throw ConfigError("cannot train " + source +
                      ": one batch of the training set fails in its forward: " + e.what_without_backtrace());
  }
  run.task = task_name(task);
  run.model_sha256 = sha256_hex(archive);
  run.model_bytes = archive.size();
  parameters = model->parameters().numel();
  log(LogLevel::kInfo, "coordinator", "model ", run.model, " (", task_name(task),
      "): ", model->parameters().numel(), " parameters, archive ", archive.size(), " bytes, sha256 ",
      run.model_sha256.substr(0, 12));
  return archive;
}
}  // namespace

/// The coordinator while it is active: the hub, the registrar, the scheduler and the aggregator
/// until the run ends, the process is stopped, an actor fails, or (in a pair) its peer is active
/// with a newer start.
int run_active(const Config& config, const StopFlag& process_stop, ActivePair* pair) {
  pin_to_cpus(0, parse_cpu_list(config.run.cpus, "run.cpus"));
  set_compute_threads(static_cast<int>(config.run.threads));
  use_plain_torchscript_execution();
  // The aggregator's device is checked before anything starts: never a silent fall back to the CPU.
  const DeviceChoice aggregation_device =
      choose_devices(config.run.device == "cuda" ? "cuda:0" : config.run.device, "run.device");
  if (aggregation_device.devices.empty()) {
    log(LogLevel::kError, "coordinator", aggregation_device.problem);
    return kExitDeviceMissing;
  }
  msg::RunSpec run;
  run.run_id = make_run_id();
  std::int64_t model_parameters = 0;
  const auto model_archive =
      std::make_shared<const std::string>(prepare_model(config, run, model_parameters));
  run.dataset = config.data.format == "idx" ? config.data.dataset
                                            : std::filesystem::path(config.data.path).filename().string();
  run.data_format = config.data.format;
  run.image_size = config.data.image_size;
  run.context = config.data.context;
  run.augment = config.data.augment;
  const DatasetSpec train_spec = dataset_spec(config.data, Split::kTrain, config.schedule.seed);
  run.train_samples = static_cast<std::uint64_t>(count_samples(train_spec, config.data.path, Split::kTrain));
  if (config.admission.check_dataset)
    run.dataset_fingerprint = dataset_fingerprint(train_spec, config.data.path);
  run.seed = config.schedule.seed;
  run.micro_batch = static_cast<std::uint32_t>(config.schedule.micro_batch);
  run.mode = config.optimizer.mode;
  run.precision = config.train.precision;
  run.optimizer = config.optimizer.name;
  run.learning_rate = config.optimizer.learning_rate;
  run.momentum = config.optimizer.momentum;
  run.weight_decay = config.optimizer.weight_decay;
  run.compression = config.optimizer.compression;
  run.overlap = config.optimizer.overlap;
  run.compression_fraction = config.optimizer.compression_fraction;
  run.compression_chunk = config.optimizer.compression_chunk;

  // A run directory with checkpoints is a run to resume: the nodes reconnect by themselves.
  std::optional<Checkpoint> resume;
  std::uint64_t incarnation = 1;
  if (config.run.resume) {
    CheckpointStore store(config.run.run_dir + "/checkpoints");
    std::vector<std::string> problems;
    resume = store.load_latest(problems);
    for (const auto& problem : problems) {
      log(LogLevel::kWarn, "coordinator", "checkpoint unusable, falling back to an older one: ", problem);
    }
    if (!resume && !problems.empty()) {
      throw std::runtime_error("no usable checkpoint in " + store.directory() +
                               "; move it away, or set run.resume=false to start the run over");
    }
  }
  if (resume) {
    const msg::RunSpec saved = checkpoint_run_spec(*resume);
    const auto differs = [&](const std::string& what, const std::string& saved_value,
                             const std::string& configured) {
      if (saved_value != configured) {
        throw ConfigError(resume->path + " is a checkpoint of a run with " + what + " " + saved_value +
                          ", not " + configured +
                          "; use another run.run_dir, or run.resume=false to start over");
      }
    };
    differs("model", saved.model, run.model);
    differs("task", saved.task, run.task);
    differs("dataset", saved.dataset, run.dataset);
    differs("mode", saved.mode, run.mode);
    differs("train samples", std::to_string(saved.train_samples), std::to_string(run.train_samples));
    differs("seed", std::to_string(saved.seed), std::to_string(run.seed));
    run.run_id = saved.run_id;  // the same run; everything else was checked equal above
    incarnation = resume->meta.at("incarnation").get<std::uint64_t>() + 1;
    log(LogLevel::kWarn, "coordinator", "resuming run ", run.run_id, " after round ", resume->round, " from ",
        resume->path, " (coordinator start ", incarnation, ")");
  }

  // Keys first: a coordinator without its key or its authorized keys must not open a port.
  const auto authorized_keys = authorized_keys_for(config.security);
  const std::string security_warning =
      config.security.curve ? std::string()
                            : "security.curve = false: the bus is unencrypted and anyone who reaches " +
                                  config.bus.listen + " can join the run as a trainer or read it";
  if (!security_warning.empty()) log(LogLevel::kWarn, "coordinator", security_warning);
  zmq::context_t context(kIoThreads);
  SocketFactory sockets(context, config.bus.socket_limits,
                        curve_settings_for(config.security, PeerRole::kCoordinator));
  DropCounters drops;
  HubOptions hub_options{"filo-hub", config.bus.listen, publish_endpoint_for(config.bus)};
  if (config.optimizer.mode != "gradient" && config.optimizer.compression != "none")
    hub_options.model_queue_per_trainer = kUpdateQueuePerTrainer;
  hub_options.model_endpoint = model_endpoint_for(config.bus);
  hub_options.authorized_keys = authorized_keys;
  hub_options.drops = &drops;
  hub_options.max_peers = static_cast<std::size_t>(config.security.max_peers);
  hub_options.max_names_per_key = static_cast<std::size_t>(config.security.max_names_per_key);
  // The largest message a node sends is a contribution: the model's tensors once, and the model's
  // archive is at least that big. Twice that leaves room for buffers' and headers' growth.
  hub_options.max_inbound_bytes =
      std::min<std::int64_t>(config.bus.socket_limits.max_message_bytes,
                             2 * static_cast<std::int64_t>(run.model_bytes) + kInboundHeadroomBytes);
  Hub hub(sockets, hub_options);
  // In a pair: heartbeats to the peer and a replica of every checkpoint, on the link's own thread.
  std::optional<PairLink> link;
  if (pair) link.emplace(sockets, pair->options, run.run_id, incarnation);
  std::filesystem::create_directories(config.run.run_dir);
  write_file_atomically(config.run.run_dir + "/coordinator.json",
                        nlohmann::json{{"router", hub.router_endpoint()},
                                       {"publish", hub.publish_endpoint()},
                                       {"model", hub.model_endpoint()},
                                       {"run_id", run.run_id},
                                       {"incarnation", incarnation},
                                       {"resumed_after_round", resume ? resume->round : 0},
                                       {"pid", getpid()},
                                       {"max_inbound_bytes", hub_options.max_inbound_bytes},
                                       {"curve", authorized_keys != nullptr}}
                            .dump(2));
  log(LogLevel::kInfo, "coordinator", "run ", run.run_id, ": listening on ", hub.router_endpoint(),
      ", publishing events on ", hub.publish_endpoint(), " and models on ", hub.model_endpoint(), "; ",
      run.train_samples, " samples per epoch; ",
      authorized_keys ? "CurveZMQ on, " + std::to_string(authorized_keys->size()) + " authorized keys"
                      : std::string("CurveZMQ OFF"));

  StopFlag actors_stop;
  ActorFailures failures;
  std::mutex finished_mutex;
  std::condition_variable finished_signal;
  bool finished = false;

  RegistrarOptions registrar_options;
  registrar_options.run = run;
  registrar_options.model_archive = model_archive;
  registrar_options.publish_endpoint = hub.publish_endpoint();
  registrar_options.model_endpoint = hub.model_endpoint();
  registrar_options.heartbeat_interval = Milliseconds(config.bus.heartbeat_interval_ms);
  registrar_options.liveness = static_cast<int>(config.bus.liveness);
  registrar_options.security_warning = security_warning;
  registrar_options.drops = &drops;
  constexpr std::int64_t kMebibyte = 1 << 20;
  registrar_options.policy.min_memory_bytes = config.admission.min_memory_mb * kMebibyte;
  registrar_options.policy.min_device_memory_bytes = config.admission.min_device_memory_mb * kMebibyte;
  registrar_options.policy.required_precisions = split_list(config.admission.required_precisions);
  if (config.admission.check_dataset) {
    registrar_options.policy.dataset_fingerprint = run.dataset_fingerprint;
  }
  Registrar registrar(sockets, hub.inproc_router_endpoint(), registrar_options, actors_stop);

  SchedulerOptions scheduler_options;
  scheduler_options.schedule = config.schedule;
  scheduler_options.run = run;
  scheduler_options.optimizer = config.optimizer;
  scheduler_options.run_dir = config.run.run_dir;
  scheduler_options.round_samples_per_trainer =
      config.optimizer.mode == "local-sgd"
          ? static_cast<std::uint64_t>(config.optimizer.sync_steps * config.schedule.micro_batch)
          : 0;
  scheduler_options.incarnation = incarnation;
  scheduler_options.checkpoint_every = config.run.checkpoint_every;
  scheduler_options.train = config.train;
  scheduler_options.robust = config.robust;
  scheduler_options.model_parameters = model_parameters;
  if (resume) scheduler_options.resume = run_state_from_json(checkpoint_round_state(*resume));
  scheduler_options.drops = &drops;
  if (link) {
    scheduler_options.pair = &*link;
    scheduler_options.pair_listen = reachable_name(config.bus.listen);
    scheduler_options.peer_listen = config.ha.peer;
  }
  if (pair && pair->failover) {
    scheduler_options.failover = pair->failover;
    scheduler_options.failover->coordinator_start = incarnation;
    scheduler_options.failover_decided = pair->decided;
  }
  Scheduler scheduler(sockets, hub.inproc_router_endpoint(), scheduler_options, actors_stop, [&] {
    std::lock_guard<std::mutex> lock(finished_mutex);
    finished = true;
    finished_signal.notify_all();
  });

  AggregatorOptions aggregator_options;
  aggregator_options.run = run;
  aggregator_options.model_archive = *model_archive;
  aggregator_options.optimizer = config.optimizer;
  aggregator_options.data = config.data;
  aggregator_options.run_dir = config.run.run_dir;
  aggregator_options.device = aggregation_device.devices.front();
  aggregator_options.incarnation = incarnation;
  aggregator_options.resume = resume;
  aggregator_options.drops = &drops;
  aggregator_options.robust = config.robust;
  if (link) {
    aggregator_options.checkpoint_written = [&link](std::uint64_t round, const std::string& path) {
      link->checkpoint_written(round, path);
    };
  }
  Aggregator aggregator(sockets, hub.inproc_router_endpoint(), aggregator_options, actors_stop);
  {
    ActorThread registrar_thread(
        kRegistrarName, [&] { registrar.run(); }, failures, actors_stop);
    ActorThread scheduler_thread(
        kSchedulerName, [&] { scheduler.run(); }, failures, actors_stop);
    ActorThread aggregator_thread(
        kAggregatorName, [&] { aggregator.run(); }, failures, actors_stop);
    std::unique_lock<std::mutex> lock(finished_mutex);
    // The signal handler can only set a flag, so the wait looks at it every slice.
    while (!finished && !process_stop.stop_requested() && !failures.any() &&
           !(link && link->yield_requested())) {
      finished_signal.wait_for(lock, kWaitSlice);
    }
    if (finished && link) link->finish();  // a standby that hears it exits: the run is over
    if (finished) finished_signal.wait_for(lock, kFinishLinger);
    actors_stop.request_stop();
  }  // actor threads joined here, before their sockets close
  if (link && link->yield_requested() && !finished) {
    log(LogLevel::kWarn, "coordinator", "giving way: ", link->yield_reason(), "; passive from now on");
    pair->yielded = true;
    return kExitInterrupted;
  }
  if (failures.any()) {
    log(LogLevel::kError, "coordinator", "stopped because an actor failed: ", failures.describe());
    return kExitActorFailed;
  }
  if (!finished) {
    log(LogLevel::kWarn, "coordinator", "stopped before the run finished");
    return kExitInterrupted;
  }
  return 0;
}

int run_coordinator(const Config& config, const StopFlag& process_stop) {
  if (config.ha.peer.empty()) return run_active(config, process_stop, nullptr);
  ActivePair pair;
  pair.options.own_endpoint = pair_endpoint_for(config.bus);
  pair.options.peer_endpoint = peer_pair_endpoint_for(config.ha);
  pair.options.listen = config.bus.listen;
  pair.options.run_dir = config.run.run_dir;
  pair.options.heartbeat_interval = Milliseconds(config.bus.heartbeat_interval_ms);
  pair.options.liveness = static_cast<int>(config.bus.liveness);
  pair.options.standby = config.ha.standby;
  pair.options.authorized_keys = authorized_keys_for(config.security);
  const CurveSettings curve = curve_settings_for(config.security, PeerRole::kCoordinator);
  bool primary_start = !config.ha.standby;
  while (!process_stop.stop_requested()) {
    const StandbyOutcome outcome = run_standby(pair.options, curve, primary_start, process_stop);
    primary_start = false;
    if (outcome.kind == StandbyOutcome::Kind::kStopped) return kExitInterrupted;
    if (outcome.kind == StandbyOutcome::Kind::kRunFinished) {
      log(LogLevel::kInfo, "coordinator", "the run is over; its summary is in the peer's run directory");
      return 0;
    }
    pair.failover.reset();
    if (outcome.failover) {
      FailoverRecord record;
      record.after_round = outcome.replica_round;
      record.at = utc_now("%Y-%m-%dT%H:%M:%SZ");
      record.reason = outcome.reason;
      record.peer_silent_seconds = outcome.peer_silent_seconds;
      pair.failover = record;
    }
    pair.decided = outcome.decided;
    pair.yielded = false;
    const int code = run_active(config, process_stop, &pair);
    if (!pair.yielded) return code;
  }
  return kExitInterrupted;
}

}  // namespace filo
