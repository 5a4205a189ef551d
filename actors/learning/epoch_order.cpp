#include "actors/learning/epoch_order.hpp"

namespace filo {
namespace {
std::uint64_t splitmix64(std::uint64_t& state) {
  std::uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
}  // namespace

torch::Tensor epoch_order(std::uint64_t seed, std::uint64_t epoch, std::int64_t size) {
  auto order = torch::arange(size, torch::kInt64);
  auto* values = order.data_ptr<std::int64_t>();
  std::uint64_t state = seed * 0x100000001b3ull ^ epoch;
  for (std::int64_t i = size - 1; i > 0; --i) {
    const auto j = static_cast<std::int64_t>(splitmix64(state) % static_cast<std::uint64_t>(i + 1));
    std::swap(values[i], values[j]);
  }
  return order;
}

}  // namespace filo
