#include "actors/trainer.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string_view>
#include <thread>

#include "actors/learning/device.hpp"
#include "actors/learning/epoch_order.hpp"
#include "actors/learning/optimizers.hpp"
#include "runtime/digest.hpp"

namespace filo {
namespace {
/// An unanswered hardware report is sent again after this, then after twice as long each time up
/// to kMaxRegisterRetry: over a slow link the admission (with the model archive) takes seconds.
constexpr Milliseconds kRegisterRetry{1000};
/// How long a new subscription to the model publisher is given to connect before a snapshot is
/// asked for on it (loopback with CurveZMQ: a few milliseconds).
constexpr Milliseconds kSubscriptionSettle{50};
constexpr Milliseconds kMaxRegisterRetry{8000};
/// How long a plan waits for its model's broadcast before asking for the model directly: at least
/// this, at most kMaxSnapshotWait, twice the latest wait between them that a broadcast ended.
constexpr Milliseconds kSnapshotGrace{50};
/// An unanswered snapshot request is repeated after this, then after twice as long each time.
constexpr Milliseconds kSnapshotRetry{500};
constexpr Milliseconds kMaxSnapshotWait{30000};
/// Compressed downlink: updates held while the replica has not reached their base (a share being
/// trained, a snapshot on its way). Beyond these the oldest go: a snapshot is cheaper than a long
/// wait.
constexpr std::size_t kMaxHeldUpdates = 16;
constexpr int kCalibrationWarmUp = 2;
constexpr int kCalibrationMinSteps = 3;
constexpr double kCalibrationMinSeconds = 0.3;
constexpr Milliseconds kSlowdownSlice{5};
/// Micro-batches are probed up to this size, and what fits on the device is planned with this margin.
constexpr std::int64_t kMaxProbedMicroBatch = 8192;
constexpr double kMicroBatchMemoryMargin = 0.8;
/// What a failure report may carry of a LibTorch message (whose backtrace runs to pages).
constexpr std::size_t kMaxFailureReason = 400;

/// The run cannot be trained here as configured (no such data, a damaged model): the node is
/// refused, as a rejection is, not failed.
struct RunRefused : std::runtime_error {
  using std::runtime_error::runtime_error;
};

std::string describe(const std::exception_ptr& failure) {
  try {
    std::rethrow_exception(failure);
  } catch (const c10::Error& e) {
    return e.what_without_backtrace();
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "an exception that is not a std::exception";
  }
}

/// Whether a job's `failure` is an `Exception` (JobCancelled, RunRefused).
template <typename Exception>
bool failed_with(const std::exception_ptr& failure) {
  try {
    std::rethrow_exception(failure);
  } catch (const Exception&) {
    return true;
  } catch (...) {
    return false;
  }
}
}  // namespace

Trainer::Trainer(const SocketFactory& sockets, TrainerOptions options, msg::HardwareReport report,
                 const StopFlag& stop, const TimeSource& time)
    : options_(std::move(options)),
      report_(std::move(report)),
      bus_(sockets, trainer_name(options_.node, options_.device)),
      heartbeat_bus_(sockets, heartbeat_address(trainer_name(options_.node, options_.device))),
      loop_(stop, time),
      registering_since_(loop_.now()),
      last_heard_(loop_.now()),
      slowdown_(options_.slowdown),
      send_buffers_(torch::Device(options_.device).is_cuda()),
      model_staging_(torch::Device(options_.device).is_cuda()) {
  report_.registration = 1;
  const torch::Device device(options_.device);
  // Every CUDA call of a job (synchronisation, allocation, a new stream) goes to this trainer's device.
  worker_ = std::make_unique<WorkerThread>(sockets, "compute:" + options_.device,
                                           [device] { use_device_on_this_thread(device); });
  coordinators_ = split_endpoints(options_.coordinator);
  if (coordinators_.empty()) throw std::invalid_argument("no coordinator endpoint given");
  bus_.connect(coordinator());
  heartbeat_bus_.connect(coordinator());
  loop_.on_readable(bus_.addressed(), [this] {
    while (auto incoming = bus_.receive(bus_.addressed())) dispatch(*this, *incoming, bus_);
  });
  loop_.on_readable(heartbeat_bus_.addressed(), [this] {
    while (auto incoming = heartbeat_bus_.receive(heartbeat_bus_.addressed()))
      dispatch(*this, *incoming, heartbeat_bus_);
  });
  loop_.on_readable(worker_->finished_signal(), [this] { on_job_finished(); });
  heartbeat_timer_ = loop_.every(options_.heartbeat_interval, [this] { tick(loop_.now()); });
}

int Trainer::run() {
  log(LogLevel::kInfo, bus_.name(), "registering with ", coordinator());
  tick(loop_.now());
  loop_.run();
  if (state_ == State::kAdmitted) bus_.send(kRegistrarName, msg::Leave{"process stopping"});
  return exit_code_;
}

void Trainer::finish(int exit_code) {
  exit_code_ = exit_code;
  state_ = State::kDone;
  worker_->cancel();
  loop_.quit();
}

void Trainer::tick(Clock::time_point now) {
  if (state_ == State::kDone) return;
  if (state_ == State::kRegistering) {
    // Silence counts, not the wait: over a slow link an admission that carries a large model takes
    // long, while the registrar's answers to heartbeats say it is there.
    if (seconds_between(std::max(registering_since_, last_heard_), now) > options_.connect_timeout_seconds) {
      log(LogLevel::kError, bus_.name(), "no answer from the coordinator at ", options_.coordinator,
          " within ", options_.connect_timeout_seconds, " s: is it running and reachable?");
      finish(kExitCoordinatorUnreachable);
      return;
    }
    // A pair: the one asked stays silent (passive, or gone too): ask the other. A passive
    // coordinator takes over only once it has lost the active one and a node asks it.
    const double ask_each_for =
        2.0 * options_.liveness * std::chrono::duration<double>(options_.heartbeat_interval).count();
    if (coordinators_.size() > 1 &&
        seconds_between(std::max({registering_since_, last_heard_, asked_since_}), now) > ask_each_for) {
      ask_next_coordinator("no answer from " + coordinator() + " for " + std::to_string(ask_each_for) + " s");
    }
    if (now - last_report_sent_ >= register_retry_) {
      if (last_report_sent_ != Clock::time_point{})
        register_retry_ = std::min(2 * register_retry_, kMaxRegisterRetry);
      bus_.send(kRegistrarName, report_);
      last_report_sent_ = now;
    } else if (last_report_sent_ != Clock::time_point{}) {
      // Alive while the admission crosses the link: a registrar that took the report would
      // otherwise count this trainer lost long before it could heartbeat as an admitted one.
      heartbeat_bus_.send(kRegistrarName, msg::Heartbeat{});
    }
    return;
  }
  const auto silence = options_.heartbeat_interval * options_.liveness;
  if (now - last_heard_ > silence) {
    register_again("no heartbeat from the coordinator for " + std::to_string(silence.count()) + " ms");
    if (coordinators_.size() > 1) report_.lost_coordinator = coordinator();  // its vote, to a pair's standby
    ask_next_coordinator("lost " + coordinator());
    return;
  }
  msg::Heartbeat heartbeat;
  heartbeat.model_version = last_loaded_version_;
  heartbeat.precision = precision_label_;
  heartbeat.peak_memory_bytes = peak_memory_bytes(torch::Device(options_.device));
  heartbeat_bus_.send(kRegistrarName, heartbeat);
}

void Trainer::ask_next_coordinator(const std::string& why) {
  if (coordinators_.size() < 2) return;
  bus_.disconnect(coordinator());
  heartbeat_bus_.disconnect(coordinator());
  coordinator_index_ = (coordinator_index_ + 1) % coordinators_.size();
  bus_.connect(coordinator());
  heartbeat_bus_.connect(coordinator());
  asked_since_ = loop_.now();
  last_report_sent_ = {};  // the report goes to the new one at once
  register_retry_ = kRegisterRetry;
  log(LogLevel::kWarn, bus_.name(), why, ": asking the coordinator at ", coordinator());
}

void Trainer::register_again(const std::string& why) {
  log(LogLevel::kWarn, bus_.name(), why, "; registering again");
  state_ = State::kRegistering;
  registering_since_ = loop_.now();
  last_report_sent_ = {};
  register_retry_ = kRegisterRetry;
  ++report_.registration;  // a new registration, not a repeat of the last: admitted afresh
  pending_.reset();
  queued_.reset();
  if (training_) worker_->cancel();  // the coordinator no longer counts on that share
}

void Trainer::handle(const msg::Admission& admission, const Incoming& from) {
  // A pair: the first word from the coordinator this trainer moved to since it did.
  const bool first_word = coordinators_.size() > 1 && last_heard_ < asked_since_;
  last_heard_ = loop_.now();
  if (!admission.admitted && admission.describe_data) {
    describe_data(admission.run);
    return;
  }
  if (!admission.admitted && admission.register_again) {
    // Heartbeats sent while registering are answered on their own connection: an answer to one the
    // registrar took before this trainer's report can come after the admission. Heard that soon
    // after it, it says nothing about now (it cost a standby's first round after a takeover).
    const bool stale_answer =
        state_ == State::kAdmitted && loop_.now() - admitted_at_ < 2 * options_.heartbeat_interval;
    if (state_ == State::kAdmitted && !stale_answer)
      register_again("the registrar no longer counts this trainer (" + admission.reason + ")");
    // While registering, the report is on its way already, except where this answers a heartbeat
    // to a pair's standby that has just become active: the reports before went to a passive one.
    if (state_ == State::kRegistering && first_word) {
      bus_.send(kRegistrarName, report_);
      last_report_sent_ = loop_.now();
    }
    return;
  }
  if (!admission.admitted) {
    if (state_ == State::kAdmitted) {
      register_again("the registrar no longer counts this trainer (" + admission.reason + ")");
      return;
    }
    log(LogLevel::kError, bus_.name(), "rejected by the registrar: ", admission.reason);
    finish(kExitRejected);
    return;
  }
  if (state_ == State::kDone) return;
  const bool new_run = !run_ || run_->run_id != admission.run.run_id;
  const bool first_admission = state_ != State::kAdmitted;
  if (new_run && worker_->busy()) {
    // A new run's admission while the old run's job still runs (a restarted coordinator with a
    // fresh run): that job's result is worthless; the next admission, once it ends, starts over.
    worker_->cancel();
    return;
  }
  if (new_run) {
    const msg::RunSpec& run = admission.run;
    auto archive = read_tensor_frames(admission.model_archive, from.tensor_frames, 0);
    if (!archive || archive.value().size() != 1) {
      log(LogLevel::kError, bus_.name(), "cannot train run ", run.run_id,
          ": the admission carries no model archive", archive ? std::string() : ": " + archive.error());
      finish(kExitRejected);
      return;
    }
    const ReceivedTensor archive_tensor = archive.value().front();
    // The run's data and model are made on the worker, where every tensor of this trainer lives.
    calibrated_ = false;
    last_calibration_.reset();
    forget_model();
    worker_->submit("preparing run " + run.run_id, [this, run, archive_tensor] {
      try {
        data_ = load_dataset(dataset_spec(run, static_cast<std::int64_t>(run.train_samples)),
                             options_.data.path, Split::kTrain);
      } catch (const std::exception& e) {
        throw RunRefused(std::string("cannot read the run's training set: ") + e.what());
      }
      if (static_cast<std::uint64_t>(data_.size()) != run.train_samples) {
        throw RunRefused("the run trains " + std::to_string(run.train_samples) + " samples of " +
                         run.dataset + " but this node has " + std::to_string(data_.size()));
      }
      // The coordinator's model, checked against the digest it announced: nodes need no model file.
      const torch::Tensor bytes = archive_tensor.to_tensor();
      const std::string archive_bytes(static_cast<const char*>(bytes.data_ptr()),
                                      static_cast<std::size_t>(bytes.nbytes()));
      if (sha256_hex(archive_bytes) != run.model_sha256)
        throw RunRefused("the model archive does not match its announced SHA-256 (damaged in transit?)");
      try {
        model_.emplace(
            Model::from_archive(archive_bytes, "the coordinator's model", torch::Device(options_.device)));
        task_ = parse_task(run.task);
        precision_ = resolve_precision(run.precision, model_->device());
        compression_ = compression_options(run);
        overlap_ = run.overlap;
        own_change_ = FlatTensors();  // another run's, perhaps of another model
        round_start_ = FlatTensors();
        own_change_round_ = 0;
      } catch (const std::exception& e) {
        throw RunRefused(e.what());
      }
      layout_ = fingerprint_hex(model_->layout());
      local_optimizer_.reset();
      if (run.mode == "local-sgd" || run.mode == "auto") {  // auto: local-sgd rounds when links are slow
        local_optimizer_ = make_local_optimizer(run);
        local_before_ = model_->parameters().zeros_like();
        local_before_.copy_from(model_->parameters());  // version 0's, with a compressed downlink
        local_deltas_ = model_->parameters().zeros_like();
      }
      error_feedback_.reset();
      if (compression_.kind != CompressionKind::kNone) error_feedback_.emplace(model_->parameters());
      order_ = torch::Tensor();
    });
    run_ = run;
  }
  // Models, this trainer's snapshots and control come on the model publisher (a coordinator of an
  // older layout publishes everything on one).
  const std::string publish = reachable_endpoint(
      admission.model_endpoint.empty() ? admission.publish_endpoint : admission.model_endpoint,
      coordinator());
  // Moved from another coordinator's publisher (a pair's): not the first subscription, nor the same
  // coordinator restarted.
  const bool subscription_moved = !subscribed_to_.empty() && publish != subscribed_to_;
  if (publish != subscribed_to_) {
    const bool first_subscription = subscribed_to_.empty();
    bus_.subscribe(publish, {kModelTopic, kControlTopic, snapshot_topic(bus_.name())});
    if (first_subscription) {
      loop_.on_readable(bus_.published(), [this] {
        while (auto incoming = bus_.receive(bus_.published())) dispatch(*this, *incoming, bus_);
      });
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
    // than this replica): take whatever model it has, even an older version. The scheduler plans
    // this trainer only once it knows its speed: in the same run, the last calibration says it.
    forget_model();
    pending_.reset();
    queued_.reset();
    calibrated_ = !new_run && last_calibration_.has_value();
    if (calibrated_) {
      log(LogLevel::kInfo, bus_.name(), "admitted again to run ", admission.run.run_id,
          ": its calibration of ", static_cast<int>(last_calibration_->samples_per_second),
          " samples/s stands");
      bus_.send(kSchedulerName, *last_calibration_);
    }
  }
  if (state_ != State::kAdmitted) {
    log(LogLevel::kInfo, bus_.name(), "admitted to run ", admission.run.run_id, " (", admission.run.model,
        " on ", admission.run.train_samples, " samples of ", admission.run.dataset, ")");
  }
  if (state_ != State::kAdmitted) {
    // The admission carried the model's archive: how long it took to come after the last report
    // tells how long a whole model takes to arrive here, and a snapshot is not asked for again
    // sooner than twice that (at 10 Mbit/s a 7.4 MB model takes 6 s; asking every 500 ms, doubling,
    // put four copies on that link before the first arrived).
    const auto answered = std::chrono::duration_cast<Milliseconds>(loop_.now() - last_report_sent_);
    admission_seconds_ = seconds_between(last_report_sent_, loop_.now());
    snapshot_first_retry_ = std::clamp(2 * answered, kSnapshotRetry, kMaxSnapshotWait);
  }
  if (state_ != State::kAdmitted) admitted_at_ = loop_.now();
  report_.lost_coordinator.clear();
  state_ = State::kAdmitted;
  register_retry_ = kRegisterRetry;
  snapshot_retry_ = snapshot_first_retry_;  // requests to a coordinator that went away backed off
  if (new_run && downlink_compressed()) {
    // The archive's weights are the run's version 0 (the aggregator starts from the same archive),
    // and the replica is made from it: a late joiner learns from the first update's gap that the
    // run has moved on, and a wrong guess fails the first update's fingerprint. Either way it asks
    // for a snapshot then; a fleet that starts together never needs one (at 10 Mbit/s a snapshot
    // of 7.4 MB held every trainer's first round up for 6 s).
    model_version_ = 0;
    base_version_ = 0;
  } else if (subscription_moved) {
    // A snapshot published before this new subscription is connected would be lost (ZeroMQ's slow
    // joiner): a pair's standby that took over waited half a second for the first round so.
    snapshot_requested_ = loop_.now();
    loop_.at(loop_.now() + kSubscriptionSettle, [this] {
      if (state_ != State::kAdmitted || model_version_) return;
      bus_.send(kAggregatorName, msg::SnapshotRequest{last_loaded_version_});
    });
  } else {
    bus_.send(kAggregatorName, msg::SnapshotRequest{last_loaded_version_});
    snapshot_requested_ = loop_.now();
  }
  advance();
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

void Trainer::advance() {
  if (state_ != State::kAdmitted || worker_->busy() || !model_) {
    // !model_: the run is still being prepared (its job's end calls this again).
    if (state_ != State::kAdmitted || worker_->busy()) return;
  }
  if (!model_) return;
  if (!calibrated_) {
    worker_->submit("calibrating", [this] { calibration_result_ = calibrate(); });
    return;
  }
  // Only the newest model matters: an older one held would only be overwritten.
  std::optional<HeldModel> load;
  if (held_model_) {
    const std::uint64_t version = held_model_->state.model_version;
    const bool newer = !model_version_ ? version >= last_loaded_version_ : version > *model_version_;
    // With a compressed downlink, a snapshot the held updates already reach is not needed.
    const bool reached = downlink_compressed() && base_version_ && reachable_version().value_or(0) >= version;
    if (newer && !reached) load = std::move(held_model_);
    held_model_.reset();
  }
  // Then every held update that follows on, in order.
  std::vector<HeldUpdate> updates;
  if (downlink_compressed()) {
    std::optional<std::uint64_t> from = load ? std::optional(load->state.model_version) : base_version_;
    if (from) {
      held_updates_.erase(held_updates_.begin(), held_updates_.lower_bound(*from));
      for (auto next = held_updates_.find(*from); next != held_updates_.end();
           next = held_updates_.find(*from)) {
        from = next->second.update.model_version;
        updates.push_back(std::move(next->second));
        held_updates_.erase(next);
      }
    }
  }
  // The version the replica holds once this job's loading is done. An overlapped plan starts from
  // the model kept in local_before_ in any case, so that one counts too.
  std::optional<std::uint64_t> ready;
  if (!updates.empty()) {
    ready = updates.back().update.model_version;
  } else if (load) {
    ready = load->state.model_version;
  } else if (model_version_) {
    ready = model_version_;
  } else if (pending_ && pending_->overlapped && base_version_) {
    ready = base_version_;
  }
  const std::uint64_t ready_version = ready.value_or(0);
  std::optional<msg::RoundPlan> plan;
  while (pending_ && ready) {
    if (ready_version == pending_->model_version ||
        (pending_->overlapped && ready_version > pending_->model_version)) {
      // An overlapped plan's round stays open after the round before it closed: a newer model is
      // that one's, and the plan starts from it.
      plan = std::move(pending_);
      pending_.reset();
    } else if (ready_version > pending_->model_version) {
      // The model moved on past the plan's version: that round closed without this share.
      log(LogLevel::kInfo, bus_.name(), "dropped the plan of round ", pending_->round, ": model version ",
          pending_->model_version, " was superseded by ", ready_version);
      pending_.reset();
    } else {
      break;  // its model is still to come
    }
    if (queued_) {  // the plan behind it waits from now, the trainer being busy until then
      pending_ = std::move(queued_);
      queued_.reset();
      pending_since_ = Clock::now();
      snapshot_asked_for_plan_ = false;
    }
    if (plan) break;
  }
  if (!load && updates.empty() && !plan) return;
  const double model_wait = plan ? seconds_between(pending_since_, Clock::now()) : 0.0;
  if (plan && !snapshot_asked_for_plan_) {
    // A plan names the version its round produces and comes before that model has been applied and
    // broadcast: ask for a snapshot only once the model is later than it has lately been (a 7.4 MB
    // model on a GPU took over 50 ms, and each of a trainer's rounds asked for a needless snapshot).
    // Only waits the broadcast ended count: one that a snapshot ended would lengthen the next.
    const auto twice =
        std::chrono::duration_cast<Milliseconds>(std::chrono::duration<double>(2 * model_wait));
    snapshot_grace_ = std::clamp(twice, kSnapshotGrace, kMaxSnapshotWait);
  }
  if (load || !updates.empty()) loading_version_ = ready_version;
  training_ = plan;
  const std::string what = plan ? "training round " + std::to_string(plan->round)
                                : "loading model version " + std::to_string(*loading_version_);
  worker_->submit(
      what, [this, load = std::move(load), updates = std::move(updates), plan, model_wait, ready_version] {
        train_result_ = load_and_train(load, updates, plan, model_wait, ready_version);
      });
}

void Trainer::on_job_finished() {
  auto finished = worker_->take_finished();
  if (!finished) return;
  const std::optional<msg::RoundPlan> trained = std::move(training_);
  const std::optional<std::uint64_t> loaded = std::move(loading_version_);
  training_.reset();
  loading_version_.reset();
  std::optional<msg::Calibration> calibration = std::move(calibration_result_);
  std::optional<TrainOutcome> outcome = std::move(train_result_);
  calibration_result_.reset();
  train_result_.reset();
  if (finished->failure) {
    if (trained) model_version_.reset();  // a share that stopped half way left the replica changed
    if (failed_with<JobCancelled>(finished->failure)) {
      log(LogLevel::kInfo, bus_.name(), finished->what, " stopped: superseded");
    } else if (failed_with<RunRefused>(finished->failure)) {
      log(LogLevel::kError, bus_.name(), "cannot train run ", run_ ? run_->run_id : std::string("?"), ": ",
          describe(finished->failure));
      finish(kExitRejected);
      return;
    } else {
      fail(finished->what, trained ? trained->round : 0, describe(finished->failure));
      return;
    }
  }
  if (state_ == State::kDone) return;
  if (calibration) {
    calibrated_ = true;
    log(LogLevel::kInfo, bus_.name(), "calibrated: ", static_cast<int>(calibration->samples_per_second),
        " samples/s at micro-batch ", calibration->micro_batch, " in ", calibration->precision,
        slowdown_.load() > 1.0 ? " (slowdown test aid on)" : "");
    if (state_ == State::kAdmitted) bus_.send(kSchedulerName, *calibration);
    last_calibration_ = std::move(calibration);
  }
  if (loaded && outcome && outcome->problem.empty()) {
    last_loaded_version_ = *loaded;
    model_version_ = *loaded;
    if (keeps_base()) base_version_ = *loaded;
    snapshot_requested_.reset();
    snapshot_retry_ = snapshot_first_retry_;
  } else if (outcome && !outcome->problem.empty()) {
    log(LogLevel::kWarn, bus_.name(), "dropped model version ", loaded.value_or(0), ": ", outcome->problem);
    if (downlink_compressed()) {
      // An update that did not apply may have left the replica half way: only a snapshot helps now.
      model_version_.reset();
      base_version_.reset();
      held_updates_.clear();
      const auto now = loop_.now();
      if (state_ == State::kAdmitted &&
          (!snapshot_requested_ || now - *snapshot_requested_ >= snapshot_retry_)) {
        bus_.send(kAggregatorName, msg::SnapshotRequest{last_loaded_version_});
        snapshot_requested_ = now;
      }
    }
  }
  if (trained && outcome && outcome->contribution) {
    // The forward passes moved the BatchNorm statistics (local-sgd: the parameters too): this
    // replica is no longer the version it was planned on.
    model_version_.reset();
    if (state_ == State::kAdmitted)
      bus_.send(kAggregatorName, *outcome->contribution, Stamp{trained->round, trained->model_version},
                std::move(outcome->frames));
  } else if (trained && outcome && !outcome->contribution) {
    // Its model did not load: it waits for a good one, ahead of a plan behind it (two plans
    // behind it mean its round has closed).
    if (!pending_) {
      pending_ = *trained;
    } else if (!queued_ && pending_->round > trained->round) {
      queued_ = std::move(pending_);
      pending_ = *trained;
    }
  }
  // A plan behind the round just trained (overlap) waited for the trainer, not for its model.
  if (trained && pending_ && pending_->overlapped) pending_since_ = std::max(pending_since_, Clock::now());
  advance();
  if (pending_) request_snapshot_soon();
}

void Trainer::fail(const std::string& what, std::uint64_t round, const std::string& reason) {
  // Not bad input: this trainer's own computation broke. The scheduler takes it out of the plans
  // at once (its share goes back to the pool) and says why; this process ends with the reason,
  // rather than limp on and make every round wait for its deadline.
  const std::string cut = reason.substr(0, kMaxFailureReason);
  log(LogLevel::kError, bus_.name(), what, " failed: ", cut);
  if (state_ == State::kAdmitted) {
    bus_.send(kSchedulerName, msg::TrainerFailed{round, what + ": " + cut, /*exiting=*/true});
    bus_.send(kRegistrarName, msg::Leave{"its computation failed: " + cut});
  }
  state_ = State::kDone;
  exit_code_ = kExitTrainerFailed;
  loop_.quit();
}

void Trainer::handle(const msg::Heartbeat&, const Incoming&) {
  last_heard_ = loop_.now();
}

void Trainer::handle(const msg::ModelState& state, const Incoming& from) {
  if (!run_) return;
  const std::uint64_t newest_known = std::max({held_model_ ? held_model_->state.model_version : 0,
                                               loading_version_.value_or(0), model_version_.value_or(0)});
  const bool newer =
      state.model_version > newest_known ||
      (!model_version_ && !held_model_ && !loading_version_ && state.model_version >= last_loaded_version_);
  if (!newer) return;
  // Kept whole (its frames stay alive with it) until the worker is free: a model arriving mid-share
  // must not change the replica under the computation, and a newer one replaces an older one here,
  // so broadcasts never queue behind each other.
  held_model_ = HeldModel{state, from.tensor_frames};
  advance();
}

void Trainer::handle(const msg::ModelUpdate& update, const Incoming& from) {
  if (!run_ || !downlink_compressed()) return;
  if (update.model_version <= update.base_version) return;
  if (loading_version_.value_or(0) >= update.model_version ||
      (base_version_ && *base_version_ >= update.model_version))
    return;
  const std::optional<std::uint64_t> reachable = reachable_version();
  held_updates_[update.base_version] = HeldUpdate{update, from.tensor_frames};
  while (held_updates_.size() > kMaxHeldUpdates) held_updates_.erase(held_updates_.begin());
  if (reachable && update.base_version > *reachable) {
    // Updates come in order on one connection: one between was dropped, and no later one can
    // follow on. Only a snapshot helps.
    const auto now = loop_.now();
    if (state_ == State::kAdmitted &&
        (!snapshot_requested_ || now - *snapshot_requested_ >= snapshot_retry_)) {
      log(LogLevel::kInfo, bus_.name(), "asked for a snapshot: the update from version ", update.base_version,
          " came while this replica reaches version ", *reachable, " (an update was dropped)");
      bus_.send(kAggregatorName, msg::SnapshotRequest{last_loaded_version_});
      snapshot_requested_ = now;
    }
  }
  advance();
}

bool Trainer::downlink_compressed() const {
  return run_ && run_->mode != "gradient" && run_->compression != "none";
}

std::optional<std::uint64_t> Trainer::reachable_version() const {
  std::optional<std::uint64_t> version = loading_version_ ? loading_version_ : base_version_;
  if (!version) return std::nullopt;
  for (auto next = held_updates_.find(*version); next != held_updates_.end();
       next = held_updates_.find(*version)) {
    version = next->second.update.model_version;
  }
  return version;
}

void Trainer::forget_model() {
  model_version_.reset();
  base_version_.reset();
  last_loaded_version_ = 0;
  held_model_.reset();
  held_updates_.clear();
}

void Trainer::handle(const msg::RoundPlan& plan, const Incoming& from) {
  if (state_ != State::kAdmitted) return;
  if (auto problem = plan_problem(plan)) {
    log(LogLevel::kWarn, bus_.name(), "ignored the plan of round ", plan.round, " from ", from.from, ": ",
        *problem);
    return;
  }
  // Every round up to this one's model has closed (the round before it too, unless it overlaps that).
  const std::uint64_t closed = plan.round - std::min<std::uint64_t>(plan.round, plan.overlapped ? 2 : 1);
  if (training_ && training_->round <= closed) {
    // A newer round was planned: the one being trained has closed, and its share is no use now.
    worker_->cancel();
  }
  if (queued_ && queued_->round <= closed) queued_.reset();
  if (pending_ && pending_->round <= closed) pending_.reset();
  if (!pending_ && queued_) {  // the round behind the one dropped is still open: it goes first
    pending_ = std::move(queued_);
    queued_.reset();
    pending_since_ = Clock::now();
    snapshot_asked_for_plan_ = false;
  }
  if (pending_ && pending_->round < plan.round) {
    queued_ = plan;  // behind a round still open, which goes first
  } else {
    pending_ = plan;
    pending_since_ = Clock::now();
    snapshot_asked_for_plan_ = false;
  }
  advance();
  if (pending_) request_snapshot_soon();
}

std::optional<std::string> Trainer::plan_problem(const msg::RoundPlan& plan) const {
  if (!run_) return std::string("no run yet");
  const std::string& mode = plan_mode(plan);
  if (mode != "gradient" && mode != "local-sgd") return "unknown mode \"" + mode.substr(0, 32) + "\"";
  if (run_->mode != "auto" && mode != run_->mode) return "a " + mode + " round in a " + run_->mode + " run";
  if (plan.compressed && (mode != "local-sgd" || run_->compression == "none"))
    return std::string("a compressed round in a run without compression, or of gradients");
  if (plan.overlapped && (mode != "local-sgd" || plan.round < 2 || !run_->overlap))
    return std::string("an overlapped round in a run without optimizer.overlap, of gradients, or first");
  return std::nullopt;
}

const std::string& Trainer::plan_mode(const msg::RoundPlan& plan) const {
  // An older scheduler names no mode: its run's is meant.
  return plan.mode.empty() ? run_->mode : plan.mode;
}

void Trainer::request_snapshot_soon() {
  // With a compressed downlink the updates come in order on one connection, and a lost one shows
  // as a gap when the next comes (asked for at once) or fails the fingerprint: a late update is
  // only late. A snapshot, the whole model, queues in front of every later update: at 10 Mbit/s,
  // asking 50 ms (or twice the last wait) after a plan made rounds wait for 7.4 MB snapshots.
  // Auto mode's gradient rounds broadcast whole models, and a lost one shows no gap: the usual grace.
  const bool updates_follow =
      downlink_compressed() && base_version_ && pending_ && plan_mode(*pending_) != "gradient";
  const Milliseconds grace = updates_follow ? kMaxSnapshotWait : snapshot_grace_;
  check_snapshot_at(loop_.now() + grace);
}

void Trainer::check_snapshot_at(Clock::time_point when) {
  // One check armed at a time, at the earliest time asked for.
  if (snapshot_check_ && *snapshot_check_ <= when) return;
  snapshot_check_ = when;
  loop_.at(when, [this, when] {
    if (snapshot_check_ != when) return;  // superseded by an earlier one
    snapshot_check_.reset();
    if (!pending_ || state_ != State::kAdmitted) return;
    const std::uint64_t wanted = pending_->model_version;
    if ((model_version_ && *model_version_ == wanted) ||
        (pending_->overlapped && base_version_ && *base_version_ >= wanted) ||
        (held_model_ && held_model_->state.model_version == wanted) ||
        (loading_version_ && *loading_version_ == wanted) ||
        (downlink_compressed() && reachable_version() == wanted))
      return;
    const auto now = loop_.now();
    if (snapshot_requested_ && now - *snapshot_requested_ < snapshot_retry_) {
      check_snapshot_at(*snapshot_requested_ + snapshot_retry_);
      return;
    }
    log(LogLevel::kInfo, bus_.name(), "asked for a snapshot: the plan of round ", pending_->round, " waited ",
        seconds_between(pending_since_, Clock::now()), " s for model version ", wanted, " (replica at ",
        model_version_ ? std::to_string(*model_version_) : std::string("none"), ", base ",
        base_version_ ? std::to_string(*base_version_) : std::string("none"), ", ", held_updates_.size(),
        " updates held",
        held_updates_.empty() ? std::string()
                              : ", the first from " + std::to_string(held_updates_.begin()->first),
        ")");
    bus_.send(kAggregatorName, msg::SnapshotRequest{last_loaded_version_});
    snapshot_requested_ = now;
    snapshot_asked_for_plan_ = true;
    // Each unanswered request waits twice as long for its answer as the one before: over a slow
    // link a 7.4 MB snapshot takes seconds, and every repeat puts another copy on that link.
    snapshot_retry_ = std::min(2 * snapshot_retry_, kMaxSnapshotWait);
    check_snapshot_at(now + snapshot_retry_);
  });
}

void Trainer::handle(const msg::SetSlowdown& slowdown, const Incoming& from) {
  if (!(slowdown.factor >= 1.0) || !std::isfinite(slowdown.factor)) {
    log(LogLevel::kWarn, bus_.name(), "ignored slowdown ", slowdown.factor, " from ", from.from,
        ": it must be >= 1");
    return;
  }
  log(LogLevel::kInfo, bus_.name(), "TEST AID: slowdown ", slowdown_.load(), " -> ", slowdown.factor,
      " (asked by ", from.from, ")");
  slowdown_.store(slowdown.factor);
}

void Trainer::handle(const msg::HandedOver& handed, const Incoming&) {
  // Only the coordinator's scheduler may send it (the hub refuses it from any peer), and only a
  // node given a pair has another coordinator to ask.
  if (coordinators_.size() < 2 || state_ != State::kAdmitted) return;
  register_again("the coordinator handed the run over after round " + std::to_string(handed.round) + " (" +
                 handed.reason.substr(0, 200) + ")");
  report_.lost_coordinator = coordinator();
  ask_next_coordinator("handed over by " + coordinator());
}

void Trainer::handle(const msg::RunFinished& finished, const Incoming&) {
  if (state_ == State::kDone) return;  // it comes twice: directly, and on the model publisher
  log(LogLevel::kInfo, bus_.name(), "run finished (", finished.reason, "), final test accuracy ",
      finished.final_test_accuracy);
  // Said goodbye, so that a coordinator still closing its run does not count it lost.
  if (state_ == State::kAdmitted) bus_.send(kRegistrarName, msg::Leave{"run finished"});
  finish(kExitFinished);
}

// ---- Jobs: everything below runs on the worker's thread. ----

void Trainer::check_cancelled() const {
  if (worker_->cancel_requested()) throw JobCancelled();
}

void Trainer::simulate_slowdown(const WorkTimer& timer) const {
  const double factor = slowdown_.load();
  if (factor <= 1.0) return;
  const auto until = timer.started() + std::chrono::duration_cast<Clock::duration>(timer.busy() * factor);
  while (Clock::now() < until) {
    // A test aid standing in for a slower device: sleeping costs no CPU that others need.
    std::this_thread::sleep_for(std::min<Clock::duration>(kSlowdownSlice, until - Clock::now()));
    check_cancelled();
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
  // What fits, less a margin, is what the scheduler may plan in one forward pass.
  const std::int64_t fits =
      largest_micro_batch(*model_, data_, share_options(micro_batch, 0, 1.0, {}), micro_batch,
                          kMaxProbedMicroBatch, [this] { check_cancelled(); });
  if (fits == 0) throw std::runtime_error("the device runs out of memory even at a micro-batch of 1");
  const auto limit = std::max<std::uint32_t>(
      1, static_cast<std::uint32_t>(static_cast<double>(fits) * kMicroBatchMemoryMargin));
  log(LogLevel::kInfo, bus_.name(), "device memory takes micro-batches of ", fits, ": planning at most ",
      limit);
  return options_.max_micro_batch > 0 ? std::min(options_.max_micro_batch, limit) : limit;
}

msg::Calibration Trainer::calibrate() {
  const torch::Device device = model_->device();
  // On a GPU, what the device holds first: the run's micro-batch may not fit, and the speed is
  // measured at what will be planned.
  const std::int64_t configured = std::max<std::uint32_t>(1, run_->micro_batch);
  const std::uint32_t max_micro_batch = probe_max_micro_batch(configured);
  const std::int64_t micro_batch =
      max_micro_batch > 0 ? std::min<std::int64_t>(configured, max_micro_batch) : configured;
  const auto indices = torch::arange(std::min<std::int64_t>(micro_batch, data_.size()), torch::kInt64);
  std::uint64_t samples = 0;
  Clock::duration measured{};
  torch::ScalarType output_dtype = torch::kFloat32;
  for (int step = 0; step < kCalibrationWarmUp + kCalibrationMinSteps ||
                     std::chrono::duration<double>(measured).count() < kCalibrationMinSeconds;
       ++step) {
    const auto started = Clock::now();
    const WorkTimer work_timer;
    output_dtype = train_share(*model_, data_, indices, share_options(micro_batch, 0, 1.0, {})).output_dtype;
    synchronize(device);  // the device's time, not the launch's
    simulate_slowdown(work_timer);
    if (step >= kCalibrationWarmUp) {
      measured += Clock::now() - started;
      samples += static_cast<std::uint64_t>(indices.size(0));
    }
    check_cancelled();
  }
  model_->zero_gradients();
  msg::Calibration calibration;
  calibration.samples_per_second = samples / std::chrono::duration<double>(measured).count();
  calibration.micro_batch = static_cast<std::uint32_t>(micro_batch);
  calibration.max_micro_batch = max_micro_batch;
  calibration.device = device_name(device);
  calibration.precision = computed_precision(output_dtype);
  calibration.admission_seconds = admission_seconds_;
  precision_label_ = calibration.precision;
  return calibration;
}

std::optional<std::string> Trainer::load_model(const HeldModel& held) {
  const msg::ModelState& state = held.state;
  std::vector<TensorMeta> metas = state.parameters;
  metas.insert(metas.end(), state.buffers.begin(), state.buffers.end());
  auto received = read_tensor_frames(metas, held.frames, 0);
  if (!received) return received.error();
  auto& tensors = received.value();
  const auto split = tensors.begin() + static_cast<std::ptrdiff_t>(state.parameters.size());
  const std::vector<ReceivedTensor> parameters(tensors.begin(), split);
  const std::vector<ReceivedTensor> buffers(split, tensors.end());
  std::optional<std::string> mismatch;
  if (state.layout != layout_) mismatch = "a model of another layout";
  if (!mismatch) mismatch = model_->parameters().wire_mismatch(parameters);
  if (!mismatch) mismatch = model_->buffers().wire_mismatch(buffers);
  if (mismatch) return mismatch;
  model_->parameters().copy_from(parameters, model_staging_);
  model_->buffers().copy_from(buffers, model_staging_);
  // The base the next compressed update applies to, and an overlapped round starts from.
  if (local_optimizer_) local_before_.copy_from(model_->parameters());
  return std::nullopt;
}

std::optional<std::string> Trainer::apply_update(const HeldUpdate& held) {
  const msg::ModelUpdate& update = held.update;
  if (update.layout != layout_) return std::string("an update of another layout");
  std::vector<TensorMeta> metas = update.parameters;
  metas.insert(metas.end(), update.buffers.begin(), update.buffers.end());
  auto received = read_tensor_frames(metas, held.frames, 0);
  if (!received) return "update to version " + std::to_string(update.model_version) + ": " + received.error();
  auto& tensors = received.value();
  const auto split = tensors.begin() + static_cast<std::ptrdiff_t>(update.parameters.size());
  const std::vector<ReceivedTensor> parameters(tensors.begin(), split);
  const std::vector<ReceivedTensor> buffers(split, tensors.end());
  auto sent = sparse_from_wire(parameters, model_->parameters(), compression_.chunk);
  if (!sent) return "update to version " + std::to_string(update.model_version) + ": " + sent.error();
  if (auto mismatch = model_->buffers().wire_mismatch(buffers)) return mismatch;
  torch::NoGradGuard no_grad;
  apply_sparse(local_before_, sent.value());
  model_->parameters().copy_from(local_before_);
  model_->buffers().copy_from(buffers, model_staging_);
  const std::string fingerprint = replica_fingerprint(model_->parameters(), model_->buffers());
  if (fingerprint != update.fingerprint) {
    return "the replica diverged: fingerprint " + fingerprint + " after the update to version " +
           std::to_string(update.model_version) + ", the aggregator's " + update.fingerprint.substr(0, 16);
  }
  return std::nullopt;
}

Trainer::TrainOutcome Trainer::load_and_train(const std::optional<HeldModel>& model,
                                              const std::vector<HeldUpdate>& updates,
                                              const std::optional<msg::RoundPlan>& plan,
                                              double model_wait_seconds, std::uint64_t version) {
  std::optional<std::string> problem;
  if (model) problem = load_model(*model);
  for (std::size_t i = 0; i < updates.size() && !problem; ++i) problem = apply_update(updates[i]);
  if (problem) {
    TrainOutcome outcome;
    outcome.problem = *problem;
    return outcome;
  }
  if (!plan) return {};
  return train(*plan, model_wait_seconds, version);
}

FlatTensors& Trainer::start_overlapped(const msg::RoundPlan& plan, std::uint64_t version) {
  torch::NoGradGuard no_grad;
  if (round_start_.empty()) round_start_ = model_->parameters().zeros_like();
  model_->parameters().copy_from(local_before_);
  // The model of the round before last, plus what this trainer changed in the round before, which
  // that model cannot hold yet (Streaming DiLoCo's eager update). A model that moved on since
  // already holds it, or refused it; a round this trainer had no share in changed nothing here.
  if (version == plan.model_version && !own_change_.empty() && own_change_round_ + 1 == plan.round &&
      own_change_incarnation_ == plan.incarnation) {
    auto& groups = model_->parameters().groups();
    for (std::size_t i = 0; i < groups.size(); ++i) groups[i].flat.add_(own_change_.groups()[i].flat);
  }
  round_start_.copy_from(model_->parameters());
  return round_start_;
}

Trainer::TrainOutcome Trainer::train(const msg::RoundPlan& plan, double model_wait_seconds,
                                     std::uint64_t version) {
  if (options_.fail_at_round > 0 && plan.round == options_.fail_at_round) {
    log(LogLevel::kWarn, bus_.name(), "TEST AID: failing in round ", plan.round);
    throw std::runtime_error("TEST AID: node.fail_at_round = " + std::to_string(plan.round) +
                             " (a stand-in for a LibTorch or CUDA error)");
  }
  if (!order_.defined() || order_epoch_ != plan.epoch) {
    order_ = epoch_order(run_->seed, plan.epoch, data_.size());
    order_epoch_ = plan.epoch;
  }
  const torch::Device device = model_->device();
  const auto started = Clock::now();
  const auto indices =
      indices_of(options_.wrong_samples ? torch::roll(order_, order_.size(0) / 2) : order_, plan.ranges);
  WorkTimer micro_batch_timer;
  const auto between_micro_batches = [&] {
    simulate_slowdown(micro_batch_timer);
    check_cancelled();
    micro_batch_timer = WorkTimer();
  };
  const std::int64_t micro_batch = std::max<std::uint32_t>(1, plan.micro_batch);
  // In auto mode the scheduler chooses per round: gradients, or local steps and their change.
  const bool local = plan_mode(plan) == "local-sgd" && local_optimizer_;
  const bool compressed = local && (plan.compressed || plan.mode.empty()) && error_feedback_;
  FlatTensors* round_start = nullptr;
  if (local && plan.overlapped) {
    round_start = &start_overlapped(plan, version);
  } else if (local) {
    local_before_.copy_from(model_->parameters());
    round_start = &local_before_;
  }
  ShareOptions share = share_options(micro_batch, plan.epoch, plan.loss_scale, between_micro_batches);
  share.inject_overflow = options_.fake_overflows || options_.overflow_rounds.count(plan.round) > 0;
  if (share.inject_overflow)
    log(LogLevel::kWarn, bus_.name(), "TEST AID: overflow injected in round ", plan.round);
  const ShareResult result = local ? train_local_steps(*model_, data_, indices, *local_optimizer_, share)
                                   : train_share(*model_, data_, indices, share);
  synchronize(device);  // compute time is the device's, not the launch's
  const auto computed = Clock::now();

  TrainOutcome outcome;
  msg::Contribution& contribution = outcome.contribution.emplace();
  contribution.round = plan.round;
  contribution.epoch = plan.epoch;
  contribution.model_version = plan.model_version;
  contribution.incarnation = plan.incarnation;
  contribution.samples = result.samples;
  contribution.loss_sum = result.loss_sum;
  contribution.correct = result.correct;
  contribution.layout = layout_;
  contribution.precision = computed_precision(result.output_dtype);
  contribution.peak_memory_bytes = peak_memory_bytes(device);
  contribution.overflow = result.overflow;
  if (!result.overflow) {  // an overflowed share sends no tensors: its round's step is skipped fleet-wide
    if (local) parameter_deltas(*model_, *round_start, local_deltas_);
    if (local && overlap_) {
      // The next round may start before this change is in the model.
      if (own_change_.empty()) own_change_ = local_deltas_.zeros_like();
      own_change_.copy_from(local_deltas_);
      own_change_round_ = plan.round;
      own_change_incarnation_ = plan.incarnation;  // a restarted coordinator never combined it
    }
    if (options_.gradient_scale != 1.0 || options_.random_gradients) {
      for (auto& group : (local ? local_deltas_ : model_->gradients()).groups()) {
        if (!torch::isFloatingType(group.dtype)) continue;
        if (options_.random_gradients) {
          const torch::Tensor noise = torch::randn_like(group.flat);
          group.flat.copy_(noise * (group.flat.norm() / noise.norm().clamp_min(1e-30)));
        }
        group.flat.mul_(options_.gradient_scale);
      }
    }
    if (compressed) {
      // The change plus what earlier rounds did not send, compressed; the rest waits for later.
      contribution.gradients = append_tensor_frames(
          sparse_wire_on_host(error_feedback_->compress(local_deltas_, compression_), local_deltas_),
          outcome.frames);
    } else {
      contribution.gradients =
          stage(local ? local_deltas_ : model_->gradients(), send_buffers_, outcome.frames);
    }
    contribution.buffers = stage(model_->buffers(), send_buffers_, outcome.frames);
  }
  contribution.compute_seconds = options_.claimed_compute_seconds > 0 ? options_.claimed_compute_seconds
                                                                      : seconds_between(started, computed);
  contribution.model_wait_seconds = model_wait_seconds;
  contribution.staging_seconds = seconds_between(computed, Clock::now());
  return outcome;
}

void apply_lie(const std::string& lie, TrainerOptions& options) {
  constexpr std::string_view kScale = "scale=";
  constexpr double kFastClaimSeconds = 1e-3;  // zero-fast: a millisecond of compute for any share
  constexpr double kHugeSeconds = 1e300;      // huge-timings: finite, and past any round's length
  std::size_t start = 0;
  while (start < lie.size()) {
    const std::size_t comma = std::min(lie.find(',', start), lie.size());
    std::string item = lie.substr(start, comma - start);
    start = comma + 1;
    item.erase(0, item.find_first_not_of(' '));
    item.erase(item.find_last_not_of(' ') + 1);
    if (item.rfind(kScale, 0) == 0) {
      const std::string number = item.substr(kScale.size());
      try {
        std::size_t used = 0;
        options.gradient_scale = std::stod(number, &used);
        if (used != number.size() || !std::isfinite(options.gradient_scale))
          throw std::invalid_argument(item);
      } catch (const std::exception&) {
        throw ConfigError("node.lie: '" + item + "' needs a finite number, like scale=-10");
      }
    } else if (item == "random") {
      options.random_gradients = true;
    } else if (item == "zero-fast") {
      options.gradient_scale = 0.0;
      options.claimed_compute_seconds = kFastClaimSeconds;
    } else if (item == "wrong-samples") {
      options.wrong_samples = true;
    } else if (item == "huge-timings") {
      options.claimed_compute_seconds = kHugeSeconds;
    } else if (item == "fake-overflow") {
      options.fake_overflows = true;
    } else {
      throw ConfigError(
          "node.lie: '" + item +
          "' is not one of scale=X, random, zero-fast, wrong-samples, huge-timings, fake-overflow");
    }
  }
}

}  // namespace filo
