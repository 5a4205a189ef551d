#include "actors/learning/tokens.hpp"

#include <algorithm>
#include <filesystem>
#include <stdexcept>

namespace filo {
namespace {
constexpr std::int64_t kTokenBytes = 2;  // uint16
constexpr std::int64_t kTokenMask = 0xFFFF;

void check_even(const std::string& path, std::uintmax_t bytes) {
  if (bytes % kTokenBytes != 0) {
    throw std::runtime_error(path + ": truncated token file: " + std::to_string(bytes) +
                             " bytes is not a whole number of uint16 tokens");
  }
}
}  // namespace

TokenFile map_tokens(const std::string& path) {
  auto file = MappedFile::open(path);
  check_even(path, file->size());
  const auto count = static_cast<std::int64_t>(file->size()) / kTokenBytes;
  return {path, file, mapped_tensor(file, 0, {count}, torch::kInt16), count};
}

std::int64_t count_tokens(const std::string& path) {
  std::error_code error;
  const auto bytes = std::filesystem::file_size(path, error);
  if (error) throw std::runtime_error(path + ": cannot read token file: " + error.message());
  check_even(path, bytes);
  return static_cast<std::int64_t>(bytes) / kTokenBytes;
}

torch::Tensor token_windows(const torch::Tensor& tokens, const torch::Tensor& samples, std::int64_t context) {
  const auto offsets = torch::arange(context + 1, torch::kInt64);
  const auto positions = samples.to(torch::kInt64).mul(context).unsqueeze(1) + offsets.unsqueeze(0);
  return tokens.take(positions).to(torch::kInt64).bitwise_and(kTokenMask);
}

std::int64_t max_token(const torch::Tensor& tokens) {
  const auto* ids = static_cast<const std::uint16_t*>(tokens.data_ptr());
  const std::int64_t count = tokens.numel();
  std::uint16_t largest = 0;
  for (std::int64_t i = 0; i < count; ++i) largest = std::max(largest, ids[i]);  // vectorised by the compiler
  return largest;
}

}  // namespace filo
