#pragma once
// What the dataset formats share: label checks, normalisation statistics and content hashing.
// For the loaders in actors/learning; not an interface of its own.
#include <cstdint>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "actors/learning/dataset.hpp"

namespace filo {

/// Larger label values are not class numbers but a damaged or wrong file (a model with 2^24
/// outputs is not what anyone meant).
constexpr std::int64_t kMaxClasses = std::int64_t{1} << 24;

/// Throws std::runtime_error("<path>: <problem>"): how every malformed file is refused.
[[noreturn]] void refuse_file(const std::string& path, const std::string& problem);

/// "[3,28,28]"
std::string shape_text(const std::vector<std::int64_t>& shape);

/// Indices i * count / samples for i < samples (all of them when count <= samples): evenly strided,
/// deterministic, the same wherever computed.
torch::Tensor strided_indices(std::int64_t count, std::int64_t samples);

/// Checks labels (int64 [n]) of `path`: none negative, all below the training set's class count
/// (`train_classes`; 0: these are the training labels, below kMaxClasses). Returns the class count.
std::int64_t check_labels(const std::string& path, const torch::Tensor& labels, std::int64_t train_classes);

struct Statistics {
  std::vector<double> mean, std;
};

/// Channels that normalisation treats apart: C of [C, H, W] samples, else 1.
std::int64_t channels_of(const std::vector<std::int64_t>& sample_shape);

/// Mean and std per channel of the samples `indices` that `gather` returns, divided by `value_max`,
/// in one pass. A channel whose std is 0 gets 1.
Statistics compute_statistics(const Dataset::Gather& gather, const torch::Tensor& indices,
                              const std::vector<std::int64_t>& sample_shape, double value_max);

/// spec.mean and spec.std checked against the inputs they will apply to; empty when not configured.
Statistics configured_statistics(const DatasetSpec& spec, Dataset::InputKind kind,
                                 const std::vector<std::int64_t>& sample_shape);

/// 64-bit FNV-1a over what a fingerprint covers: simple, fast enough (~1 GB/s), and the same
/// everywhere. Not a defence against forged data, only against different data.
class Fnv1a {
 public:
  void bytes(const void* data, std::size_t count);
  void number(std::uint64_t value) { bytes(&value, sizeof value); }
  /// Length first, so that "ab" + "c" and "a" + "bc" differ.
  void text(const std::string& value);
  void shape(const std::vector<std::int64_t>& shape);
  void tensor(const torch::Tensor& tensor);
  /// The first kFingerprintSampleBytes of kFingerprintSamples evenly strided samples of `samples`.
  void sampled(const torch::Tensor& samples);
  std::string hex() const;

 private:
  std::uint64_t hash_ = 14695981039346656037ull;  // FNV's 64-bit offset basis
};

}  // namespace filo
