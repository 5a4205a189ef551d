// Compressed local-sgd deltas: chunked top-k, 8-bit codes, error feedback, and sparse sums.
#include <doctest/doctest.h>

#include "actors/learning/compression.hpp"
#include "actors/learning/model.hpp"
#include "actors/learning/models.hpp"

using namespace filo;

namespace {
FlatTensors parameters_like(std::int64_t numel) {
  return FlatTensors::adopt({{"w", torch::zeros({numel})}}, torch::kCPU).zeros_like();
}

torch::Tensor densified(const SparseGroup& sparse) {
  torch::Tensor dense = torch::zeros({sparse.numel});
  add_sparse(dense, sparse);
  return dense;
}
}  // namespace

TEST_CASE("chunked top-k keeps each chunk's largest values, and 8-bit codes are within half a step") {
  torch::manual_seed(1);
  const torch::Tensor dense = torch::randn({10000});
  CompressionOptions options{CompressionKind::kTopK, 0.05, 1000};
  const SparseGroup sparse = compress(dense, options);
  CHECK(sparse.indices.numel() == 10 * 50);
  CHECK_FALSE(sparse_problem(sparse, dense.numel()).has_value());
  for (std::int64_t chunk = 0; chunk < 10; ++chunk) {
    const torch::Tensor part = dense.slice(0, chunk * 1000, (chunk + 1) * 1000).abs();
    const double threshold = std::get<0>(part.topk(50)).min().item<double>();
    const torch::Tensor kept = sparse.indices.slice(0, chunk * 50, (chunk + 1) * 50).to(torch::kInt64);
    CHECK(kept.min().item<std::int64_t>() >= chunk * 1000);
    CHECK(kept.max().item<std::int64_t>() < (chunk + 1) * 1000);
    CHECK(dense.index_select(0, kept).abs().min().item<double>() >= threshold);
  }
  CHECK(torch::equal(sparse.decoded(), dense.index_select(0, sparse.indices.to(torch::kInt64))));

  options.kind = CompressionKind::kTopKQ8;
  const SparseGroup coded = compress(dense, options);
  CHECK((coded.values.scalar_type() == torch::kInt8));
  CHECK(coded.scales.numel() == 10);
  const torch::Tensor exact = dense.index_select(0, coded.indices.to(torch::kInt64));
  const torch::Tensor step =
      coded.scales.index_select(0, torch::floor_divide(coded.indices.to(torch::kInt64), 1000));
  CHECK(((coded.decoded() - exact).abs() <= step / 2 + 1e-7).all().item<bool>());
  // A group that is not a whole number of chunks: nothing past its end is ever named.
  const SparseGroup ragged = compress(torch::randn({2500}), options);
  CHECK(ragged.indices.max().item<std::int32_t>() < 2500);
  CHECK_FALSE(sparse_problem(ragged, 2500).has_value());
}

TEST_CASE("error feedback loses nothing: over many rounds what was sent plus the residual is every change") {
  for (const auto kind : {CompressionKind::kTopK, CompressionKind::kTopKQ8}) {
    CAPTURE(compression_name(kind));
    torch::manual_seed(2);
    FlatTensors change = parameters_like(5000);
    ErrorFeedback feedback(change);
    const CompressionOptions options{kind, 0.01, 512};
    torch::Tensor changes = torch::zeros({5000}, torch::kFloat64);
    torch::Tensor sent = torch::zeros({5000}, torch::kFloat64);
    for (int round = 0; round < 200; ++round) {
      change.groups()[0].flat.copy_(torch::randn({5000}) * (1.0 + round % 7));
      changes += change.groups()[0].flat.to(torch::kFloat64);
      for (const auto& sparse : feedback.compress(change, options))
        sent += densified(sparse).to(torch::kFloat64);
    }
    const torch::Tensor residual = feedback.residual().groups()[0].flat.to(torch::kFloat64);
    const double error = (sent + residual - changes).abs().max().item<double>();
    INFO("largest difference " << error << " of a sum reaching " << changes.abs().max().item<double>());
    CHECK(error < 1e-3);
    // And it is not all residual: most of the change was sent.
    CHECK(residual.abs().sum().item<double>() < 0.5 * changes.abs().sum().item<double>());
  }
}

TEST_CASE("sparse contributions add into the dense sums as their densified forms do, weighted by samples") {
  torch::manual_seed(3);
  const CompressionOptions options{CompressionKind::kTopKQ8, 0.02, 256};
  torch::Tensor sums = torch::zeros({3000});
  torch::Tensor expected = torch::zeros({3000}, torch::kFloat64);
  const double samples[] = {70, 18, 8};
  for (double weight : samples) {
    const SparseGroup sparse = compress(torch::randn({3000}), options);
    add_sparse(sums, sparse, weight);
    expected += densified(sparse).to(torch::kFloat64) * weight;
  }
  CHECK((sums.to(torch::kFloat64) - expected).abs().max().item<double>() < 1e-4);
}

TEST_CASE(
    "a sparse group with out-of-range, repeated or uncounted indices, or bad values, is refused with why") {
  const SparseGroup good =
      compress(torch::randn({1000}), CompressionOptions{CompressionKind::kTopK, 0.1, 100});
  CHECK_FALSE(sparse_problem(good, 1000).has_value());
  SparseGroup outside = good;
  outside.indices = good.indices.clone();
  outside.indices[0] = 1000;
  CHECK(sparse_problem(outside, 1000).value().find("outside") != std::string::npos);
  outside.indices[0] = -1;
  CHECK(sparse_problem(outside, 1000).value().find("outside") != std::string::npos);
  SparseGroup repeated = good;
  repeated.indices = good.indices.clone();
  repeated.indices[1] = repeated.indices[0];
  CHECK(sparse_problem(repeated, 1000).value().find("repeated") != std::string::npos);
  SparseGroup uneven = good;
  uneven.values = good.values.slice(0, 1);
  CHECK(sparse_problem(uneven, 1000).value().find("indices but") != std::string::npos);
  SparseGroup infinite = good;
  infinite.values = good.values.clone();
  infinite.values[3] = std::numeric_limits<float>::infinity();
  CHECK(sparse_problem(infinite, 1000).value().find("NaN or infinity") != std::string::npos);
  SparseGroup wide = good;
  wide.indices = good.indices.to(torch::kInt64);
  CHECK(sparse_problem(wide, 1000).value().find("int32") != std::string::npos);
}

TEST_CASE("sparse groups cross the wire by name and come back checked against the model's layout") {
  torch::manual_seed(4);
  Model model(build_model("mlp", ModelShape{{1, 28, 28}, 10, 0}));
  const CompressionOptions options{CompressionKind::kTopKQ8, 0.01, 1024};
  std::vector<SparseGroup> groups;
  std::vector<std::string> names;
  for (const auto& group : model.parameters().groups()) {
    groups.push_back(compress(torch::randn({group.flat.numel()}), options));
    names.push_back(group.wire_name());
  }
  std::vector<zmq::message_t> frames;
  const auto metas = append_tensor_frames(sparse_wire(groups, names), frames);
  auto received =
      read_tensor_frames(metas, std::make_shared<std::vector<zmq::message_t>>(std::move(frames)), 0);
  REQUIRE(received);
  auto back = sparse_from_wire(received.value(), model.parameters(), options.chunk);
  REQUIRE_MESSAGE(back, back.error());
  REQUIRE(back.value().size() == groups.size());
  CHECK(torch::equal(back.value()[0].decoded(), groups[0].decoded()));
  // Against another layout, or with a piece missing, it is refused.
  Model other(build_model("cnn", ModelShape{{1, 28, 28}, 10, 0}));
  CHECK_FALSE(sparse_from_wire(received.value(), other.parameters(), options.chunk));
  std::vector<ReceivedTensor> short_list(received.value().begin(), received.value().end() - 1);
  CHECK_FALSE(sparse_from_wire(short_list, model.parameters(), options.chunk));
}

TEST_CASE("a compressed downlink keeps a replica bit for bit the aggregator's, and loses no step's change") {
  torch::manual_seed(7);
  const CompressionOptions options{CompressionKind::kTopKQ8, 0.02, 512};
  FlatTensors parameters = FlatTensors::adopt({{"w", torch::randn({5000})}}, torch::kCPU);
  FlatTensors replica = parameters.zeros_like();
  replica.copy_from(parameters);
  const torch::Tensor start = parameters.groups()[0].flat.clone();
  torch::Tensor stepped = torch::zeros({5000});
  CompressedDownlink downlink(parameters, options);
  for (int step = 0; step < 30; ++step) {
    // An optimizer's step: dense, of every size.
    const torch::Tensor change = torch::randn({5000}) * (step % 3 == 0 ? 1.0 : 1e-3);
    parameters.groups()[0].flat.add_(change);
    stepped += change;
    const std::vector<SparseGroup> sent = downlink.advance(parameters);
    REQUIRE(sent.size() == 1);
    CHECK((sent[0].values.scalar_type() == torch::kInt8));
    CHECK(sent[0].indices.numel() < 5000 / 10);
    // Through the wire's own types: int8 codes and fp32 scales, decoded on the replica's side.
    apply_sparse(replica, sent);
    CHECK(torch::equal(replica.groups()[0].flat, parameters.groups()[0].flat));
    CHECK(torch::equal(downlink.base().groups()[0].flat, parameters.groups()[0].flat));
    CHECK(replica.fingerprint() == parameters.fingerprint());
  }
  // What reached the replicas plus what is still held back is every step's change.
  const torch::Tensor reached = parameters.groups()[0].flat - start;
  CHECK(torch::allclose(reached + downlink.residual().groups()[0].flat, stepped, 1e-4, 1e-4));
  // A replica one value off has another fingerprint.
  replica.groups()[0].flat[1234] += 1e-6f;
  CHECK(replica.fingerprint() != parameters.fingerprint());
}
