// Planning: every sample of an epoch is planned exactly once, whatever the shares and failures.
#include <doctest/doctest.h>

#include <set>

#include "actors/learning/epoch_order.hpp"
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
      CHECK(*std::max_element(shares.begin(), shares.end()) - *std::min_element(shares.begin(), shares.end()) <= 1);
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
  const auto pinned = epoch_order(1, 1, 10);
  CHECK(pinned.sum().item<std::int64_t>() == 45);
}

TEST_CASE("plan ranges map to dataset indices and ranges outside the epoch are refused") {
  const auto order = torch::arange(100, torch::kInt64).flip(0);
  const auto indices = indices_of(order, {{0, 2}, {50, 51}});
  CHECK(indices.size(0) == 3);
  CHECK(indices[0].item<std::int64_t>() == 99);
  CHECK(indices[2].item<std::int64_t>() == 49);
  CHECK_THROWS(indices_of(order, {{90, 101}}));
}
