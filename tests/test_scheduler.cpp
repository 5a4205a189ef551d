// Planning: every sample of an epoch is planned exactly once, whatever the shares and failures.
#include <doctest/doctest.h>

#include <random>
#include <set>

#include "actors/learning/epoch_order.hpp"
#include "actors/norm_bound.hpp"
#include "actors/scheduler.hpp"
#include "actors/trainer.hpp"

using namespace filo;

TEST_CASE("a pool hands out every position once and returned ranges come first") {
  SamplePool pool;
  pool.reset(1000);
  std::vector<int> seen(1000, 0);
  std::vector<msg::SampleRange> failed;
  int round = 0;
  while (!pool.empty()) {
    auto taken = pool.take(128);
    if (++round == 3) {  // a trainer misses round 3: its samples go back
      failed = taken;
      pool.give_back(taken);
      auto retried = pool.take(128);
      CHECK(retried.front().begin == failed.front().begin);
      taken = retried;
    }
    for (const auto& range : taken)
      for (auto position = range.begin; position < range.end; ++position) ++seen[position];
  }
  for (int count : seen) CHECK(count == 1);
  CHECK(pool.remaining() == 0);
}

TEST_CASE("equal shares differ by at most one and sum to the total") {
  for (std::uint64_t total : {0ull, 1ull, 2ull, 127ull, 128ull, 60000ull}) {
    for (std::size_t parts : {1u, 2u, 3u, 7u}) {
      const auto shares = equal_shares(total, parts);
      std::uint64_t sum = 0;
      for (auto share : shares) sum += share;
      CHECK(sum == total);
      CHECK(*std::max_element(shares.begin(), shares.end()) -
                *std::min_element(shares.begin(), shares.end()) <=
            1);
    }
  }
}

TEST_CASE("the epoch order is a permutation that is the same everywhere and differs per epoch") {
  const auto first = epoch_order(7, 1, 5000);
  const auto again = epoch_order(7, 1, 5000);
  const auto second = epoch_order(7, 2, 5000);
  CHECK(torch::equal(first, again));
  CHECK_FALSE(torch::equal(first, second));
  CHECK(torch::equal(std::get<0>(first.sort()), torch::arange(5000, torch::kInt64)));
  // Pinned values: a change here would make nodes of different builds train different samples.
  const auto as_vector = [](const torch::Tensor& order, std::int64_t count) {
    std::vector<std::int64_t> values(order.data_ptr<std::int64_t>(), order.data_ptr<std::int64_t>() + count);
    return values;
  };
  CHECK(as_vector(epoch_order(1, 1, 10), 10) == std::vector<std::int64_t>{3, 6, 9, 7, 8, 2, 0, 4, 1, 5});
  CHECK(as_vector(epoch_order(7, 2, 12), 12) ==
        std::vector<std::int64_t>{10, 5, 4, 2, 9, 6, 3, 0, 7, 1, 8, 11});
  CHECK(as_vector(epoch_order(1, 3, 60000), 6) ==
        std::vector<std::int64_t>{54569, 10947, 52324, 24161, 21976, 40818});
}

TEST_CASE("plan ranges map to dataset indices and ranges outside the epoch are refused") {
  const auto order = torch::arange(100, torch::kInt64).flip(0);
  const auto indices = indices_of(order, {{0, 2}, {50, 51}});
  CHECK(indices.size(0) == 3);
  CHECK(indices[0].item<std::int64_t>() == 99);
  CHECK(indices[2].item<std::int64_t>() == 49);
  CHECK_THROWS(indices_of(order, {{90, 101}}));
}

namespace {
std::map<std::string, Share> by_name(const std::vector<Share>& shares) {
  std::map<std::string, Share> named;
  for (const auto& share : shares) named[share.trainer] = share;
  return named;
}
}  // namespace

TEST_CASE("shares are proportional to speed when transfers cost nothing") {
  const auto shares =
      by_name(proportional_shares({{"fast", 4000, 0}, {"medium", 2000, 0}, {"slow", 1000, 0}}, 700, 0.25));
  CHECK(shares.at("fast").samples == 400);
  CHECK(shares.at("medium").samples == 200);
  CHECK(shares.at("slow").samples == 100);
}

TEST_CASE("a trainer with a costlier transfer gets less so that both finish together") {
  // T = (200 + 1000 x 0.05) / 2000 = 0.125 s: 125 samples for the one without transfer, 75 for the other.
  const auto shares = by_name(proportional_shares({{"near", 1000, 0.0}, {"far", 1000, 0.05}}, 200, 0.0));
  CHECK(shares.at("near").samples == 125);
  CHECK(shares.at("far").samples == 75);
  CHECK(0.0 + 125 / 1000.0 == doctest::Approx(0.05 + 75 / 1000.0));
}

TEST_CASE("a trainer whose transfer is a quarter of its compute or more is left out, with the reason") {
  // Alone among two equal trainers: T = (200 + 1000 x 0.04) / 2000 = 0.12, compute 0.08, ratio 0.5.
  auto shares = by_name(proportional_shares({{"near", 1000, 0.0}, {"far", 1000, 0.04}}, 200, 0.25));
  CHECK(shares.at("far").samples == 0);
  CHECK(shares.at("far").left_out.find("transfer/compute ratio") != std::string::npos);
  CHECK(shares.at("near").samples == 200);
  // The rule is configurable: off, the far trainer works.
  shares = by_name(proportional_shares({{"near", 1000, 0.0}, {"far", 1000, 0.04}}, 200, 0.0));
  CHECK(shares.at("far").samples > 0);
  // The last trainer standing is never left out.
  shares = by_name(proportional_shares({{"far", 1000, 0.5}}, 200, 0.25));
  CHECK(shares.at("far").samples == 200);
}

TEST_CASE("the transfer rule weighs a link against the best one, not the cost every trainer pays") {
  // Small rounds: every trainer spends 10 ms outside its compute of about 33 ms (ratio 0.3).
  // Leaving any of them out would only make the round longer.
  auto shares =
      by_name(proportional_shares({{"a", 3000, 0.010}, {"b", 3000, 0.010}, {"c", 3000, 0.010}}, 300, 0.25));
  for (const auto& name : {"a", "b", "c"}) {
    CHECK(shares.at(name).left_out.empty());
    CHECK(shares.at(name).samples == 100);
  }
  // One link 30 ms worse than the others: T = (300 + 3000 x 0.05) / 9000 = 0.05, so its compute
  // is 10 ms against 30 ms of extra transfer. It is left out; the others share its samples.
  shares = by_name(
      proportional_shares({{"a", 3000, 0.010}, {"b", 3000, 0.010}, {"slow-link", 3000, 0.040}}, 300, 0.25));
  CHECK(shares.at("slow-link").samples == 0);
  CHECK_FALSE(shares.at("slow-link").left_out.empty());
  CHECK(shares.at("a").samples + shares.at("b").samples == 300);
}

TEST_CASE("shares always add up to the round and unknown speeds count as the mean") {
  std::mt19937 random(3);
  for (int trial = 0; trial < 500; ++trial) {
    std::vector<TrainerEstimate> trainers;
    const int count = 1 + static_cast<int>(random() % 6);
    for (int i = 0; i < count; ++i) {
      trainers.push_back(
          {"t" + std::to_string(i), static_cast<double>(random() % 5000), (random() % 10) / 1000.0});
    }
    const std::uint64_t total = 1 + random() % 1000;
    std::uint64_t sum = 0;
    for (const auto& share : proportional_shares(trainers, total, 0.25)) sum += share.samples;
    CHECK(sum == total);
  }
  const auto shares = by_name(proportional_shares({{"known", 3000, 0}, {"new", 0, 0}}, 100, 0.25));
  CHECK(shares.at("new").samples == 50);
}

TEST_CASE("a share larger than the device takes becomes accumulated micro-batches") {
  auto plan = micro_batches_for(50, 64, 16);
  CHECK(plan.micro_batch == 16);
  CHECK(plan.accumulation_steps == 4);
  plan = micro_batches_for(200, 64, 0);
  CHECK(plan.micro_batch == 64);
  CHECK(plan.accumulation_steps == 4);
  plan = micro_batches_for(30, 64, 0);
  CHECK(plan.micro_batch == 30);
  CHECK(plan.accumulation_steps == 1);
}

TEST_CASE("a trainer that slows down gets a clearly smaller share within 3 rounds") {
  SpeedEstimate fast(2000);
  SpeedEstimate slowing(2000);
  for (int round = 0; round < 5; ++round) {
    fast.observe(100, 0.05);
    slowing.observe(100, 0.05);
  }
  const auto before = by_name(proportional_shares(
      {{"fast", fast.samples_per_second(), 0}, {"slowing", slowing.samples_per_second(), 0}}, 200, 0.25));
  CHECK(before.at("slowing").samples == 100);
  for (int round = 0; round < 3; ++round) {
    fast.observe(100, 0.05);
    slowing.observe(100, 0.20);  // now 4x slower
  }
  const auto after = by_name(proportional_shares(
      {{"fast", fast.samples_per_second(), 0}, {"slowing", slowing.samples_per_second(), 0}}, 200, 0.25));
  INFO("slowing trainer's share after 3 slow rounds: " << after.at("slowing").samples);
  CHECK(after.at("slowing").samples < 70);
  CHECK(after.at("slowing").samples + after.at("fast").samples == 200);
}

TEST_CASE("a left-out trainer whose probe finds its link clearly faster is probed again soon") {
  // Kept out by 0.8 s of transfer; the probe measured 0.3 s: the cap was lifted, TCP still recovering.
  CHECK(rounds_before_next_probe(0.8, 0.3) < rounds_before_next_probe(0.8, 0.8));
  CHECK(rounds_before_next_probe(0.8, 0.3) <= 2);
  // As slow as before, or barely faster, or nothing delivered: the long interval.
  CHECK(rounds_before_next_probe(0.8, 0.8) == 20);
  CHECK(rounds_before_next_probe(0.8, 0.7) == 20);
  CHECK(rounds_before_next_probe(0.8, -1.0) == 20);
  CHECK(rounds_before_next_probe(0.0, 0.0) == 20);
}

namespace {
// Rounds 74-79 of an fp16 run on one H200, three trainers sharing the GPU, whose measured speeds
// split each round of 128 about 2:125:1 (norms per sample of the combined contributions).
const std::deque<double> kSkewedFleet{2.125, 8.939, 2.553, 4.202, 33.544, 13.331, 2.8,   16.439, 20.295,
                                      1.963, 1.084, 2.012, 2.811, 18.962, 12.606, 2.432, 4.821};
}  // namespace

TEST_CASE("the norm bound leaves an honest one-sample share alone where speeds split a round 1:125:2") {
  // Round 80 of that run: before the bound took the round's mean share as its measure of a small
  // one, the one-sample share (0.432 per sample, a well-learnt sample) was refused as too small.
  const auto verdict =
      judge_norms({{"a", 0.432, 1, {}}, {"b", 2.916, 125, {}}, {"c", 27.301, 2, {}}}, kSkewedFleet, 8.0);
  CHECK(verdict.refusals.empty());
  CHECK(verdict.withheld.empty());
}

TEST_CASE("the norm bound refuses a free rider's zeros and a scaled gradient, each with its reason") {
  const std::deque<double> fleet{3.1, 2.8, 3.5, 2.9, 3.3, 3.0};
  const auto zeros =
      judge_norms({{"free-rider", 0.0, 43, {}}, {"b", 3.2, 43, {}}, {"c", 2.7, 42, {}}}, fleet, 8.0);
  REQUIRE(zeros.refusals.size() == 1);
  CHECK(zeros.refusals.at("free-rider").find("under 1/8 of the fleet's median") != std::string::npos);
  const auto scaled =
      judge_norms({{"a", 3.0, 43, {}}, {"liar", 3.0e6, 43, {}}, {"c", 2.7, 42, {}}}, fleet, 8.0);
  REQUIRE(scaled.refusals.size() == 1);
  CHECK(scaled.refusals.at("liar").find("over 8x the fleet's median") != std::string::npos);
  // Infinite is refused whatever the history.
  CHECK(judge_norms({{"a", 3.0, 43, {}}, {"b", INFINITY, 43, {}}, {"c", 2.7, 42, {}}}, {}, 8.0)
            .refusals.at("b") == "its norm is not finite");
  // A zero share of 10 samples is not bounded below: too few to tell.
  CHECK(judge_norms({{"few", 0.0, 10, {}}, {"b", 3.2, 59, {}}, {"c", 2.7, 59, {}}}, fleet, 8.0)
            .refusals.empty());
}

TEST_CASE("the norm bound leaves a compressed run's newcomer alone below while its residual fills") {
  // A trainer that joined a topk-q8 run mid-way (test_rounds): its first compressed change against
  // the fleet's, which carry every round's residual.
  const std::deque<double> fleet{0.0151, 0.0148, 0.0160, 0.0149, 0.0155, 0.0150};
  NormCandidate joiner{"joiner", 0.000916, 114, {}};
  joiner.residual_filling = true;
  CHECK(judge_norms(
            {joiner, {"b", 0.0152, 400, {0.015, 0.016, 0.015}}, {"c", 0.0149, 400, {0.015, 0.015, 0.014}}},
            fleet, 8.0)
            .refusals.empty());
  // Settled, the same contribution is a free rider's; and filling or not, too large is refused.
  joiner.residual_filling = false;
  CHECK(judge_norms({joiner, {"b", 0.0152, 400, {}}, {"c", 0.0149, 400, {}}}, fleet, 8.0)
            .refusals.count("joiner"));
  NormCandidate huge{"huge", 15.0, 114, {}};
  huge.residual_filling = true;
  CHECK(
      judge_norms({huge, {"b", 0.0152, 400, {}}, {"c", 0.0149, 400, {}}}, fleet, 8.0).refusals.count("huge"));
}

TEST_CASE("the norm bound holds a trainer to its own record and refuses nothing without a majority") {
  const std::deque<double> fleet{3.1, 2.8, 3.5, 2.9, 3.3, 3.0};
  // 20 per sample is within 8x the fleet's median, but 40x what this trainer sent before.
  const auto own =
      judge_norms({{"a", 3.0, 43, {}}, {"b", 20.0, 43, {0.5, 0.4, 0.6}}, {"c", 2.7, 42, {}}}, fleet, 8.0);
  REQUIRE(own.refusals.size() == 1);
  CHECK(own.refusals.at("b").find("its own recent median") != std::string::npos);
  // Two of three out of bounds: the fleet moved, or liars are the majority; none refused, and why.
  const auto moved =
      judge_norms({{"a", 300.0, 43, {}}, {"b", 400.0, 43, {}}, {"c", 2.7, 42, {}}}, fleet, 8.0);
  CHECK(moved.refusals.empty());
  CHECK(moved.withheld.find("would refuse 2 of 3") != std::string::npos);
  // Under three norms known, the median tells nothing.
  CHECK(judge_norms({{"a", 3.0, 64, {}}, {"b", 3.0e6, 64, {}}}, {}, 8.0).refusals.empty());
}

namespace {
ExchangeRule auto_rule() {
  ExchangeRule rule;
  rule.fraction = 0.1;
  rule.gradient_round_samples = 128;
  rule.micro_batch = 64;
  rule.first_sync_steps = 8;
  rule.compression = true;
  return rule;
}
/// Two trainers at 1000 samples/s each: a gradient round of 128 samples computes for 64 ms.
std::vector<LinkMeasure> fleet_with(double whole_model_seconds, double local_exchange_seconds = 0.0) {
  return {{"trainer@a/cpu", 1000.0, whole_model_seconds, local_exchange_seconds},
          {"trainer@b/cpu", 1000.0, whole_model_seconds / 2, local_exchange_seconds / 2}};
}
}  // namespace

TEST_CASE("auto mode keeps gradient mode while a whole model costs under the fraction of a round's compute") {
  const Exchange gradient{false, false, 8};
  // 2 x 3 ms against 64 ms: 0.09.
  const ExchangeChoice fast = choose_exchange(auto_rule(), gradient, fleet_with(0.003));
  CHECK_FALSE(fast.exchange.local);
  REQUIRE(fast.gradient_fraction);
  CHECK(*fast.gradient_fraction == doctest::Approx(0.09375));
  // 2 x 4 ms: 0.125, over 0.1: local-sgd with the run's compression, named after the slowest link.
  const ExchangeChoice slow = choose_exchange(auto_rule(), gradient, fleet_with(0.004));
  CHECK(slow.exchange.local);
  CHECK(slow.exchange.compressed);
  CHECK(slow.exchange.sync_steps == 8);
  CHECK(slow.reason.find("trainer@a/cpu") != std::string::npos);
  CHECK(slow.exchange.describe("topk-q8") == "local-sgd topk-q8 x8");
}

TEST_CASE(
    "auto mode goes back to gradient mode only well under the fraction, and keeps its mode when blind") {
  const Exchange local{true, true, 8};
  // 0.094: under the fraction, but not under 0.7 of it: no flapping near the threshold.
  CHECK(choose_exchange(auto_rule(), local, fleet_with(0.003)).exchange.local);
  // 2 x 2 ms against 64 ms: 0.0625.
  const ExchangeChoice back = choose_exchange(auto_rule(), local, fleet_with(0.002));
  CHECK_FALSE(back.exchange.local);
  CHECK_FALSE(back.exchange.compressed);
  // Nothing measured yet, or no speed: the mode it has.
  CHECK(choose_exchange(auto_rule(), local, fleet_with(0.0)).exchange == local);
  CHECK(choose_exchange(auto_rule(), Exchange{false, false, 8}, fleet_with(0.0)).exchange ==
        Exchange{false, false, 8});
  CHECK(choose_exchange(auto_rule(), local, {}).exchange == local);
}

TEST_CASE("sync_steps = auto lengthens local-sgd rounds until their exchange fits, and shortens them again") {
  ExchangeRule rule = auto_rule();
  rule.sync_steps_auto = true;
  const Exchange local{true, true, 8};
  // A local round: 2 trainers x 8 steps x 64 samples at 2000 samples/s = 512 ms. An exchange of
  // 200 ms is 0.39 of it: 8 x 3.9 = 31 steps, to the next power of two.
  const ExchangeChoice longer = choose_exchange(rule, local, fleet_with(1.0, 0.2));
  CHECK(longer.exchange.local);
  CHECK(longer.exchange.sync_steps == 32);
  REQUIRE(longer.local_fraction);
  CHECK(*longer.local_fraction == doctest::Approx(0.390625));
  // Never past 64.
  CHECK(choose_exchange(rule, local, fleet_with(1.0, 5.0)).exchange.sync_steps == kMaxAutoSyncSteps);
  // Under a quarter of the fraction: half as many steps (more rounds learn more per sample).
  CHECK(choose_exchange(rule, local, fleet_with(1.0, 0.01)).exchange.sync_steps == 4);
  // Between: as it is.
  CHECK(choose_exchange(rule, local, fleet_with(1.0, 0.04)).exchange.sync_steps == 8);
  // A fixed sync interval stays fixed.
  CHECK(choose_exchange(auto_rule(), local, fleet_with(1.0, 0.2)).exchange.sync_steps == 8);
  // local-sgd with sync_steps = "auto" never goes to gradient mode.
  rule.allow_gradient = false;
  CHECK(choose_exchange(rule, local, fleet_with(0.0001, 0.04)).exchange.local);
}
