#include "actors/aggregator.hpp"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <sstream>

#include "actors/norm_bound.hpp"
#include "runtime/digest.hpp"
#include "runtime/safetensors.hpp"

namespace filo {
namespace {
/// How often a finished evaluation is looked for.
constexpr Milliseconds kEvaluationPoll{50};
/// Rounds opened and not yet combined: one being combined and one open, with room for a few a
/// lost CombineRound leaves behind until the scheduler sends it again.
constexpr std::size_t kMaxHeldRounds = 4;
constexpr std::size_t kMaxWaitingCombines = 16;

RobustCombine robust_combine_of(const std::string& name) {
  const auto combine = parse_robust_combine(name);
  if (!combine)
    throw std::invalid_argument("robust.combine \"" + name + "\" is not mean, trimmed or centered-clip");
  return *combine;
}
constexpr std::size_t kRememberedAnswers = 16;
// How long the run's end waits for a checkpoint being written before it writes the model files.
constexpr Milliseconds kModelFilesWait{30000};
// The model files beside the checkpoints are rewritten at most this often: writing a TorchScript
// archive every round costs the trainers CPU, and only the newest matters. A coordinator that
// stops writes the newest it skipped.
constexpr Milliseconds kModelFilesEvery{10000};
/// Labels a trainer sends for the records (its precision) are cut to this length.
constexpr std::size_t kMaxLabelLength = 16;
/// Auto mode's checkpoints: the outer optimizer's state, beside the gradient optimizer's.
constexpr const char* kOuterStatePrefix = "outer.";

nlohmann::json run_spec_json(const msg::RunSpec& run) {
  return {{"run_id", run.run_id},
          {"model", run.model},
          {"task", run.task},
          {"model_sha256", run.model_sha256},
          {"data_format", run.data_format},
          {"dataset_fingerprint", run.dataset_fingerprint},
          {"dataset", run.dataset},
          {"train_samples", run.train_samples},
          {"seed", run.seed},
          {"micro_batch", run.micro_batch},
          {"mode", run.mode},
          {"optimizer", run.optimizer},
          {"learning_rate", run.learning_rate},
          {"momentum", run.momentum},
          {"weight_decay", run.weight_decay}};
}

std::uint64_t frame_bytes(const std::vector<zmq::message_t>& frames) {
  std::uint64_t bytes = 0;
  for (const auto& frame : frames) bytes += frame.size();
  return bytes;
}

bool finite_and_not_negative(double value) {
  return std::isfinite(value) && value >= 0.0;
}
}  // namespace

msg::RunSpec checkpoint_run_spec(const Checkpoint& checkpoint) {
  const auto& run = checkpoint.meta.at("run");
  msg::RunSpec spec;
  spec.run_id = run.at("run_id");
  spec.model = run.at("model");
  spec.task = run.value("task", std::string("classification"));
  spec.model_sha256 = run.value("model_sha256", std::string());
  spec.data_format = run.value("data_format", std::string("idx"));
  spec.dataset_fingerprint = run.value("dataset_fingerprint", std::string());
  spec.dataset = run.at("dataset");
  spec.train_samples = run.at("train_samples");
  spec.seed = run.at("seed");
  spec.micro_batch = run.at("micro_batch");
  spec.mode = run.at("mode");
  spec.optimizer = run.at("optimizer");
  spec.learning_rate = run.at("learning_rate");
  spec.momentum = run.at("momentum");
  spec.weight_decay = run.at("weight_decay");
  return spec;
}

nlohmann::json checkpoint_round_state(const Checkpoint& checkpoint) {
  return checkpoint.meta.at("round_state");
}

Aggregator::Aggregator(const SocketFactory& sockets, const std::string& hub_endpoint,
                       AggregatorOptions options, const StopFlag& stop, const TimeSource& time)
    : options_(std::move(options)),
      bus_(sockets, kAggregatorName),
      loop_(stop, time),
      compression_(compression_options(options_.run)),
      combine_(robust_combine_of(options_.robust.combine)),
      model_(Model::from_archive(options_.model_archive, "the run's model", options_.device)),
      layout_(fingerprint_hex(model_.layout())),
      optimizer_(options_.run.mode == "local-sgd" ? make_outer_optimizer(options_.optimizer)
                                                  : make_optimizer(options_.optimizer)),
      outer_optimizer_(options_.run.mode == "auto" ? make_outer_optimizer(options_.optimizer) : nullptr),
      averager_(model_,
                options_.run.mode == "local-sgd" ? Combine::kParameterDeltas : Combine::kSummedGradients),
      robust_staging_(options_.device.is_cuda()),
      model_buffers_(options_.device.is_cuda()),
      exported_model_(model_.clone(torch::kCPU)),
      checkpoints_(
          CheckpointStore(options_.run_dir + "/checkpoints"),
          [this](std::uint64_t, const nlohmann::json& meta, const std::vector<NamedTensor>& snapshot) {
            export_checkpoint(meta, snapshot);
          },
          kModelFilesEvery, options_.checkpoint_written),
      evaluator_(model_.clone(), parse_task(options_.run.task),
                 load_dataset(dataset_spec(options_.run, options_.data.test_limit), options_.data.path,
                              Split::kTest)) {
  if (compression_.kind != CompressionKind::kNone) downlink_.emplace(model_.parameters(), compression_);
  last_exchange_ = exchange_of(msg::RoundOpened{});  // the run's (in auto mode: gradient until told)
  if (options_.resume) restore(*options_.resume);
  averaged_round_ = last_combined_round_ + 1;
  bus_.count_refusals_in(options_.drops);
  bus_.connect(hub_endpoint);
  loop_.on_readable(bus_.addressed(), [this] {
    while (auto incoming = bus_.receive(bus_.addressed())) dispatch(*this, *incoming, bus_);
  });
  loop_.every(kEvaluationPoll, [this] { collect_evaluation(); });
}

void Aggregator::run() {
  loop_.run();
}

void Aggregator::count_drop(const std::string& reason) {
  if (options_.drops) options_.drops->count(reason);
}

std::uint64_t Aggregator::publish_model(const std::string& to) {
  // Staged into a reused buffer: the next step updates the parameters in place while zmq may still
  // be sending these frames.
  std::vector<zmq::message_t> frames;
  msg::ModelState state;
  state.model_version = model_version_;
  state.round = last_combined_round_;
  state.parameters = stage(model_.parameters(), model_buffers_, frames);
  state.buffers = stage(model_.buffers(), model_buffers_, frames);
  state.layout = layout_;
  const Stamp stamp{last_combined_round_, model_version_};
  // A snapshot is published under the asking trainer's own topic, not sent on its addressed
  // connection: a large model over a slow link there would hold up its plans and heartbeats.
  const std::uint64_t bytes = frame_bytes(frames);
  bus_.publish(to.empty() ? std::string(kModelTopic) : snapshot_topic(to), state, stamp, std::move(frames));
  return bytes;
}

std::uint64_t Aggregator::publish_update(std::uint64_t base_version, const std::vector<SparseGroup>& sent) {
  msg::ModelUpdate update;
  update.base_version = base_version;
  update.model_version = model_version_;
  update.round = last_combined_round_;
  update.layout = layout_;
  std::vector<zmq::message_t> frames;
  update.parameters = append_tensor_frames(sparse_wire_on_host(sent, model_.parameters()), frames);
  update.buffers = stage(model_.buffers(), model_buffers_, frames);
  update.fingerprint = replica_fingerprint(model_.parameters(), model_.buffers());
  const std::uint64_t bytes = frame_bytes(frames);
  bus_.publish(std::string(kModelTopic), update, Stamp{last_combined_round_, model_version_},
               std::move(frames));
  return bytes;
}

void Aggregator::handle(const msg::SnapshotRequest&, const Incoming& from) {
  if (from.from.rfind("trainer@", 0) != 0) return;  // the hub lets only trainers ask
  publish_model(from.from);
}

Aggregator::Exchange Aggregator::exchange_of(const msg::RoundOpened& opened) const {
  // An older scheduler names no mode: the run's.
  const std::string& mode = opened.mode.empty() ? options_.run.mode : opened.mode;
  Exchange exchange;
  exchange.local = mode == "local-sgd";
  exchange.compressed = exchange.local && compression_.kind != CompressionKind::kNone &&
                        (opened.compressed || opened.mode.empty());
  return exchange;
}

void Aggregator::handle(const msg::RoundOpened& opened, const Incoming&) {
  if (opened.round <= last_combined_round_ || rounds_.count(opened.round)) {
    log(LogLevel::kWarn, bus_.name(), "ignored the opening of round ", opened.round, ": already seen");
    return;
  }
  const std::string& mode = opened.mode.empty() ? options_.run.mode : opened.mode;
  if ((mode != "gradient" && mode != "local-sgd") ||
      (options_.run.mode != "auto" && mode != options_.run.mode)) {
    log(LogLevel::kError, bus_.name(), "ignored the opening of round ", opened.round, ": a ",
        mode.substr(0, 32), " round in a ", options_.run.mode, " run");
    return;
  }
  rounds_[opened.round] = HeldRound{opened, {}};
  while (rounds_.size() > kMaxHeldRounds) {
    log(LogLevel::kWarn, bus_.name(), "dropped the contributions held for round ", rounds_.begin()->first,
        ": no CombineRound came for it");
    count_drop("round: never combined");
    rounds_.erase(rounds_.begin());
  }
}

void Aggregator::refuse(const Incoming& from, const msg::Contribution& contribution,
                        const std::string& reason) {
  bus_.refuse(from.from, "contribution: " + reason.substr(0, reason.find(':')),
              "round " + std::to_string(contribution.round) + ": " + reason);
  msg::ContributionReceived report;
  report.round = contribution.round;
  report.trainer = from.from;
  report.accepted = false;
  report.reason = reason;
  bus_.send(kSchedulerName, report, Stamp{contribution.round, contribution.model_version});
}

void Aggregator::handle(const msg::Contribution& contribution, const Incoming& from) {
  // Not for an open round of this start of the coordinator: nothing to tell the scheduler.
  const auto quietly = [&](const std::string& reason) {
    bus_.refuse(from.from, "contribution: " + reason, "round " + std::to_string(contribution.round));
  };
  if (contribution.incarnation != options_.incarnation)
    return quietly("planned by another start of the coordinator");
  const auto round = rounds_.find(contribution.round);
  if (round == rounds_.end()) {
    return quietly(contribution.round <= last_combined_round_ ? "its round was already combined"
                                                              : "its round was never opened");
  }
  const msg::RoundOpened& plan = round->second.plan;
  const auto planned = plan.planned_samples.find(from.from);
  if (planned == plan.planned_samples.end()) return quietly("its sender was not planned in that round");
  if (round->second.held.count(from.from)) return quietly("a second contribution from the same trainer");

  // From here on the sender was planned: the scheduler hears of a refusal and need not wait.
  if (contribution.model_version != plan.model_version) {
    return refuse(from, contribution,
                  "wrong model version: computed on " + std::to_string(contribution.model_version) +
                      ", planned on " + std::to_string(plan.model_version));
  }
  if (contribution.samples != planned->second) {
    return refuse(from, contribution,
                  "wrong sample count: " + std::to_string(contribution.samples) + " where " +
                      std::to_string(planned->second) + " were planned");
  }
  if (!finite_and_not_negative(contribution.loss_sum) ||
      !finite_and_not_negative(contribution.compute_seconds) ||
      !finite_and_not_negative(contribution.model_wait_seconds) ||
      !finite_and_not_negative(contribution.staging_seconds) || contribution.correct > contribution.samples) {
    return refuse(from, contribution,
                  "bad numbers: loss, times and counts must be finite, not negative, within the share");
  }
  if (contribution.overflow) {
    // fp16: its gradients overflowed at the plan's loss scale; the scheduler skips the round's step.
    if (!contribution.gradients.empty() || !contribution.buffers.empty() ||
        (from.tensor_frames && !from.tensor_frames->empty())) {
      return refuse(from, contribution, "bad tensors: an overflow report carries tensors");
    }
    report_received(from, contribution, /*overflow=*/true, 0.0);
    return;
  }
  if (contribution.layout != layout_)
    return refuse(from, contribution, "bad tensors: a model of another layout");
  std::vector<TensorMeta> metas = contribution.gradients;
  metas.insert(metas.end(), contribution.buffers.begin(), contribution.buffers.end());
  auto received = read_tensor_frames(metas, from.tensor_frames, 0);
  if (!received) return refuse(from, contribution, "bad tensors: " + received.error());
  auto& tensors = received.value();
  const auto split = tensors.begin() + static_cast<std::ptrdiff_t>(contribution.gradients.size());
  Held held{contribution,
            std::vector<ReceivedTensor>(tensors.begin(), split),
            std::vector<ReceivedTensor>(split, tensors.end()),
            {}};
  if (exchange_of(plan).compressed) {
    auto sparse = sparse_from_wire(held.gradients, model_.parameters(), compression_.chunk);
    if (!sparse) return refuse(from, contribution, "bad tensors: " + sparse.error());
    held.sparse = std::move(sparse.value());
    if (auto problem = averager_.buffers_problem(held.buffers)) {
      return refuse(from, contribution, "bad tensors: " + *problem);
    }
  } else if (auto problem = averager_.layout_problem(held.gradients, held.buffers)) {
    return refuse(from, contribution, "bad tensors: " + *problem);
  }
  if (contribution.round == averaged_round_) {
    // Added at once, then one check of the sums: a NaN or infinity can only be this one's.
    add_to_sums(plan, held);
    if (!averager_.sums_finite()) {
      average_again(contribution.round, from.from);
      return refuse(from, contribution, "bad tensors: its gradients or buffers hold NaN or infinity");
    }
    averaged_.insert(from.from);
  } else if (auto bad = non_finite(held.gradients)) {
    return refuse(from, contribution, "bad tensors: " + *bad);
  } else if (auto bad_buffer = non_finite(held.buffers)) {
    return refuse(from, contribution, "bad tensors: " + *bad_buffer);
  }
  // Measured here, where the tensors are, for the scheduler's bound against the fleet's norms.
  double norm = 0.0;
  if (options_.robust.bound != "off")
    norm = held.sparse.empty() ? l2_norm(held.gradients) : l2_norm(held.sparse);
  round->second.held.emplace(from.from, std::move(held));
  report_received(from, contribution, /*overflow=*/false, norm);
}

void Aggregator::report_received(const Incoming& from, const msg::Contribution& contribution, bool overflow,
                                 double norm) {
  msg::ContributionReceived report;
  report.round = contribution.round;
  report.trainer = from.from;
  report.accepted = true;
  report.samples = contribution.samples;
  report.loss_sum = contribution.loss_sum;
  report.correct = contribution.correct;
  report.compute_seconds = contribution.compute_seconds;
  report.model_wait_seconds = contribution.model_wait_seconds;
  report.staging_seconds = contribution.staging_seconds;
  report.overflow = overflow;
  report.precision = contribution.precision.substr(0, kMaxLabelLength);
  report.peak_memory_bytes = contribution.peak_memory_bytes;
  report.norm = norm;
  if (from.tensor_frames) {
    for (const auto& frame : *from.tensor_frames) report.tensor_bytes += frame.size();
  }
  bus_.send(kSchedulerName, report, Stamp{contribution.round, contribution.model_version});
}

void Aggregator::add_to_sums(const msg::RoundOpened& plan, const Held& held) {
  // Every contribution of a round is of the round's kind: a new kind starts from empty sums.
  averager_.set_combine(exchange_of(plan).local ? Combine::kParameterDeltas : Combine::kSummedGradients);
  if (held.sparse.empty()) {
    averager_.add(held.gradients, held.buffers, held.header.samples);
  } else {
    averager_.add(held.sparse, held.buffers, held.header.samples);
  }
}

void Aggregator::average_again(std::uint64_t round, const std::string& without) {
  averager_.clear();
  const auto held = rounds_.find(round);
  if (held == rounds_.end()) return;
  for (const auto& trainer : averaged_) {
    if (trainer == without || !held->second.held.count(trainer)) continue;
    const Held& contribution = held->second.held.at(trainer);
    add_to_sums(held->second.plan, contribution);
  }
}

void Aggregator::handle(const msg::CombineRound& combine_message, const Incoming&) {
  if (combine_message.round <= last_combined_round_) {
    // A repeat (the scheduler missed the answer): answered again, never applied twice.
    if (last_answer_ && last_answer_->round == combine_message.round) {
      bus_.send(kSchedulerName, *last_answer_);
    } else {
      msg::RoundCombined again;
      again.round = combine_message.round;
      again.model_version = combine_message.model_version;
      bus_.send(kSchedulerName, again);
    }
    return;
  }
  if (combine_message.round > last_combined_round_ + 1) {
    // An earlier round's CombineRound was lost: rounds are combined in order, so this one waits
    // until the scheduler sends the missing one again.
    log(LogLevel::kWarn, bus_.name(), "CombineRound ", combine_message.round, " waits for round ",
        last_combined_round_ + 1, "'s");
    if (waiting_combines_.size() < kMaxWaitingCombines)
      waiting_combines_[combine_message.round] = combine_message;
    return;
  }
  combine(combine_message);
  for (auto next = waiting_combines_.begin();
       next != waiting_combines_.end() && next->first == last_combined_round_ + 1;
       next = waiting_combines_.begin()) {
    const msg::CombineRound waiting = next->second;
    waiting_combines_.erase(next);
    combine(waiting);
  }
  while (!waiting_combines_.empty() && waiting_combines_.begin()->first <= last_combined_round_) {
    waiting_combines_.erase(waiting_combines_.begin());
  }
}

void Aggregator::combine(const msg::CombineRound& order) {
  const auto started = Clock::now();
  msg::RoundCombined answer;
  answer.round = order.round;
  const auto round = rounds_.find(order.round);
  std::set<std::string> present;
  for (const auto& trainer : order.trainers) {
    if (round != rounds_.end() && round->second.held.count(trainer)) {
      present.insert(trainer);
    } else {
      answer.problem += (answer.problem.empty() ? "no contribution held for " : ", ") + trainer;
    }
  }
  // Usually the sums already hold exactly the trainers named; otherwise they are added again.
  if (averaged_round_ != order.round || averaged_ != present) {
    averager_.clear();
    for (const auto& trainer : present) {
      const Held& held = round->second.held.at(trainer);
      add_to_sums(round->second.plan, held);
    }
  }
  // A round never opened here (every share missed) steps nothing; its broadcast goes the way the
  // last round's did.
  if (round != rounds_.end()) last_exchange_ = exchange_of(round->second.plan);
  const bool stepped = averager_.apply();
  const bool held_round = stepped && round != rounds_.end();
  std::optional<RobustRows> rows;
  std::optional<ClippedCentre> clipped;
  if (held_round && combine_ != RobustCombine::kMean) {
    rows = robust_rows(round->second, present);
    if (rows) combine_robustly(*rows, clipped);
  }
  const auto combined = Clock::now();
  FlatOptimizer& optimizer = last_exchange_.local && outer_optimizer_ ? *outer_optimizer_ : *optimizer_;
  if (stepped) optimizer.step(model_.parameters(), model_.gradients());
  const auto step_done = Clock::now();
  // The version follows the scheduler's count even when nothing could be combined, so that trainers
  // planned on it are not left waiting for a version that never comes.
  const bool new_version = order.model_version != model_version_;
  const std::uint64_t base_version = model_version_;
  model_version_ = order.model_version;
  last_combined_round_ = order.round;
  const bool send_update = downlink_ && last_exchange_.compressed && !order.whole_model;
  if (new_version && send_update) {
    // The model becomes what replicas will hold: the step's change, compressed, on the base.
    answer.publish_bytes =
        publish_update(base_version, downlink_->advance(model_.parameters(), present.size()));
  } else if (new_version) {
    // Replicas receive the whole model, so nothing of earlier steps need wait for a later update.
    if (downlink_) downlink_->flush(model_.parameters());
    answer.publish_bytes = publish_model("");
  }
  answer.whole_model = new_version && !send_update;
  const auto published = Clock::now();
  // Scores do not change this round's step: they wait until the model has gone out.
  if (held_round && options_.robust.min_direction > -1.0) {
    if (!rows) rows = robust_rows(round->second, present);
    if (rows) score_directions(*rows, clipped, present, answer);
  }
  answer.score_seconds = seconds_between(published, Clock::now());

  rounds_.erase(rounds_.begin(), rounds_.upper_bound(order.round));
  averaged_round_ = order.round + 1;
  averaged_.clear();
  averager_.clear();
  const auto next = rounds_.find(averaged_round_);
  if (next != rounds_.end()) {
    for (const auto& [trainer, held] : next->second.held) {
      add_to_sums(next->second.plan, held);
      averaged_.insert(trainer);
    }
  }
  if (order.checkpoint) checkpoint(order);
  answer.model_version = model_version_;
  answer.combine_seconds = seconds_between(started, combined);
  answer.step_seconds = seconds_between(combined, step_done);
  answer.publish_seconds = seconds_between(step_done, published);
  if (!answer.problem.empty()) {
    log(LogLevel::kError, bus_.name(), "round ", order.round,
        " combined without what it named: ", answer.problem);
  }
  last_answer_ = answer;
  bus_.send(kSchedulerName, answer, Stamp{order.round, model_version_});
}

std::optional<Aggregator::RobustRows> Aggregator::robust_rows(const HeldRound& round,
                                                              const std::set<std::string>& present) {
  if (present.size() < kMinRobustRows) return std::nullopt;
  torch::NoGradGuard no_grad;
  const FlatTensors& gradients = model_.gradients();
  std::int64_t width = 0;
  for (const auto& group : gradients.groups()) {
    if (!group.flat.is_floating_point()) return std::nullopt;  // parameters are; nothing to rank else
    width += group.flat.numel();
  }
  const bool local = exchange_of(round.plan).local;
  const auto rows_count = static_cast<std::int64_t>(present.size());
  if (!robust_buffer_.defined() || robust_buffer_.size(0) < rows_count) {
    robust_buffer_ = torch::empty({rows_count, width},
                                  torch::TensorOptions().dtype(torch::kFloat).device(options_.device));
  }
  RobustRows robust;
  robust.rows = robust_buffer_.narrow(0, 0, rows_count);
  for (const auto& trainer : present) {
    const Held& held = round.held.at(trainer);
    const auto samples = static_cast<double>(held.header.samples);
    const double scale = local ? -1.0 : 1.0 / samples;  // every row points the way a gradient does
    torch::Tensor row = robust.rows[static_cast<std::int64_t>(robust.samples.size())];
    if (!held.sparse.empty()) row.zero_();  // dense rows are written whole
    std::int64_t offset = 0;
    for (std::size_t g = 0; g < gradients.groups().size(); ++g) {
      const std::int64_t numel = gradients.groups()[g].flat.numel();
      torch::Tensor part = row.narrow(0, offset, numel);
      if (!held.sparse.empty()) {
        add_sparse(part, held.sparse[g], scale);
      } else if (gradients.groups()[g].flat.scalar_type() == torch::kFloat) {
        robust_staging_.add_to(held.gradients[g], part, scale, /*first=*/true);  // frame by frame
      } else {
        part.copy_(held.gradients[g].to_tensor().reshape({-1})).mul_(scale);
      }
      offset += numel;
    }
    robust.samples.push_back(samples);
  }
  const torch::Tensor samples = torch::tensor(robust.samples, torch::kDouble);
  robust.weights = (samples / samples.sum()).to(options_.device);
  return robust;
}

void Aggregator::combine_robustly(const RobustRows& rows, std::optional<ClippedCentre>& clipped) {
  torch::NoGradGuard no_grad;
  torch::Tensor combined;
  if (combine_ == RobustCombine::kCenteredClip) {
    clipped = centered_clip(rows.rows, rows.weights);
    if (!clipped->finite) {
      // Only where robust.bound is off can norms past fp32's range get this far.
      log(LogLevel::kWarn, bus_.name(),
          "a round's contributions overflow fp32 in their inner products: combined by the mean, not scored");
      return;
    }
    combined = centre_of(rows.rows, *clipped);
  } else {
    combined = trimmed_mean(rows.rows, rows.weights, options_.robust.trim);
  }
  std::int64_t offset = 0;
  for (auto& group : model_.gradients().groups()) {
    const std::int64_t numel = group.flat.numel();
    group.flat.copy_(combined.narrow(0, offset, numel).view_as(group.flat));
    offset += numel;
  }
}

void Aggregator::score_directions(const RobustRows& rows, std::optional<ClippedCentre>& clipped,
                                  const std::set<std::string>& present, msg::RoundCombined& answer) {
  if (!clipped) clipped = centered_clip(rows.rows, rows.weights);
  if (!clipped->finite) return;
  // A share of a few samples points anywhere: like the norm bound's lower side, only shares of
  // kMinSamplesBoundedBelow or more are scored.
  const std::vector<double> cosines = directions(*clipped);
  std::size_t index = 0;
  for (const auto& trainer : present) {
    if (rows.samples[index] >= kMinSamplesBoundedBelow) answer.directions[trainer] = cosines[index];
    ++index;
  }
}

void Aggregator::checkpoint(const msg::CombineRound& order) {
  // The snapshot is copied here, between rounds; encoding, checksum and fsync happen on the writer's
  // thread.
  const auto copy = [](const torch::Tensor& tensor) {
    return tensor.device().is_cpu() ? tensor.detach().clone() : tensor.detach().to(torch::kCPU);
  };
  std::vector<NamedTensor> snapshot;
  for (std::size_t i = 0; i < model_.parameters().groups().size(); ++i) {
    snapshot.push_back({"model.parameters." + std::to_string(i), copy(model_.parameters().groups()[i].flat)});
  }
  for (std::size_t i = 0; i < model_.buffers().groups().size(); ++i) {
    snapshot.push_back({"model.buffers." + std::to_string(i), copy(model_.buffers().groups()[i].flat)});
  }
  for (const auto& state : optimizer_->state()) snapshot.push_back({state.name, copy(state.tensor)});
  if (outer_optimizer_) {
    // Auto mode: the outer optimizer's state beside the gradient mode's, under names of its own.
    for (const auto& state : outer_optimizer_->state())
      snapshot.push_back({kOuterStatePrefix + state.name, copy(state.tensor)});
  }
  if (downlink_) {
    // What of the steps has not reached the replicas yet: lost, a restart would drop part of them.
    for (std::size_t i = 0; i < downlink_->residual().groups().size(); ++i) {
      snapshot.push_back(
          {"downlink.residual." + std::to_string(i), copy(downlink_->residual().groups()[i].flat)});
    }
  }
  nlohmann::json round_state = nlohmann::json::parse(order.round_state, nullptr, /*allow_exceptions=*/false);
  if (round_state.is_discarded()) {
    log(LogLevel::kError, bus_.name(), "round ", order.round,
        " not checkpointed: its round state is not JSON");
    return;
  }
  checkpoints_.submit(order.round,
                      {{"run", run_spec_json(options_.run)},
                       {"incarnation", options_.incarnation},
                       {"model_version", model_version_},
                       {"model_layout", layout_},
                       {"round_state", std::move(round_state)}},
                      std::move(snapshot));
}

void Aggregator::restore(const Checkpoint& checkpoint) {
  if (checkpoint.meta.value("model_layout", std::string()) != layout_) {
    throw std::runtime_error(checkpoint.path + " holds a model of another layout than the one configured");
  }
  const SafetensorsFile file =
      decode_safetensors(reinterpret_cast<const std::uint8_t*>(checkpoint.payload.data()),
                         checkpoint.payload.size(), checkpoint.path);
  std::map<std::string, torch::Tensor> tensors;
  for (const auto& named : file.tensors) tensors[named.name] = named.tensor;
  torch::NoGradGuard no_grad;
  const auto restore_groups = [&](const std::string& prefix, FlatTensors& target) {
    for (std::size_t i = 0; i < target.groups().size(); ++i) {
      const auto found = tensors.find(prefix + "." + std::to_string(i));
      if (found == tensors.end() || found->second.numel() != target.groups()[i].flat.numel()) {
        throw std::runtime_error(checkpoint.path + ": " + prefix + " group " + std::to_string(i) +
                                 " is missing or does not fit the model");
      }
      target.groups()[i].flat.copy_(found->second);
    }
  };
  restore_groups("model.parameters", model_.parameters());
  restore_groups("model.buffers", model_.buffers());
  optimizer_->load_state(tensors, model_.parameters());
  if (outer_optimizer_) {
    std::map<std::string, torch::Tensor> outer;
    for (const auto& [name, tensor] : tensors) {
      if (name.rfind(kOuterStatePrefix, 0) == 0)
        outer[name.substr(std::string(kOuterStatePrefix).size())] = tensor;
    }
    outer_optimizer_->load_state(outer, model_.parameters());
  }
  if (downlink_) {
    FlatTensors residual = model_.parameters().zeros_like();
    if (tensors.count("downlink.residual.0")) restore_groups("downlink.residual", residual);
    downlink_->reset(model_.parameters(), residual);
  }
  model_version_ = checkpoint.meta.at("model_version").get<std::uint64_t>();
  last_combined_round_ = checkpoint.round;
  log(LogLevel::kInfo, bus_.name(), "resumed from ", checkpoint.path, ": model version ", model_version_,
      " after round ", last_combined_round_);
}

std::vector<std::string> Aggregator::write_model_files(const Model& model,
                                                       std::uint64_t model_version) const {
  const std::string path = options_.run_dir + "/model.pt";
  model.save(path);
  // The same weights by name for Python (no torch needed to read them), with what it takes to
  // feed the model the way it was trained.
  const auto numbers = [](const std::vector<double>& values) { return nlohmann::json(values).dump(); };
  const std::string tensors_path = options_.run_dir + "/model.safetensors";
  write_safetensors(tensors_path, model.named_state(),
                    {{"run_id", options_.run.run_id},
                     {"model", options_.run.model},
                     {"task", options_.run.task},
                     {"dataset", options_.run.dataset},
                     {"data_format", options_.run.data_format},
                     {"mean", numbers(options_.run.mean)},
                     {"std", numbers(options_.run.std)},
                     {"model_version", std::to_string(model_version)}});
  return {path, tensors_path};
}

void Aggregator::export_checkpoint(const nlohmann::json& meta, const std::vector<NamedTensor>& snapshot) {
  // So that a run stopped or killed at any point leaves the model of its newest checkpoint in files
  // Python opens, without filo.
  torch::NoGradGuard no_grad;
  const auto load = [&](const std::string& prefix, FlatTensors& target) {
    for (std::size_t i = 0; i < target.groups().size(); ++i) {
      const std::string name = prefix + "." + std::to_string(i);
      const auto found = std::find_if(snapshot.begin(), snapshot.end(),
                                      [&](const NamedTensor& named) { return named.name == name; });
      if (found == snapshot.end()) throw std::runtime_error("the snapshot lacks " + name);
      target.groups()[i].flat.copy_(found->tensor);
    }
  };
  load("model.parameters", exported_model_.parameters());
  load("model.buffers", exported_model_.buffers());
  write_model_files(exported_model_, meta.at("model_version").get<std::uint64_t>());
}

void Aggregator::handle(const msg::Evaluate& evaluate, const Incoming&) {
  const auto done = evaluated_.find(evaluate.epoch);
  if (done != evaluated_.end()) {
    bus_.send(kSchedulerName, done->second);
    return;
  }
  if (evaluating_.count(evaluate.epoch)) return;  // a repeat while it is being scored
  if (evaluate.model_version != model_version_) {
    log(LogLevel::kWarn, bus_.name(), "epoch ", evaluate.epoch, " ended at model version ",
        evaluate.model_version, " but the model is at ", model_version_, " now; evaluating that");
  }
  evaluating_[evaluate.epoch] = evaluate;
  evaluator_.submit(evaluate.epoch, model_version_, model_);
}

void Aggregator::collect_evaluation() {
  auto result = evaluator_.take_result();
  if (!result) return;
  const auto asked = evaluating_.find(result->epoch);
  const bool last = asked != evaluating_.end() && asked->second.last;
  if (asked != evaluating_.end()) evaluating_.erase(asked);
  msg::Evaluated evaluated;
  evaluated.epoch = result->epoch;
  evaluated.model_version = result->model_version;
  evaluated.metrics = result->metrics;
  evaluated.problem = result->problem;
  if (last) {
    // The run is over: the model file is its result, and checkpoints are no longer needed.
    try {
      // The writer may be writing the same files from the last checkpoint: let it finish first.
      checkpoints_.wait_idle(kModelFilesWait);
      evaluated.model_files = write_model_files(model_, model_version_);
    } catch (const std::exception& e) {
      evaluated.problem +=
          std::string(evaluated.problem.empty() ? "" : "; ") + "model not saved: " + e.what();
    }
    checkpoints_.clear();
  }
  evaluated_[evaluated.epoch] = evaluated;
  while (evaluated_.size() > kRememberedAnswers) evaluated_.erase(evaluated_.begin());
  bus_.send(kSchedulerName, evaluated);
}

}  // namespace filo
