#include "actors/aggregator.hpp"

#include "actors/learning/models.hpp"
#include "actors/learning/parameters.hpp"
#include "actors/scheduler.hpp"

namespace filo {
namespace {
constexpr std::size_t kMaxEarlyContributions = 256;

std::string node_of(const std::string& trainer) {
  const auto at = trainer.find('@');
  const auto slash = trainer.find('/', at == std::string::npos ? 0 : at);
  if (at == std::string::npos) return trainer;
  return trainer.substr(at + 1, slash == std::string::npos ? std::string::npos : slash - at - 1);
}
}  // namespace

ContributionAverager::ContributionAverager(torch::nn::Module& model, Combine combine)
    : combine_(combine), parameters_(named_parameters(model)), buffers_(named_buffers(model)) {
  for (const auto& parameter : parameters_) gradient_sums_.push_back(torch::zeros_like(parameter.tensor));
  for (const auto& buffer : buffers_) buffer_sums_.push_back(torch::zeros_like(buffer.tensor));
}

std::optional<std::string> ContributionAverager::problem(const std::vector<ReceivedTensor>& gradients,
                                                         const std::vector<ReceivedTensor>& buffers) const {
  if (auto mismatch = layout_mismatch(gradients, parameters_)) return "gradients: " + *mismatch;
  if (auto mismatch = layout_mismatch(buffers, buffers_)) return "buffers: " + *mismatch;
  if (auto bad = non_finite(gradients)) return "gradients: " + *bad;
  if (auto bad = non_finite(buffers)) return "buffers: " + *bad;
  return std::nullopt;
}

void ContributionAverager::add(const std::vector<ReceivedTensor>& gradients,
                               const std::vector<ReceivedTensor>& buffers, std::uint64_t samples) {
  torch::NoGradGuard no_grad;
  // Gradient sums are already weighted by their samples; deltas are per trainer and need it.
  const double weight = combine_ == Combine::kParameterDeltas ? static_cast<double>(samples) : 1.0;
  for (std::size_t i = 0; i < gradients.size(); ++i) gradient_sums_[i].add_(gradients[i].to_tensor(), weight);
  for (std::size_t i = 0; i < buffers.size(); ++i) {
    const auto buffer = buffers[i].to_tensor();
    if (torch::isFloatingType(buffer.scalar_type())) {
      buffer_sums_[i].add_(buffer, static_cast<double>(samples));
    } else {
      buffer_sums_[i] = samples_ == 0 ? buffer.clone() : torch::maximum(buffer_sums_[i], buffer);
    }
  }
  samples_ += samples;
}

bool ContributionAverager::apply() {
  if (samples_ == 0) return false;
  torch::NoGradGuard no_grad;
  const double total = static_cast<double>(samples_);
  const double scale = combine_ == Combine::kParameterDeltas ? -1.0 / total : 1.0 / total;
  for (std::size_t i = 0; i < parameters_.size(); ++i) {
    auto& parameter = parameters_[i].tensor;
    parameter.mutable_grad() = gradient_sums_[i].mul(scale);
    gradient_sums_[i].zero_();
  }
  for (std::size_t i = 0; i < buffers_.size(); ++i) {
    if (torch::isFloatingType(buffers_[i].tensor.scalar_type())) {
      buffers_[i].tensor.copy_(buffer_sums_[i].div(total));
    } else {
      buffers_[i].tensor.copy_(buffer_sums_[i]);
    }
    buffer_sums_[i].zero_();
  }
  samples_ = 0;
  return true;
}

std::unique_ptr<torch::optim::Optimizer> make_optimizer(const OptimizerOptions& options,
                                                        std::vector<torch::Tensor> parameters) {
  if (options.name == "sgd") {
    return std::make_unique<torch::optim::SGD>(std::move(parameters),
                                               torch::optim::SGDOptions(options.learning_rate)
                                                   .momentum(options.momentum)
                                                   .weight_decay(options.weight_decay));
  }
  if (options.name == "adam") {
    return std::make_unique<torch::optim::Adam>(
        std::move(parameters),
        torch::optim::AdamOptions(options.learning_rate).weight_decay(options.weight_decay));
  }
  throw std::invalid_argument("unknown optimizer '" + options.name + "' (known: sgd, adam)");
}

std::unique_ptr<torch::optim::Optimizer> make_outer_optimizer(const OptimizerOptions& options,
                                                              std::vector<torch::Tensor> parameters) {
  if (options.outer == "average") {
    return std::make_unique<torch::optim::SGD>(std::move(parameters), torch::optim::SGDOptions(1.0));
  }
  if (options.outer == "nesterov") {
    return std::make_unique<torch::optim::SGD>(std::move(parameters),
                                               torch::optim::SGDOptions(options.outer_learning_rate)
                                                   .momentum(options.outer_momentum)
                                                   .nesterov(true));
  }
  throw std::invalid_argument("unknown outer optimizer '" + options.outer + "' (known: average, nesterov)");
}

namespace {
torch::nn::Sequential seeded_model(const msg::RunSpec& run) {
  torch::manual_seed(run.seed);  // the initial weights are the aggregator's; trainers receive them
  return make_model(run.model);
}
}  // namespace

Aggregator::Aggregator(const SocketFactory& sockets, const std::string& hub_endpoint,
                       AggregatorOptions options, const StopFlag& stop, std::function<void()> on_finished)
    : options_(std::move(options)),
      bus_(sockets, kAggregatorName),
      loop_(stop),
      on_finished_(std::move(on_finished)),
      model_(seeded_model(options_.run)),
      optimizer_(options_.run.mode == "local-sgd"
                     ? make_outer_optimizer(options_.optimizer, model_->parameters())
                     : make_optimizer(options_.optimizer, model_->parameters())),
      averager_(*model_,
                options_.run.mode == "local-sgd" ? Combine::kParameterDeltas : Combine::kSummedGradients),
      test_set_(
          load_dataset(options_.data.dataset, options_.data.path, Split::kTest, options_.data.test_limit)),
      record_(options_.run_dir,
              options_.resume ? std::optional<std::uint64_t>(options_.resume->round) : std::nullopt),
      checkpoints_(options_.run_dir + "/checkpoints") {
  if (options_.resume) restore(*options_.resume);
  bus_.connect(hub_endpoint);
  loop_.on_readable(bus_.addressed(), [this] {
    while (auto incoming = bus_.receive(bus_.addressed()))
      dispatch(*this, *incoming, bus_.limits(), bus_.name());
  });
}

void Aggregator::run() {
  loop_.run();
}

void Aggregator::publish_model(const std::string& to) {
  // Copies, because the next optimizer step updates the parameters in place while zmq may still
  // be sending these frames.
  std::vector<zmq::message_t> frames;
  msg::ModelState state;
  state.model_version = model_version_;
  state.round = rounds_closed_;
  state.parameters = append_tensor_frames(snapshot(named_parameters(*model_)), frames);
  state.buffers = append_tensor_frames(snapshot(named_buffers(*model_)), frames);
  const Stamp stamp{rounds_closed_, model_version_};
  if (to.empty()) {
    bus_.publish(kModelTopic, state, stamp, std::move(frames));
  } else {
    bus_.send(to, state, stamp, std::move(frames));
  }
}

void Aggregator::handle(const msg::SnapshotRequest&, const Incoming& from) {
  publish_model(from.from);
}

void Aggregator::handle(const msg::MembershipChange& change, const Incoming&) {
  using Kind = msg::MembershipChangeKind;
  live_[change.trainer] = change.change == Kind::kJoined || change.change == Kind::kRejoined;
  if (change.cpu_gemm_gflops > 0) benchmark_gflops_[change.trainer] = change.cpu_gemm_gflops;
  if (open_ && every_live_trainer_answered()) close_round("every live trainer answered");
}

void Aggregator::handle(const msg::RoundOpened& opened, const Incoming&) {
  if (open_) close_round("a new round opened");
  if (!first_round_) {
    first_round_ = Clock::now();
    epoch_started_ = *first_round_;  // epoch 1 is timed from its first round, not from start-up
    if (options_.resume) {
      // Announced with the first round rather than at start-up, when monitors have reconnected.
      msg::Event event;
      event.type = "resumed";
      event.round = opened.round;
      event.epoch = opened.epoch;
      event.text = "coordinator restarted (start " + std::to_string(options_.incarnation) +
                   "): resumed after round " + std::to_string(options_.resume->round) +
                   " from its checkpoint";
      event.values["resumed_after_round"] = static_cast<double>(options_.resume->round);
      event.values["coordinator_start"] = static_cast<double>(options_.incarnation);
      bus_.publish(kEventTopic, event);
    }
  }
  open_ = OpenRound{opened, Clock::now(), 0, {}, 0.0, 0};
  const auto deadline = open_->opened + std::chrono::duration_cast<Clock::duration>(
                                            std::chrono::duration<double>(opened.deadline_seconds));
  const std::uint64_t round = opened.round;
  open_->deadline_timer = loop_.at(deadline, [this, round] {
    if (open_ && open_->plan.round == round) close_round("deadline passed");
  });
  std::vector<Incoming> early;
  early.swap(early_);
  for (auto& incoming : early) dispatch(*this, incoming, bus_.limits(), bus_.name());
  if (open_ && every_live_trainer_answered()) close_round("every live trainer answered");
}

void Aggregator::handle(const msg::Contribution& contribution, const Incoming& from) {
  if (!open_ || contribution.round > open_->plan.round) {
    if (early_.size() < kMaxEarlyContributions) {
      Incoming copy{from.from, from.envelope, zmq::message_t(from.body.data(), from.body.size()),
                    from.tensor_frames};
      early_.push_back(std::move(copy));
    }
    return;
  }
  accept(contribution, from);
  if (open_ && every_live_trainer_answered()) close_round("every live trainer answered");
}

void Aggregator::accept(const msg::Contribution& contribution, const Incoming& from) {
  const auto drop = [&](const std::string& reason) {
    log(LogLevel::kWarn, bus_.name(), "dropped contribution of ", from.from, " for round ",
        contribution.round, ": ", reason);
  };
  if (contribution.round != open_->plan.round)
    return drop("round " + std::to_string(open_->plan.round) + " is open");
  const auto planned = open_->plan.planned_samples.find(from.from);
  if (planned == open_->plan.planned_samples.end()) return drop("no samples were planned for it");
  if (open_->arrived.count(from.from)) return drop("already counted (duplicate)");
  if (contribution.incarnation != open_->plan.incarnation) {
    return drop("planned by coordinator start " + std::to_string(contribution.incarnation) +
                ", this is start " + std::to_string(open_->plan.incarnation));
  }
  if (contribution.model_version != open_->plan.model_version) {
    return drop("computed on model version " + std::to_string(contribution.model_version) + ", round is on " +
                std::to_string(open_->plan.model_version));
  }
  if (contribution.samples == 0 || contribution.samples > planned->second) {
    return drop(std::to_string(contribution.samples) + " samples where " + std::to_string(planned->second) +
                " were planned");
  }
  if (!std::isfinite(contribution.loss_sum)) return drop("loss is not finite");
  // Gradients' frames come first, then the buffers'; read them as one list, then split.
  std::vector<TensorMeta> metas = contribution.gradients;
  metas.insert(metas.end(), contribution.buffers.begin(), contribution.buffers.end());
  auto received = read_tensor_frames(metas, from.tensor_frames, 0);
  if (!received) return drop(received.error());
  auto& tensors = received.value();
  const auto split = tensors.begin() + static_cast<std::ptrdiff_t>(contribution.gradients.size());
  const std::vector<ReceivedTensor> gradients(tensors.begin(), split);
  const std::vector<ReceivedTensor> buffers(split, tensors.end());
  if (auto problem = averager_.problem(gradients, buffers)) return drop(*problem);
  averager_.add(gradients, buffers, contribution.samples);
  open_->arrived[from.from] = Arrival{contribution.samples, contribution.compute_seconds,
                                      seconds_between(open_->opened, Clock::now())};
  open_->loss_sum += contribution.loss_sum;
  open_->correct += contribution.correct;
}

bool Aggregator::every_live_trainer_answered() const {
  for (const auto& [trainer, samples] : open_->plan.planned_samples) {
    const auto live = live_.find(trainer);
    const bool is_live = live != live_.end() && live->second;
    if (is_live && !open_->arrived.count(trainer)) return false;
  }
  return true;
}

void Aggregator::close_round(const char* why) {
  OpenRound round = std::move(*open_);
  open_.reset();
  loop_.cancel(round.deadline_timer);
  const double seconds = seconds_between(round.opened, Clock::now());
  if (averager_.apply()) {
    optimizer_->step();
    ++model_version_;
  }
  ++rounds_closed_;
  publish_model("");

  msg::RoundClosed closed;
  closed.round = round.plan.round;
  closed.epoch = round.plan.epoch;
  closed.model_version = model_version_;
  closed.round_seconds = seconds;
  std::uint64_t samples = 0;
  nlohmann::json trainers = nlohmann::json::array();
  msg::Event event;
  event.type = "round";
  event.round = closed.round;
  event.epoch = closed.epoch;
  double idle_sum = 0.0;
  for (const auto& [trainer, planned] : round.plan.planned_samples) {
    msg::TrainerOutcome outcome;
    outcome.trainer = trainer;
    outcome.planned_samples = planned;
    const auto arrived = round.arrived.find(trainer);
    outcome.delivered = arrived != round.arrived.end();
    double idle_seconds = 0.0;
    double samples_per_second = 0.0;
    if (outcome.delivered) {
      outcome.samples = arrived->second.samples;
      outcome.compute_seconds = arrived->second.compute_seconds;
      outcome.arrival_seconds = arrived->second.arrival_seconds;
      samples += outcome.samples;
      totals_[trainer].samples += outcome.samples;
      totals_[trainer].compute_seconds += outcome.compute_seconds;
      // Waiting for the slowest: the time between this contribution and the round's close.
      idle_seconds = std::max(0.0, seconds - outcome.arrival_seconds);
      idle_sum += idle_seconds;
      if (outcome.compute_seconds > 0) samples_per_second = outcome.samples / outcome.compute_seconds;
      const auto ranges = round.plan.planned_ranges.find(trainer);
      if (ranges != round.plan.planned_ranges.end()) {
        epoch_trained_.insert(epoch_trained_.end(), ranges->second.begin(), ranges->second.end());
      }
      event.values["samples_per_second/" + trainer] = samples_per_second;
      event.values["idle_seconds/" + trainer] = idle_seconds;
    } else {
      log(LogLevel::kWarn, bus_.name(), "round ", closed.round, " closed (", why, ") without ", trainer,
          "'s ", planned, " samples; they go back to the pool");
      event.labels["missed/" + trainer] = std::to_string(planned) + " samples reassigned";
    }
    event.values["planned/" + trainer] = static_cast<double>(planned);
    const auto benchmark = benchmark_gflops_.find(trainer);
    nlohmann::json ranges = nlohmann::json::array();
    const auto planned_ranges = round.plan.planned_ranges.find(trainer);
    if (outcome.delivered && planned_ranges != round.plan.planned_ranges.end()) {
      for (const auto& range : planned_ranges->second) ranges.push_back({range.begin, range.end});
    }
    trainers.push_back({{"ranges", ranges},
                        {"name", trainer},
                        {"planned", planned},
                        {"samples", outcome.samples},
                        {"compute_seconds", outcome.compute_seconds},
                        {"samples_per_second", samples_per_second},
                        {"arrival_seconds", outcome.arrival_seconds},
                        {"idle_seconds", idle_seconds},
                        {"benchmark_gflops", benchmark == benchmark_gflops_.end() ? 0.0 : benchmark->second},
                        {"delivered", outcome.delivered}});
    closed.outcomes.push_back(std::move(outcome));
  }
  const double idle_fraction =
      seconds > 0 && !round.arrived.empty() ? idle_sum / (seconds * round.arrived.size()) : 0.0;
  bus_.send(kSchedulerName, closed, Stamp{closed.round, model_version_});

  epoch_samples_ += samples;
  epoch_loss_sum_ += round.loss_sum;
  record_.append_round({{"round", closed.round},
                        {"epoch", closed.epoch},
                        {"model_version", model_version_},
                        {"seconds", seconds},
                        {"closed_seconds", seconds_between(*first_round_, Clock::now())},
                        {"samples", samples},
                        {"idle_fraction", idle_fraction},
                        {"loss", samples ? round.loss_sum / samples : 0.0},
                        {"trainers", trainers}});
  event.values["samples"] = static_cast<double>(samples);
  event.values["loss"] = samples ? round.loss_sum / samples : 0.0;
  event.values["seconds"] = seconds;
  event.values["idle_fraction"] = idle_fraction;
  event.values["epoch_samples_done"] = static_cast<double>(epoch_samples_);
  event.values["epoch_samples_total"] = static_cast<double>(options_.run.train_samples);
  event.values["epochs"] = static_cast<double>(options_.epochs);
  event.text = "round " + std::to_string(closed.round) + ": " + std::to_string(samples) + " samples, loss " +
               std::to_string(event.values["loss"]);
  bus_.publish(kEventTopic, event);
  if (options_.checkpoint_every > 0 &&
      rounds_closed_ % static_cast<std::uint64_t>(options_.checkpoint_every) == 0) {
    write_checkpoint();
  }
}

SchedulerResume scheduler_resume_of(const Checkpoint& checkpoint) {
  SchedulerResume resume;
  resume.epoch = checkpoint.meta.at("epoch").get<std::uint64_t>();
  resume.round = checkpoint.meta.at("rounds_closed").get<std::uint64_t>();
  resume.model_version = checkpoint.meta.at("model_version").get<std::uint64_t>();
  for (const auto& range : checkpoint.meta.at("epoch_trained")) {
    resume.trained.push_back({range.at(0).get<std::uint64_t>(), range.at(1).get<std::uint64_t>()});
  }
  return resume;
}

msg::RunSpec run_spec_of(const Checkpoint& checkpoint) {
  const auto& run = checkpoint.meta.at("run");
  msg::RunSpec spec;
  spec.run_id = run.at("run_id");
  spec.model = run.at("model");
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

void Aggregator::write_checkpoint() {
  // Model and optimizer state (Adam's moments, SGD's momentum) as one LibTorch archive.
  torch::serialize::OutputArchive archive, model_archive, optimizer_archive;
  model_->save(model_archive);
  optimizer_->save(optimizer_archive);
  archive.write("model", model_archive);
  archive.write("optimizer", optimizer_archive);
  std::ostringstream payload;
  archive.save_to(payload);
  nlohmann::json trained = nlohmann::json::array();
  for (const auto& range : epoch_trained_) trained.push_back({range.begin, range.end});
  nlohmann::json totals = nlohmann::json::object();
  for (const auto& [trainer, total] : totals_) totals[trainer] = {total.samples, total.compute_seconds};
  const msg::RunSpec& run = options_.run;
  const nlohmann::json meta{
      {"run",
       {{"run_id", run.run_id},
        {"model", run.model},
        {"dataset", run.dataset},
        {"train_samples", run.train_samples},
        {"seed", run.seed},
        {"micro_batch", run.micro_batch},
        {"mode", run.mode},
        {"optimizer", run.optimizer},
        {"learning_rate", run.learning_rate},
        {"momentum", run.momentum},
        {"weight_decay", run.weight_decay}}},
      {"incarnation", options_.incarnation},
      {"model_version", model_version_},
      {"rounds_closed", rounds_closed_},
      {"epoch", epoch_},
      {"epoch_trained", trained},
      {"epoch_samples", epoch_samples_},
      {"epoch_loss_sum", epoch_loss_sum_},
      {"samples_per_epoch", samples_per_epoch_},
      {"test_accuracy_per_epoch", test_accuracy_per_epoch_},
      {"totals", totals},
      {"training_seconds",
       training_seconds_before_ + (first_round_ ? seconds_between(*first_round_, Clock::now()) : 0.0)},
  };
  try {
    checkpoints_.write(rounds_closed_, meta, payload.str());
  } catch (const std::exception& e) {
    // A full disk must not stop training; the previous checkpoint still stands.
    log(LogLevel::kError, bus_.name(), "checkpoint of round ", rounds_closed_, " not written: ", e.what());
  }
}

void Aggregator::restore(const Checkpoint& checkpoint) {
  std::istringstream payload(checkpoint.payload);
  torch::serialize::InputArchive archive, model_archive, optimizer_archive;
  archive.load_from(payload);
  if (!archive.try_read("model", model_archive) || !archive.try_read("optimizer", optimizer_archive)) {
    throw std::runtime_error(checkpoint.path + ": no model or optimizer state in its payload");
  }
  model_->load(model_archive);
  optimizer_->load(optimizer_archive);
  const auto& meta = checkpoint.meta;
  model_version_ = meta.at("model_version");
  rounds_closed_ = meta.at("rounds_closed");
  epoch_ = meta.at("epoch");
  epoch_trained_ = scheduler_resume_of(checkpoint).trained;
  epoch_samples_ = meta.at("epoch_samples");
  epoch_loss_sum_ = meta.at("epoch_loss_sum");
  samples_per_epoch_ = meta.at("samples_per_epoch").get<std::vector<std::uint64_t>>();
  test_accuracy_per_epoch_ = meta.at("test_accuracy_per_epoch").get<std::vector<double>>();
  for (const auto& [trainer, total] : meta.at("totals").items()) {
    totals_[trainer] = TrainerTotals{total.at(0).get<std::uint64_t>(), total.at(1).get<double>()};
  }
  training_seconds_before_ = meta.at("training_seconds");
  log(LogLevel::kInfo, bus_.name(), "resumed from ", checkpoint.path, ": model version ", model_version_,
      ", round ", rounds_closed_, ", epoch ", epoch_, " with ", epoch_samples_, " samples trained");
}

void Aggregator::handle(const msg::EpochEnded& ended, const Incoming&) {
  if (open_) close_round("epoch ended");
  const double accuracy = evaluate_accuracy(model_, test_set_);
  const double seconds = seconds_between(epoch_started_, Clock::now());
  samples_per_epoch_.push_back(epoch_samples_);
  test_accuracy_per_epoch_.push_back(accuracy);
  msg::Event event;
  event.type = "epoch";
  event.epoch = ended.epoch;
  event.round = rounds_closed_;
  event.values["test_accuracy"] = accuracy;
  event.values["train_loss"] = epoch_samples_ ? epoch_loss_sum_ / epoch_samples_ : 0.0;
  event.values["samples"] = static_cast<double>(epoch_samples_);
  event.values["seconds"] = seconds;
  event.values["epochs"] = static_cast<double>(options_.epochs);
  std::ostringstream text;
  text << "epoch " << ended.epoch << "/" << options_.epochs << ": test accuracy " << accuracy
       << ", train loss " << event.values["train_loss"] << ", " << epoch_samples_ << " samples in " << seconds
       << " s";
  event.text = text.str();
  log(LogLevel::kInfo, bus_.name(), event.text);
  bus_.publish(kEventTopic, event);
  if (epoch_samples_ != ended.samples) {
    log(LogLevel::kError, bus_.name(), "epoch ", ended.epoch, ": aggregated ", epoch_samples_,
        " samples but the scheduler counted ", ended.samples);
  }
  epoch_samples_ = 0;
  epoch_loss_sum_ = 0.0;
  epoch_started_ = Clock::now();
  epoch_ = ended.epoch + 1;
  epoch_trained_.clear();
  if (ended.last) {
    finish();
  } else if (options_.checkpoint_every > 0) {
    write_checkpoint();  // the evaluation is done: a resumed run does not repeat it
  }
}

void Aggregator::finish() {
  const double wall_seconds = seconds_between(started_, Clock::now());
  const std::string model_path = record_.path("model.pt");
  save_model(model_, options_.run.model, model_path);
  nlohmann::json nodes = nlohmann::json::array();
  for (const auto& [trainer, totals] : totals_) {
    nodes.push_back({{"name", node_of(trainer)},
                     {"trainer", trainer},
                     {"samples", totals.samples},
                     {"compute_seconds", totals.compute_seconds}});
  }
  const double accuracy = test_accuracy_per_epoch_.empty() ? 0.0 : test_accuracy_per_epoch_.back();
  record_.write_summary({
      {"run_id", options_.run.run_id},
      {"model", options_.run.model},
      {"dataset", options_.run.dataset},
      {"mode", options_.run.mode},
      {"optimizer", options_.optimizer.name},
      {"outer_optimizer", options_.run.mode == "local-sgd" ? options_.optimizer.outer : std::string()},
      {"final_test_accuracy", accuracy},
      {"test_accuracy_per_epoch", test_accuracy_per_epoch_},
      {"epochs", samples_per_epoch_.size()},
      {"wall_seconds", wall_seconds},
      {"training_seconds",
       training_seconds_before_ + (first_round_ ? seconds_between(*first_round_, Clock::now()) : 0.0)},
      {"coordinator_starts", options_.incarnation},
      {"rounds", rounds_closed_},
      {"model_version", model_version_},
      {"samples_per_epoch", samples_per_epoch_},
      {"train_samples", options_.run.train_samples},
      {"nodes", nodes},
      {"model_file", model_path},
  });
  msg::Event event;
  event.type = "finished";
  event.text = "run finished: test accuracy " + std::to_string(accuracy) + " after " +
               std::to_string(rounds_closed_) + " rounds in " + std::to_string(wall_seconds) + " s";
  event.values["final_test_accuracy"] = accuracy;
  event.values["wall_seconds"] = wall_seconds;
  event.labels["run_dir"] = record_.run_dir();
  bus_.publish(kEventTopic, event);
  // Last: monitors and nodes end when they see it.
  msg::RunFinished finished{"all " + std::to_string(samples_per_epoch_.size()) + " epochs trained", accuracy};
  bus_.publish(kControlTopic, finished);
  log(LogLevel::kInfo, bus_.name(), event.text, "; summary in ", record_.path("summary.json"));
  checkpoints_.clear();  // the run is over: model.pt and summary.json are its result
  if (on_finished_) on_finished_();
}

}  // namespace filo
