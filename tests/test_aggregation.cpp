// Gradient mode is exact: trainers with unequal shares, combined by the aggregator's averager,
// take the same steps as one process training on the whole round batch.
#include <doctest/doctest.h>

#include "actors/learning/averaging.hpp"
#include "actors/learning/models.hpp"
#include "actors/learning/optimizers.hpp"
#include "actors/learning/parameters.hpp"
#include "actors/learning/training.hpp"

using namespace filo;

namespace {
Dataset synthetic_dataset(std::int64_t size, std::uint64_t seed) {
  torch::manual_seed(seed);
  auto images = torch::randint(0, 256, {size, 28, 28}, torch::kUInt8);
  auto labels = torch::randint(0, 10, {size}, torch::kInt64);
  return Dataset(images, labels);
}

void copy_model(torch::nn::Sequential& from, torch::nn::Sequential& to) {
  torch::NoGradGuard no_grad;
  auto source = named_parameters(*from);
  auto target = named_parameters(*to);
  for (std::size_t i = 0; i < source.size(); ++i) target[i].tensor.copy_(source[i].tensor);
  auto source_buffers = named_buffers(*from);
  auto target_buffers = named_buffers(*to);
  for (std::size_t i = 0; i < source_buffers.size(); ++i)
    target_buffers[i].tensor.copy_(source_buffers[i].tensor);
}

/// What a trainer sends, as the aggregator receives it: real frames, zero-copy views. `first` is
/// the gradients (gradient mode) or the parameter deltas (local-sgd); the buffers follow.
std::pair<std::vector<ReceivedTensor>, std::vector<ReceivedTensor>> contribution_over_the_wire(
    const std::vector<NamedTensor>& first, torch::nn::Sequential& replica) {
  std::vector<zmq::message_t> frames;
  auto first_metas = append_tensor_frames(first, frames);
  auto buffer_metas = append_tensor_frames(snapshot(named_buffers(*replica)), frames);
  auto list = std::make_shared<std::vector<zmq::message_t>>(std::move(frames));
  std::vector<TensorMeta> metas = first_metas;
  metas.insert(metas.end(), buffer_metas.begin(), buffer_metas.end());
  auto received = read_tensor_frames(metas, list, 0);
  REQUIRE(received);
  auto& all = received.value();
  const auto split = all.begin() + static_cast<std::ptrdiff_t>(first_metas.size());
  return {std::vector<ReceivedTensor>(all.begin(), split), std::vector<ReceivedTensor>(split, all.end())};
}

std::pair<std::vector<ReceivedTensor>, std::vector<ReceivedTensor>> over_the_wire(
    torch::nn::Sequential& replica) {
  return contribution_over_the_wire(named_gradients(*replica), replica);
}

double max_relative_difference(torch::nn::Sequential& a, torch::nn::Sequential& b) {
  double worst = 0.0;
  auto pa = named_parameters(*a);
  auto pb = named_parameters(*b);
  for (std::size_t i = 0; i < pa.size(); ++i) {
    const double scale = std::max(1e-12, pb[i].tensor.abs().max().item<double>());
    worst = std::max(worst, (pa[i].tensor - pb[i].tensor).abs().max().item<double>() / scale);
  }
  return worst;
}
}  // namespace

TEST_CASE("3 trainers with 50/30/20 shares equal one process on the whole round batch") {
  const auto data = synthetic_dataset(1000, 3);
  constexpr int kRounds = 6;
  constexpr std::int64_t kRoundSamples = 100;
  const std::int64_t shares[] = {50, 30, 20};
  OptimizerOptions sgd;
  sgd.name = "sgd";
  sgd.learning_rate = 0.05;
  sgd.momentum = 0.9;

  torch::manual_seed(11);
  auto reference = make_model("mlp");
  auto combined = make_model("mlp");
  copy_model(reference, combined);
  auto reference_optimizer = make_optimizer(sgd, reference->parameters());
  auto combined_optimizer = make_optimizer(sgd, combined->parameters());
  ContributionAverager averager(*combined);
  std::vector<torch::nn::Sequential> replicas{make_model("mlp"), make_model("mlp"), make_model("mlp")};

  for (int round = 0; round < kRounds; ++round) {
    const auto round_indices =
        torch::arange(round * kRoundSamples, (round + 1) * kRoundSamples, torch::kInt64);
    // One process, one batch, mean loss.
    reference_optimizer->zero_grad();
    auto [images, labels] = data.batch(round_indices);
    torch::nn::functional::cross_entropy(reference->forward(images), labels).backward();
    reference_optimizer->step();
    // Three trainers, unequal shares and micro-batch sizes, combined.
    std::int64_t start = 0;
    for (std::size_t t = 0; t < replicas.size(); ++t) {
      copy_model(combined, replicas[t]);
      const auto share = round_indices.slice(0, start, start + shares[t]);
      start += shares[t];
      const auto result =
          train_share(replicas[t], data, share, /*micro_batch=*/16 + 3 * static_cast<std::int64_t>(t));
      CHECK(result.samples == static_cast<std::uint64_t>(shares[t]));
      auto [gradients, buffers] = over_the_wire(replicas[t]);
      REQUIRE_FALSE(averager.problem(gradients, buffers));
      averager.add(gradients, buffers, result.samples);
    }
    REQUIRE(averager.apply());
    combined_optimizer->step();
  }
  const double difference = max_relative_difference(combined, reference);
  INFO("max relative parameter difference: " << difference);
  CHECK(difference < 1e-5);
  // And training did move the parameters: the check above is not comparing two untouched models.
  torch::manual_seed(11);
  auto untouched = make_model("mlp");
  CHECK(max_relative_difference(untouched, reference) > 1e-3);
}

TEST_CASE("BatchNorm statistics are averaged by samples and counters are not divided") {
  torch::manual_seed(5);
  auto model = make_model("cnn");
  ContributionAverager averager(*model);
  const auto make_contribution = [&](double mean_value, std::int64_t counter) {
    auto replica = make_model("cnn");
    for (auto& item : replica->named_buffers()) {
      if (item.key().find("running_mean") != std::string::npos) item.value().fill_(mean_value);
      if (item.key().find("num_batches_tracked") != std::string::npos) item.value().fill_(counter);
    }
    for (auto& parameter : replica->parameters()) parameter.mutable_grad() = torch::ones_like(parameter);
    return over_the_wire(replica);
  };
  auto [g1, b1] = make_contribution(1.0, 10);
  auto [g2, b2] = make_contribution(4.0, 12);
  averager.add(g1, b1, 30);
  averager.add(g2, b2, 10);
  REQUIRE(averager.apply());
  for (const auto& item : model->named_buffers()) {
    if (item.key().find("running_mean") != std::string::npos) {
      CHECK(item.value().mean().item<double>() == doctest::Approx((1.0 * 30 + 4.0 * 10) / 40));
    }
    if (item.key().find("num_batches_tracked") != std::string::npos) {
      CHECK(item.value().item<std::int64_t>() == 12);
    }
  }
  for (const auto& parameter : model->parameters()) {
    // Gradient sums of ones from two trainers over 40 samples: mean 2/40 per element.
    CHECK(parameter.grad().mean().item<double>() == doctest::Approx(2.0 / 40));
  }
}

TEST_CASE("a contribution with NaN gradients or a foreign layout is refused and changes nothing") {
  torch::manual_seed(5);
  auto model = make_model("mlp");
  ContributionAverager averager(*model);
  auto replica = make_model("mlp");
  for (auto& parameter : replica->parameters()) parameter.mutable_grad() = torch::zeros_like(parameter);
  replica->parameters()[0].mutable_grad()[0][0] = std::numeric_limits<float>::quiet_NaN();
  auto [gradients, buffers] = over_the_wire(replica);
  auto problem = averager.problem(gradients, buffers);
  REQUIRE(problem);
  CHECK(problem->find("NaN") != std::string::npos);

  auto other = make_model("cnn");
  for (auto& parameter : other->parameters()) parameter.mutable_grad() = torch::zeros_like(parameter);
  auto [foreign_gradients, foreign_buffers] = over_the_wire(other);
  CHECK(averager.problem(foreign_gradients, foreign_buffers));
  CHECK_FALSE(averager.apply());  // nothing was added
}

namespace {
std::pair<std::vector<ReceivedTensor>, std::vector<ReceivedTensor>> deltas_over_the_wire(
    torch::nn::Sequential& replica, const std::vector<NamedTensor>& before) {
  return contribution_over_the_wire(parameter_deltas(*replica, before), replica);
}

msg::RunSpec local_sgd_run() {
  msg::RunSpec run;
  run.mode = "local-sgd";
  run.optimizer = "sgd";
  run.learning_rate = 0.05;
  run.momentum = 0.9;
  return run;
}
}  // namespace

TEST_CASE("local-sgd with one trainer and plain averaging equals plain local training") {
  const auto data = synthetic_dataset(600, 4);
  constexpr int kRounds = 3;
  constexpr std::int64_t kRoundSamples = 160;
  constexpr std::int64_t kMicroBatch = 32;
  torch::manual_seed(21);
  auto reference = make_model("cnn");  // BatchNorm buffers travel too
  auto combined = make_model("cnn");
  auto replica = make_model("cnn");
  copy_model(reference, combined);
  copy_model(reference, replica);
  auto reference_optimizer = make_local_optimizer(local_sgd_run(), reference->parameters());
  // The trainer keeps its optimizer (and its momentum) across rounds, as Trainer does.
  auto replica_optimizer = make_local_optimizer(local_sgd_run(), replica->parameters());
  OptimizerOptions outer;
  outer.outer = "average";
  auto outer_optimizer = make_outer_optimizer(outer, combined->parameters());
  ContributionAverager averager(*combined, Combine::kParameterDeltas);

  for (int round = 0; round < kRounds; ++round) {
    const auto indices = torch::arange(round * kRoundSamples, (round + 1) * kRoundSamples, torch::kInt64);
    train_local_steps(reference, data, indices, kMicroBatch, *reference_optimizer);

    copy_model(combined, replica);  // the model broadcast
    const auto before = snapshot(named_parameters(*replica));
    const auto result = train_local_steps(replica, data, indices, kMicroBatch, *replica_optimizer);
    CHECK(result.samples == static_cast<std::uint64_t>(kRoundSamples));
    auto [deltas, buffers] = deltas_over_the_wire(replica, before);
    REQUIRE_FALSE(averager.problem(deltas, buffers));
    averager.add(deltas, buffers, result.samples);
    REQUIRE(averager.apply());
    outer_optimizer->step();
  }
  const double difference = max_relative_difference(combined, reference);
  INFO("max relative parameter difference: " << difference);
  CHECK(difference < 1e-5);
  auto reference_buffers = named_buffers(*reference);
  auto combined_buffers = named_buffers(*combined);
  for (std::size_t i = 0; i < reference_buffers.size(); ++i) {
    CHECK(torch::allclose(reference_buffers[i].tensor.to(torch::kDouble),
                          combined_buffers[i].tensor.to(torch::kDouble)));
  }
  torch::manual_seed(21);
  auto untouched = make_model("cnn");
  CHECK(max_relative_difference(untouched, reference) > 1e-3);
}

TEST_CASE("local-sgd combines several trainers' deltas as their sample-weighted mean") {
  const auto data = synthetic_dataset(300, 6);
  torch::manual_seed(8);
  auto combined = make_model("mlp");
  auto start = snapshot(named_parameters(*combined));
  OptimizerOptions outer;
  outer.outer = "average";
  auto outer_optimizer = make_outer_optimizer(outer, combined->parameters());
  ContributionAverager averager(*combined, Combine::kParameterDeltas);

  const std::int64_t shares[] = {120, 60, 20};
  std::vector<std::vector<NamedTensor>> deltas_of;
  std::int64_t offset = 0;
  for (const std::int64_t share : shares) {
    auto replica = make_model("mlp");
    copy_model(combined, replica);
    auto optimizer = make_local_optimizer(local_sgd_run(), replica->parameters());
    const auto before = snapshot(named_parameters(*replica));
    const auto indices = torch::arange(offset, offset + share, torch::kInt64);
    offset += share;
    const auto result = train_local_steps(replica, data, indices, 20, *optimizer);
    deltas_of.push_back(snapshot(parameter_deltas(*replica, before)));
    auto [deltas, buffers] = deltas_over_the_wire(replica, before);
    averager.add(deltas, buffers, result.samples);
  }
  REQUIRE(averager.apply());
  outer_optimizer->step();
  const auto after = named_parameters(*combined);
  for (std::size_t p = 0; p < after.size(); ++p) {
    auto expected = start[p].tensor.clone();
    for (std::size_t t = 0; t < deltas_of.size(); ++t)
      expected += deltas_of[t][p].tensor * (double(shares[t]) / 200.0);
    CHECK(torch::allclose(after[p].tensor, expected, 1e-5, 1e-6));
    // Not the unweighted mean: the trainers' deltas differ, so weights matter.
    auto unweighted = start[p].tensor.clone();
    for (const auto& deltas : deltas_of) unweighted += deltas[p].tensor / 3.0;
    CHECK_FALSE(torch::allclose(after[p].tensor, unweighted, 1e-5, 1e-6));
  }
}

TEST_CASE("local-sgd with DiLoCo's outer Nesterov step moves further than plain averaging") {
  torch::manual_seed(9);
  auto model = make_model("mlp");
  const auto start = snapshot(named_parameters(*model));
  OptimizerOptions outer;
  outer.outer = "nesterov";
  outer.outer_learning_rate = 0.7;
  outer.outer_momentum = 0.9;
  auto outer_optimizer = make_outer_optimizer(outer, model->parameters());
  ContributionAverager averager(*model, Combine::kParameterDeltas);
  auto replica = make_model("mlp");
  copy_model(model, replica);
  const auto before = snapshot(named_parameters(*replica));
  {
    torch::NoGradGuard no_grad;
    for (auto& parameter : replica->parameters()) parameter.add_(0.01);
  }
  auto [deltas, buffers] = deltas_over_the_wire(replica, before);
  averager.add(deltas, buffers, 10);
  REQUIRE(averager.apply());
  outer_optimizer->step();
  // First Nesterov step from zero momentum: p - lr * (g + momentum * g) with g = -delta.
  const auto after = named_parameters(*model);
  for (std::size_t p = 0; p < after.size(); ++p) {
    CHECK(torch::allclose(after[p].tensor, start[p].tensor + 0.01 * 0.7 * 1.9, 1e-5, 1e-6));
  }
}
