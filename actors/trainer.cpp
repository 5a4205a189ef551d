#include "actors/trainer.hpp"

#include "actors/learning/device.hpp"
#include "actors/learning/epoch_order.hpp"
#include "actors/learning/optimizers.hpp"
#include "runtime/digest.hpp"

#include <torch/cuda.h>

#include <thread>

namespace filo {
namespace {
constexpr Milliseconds kRegisterRetry{1000};
/// A plan usually arrives just after its model's broadcast; ask directly only past this grace.
constexpr Milliseconds kSnapshotGrace{50};
constexpr Milliseconds kSnapshotRetry{500};
constexpr int kCalibrationWarmUp = 2;
constexpr int kCalibrationMinSteps = 3;
constexpr double kCalibrationMinSeconds = 0.3;
/// Calibration starts at this micro-batch and doubles while a step stays short (time_bounded_micro_batch).
constexpr std::int64_t kFirstCalibrationMicroBatch = 4;
constexpr Milliseconds kSlowdownSlice{5};
/// Micro-batches are probed up to this size, and what fits on the device is planned with this margin.
constexpr std::int64_t kMaxProbedMicroBatch = 8192;
constexpr double kMicroBatchMemoryMargin = 0.8;
}  // namespace

Trainer::Trainer(const SocketFactory& sockets, TrainerOptions options, msg::HardwareReport report,
                 const StopFlag& stop, const TimeSource& time)
    : options_(std::move(options)),
      report_(std::move(report)),
      bus_(sockets, trainer_name(options_.node, options_.device)),
      loop_(stop, time),
      registering_since_(loop_.now()),
      last_heard_(loop_.now()),
      send_buffers_(torch::Device(options_.device).is_cuda()),
      model_staging_(torch::Device(options_.device).is_cuda()) {
  bus_.connect(options_.coordinator);
  loop_.on_readable(bus_.addressed(), [this] { read_mailbox(bus_.addressed()); });
  heartbeat_timer_ = loop_.every(options_.heartbeat_interval, [this] { tick(loop_.now()); });
}

int Trainer::run() {
  log(LogLevel::kInfo, bus_.name(), "registering with ", options_.coordinator);
  tick(loop_.now());
  loop_.run();
  if (state_ == State::kAdmitted) bus_.send(kRegistrarName, msg::Leave{"process stopping"});
  return exit_code_;
}

void Trainer::tick(Clock::time_point now) {
  if (state_ == State::kDone) return;
  if (state_ == State::kRegistering) {
    if (seconds_between(registering_since_, now) > options_.connect_timeout_seconds) {
      log(LogLevel::kError, bus_.name(), "no answer from the coordinator at ", options_.coordinator,
          " within ", options_.connect_timeout_seconds, " s: is it running and reachable?");
      exit_code_ = kExitCoordinatorUnreachable;
      state_ = State::kDone;
      loop_.quit();
      return;
    }
    if (now - last_report_sent_ >= kRegisterRetry) {
      bus_.send(kRegistrarName, report_);
      last_report_sent_ = now;
    }
    return;
  }
  const auto silence = options_.heartbeat_interval * options_.liveness;
  if (now - last_heard_ > silence) {
    register_again("no heartbeat from the coordinator for " + std::to_string(silence.count()) + " ms");
    return;
  }
  bus_.send(kRegistrarName, msg::Heartbeat{last_loaded_version_});
}

void Trainer::register_again(const std::string& why) {
  log(LogLevel::kWarn, bus_.name(), why, "; registering again");
  state_ = State::kRegistering;
  registering_since_ = loop_.now();
  last_report_sent_ = {};
  pending_.reset();
}

void Trainer::handle(const msg::Admission& admission, const Incoming& from) {
  last_heard_ = loop_.now();
  if (!admission.admitted && admission.describe_data) {
    describe_data(admission.run);
    return;
  }
  if (!admission.admitted && admission.register_again) {
    if (state_ == State::kAdmitted)
      register_again("the registrar no longer counts this trainer (" + admission.reason + ")");
    return;  // while registering, the report is on its way already
  }
  if (!admission.admitted) {
    if (state_ == State::kAdmitted) {
      register_again("the registrar no longer counts this trainer (" + admission.reason + ")");
      return;
    }
    log(LogLevel::kError, bus_.name(), "rejected by the registrar: ", admission.reason);
    exit_code_ = kExitRejected;
    state_ = State::kDone;
    loop_.quit();
    return;
  }
  const bool new_run = !run_ || run_->run_id != admission.run.run_id;
  const bool first_admission = state_ != State::kAdmitted;
  if (new_run) {
    const msg::RunSpec& run = admission.run;
    try {
      data_ = load_dataset(dataset_spec(run, static_cast<std::int64_t>(run.train_samples)),
                           options_.data.path, Split::kTrain);
    } catch (const std::exception& e) {
      log(LogLevel::kError, bus_.name(), "cannot read the run's training set: ", e.what());
      exit_code_ = kExitRejected;
      state_ = State::kDone;
      loop_.quit();
      return;
    }
    if (static_cast<std::uint64_t>(data_.size()) != run.train_samples) {
      log(LogLevel::kError, bus_.name(), "the run trains ", run.train_samples, " samples of ", run.dataset,
          " but this node has ", data_.size());
      exit_code_ = kExitRejected;
      state_ = State::kDone;
      loop_.quit();
      return;
    }
    // The coordinator's model, checked against the digest it announced: nodes need no model file.
    std::string problem;
    try {
      auto archive = read_tensor_frames(admission.model_archive, from.tensor_frames, 0);
      if (!archive || archive.value().size() != 1) {
        problem =
            "the admission carries no model archive" + (archive ? std::string() : ": " + archive.error());
      } else {
        const torch::Tensor bytes = archive.value().front().to_tensor();
        const std::string archive_bytes(static_cast<const char*>(bytes.data_ptr()),
                                        static_cast<std::size_t>(bytes.nbytes()));
        if (sha256_hex(archive_bytes) != run.model_sha256) {
          problem = "the model archive does not match its announced SHA-256 (damaged in transit?)";
        } else {
          model_.emplace(
              Model::from_archive(archive_bytes, "the coordinator's model", torch::Device(options_.device)));
          task_ = parse_task(run.task);
          precision_ = resolve_precision(run.precision, model_->device());
          layout_ = fingerprint_hex(model_->layout());
        }
      }
    } catch (const std::exception& e) {
      problem = e.what();
    }
    if (!problem.empty()) {
      log(LogLevel::kError, bus_.name(), "cannot train run ", run.run_id, ": ", problem);
      exit_code_ = kExitRejected;
      state_ = State::kDone;
      loop_.quit();
      return;
    }
    local_optimizer_.reset();
    if (run.mode == "local-sgd") {
      local_optimizer_ = make_local_optimizer(run);
      local_before_ = model_->parameters().zeros_like();
      local_deltas_ = model_->parameters().zeros_like();
    }
    model_version_.reset();
    last_loaded_version_ = 0;
    order_ = torch::Tensor();
    run_ = run;
  }
  const std::string publish = reachable_endpoint(admission.publish_endpoint, options_.coordinator);
  if (publish != subscribed_to_) {
    const bool first_subscription = subscribed_to_.empty();
    bus_.subscribe(publish, {kModelTopic, kControlTopic});
    if (first_subscription) {
      loop_.on_readable(bus_.published(), [this] { read_mailbox(bus_.published()); });
    }
    subscribed_to_ = publish;
  }
  if (admission.heartbeat_interval_ms > 0 &&
      Milliseconds(admission.heartbeat_interval_ms) != options_.heartbeat_interval) {
    // The coordinator's interval rules: its registrar declares us lost after interval x liveness
    // of its own, whatever this node's configuration says.
    options_.heartbeat_interval = Milliseconds(admission.heartbeat_interval_ms);
    loop_.cancel(heartbeat_timer_);
    heartbeat_timer_ = loop_.every(options_.heartbeat_interval, [this] { tick(loop_.now()); });
  }
  if (admission.liveness > 0) options_.liveness = admission.liveness;
  if (first_admission) {
    // Admitted afresh (perhaps by a restarted coordinator that resumed from a checkpoint older
    // than this replica): take whatever model it has, even an older version.
    model_version_.reset();
    last_loaded_version_ = 0;
    pending_.reset();
  }
  if (state_ != State::kAdmitted) {
    log(LogLevel::kInfo, bus_.name(), "admitted to run ", admission.run.run_id, " (", admission.run.model,
        " on ", admission.run.train_samples, " samples of ", admission.run.dataset, ")");
  }
  state_ = State::kAdmitted;
  if (first_admission)
    work([this] { calibrate(); });  // the scheduler plans this trainer only once it knows its speed
  bus_.send(kAggregatorName, msg::SnapshotRequest{last_loaded_version_});
  snapshot_requested_ = loop_.now();
}

void Trainer::describe_data(const msg::RunSpec& run) {
  const std::string key = run.data_format + "|" + run.dataset + "|" + std::to_string(run.image_size) + "|" +
                          std::to_string(run.context) + "|" + options_.data.path;
  if (key != described_) {
    // Computed once per dataset spec: a node that registers again reports the same fingerprint.
    report_.dataset_format = run.data_format;
    report_.dataset_fingerprint.clear();
    report_.dataset_problem.clear();
    try {
      report_.dataset_fingerprint = dataset_fingerprint(dataset_spec(run, 0), options_.data.path);
    } catch (const std::exception& e) {
      report_.dataset_problem = e.what();
      log(LogLevel::kWarn, bus_.name(), "no copy of the run's training set at ", options_.data.path, ": ",
          e.what());
    }
    described_ = key;
  }
  last_report_sent_ = {};  // report again at the next tick
  tick(loop_.now());
}

void Trainer::read_mailbox(zmq::socket_t& socket) {
  while (auto incoming = bus_.receive(socket)) {
    const MessageKind kind = incoming->envelope.kind;
    if (working_ && kind != MessageKind::kHeartbeat && kind != MessageKind::kSetSlowdown) {
      deferred_.push_back(std::move(*incoming));
      continue;
    }
    dispatch(*this, *incoming, bus_);
  }
}

void Trainer::work(const std::function<void()>& job) {
  {
    struct WorkingScope {
      bool& working;
      explicit WorkingScope(bool& flag) : working(flag) { working = true; }
      ~WorkingScope() { working = false; }
    } scope(working_);
    job();
  }
  while (!deferred_.empty() && !working_) {
    Incoming incoming = std::move(deferred_.front());
    deferred_.pop_front();
    dispatch(*this, incoming, bus_);
  }
}

void Trainer::serve_bus_while_working() {
  loop_.run_due_timers();
  read_mailbox(bus_.addressed());
  if (!subscribed_to_.empty()) read_mailbox(bus_.published());
}

void Trainer::simulate_slowdown(const WorkTimer& timer) {
  if (options_.slowdown <= 1.0) return;
  const auto until =
      timer.started() + std::chrono::duration_cast<Clock::duration>(timer.busy() * options_.slowdown);
  while (Clock::now() < until) {
    // A test aid standing in for a slower device: sleeping costs no CPU that others need.
    std::this_thread::sleep_for(std::min<Clock::duration>(kSlowdownSlice, until - Clock::now()));
    serve_bus_while_working();
  }
}

ShareOptions Trainer::share_options(std::int64_t micro_batch, std::uint64_t epoch, double loss_scale,
                                    std::function<void()> between) const {
  ShareOptions options;
  options.task = task_;
  options.micro_batch = micro_batch;
  options.epoch = epoch;
  options.precision = precision_;
  options.loss_scale = precision_ == Precision::kFp16 && loss_scale > 0 ? loss_scale : 1.0;
  options.between_micro_batches = std::move(between);
  return options;
}

std::uint32_t Trainer::probe_max_micro_batch(std::int64_t micro_batch) {
  if (model_->device().is_cpu()) return options_.max_micro_batch;  // host memory: no probe
  // Doubling micro-batches of the real model until the device runs out of memory; what fits, less
  // a margin, is what the scheduler may plan in one forward pass.
  std::int64_t fits = 0;
  for (std::int64_t size = micro_batch; size <= std::min<std::int64_t>(data_.size(), kMaxProbedMicroBatch);
       size *= 2) {
    try {
      train_share(*model_, data_, torch::arange(size, torch::kInt64), share_options(size, 0, 1.0, {}));
      fits = size;
    } catch (const c10::Error& e) {
      if (std::string(e.what()).find("out of memory") == std::string::npos) throw;
      break;
    }
    serve_bus_while_working();
  }
  model_->zero_gradients();
  const auto limit = static_cast<std::uint32_t>(static_cast<double>(fits) * kMicroBatchMemoryMargin);
  log(LogLevel::kInfo, bus_.name(), "device memory takes micro-batches of ", fits, ": planning at most ",
      limit);
  return options_.max_micro_batch > 0 ? std::min(options_.max_micro_batch, limit) : limit;
}

std::int64_t Trainer::time_bounded_micro_batch(std::int64_t largest) {
  // The bus is served between micro-batches only: one that outlasts the coordinator's liveness
  // window gets this trainer declared lost (a ResNet-18 step of 64 samples takes seconds on one CPU
  // thread). Start small and double while a step takes well under a quarter of the window; the
  // scheduler then plans micro-batches of at most this size, whose gradients accumulate alike.
  const auto budget = options_.heartbeat_interval * std::max<std::int64_t>(1, options_.liveness) / 4;
  std::int64_t size = std::min<std::int64_t>(largest, kFirstCalibrationMicroBatch);
  while (size < largest) {
    const auto started = Clock::now();
    const WorkTimer work_timer;
    train_share(*model_, data_, torch::arange(std::min<std::int64_t>(size, data_.size()), torch::kInt64),
                share_options(size, 0, 1.0, {}));
    if (!model_->device().is_cpu()) torch::cuda::synchronize();
    simulate_slowdown(work_timer);
    serve_bus_while_working();
    // Doubling roughly doubles the step: grow only while twice this one fits the budget.
    if ((Clock::now() - started) * 2 * 2 > budget) break;
    size = std::min(largest, size * 2);
  }
  model_->zero_gradients();
  return size;
}

void Trainer::calibrate() {
  const std::int64_t configured = std::max<std::uint32_t>(1, run_->micro_batch);
  const std::int64_t micro_batch = time_bounded_micro_batch(configured);
  const auto indices = torch::arange(std::min<std::int64_t>(micro_batch, data_.size()), torch::kInt64);
  std::uint64_t samples = 0;
  Clock::duration measured{};
  for (int step = 0; step < kCalibrationWarmUp + kCalibrationMinSteps ||
                     std::chrono::duration<double>(measured).count() < kCalibrationMinSeconds;
       ++step) {
    const auto started = Clock::now();
    const WorkTimer work_timer;
    train_share(*model_, data_, indices, share_options(micro_batch, 0, 1.0, {}));
    if (!model_->device().is_cpu()) torch::cuda::synchronize();
    simulate_slowdown(work_timer);
    if (step >= kCalibrationWarmUp) {
      measured += Clock::now() - started;
      samples += static_cast<std::uint64_t>(indices.size(0));
    }
    serve_bus_while_working();
  }
  msg::Calibration calibration;
  calibration.samples_per_second = samples / std::chrono::duration<double>(measured).count();
  calibration.micro_batch = static_cast<std::uint32_t>(micro_batch);
  calibration.max_micro_batch = probe_max_micro_batch(micro_batch);
  if (micro_batch < configured) {
    const auto bounded = static_cast<std::uint32_t>(micro_batch);
    calibration.max_micro_batch =
        calibration.max_micro_batch ? std::min(calibration.max_micro_batch, bounded) : bounded;
    log(LogLevel::kInfo, bus_.name(), "micro-batches of ", micro_batch, " rather than ", configured,
        ": a step must leave the bus served within the coordinator's liveness window");
  }
  calibration.device = device_name(model_->device());
  calibration.precision = precision_name(precision_);
  log(LogLevel::kInfo, bus_.name(), "calibrated: ", static_cast<int>(calibration.samples_per_second),
      " samples/s at micro-batch ", micro_batch, " in ", calibration.precision,
      options_.slowdown > 1.0 ? " (slowdown test aid on)" : "");
  bus_.send(kSchedulerName, calibration);
}

void Trainer::handle(const msg::Heartbeat&, const Incoming&) {
  last_heard_ = loop_.now();
}

void Trainer::handle(const msg::ModelState& state, const Incoming& from) {
  if (!run_) return;
  const bool newer =
      !model_version_ ? state.model_version >= last_loaded_version_ : state.model_version > *model_version_;
  if (!newer) return;
  std::vector<TensorMeta> metas = state.parameters;
  metas.insert(metas.end(), state.buffers.begin(), state.buffers.end());
  auto received = read_tensor_frames(metas, from.tensor_frames, 0);
  if (!received) {
    log(LogLevel::kWarn, bus_.name(), "dropped model version ", state.model_version, ": ", received.error());
    return;
  }
  auto& tensors = received.value();
  const auto split = tensors.begin() + static_cast<std::ptrdiff_t>(state.parameters.size());
  const std::vector<ReceivedTensor> parameters(tensors.begin(), split);
  const std::vector<ReceivedTensor> buffers(split, tensors.end());
  std::optional<std::string> mismatch;
  if (state.layout != layout_) mismatch = "a model of another layout";
  if (!mismatch) mismatch = model_->parameters().wire_mismatch(parameters);
  if (!mismatch) mismatch = model_->buffers().wire_mismatch(buffers);
  if (mismatch) {
    log(LogLevel::kWarn, bus_.name(), "dropped model version ", state.model_version, ": ", *mismatch);
    return;
  }
  model_->parameters().copy_from(parameters, model_staging_);
  model_->buffers().copy_from(buffers, model_staging_);
  model_version_ = state.model_version;
  last_loaded_version_ = state.model_version;
  snapshot_requested_.reset();
  train_if_ready();
}

void Trainer::handle(const msg::RoundPlan& plan, const Incoming&) {
  if (state_ != State::kAdmitted) return;
  pending_ = plan;
  pending_since_ = Clock::now();
  train_if_ready();
  if (pending_) request_snapshot_soon();
}

void Trainer::request_snapshot_soon() {
  loop_.at(loop_.now() + kSnapshotGrace, [this] {
    if (!pending_ || (model_version_ && *model_version_ == pending_->model_version)) return;
    if (snapshot_requested_ && loop_.now() - *snapshot_requested_ < kSnapshotRetry) return;
    bus_.send(kAggregatorName, msg::SnapshotRequest{last_loaded_version_});
    snapshot_requested_ = loop_.now();
    request_snapshot_soon();
  });
}

void Trainer::train_if_ready() {
  if (!pending_ || !model_version_ || *model_version_ != pending_->model_version) return;
  const msg::RoundPlan plan = *pending_;
  const double model_wait = seconds_between(pending_since_, Clock::now());
  pending_.reset();
  work([this, &plan, model_wait] { train(plan, model_wait); });
}

void Trainer::train(const msg::RoundPlan& plan, double model_wait_seconds) {
  if (!order_.defined() || order_epoch_ != plan.epoch) {
    order_ = epoch_order(run_->seed, plan.epoch, data_.size());
    order_epoch_ = plan.epoch;
  }
  const auto started = Clock::now();
  const auto indices = indices_of(order_, plan.ranges);
  WorkTimer micro_batch_timer;
  const auto between_micro_batches = [&] {
    simulate_slowdown(micro_batch_timer);
    serve_bus_while_working();
    micro_batch_timer = WorkTimer();
  };
  const std::int64_t micro_batch = std::max<std::uint32_t>(1, plan.micro_batch);
  if (local_optimizer_) local_before_.copy_from(model_->parameters());
  ShareOptions share = share_options(micro_batch, plan.epoch, plan.loss_scale, between_micro_batches);
  share.inject_overflow = options_.overflow_rounds.count(plan.round) > 0;
  if (share.inject_overflow)
    log(LogLevel::kWarn, bus_.name(), "TEST AID: overflow injected in round ", plan.round);
  const ShareResult result = local_optimizer_
                                 ? train_local_steps(*model_, data_, indices, *local_optimizer_, share)
                                 : train_share(*model_, data_, indices, share);
  if (!model_->device().is_cpu())
    torch::cuda::synchronize();  // compute time is the device's, not the launch's
  // The forward passes moved the BatchNorm statistics: this replica is no longer version v.
  model_version_.reset();
  const auto computed = Clock::now();

  std::vector<zmq::message_t> frames;
  msg::Contribution contribution;
  contribution.round = plan.round;
  contribution.epoch = plan.epoch;
  contribution.model_version = plan.model_version;
  contribution.incarnation = plan.incarnation;
  contribution.samples = result.samples;
  contribution.loss_sum = result.loss_sum;
  contribution.correct = result.correct;
  contribution.layout = layout_;
  contribution.precision = precision_name(precision_);
  contribution.peak_memory_bytes = peak_memory_bytes(model_->device());
  contribution.overflow = result.overflow;
  if (!result.overflow) {  // an overflowed share sends no tensors: its round's step is skipped fleet-wide
    if (local_optimizer_) parameter_deltas(*model_, local_before_, local_deltas_);
    contribution.gradients =
        stage(local_optimizer_ ? local_deltas_ : model_->gradients(), send_buffers_, frames);
    contribution.buffers = stage(model_->buffers(), send_buffers_, frames);
  }
  contribution.compute_seconds = seconds_between(started, computed);
  contribution.model_wait_seconds = model_wait_seconds;
  contribution.staging_seconds = seconds_between(computed, Clock::now());
  bus_.send(kAggregatorName, contribution, Stamp{plan.round, plan.model_version}, std::move(frames));
}

void Trainer::handle(const msg::SetSlowdown& slowdown, const Incoming& from) {
  if (!(slowdown.factor >= 1.0) || !std::isfinite(slowdown.factor)) {
    log(LogLevel::kWarn, bus_.name(), "ignored slowdown ", slowdown.factor, " from ", from.from,
        ": it must be >= 1");
    return;
  }
  log(LogLevel::kInfo, bus_.name(), "TEST AID: slowdown ", options_.slowdown, " -> ", slowdown.factor,
      " (asked by ", from.from, ")");
  options_.slowdown = slowdown.factor;
}

void Trainer::handle(const msg::RunFinished& finished, const Incoming&) {
  log(LogLevel::kInfo, bus_.name(), "run finished (", finished.reason, "), final test accuracy ",
      finished.final_test_accuracy);
  // Said goodbye, so that a coordinator still closing its run does not count it lost.
  if (state_ == State::kAdmitted) bus_.send(kRegistrarName, msg::Leave{"run finished"});
  state_ = State::kDone;
  exit_code_ = kExitFinished;
  loop_.quit();
}

}  // namespace filo
