// Gradient mode is exact: trainers with unequal shares, combined by the aggregator's averager and
// stepped by filo's flat optimizers, take the same steps as one process training on the whole round
// batch with LibTorch's own optimizer. Local-sgd combines models as their sample-weighted mean.
#include <doctest/doctest.h>

#include "actors/learning/averaging.hpp"
#include "actors/learning/model.hpp"
#include "actors/learning/models.hpp"
#include "actors/learning/optimizers.hpp"
#include "actors/learning/robust_combining.hpp"
#include "actors/learning/task.hpp"
#include "actors/learning/training.hpp"

using namespace filo;

namespace {
Dataset synthetic_dataset(std::int64_t size, std::uint64_t seed) {
  torch::manual_seed(seed);
  auto images = torch::randint(0, 256, {size, 28, 28}, torch::kUInt8);
  auto labels = torch::randint(0, 10, {size}, torch::kInt64);
  return Dataset(images, labels);
}

Model built_in(const std::string& name, std::uint64_t seed) {
  torch::manual_seed(seed);
  return Model(build_model(name, ModelShape{{1, 28, 28}, 10, 0}));
}

void copy_model(const Model& from, Model& to) {
  to.parameters().copy_from(from.parameters());
  to.buffers().copy_from(from.buffers());
}

/// What a trainer sends, as the aggregator receives it: real frames, zero-copy views. `first` is
/// the gradients (gradient mode) or the parameter deltas (local-sgd); the buffers follow.
std::pair<std::vector<ReceivedTensor>, std::vector<ReceivedTensor>> over_the_wire(
    const FlatTensors& first, const FlatTensors& buffers) {
  std::vector<zmq::message_t> frames;
  SendBuffers send_buffers;
  auto first_metas = stage(first, send_buffers, frames);
  auto buffer_metas = stage(buffers, send_buffers, frames);
  auto list = std::make_shared<std::vector<zmq::message_t>>(std::move(frames));
  std::vector<TensorMeta> metas = first_metas;
  metas.insert(metas.end(), buffer_metas.begin(), buffer_metas.end());
  auto received = read_tensor_frames(metas, list, 0);
  REQUIRE(received);
  auto& all = received.value();
  const auto split = all.begin() + static_cast<std::ptrdiff_t>(first_metas.size());
  return {std::vector<ReceivedTensor>(all.begin(), split), std::vector<ReceivedTensor>(split, all.end())};
}

double max_relative_difference(const Model& a, const Model& b) {
  double worst = 0.0;
  const auto pa = a.parameters().named();
  const auto pb = b.parameters().named();
  for (std::size_t i = 0; i < pa.size(); ++i) {
    const double scale = std::max(1e-12, pb[i].tensor.abs().max().item<double>());
    worst = std::max(worst, (pa[i].tensor - pb[i].tensor).abs().max().item<double>() / scale);
  }
  return worst;
}

ShareOptions classification(std::int64_t micro_batch) {
  ShareOptions options;
  options.micro_batch = micro_batch;
  return options;
}

std::vector<torch::Tensor> module_parameters(Model& model) {
  std::vector<torch::Tensor> parameters;
  for (const auto& parameter : model.module().named_parameters()) parameters.push_back(parameter.value);
  return parameters;
}
}  // namespace

TEST_CASE("3 trainers with 50/30/20 shares equal one process on the whole round batch") {
  const auto data = synthetic_dataset(1000, 3);
  constexpr int kRounds = 6;
  constexpr std::int64_t kRoundSamples = 100;
  const std::int64_t shares[] = {50, 30, 20};

  for (const std::string optimizer_name : {"sgd", "adam"}) {
    CAPTURE(optimizer_name);
    OptimizerOptions options;
    options.name = optimizer_name;
    options.learning_rate = optimizer_name == "sgd" ? 0.05 : 1e-3;
    options.momentum = 0.9;
    options.weight_decay = 1e-4;
    Model reference = built_in("mlp", 11);
    Model combined = built_in("mlp", 12);
    copy_model(reference, combined);
    // The reference steps with LibTorch's own optimizer, so that filo's flat one is checked against it.
    std::unique_ptr<torch::optim::Optimizer> reference_optimizer;
    if (options.name == "sgd") {
      reference_optimizer = std::make_unique<torch::optim::SGD>(
          module_parameters(reference), torch::optim::SGDOptions(options.learning_rate)
                                            .momentum(options.momentum)
                                            .weight_decay(options.weight_decay));
    } else {
      reference_optimizer = std::make_unique<torch::optim::Adam>(
          module_parameters(reference),
          torch::optim::AdamOptions(options.learning_rate).weight_decay(options.weight_decay));
    }
    auto combined_optimizer = make_optimizer(options);
    ContributionAverager averager(combined);
    std::vector<Model> replicas;
    for (int t = 0; t < 3; ++t) replicas.push_back(combined.clone());

    for (int round = 0; round < kRounds; ++round) {
      const auto round_indices =
          torch::arange(round * kRoundSamples, (round + 1) * kRoundSamples, torch::kInt64);
      // One process, one batch, mean loss.
      reference.zero_gradients();
      auto [images, labels] = data.batch(round_indices);
      torch::nn::functional::cross_entropy(reference.forward(images), labels).backward();
      reference_optimizer->step();
      // Three trainers, unequal shares and micro-batch sizes, combined.
      std::int64_t start = 0;
      for (std::size_t t = 0; t < replicas.size(); ++t) {
        copy_model(combined, replicas[t]);
        const auto share = round_indices.slice(0, start, start + shares[t]);
        start += shares[t];
        const auto result =
            train_share(replicas[t], data, share, classification(16 + 3 * static_cast<std::int64_t>(t)));
        CHECK(result.samples == static_cast<std::uint64_t>(shares[t]));
        auto [gradients, buffers] = over_the_wire(replicas[t].gradients(), replicas[t].buffers());
        REQUIRE_FALSE(averager.layout_problem(gradients, buffers));
        averager.add(gradients, buffers, result.samples);
        CHECK(averager.sums_finite());
      }
      REQUIRE(averager.apply());
      // The combined gradient is the large batch's mean gradient.
      const auto& combined_gradient = combined.gradients().groups()[0].flat;
      const auto& reference_gradient = reference.gradients().groups()[0].flat;
      const double gradient_difference = (combined_gradient - reference_gradient).abs().max().item<double>() /
                                         reference_gradient.abs().max().item<double>();
      CHECK(gradient_difference < 1e-5);
      combined_optimizer->step(combined.parameters(), combined.gradients());
    }
    const double difference = max_relative_difference(combined, reference);
    INFO("max relative parameter difference: " << difference);
    // Adam divides by the root of each element's second moment, which is near zero for some weights:
    // float rounding in their gradients is magnified there (a gradient that is zero up to rounding
    // steps by up to the learning rate either way; the largest difference was 1.4e-4 on one CPU and
    // under 1e-4 on another). SGD carries rounding through unchanged. So for Adam: nearly every
    // weight agrees as tightly as SGD's, and none strays beyond a few such steps.
    CHECK(difference < (optimizer_name == "sgd" ? 1e-5 : 1e-3));
    const auto& ours = combined.parameters().groups()[0].flat;
    const auto& theirs = reference.parameters().groups()[0].flat;
    const double agreeing =
        ((ours - theirs).abs() <= 1e-5 * theirs.abs().max()).to(torch::kDouble).mean().item<double>();
    INFO("share of weights within 1e-5 relative: " << agreeing);
    CHECK(agreeing > 0.999);
    // And training did move the parameters: the check above is not comparing two untouched models.
    CHECK(max_relative_difference(built_in("mlp", 11), reference) > 1e-3);
  }
}

TEST_CASE("BatchNorm statistics are averaged by samples and counters are not divided") {
  Model model = built_in("cnn", 5);
  ContributionAverager averager(model);
  const auto make_contribution = [&](double mean_value, std::int64_t counter) {
    Model replica = model.clone();
    for (const auto& buffer : replica.buffers().named()) {
      torch::Tensor value = buffer.tensor;
      if (buffer.name.find("running_mean") != std::string::npos) value.fill_(mean_value);
      if (buffer.name.find("num_batches_tracked") != std::string::npos) value.fill_(counter);
    }
    for (auto& group : replica.gradients().groups()) group.flat.fill_(1.0);
    return over_the_wire(replica.gradients(), replica.buffers());
  };
  auto [g1, b1] = make_contribution(1.0, 10);
  auto [g2, b2] = make_contribution(4.0, 12);
  averager.add(g1, b1, 30);
  averager.add(g2, b2, 10);
  REQUIRE(averager.apply());
  std::size_t checked = 0;
  for (const auto& buffer : model.buffers().named()) {
    if (buffer.name.find("running_mean") != std::string::npos) {
      CHECK(buffer.tensor.mean().item<double>() == doctest::Approx((1.0 * 30 + 4.0 * 10) / 40));
      ++checked;
    }
    if (buffer.name.find("num_batches_tracked") != std::string::npos) {
      CHECK(buffer.tensor.item<std::int64_t>() == 12);
      ++checked;
    }
  }
  CHECK(checked == 4);  // two BatchNorm layers
  // Gradient sums of ones from two trainers over 40 samples: mean 2/40 per element, and the module's
  // own parameters see it (their gradients are views of the flat gradients).
  for (const auto& parameter : model.module().named_parameters()) {
    CHECK(parameter.value.grad().mean().item<double>() == doctest::Approx(2.0 / 40));
  }
}

TEST_CASE("a contribution with NaN gradients shows in the sums, and a foreign layout is refused") {
  Model model = built_in("mlp", 5);
  ContributionAverager averager(model);
  Model replica = model.clone();
  replica.gradients().zero();
  replica.gradients().groups()[0].flat[7] = std::numeric_limits<float>::quiet_NaN();
  auto [gradients, buffers] = over_the_wire(replica.gradients(), replica.buffers());
  REQUIRE_FALSE(averager.layout_problem(gradients, buffers));
  const auto bad = non_finite(gradients);
  REQUIRE(bad);
  CHECK(bad->find("NaN") != std::string::npos);
  averager.add(gradients, buffers, 10);
  CHECK_FALSE(averager.sums_finite());
  averager.clear();
  CHECK(averager.sums_finite());

  Model other = built_in("cnn", 5);
  auto [foreign_gradients, foreign_buffers] = over_the_wire(other.gradients(), other.buffers());
  const auto problem = averager.layout_problem(foreign_gradients, foreign_buffers);
  REQUIRE(problem);
  CHECK(problem->find("expected") != std::string::npos);
  CHECK_FALSE(averager.apply());  // nothing was added
}

namespace {
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
  Model reference = built_in("cnn", 21);  // BatchNorm buffers travel too
  Model combined = reference.clone();
  Model replica = reference.clone();
  auto reference_optimizer = make_local_optimizer(local_sgd_run());
  // The trainer keeps its optimizer (and its momentum) across rounds, as Trainer does.
  auto replica_optimizer = make_local_optimizer(local_sgd_run());
  OptimizerOptions outer;
  outer.outer = "average";
  auto outer_optimizer = make_outer_optimizer(outer);
  ContributionAverager averager(combined, Combine::kParameterDeltas);
  FlatTensors before = replica.parameters().zeros_like();
  FlatTensors deltas = replica.parameters().zeros_like();

  for (int round = 0; round < kRounds; ++round) {
    const auto indices = torch::arange(round * kRoundSamples, (round + 1) * kRoundSamples, torch::kInt64);
    train_local_steps(reference, data, indices, *reference_optimizer, classification(kMicroBatch));

    copy_model(combined, replica);  // the model broadcast
    before.copy_from(replica.parameters());
    const auto result =
        train_local_steps(replica, data, indices, *replica_optimizer, classification(kMicroBatch));
    CHECK(result.samples == static_cast<std::uint64_t>(kRoundSamples));
    parameter_deltas(replica, before, deltas);
    auto [received_deltas, buffers] = over_the_wire(deltas, replica.buffers());
    REQUIRE_FALSE(averager.layout_problem(received_deltas, buffers));
    averager.add(received_deltas, buffers, result.samples);
    REQUIRE(averager.apply());
    outer_optimizer->step(combined.parameters(), combined.gradients());
  }
  const double difference = max_relative_difference(combined, reference);
  INFO("max relative parameter difference: " << difference);
  CHECK(difference < 1e-5);
  const auto reference_buffers = reference.buffers().named();
  const auto combined_buffers = combined.buffers().named();
  for (std::size_t i = 0; i < reference_buffers.size(); ++i) {
    // float32 statistics summed by threads in whatever order: running means near zero differ by
    // about 1e-8 between two identical runs on some machines, over allclose's default atol.
    CAPTURE(reference_buffers[i].name);
    CAPTURE((reference_buffers[i].tensor.to(torch::kDouble) - combined_buffers[i].tensor.to(torch::kDouble))
                .abs()
                .max()
                .item<double>());
    CHECK(torch::allclose(reference_buffers[i].tensor.to(torch::kDouble),
                          combined_buffers[i].tensor.to(torch::kDouble), 1e-5, 1e-6));
  }
  CHECK(max_relative_difference(built_in("cnn", 21), reference) > 1e-3);
}

TEST_CASE("local-sgd combines several trainers' deltas as their sample-weighted mean") {
  const auto data = synthetic_dataset(300, 6);
  Model combined = built_in("mlp", 8);
  const FlatTensors start = [&] {
    FlatTensors copy = combined.parameters().zeros_like();
    copy.copy_from(combined.parameters());
    return copy;
  }();
  OptimizerOptions outer;
  outer.outer = "average";
  auto outer_optimizer = make_outer_optimizer(outer);
  ContributionAverager averager(combined, Combine::kParameterDeltas);

  const std::int64_t shares[] = {120, 60, 20};
  std::vector<torch::Tensor> deltas_of;
  std::int64_t offset = 0;
  for (const std::int64_t share : shares) {
    Model replica = combined.clone();
    auto optimizer = make_local_optimizer(local_sgd_run());
    FlatTensors before = replica.parameters().zeros_like();
    before.copy_from(replica.parameters());
    const auto indices = torch::arange(offset, offset + share, torch::kInt64);
    offset += share;
    const auto result = train_local_steps(replica, data, indices, *optimizer, classification(20));
    FlatTensors deltas = replica.parameters().zeros_like();
    parameter_deltas(replica, before, deltas);
    deltas_of.push_back(deltas.groups()[0].flat.clone());
    auto [received, buffers] = over_the_wire(deltas, replica.buffers());
    averager.add(received, buffers, result.samples);
  }
  REQUIRE(averager.apply());
  outer_optimizer->step(combined.parameters(), combined.gradients());
  const torch::Tensor after = combined.parameters().groups()[0].flat;
  auto expected = start.groups()[0].flat.clone();
  for (std::size_t t = 0; t < deltas_of.size(); ++t) expected += deltas_of[t] * (double(shares[t]) / 200.0);
  CHECK(torch::allclose(after, expected, 1e-5, 1e-6));
  // Not the unweighted mean: the trainers' deltas differ, so weights matter.
  auto unweighted = start.groups()[0].flat.clone();
  for (const auto& deltas : deltas_of) unweighted += deltas / 3.0;
  CHECK_FALSE(torch::allclose(after, unweighted, 1e-5, 1e-6));
}

TEST_CASE("local-sgd with DiLoCo's outer Nesterov step moves further than plain averaging") {
  Model model = built_in("mlp", 9);
  const torch::Tensor start = model.parameters().groups()[0].flat.clone();
  OptimizerOptions outer;
  outer.outer = "nesterov";
  outer.outer_learning_rate = 0.7;
  outer.outer_momentum = 0.9;
  auto outer_optimizer = make_outer_optimizer(outer);
  ContributionAverager averager(model, Combine::kParameterDeltas);
  FlatTensors deltas = model.parameters().zeros_like();
  for (auto& group : deltas.groups()) group.flat.fill_(0.01);
  auto [received, buffers] = over_the_wire(deltas, model.buffers());
  averager.add(received, buffers, 10);
  REQUIRE(averager.apply());
  outer_optimizer->step(model.parameters(), model.gradients());
  // First Nesterov step from zero momentum: p - lr * (g + momentum * g) with g = -delta.
  CHECK(torch::allclose(model.parameters().groups()[0].flat, start + 0.01 * 0.7 * 1.9, 1e-5, 1e-6));
}

TEST_CASE("a model's tensors are views of its flat groups, and a saved archive loads back equal") {
  Model model = built_in("cnn", 3);
  // Writing the flat group changes what the module computes with.
  for (const auto& parameter : model.module().named_parameters()) {
    CHECK(parameter.value.data_ptr() >= model.parameters().groups()[0].flat.data_ptr());
  }
  model.parameters().groups()[0].flat.fill_(0.5);
  for (const auto& parameter : model.module().named_parameters()) {
    CHECK(parameter.value.min().item<float>() == 0.5f);
  }
  Model again = Model::from_archive(model.archive(), "an archive written by filo");
  CHECK(again.layout() == model.layout());
  CHECK(torch::equal(again.parameters().groups()[0].flat, model.parameters().groups()[0].flat));
  // Not a TorchScript archive: refused with the reason.
  CHECK_THROWS_WITH_AS(Model::from_archive("not a zip file", "junk.pt"),
                       doctest::Contains("not a TorchScript archive"), ModelError);
}

TEST_CASE("every built-in model runs forward and backward, in training and evaluation, and saves") {
  struct Case {
    std::string name;
    ModelShape shape;
    Task task;
    torch::Tensor inputs;
    torch::Tensor targets;
  };
  torch::manual_seed(5);
  BuiltInModelOptions gpt_options;
  gpt_options.layers = 2;
  gpt_options.heads = 2;
  gpt_options.width = 32;
  const std::vector<Case> cases{
      {"mlp",
       {{1, 28, 28}, 10, 0},
       Task::kClassification,
       torch::randn({4, 1, 28, 28}),
       torch::randint(0, 10, {4})},
      {"cnn",
       {{1, 28, 28}, 10, 0},
       Task::kClassification,
       torch::randn({4, 1, 28, 28}),
       torch::randint(0, 10, {4})},
      {"resnet18",
       {{3, 32, 32}, 7, 0},
       Task::kClassification,
       torch::randn({2, 3, 32, 32}),
       torch::randint(0, 7, {2})},
      {"gpt",
       {{16}, 0, 50},
       Task::kLanguageModel,
       torch::randint(0, 50, {3, 16}),
       torch::randint(0, 50, {3, 16})},
  };
  for (const auto& test : cases) {
    INFO(test.name);
    Model model(build_model(test.name, test.shape, gpt_options));
    model.train(true);
    const auto outputs = model.forward(test.inputs);
    CHECK_FALSE(
        output_problem(test.task, outputs, test.targets,
                       test.task == Task::kClassification ? test.shape.classes : test.shape.vocabulary));
    model.zero_gradients();
    batch_loss(test.task, outputs, test.targets).loss_sum.backward();
    CHECK(model.gradients().groups()[0].flat.abs().sum().item<double>() > 0.0);
    model.train(false);
    CHECK(model.forward(test.inputs).sizes() == outputs.sizes());
    Model again = Model::from_archive(model.archive(), test.name);
    CHECK(torch::equal(again.parameters().groups()[0].flat, model.parameters().groups()[0].flat));
  }
}

TEST_CASE("the trimmed mean keeps each coordinate within the honest rows' range, weighted by samples") {
  const torch::Tensor rows =
      torch::tensor({1.0f, -2.0f, 3.0f, 2.0f, -1.0f, 5.0f, 1e6f, -1e6f, 4.0f}).view({3, 3});
  const torch::Tensor equal = torch::full({3}, 1.0 / 3, torch::kDouble);
  // Trimming a third from each end of 3 equal rows leaves the median; trimming nothing, the mean.
  CHECK(torch::allclose(trimmed_mean(rows, equal, 0.34), torch::tensor({2.0f, -2.0f, 4.0f})));
  CHECK(torch::allclose(trimmed_mean(rows, equal, 0.0), rows.mean(0)));
  // Weighted: trimming 0.2 of 0.6/0.2/0.2 from each end keeps 0.4 of the heavy row and 0.2 of the next.
  const torch::Tensor heavy = torch::tensor({0.6, 0.2, 0.2}, torch::kDouble);
  const torch::Tensor trimmed = trimmed_mean(rows.narrow(1, 0, 1), heavy, 0.2);
  CHECK(trimmed.item<float>() == doctest::Approx((0.4 * 1.0 + 0.2 * 2.0) / 0.6));
}

TEST_CASE("centered clipping caps a liar's pull at its weight times the radius, and scores its direction") {
  torch::manual_seed(11);
  const torch::Tensor honest = torch::randn({4096});
  torch::Tensor rows = torch::stack({honest + 0.3 * torch::randn({4096}), honest + 0.3 * torch::randn({4096}),
                                     honest + 0.3 * torch::randn({4096}), honest * -1e6});
  const torch::Tensor weights = torch::full({4}, 0.25, torch::kDouble);
  const ClippedCentre clipped = centered_clip(rows, weights);
  const torch::Tensor centre = centre_of(rows, clipped);
  const torch::Tensor honest_mean = rows.narrow(0, 0, 3).mean(0);
  // The mean of all four is a million times off; the clipped centre stays by the honest rows:
  // where the honest pulls balance the liar's clipped one, within (1/4 ÷ 3/4) of the radius.
  CHECK((rows.mean(0) - honest_mean).norm().item<double>() > 1e5);
  CHECK(clipped.radius > 0);
  CHECK(clipped.radius < honest.norm().item<double>());
  CHECK((centre - honest_mean).norm().item<double>() < 0.4 * clipped.radius);
  const std::vector<double> cosines = directions(clipped);
  for (int i = 0; i < 3; ++i) CHECK(cosines[i] > 0.8);
  CHECK(cosines[3] < -0.8);
  // A random row of honest norm points nowhere in particular.
  rows[3] = torch::randn({4096}) * (honest.norm() / std::sqrt(4096.0));
  CHECK(std::abs(directions(centered_clip(rows, weights))[3]) < 0.05);
  // Rows that agree are their own centre, whatever the clipping.
  const torch::Tensor same = honest.expand({3, 4096}).contiguous();
  const torch::Tensor thirds = torch::full({3}, 1.0 / 3, torch::kDouble);
  CHECK(torch::allclose(centre_of(same, centered_clip(same, thirds)), honest, 1e-5, 1e-5));
}
