#include "actors/learning/dataset_support.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <stdexcept>

namespace filo {
namespace {
// Samples gathered at once while computing statistics: bounds the float64 scratch memory.
constexpr std::int64_t kStatisticsChunk = 1024;
constexpr std::uint64_t kFnvPrime = 1099511628211ull;

// Sums and sums of squares per channel of uint8 samples [n, channels, ...], exactly in integers: a
// plain loop runs ~20x faster than converting to float64 for LibTorch's reductions.
void accumulate_bytes(const torch::Tensor& samples, std::int64_t channels, std::vector<double>& sums,
                      std::vector<double>& squares) {
  const auto contiguous = samples.contiguous();
  const std::uint8_t* values = contiguous.data_ptr<std::uint8_t>();
  const std::int64_t plane = contiguous.numel() / std::max<std::int64_t>(contiguous.size(0) * channels, 1);
  for (std::int64_t channel = 0; channel < channels; ++channel) {
    std::uint64_t sum = 0, square = 0;
    for (std::int64_t sample = 0; sample < contiguous.size(0); ++sample) {
      const std::uint8_t* pixel = values + (sample * channels + channel) * plane;
      for (std::int64_t i = 0; i < plane; ++i) {
        sum += pixel[i];
        square += std::uint64_t{pixel[i]} * pixel[i];
      }
    }
    sums[static_cast<std::size_t>(channel)] += static_cast<double>(sum);
    squares[static_cast<std::size_t>(channel)] += static_cast<double>(square);
  }
}
}  // namespace

void refuse_file(const std::string& path, const std::string& problem) {
  throw std::runtime_error(path + ": " + problem);
}

std::string shape_text(const std::vector<std::int64_t>& shape) {
  std::string text = "[";
  for (std::size_t axis = 0; axis < shape.size(); ++axis)
    text += (axis ? "," : "") + std::to_string(shape[axis]);
  return text + "]";
}

torch::Tensor strided_indices(std::int64_t count, std::int64_t samples) {
  const std::int64_t taken = std::min(count, samples);
  return torch::arange(taken, torch::kInt64).mul(count).div(taken, "floor");
}

std::int64_t check_labels(const std::string& path, const torch::Tensor& labels, std::int64_t train_classes) {
  if (labels.numel() == 0) return train_classes;
  const auto smallest = labels.min().item<std::int64_t>();
  if (smallest < 0) {
    const auto at = labels.lt(0).nonzero()[0][0].item<std::int64_t>();
    refuse_file(path,
                "label " + std::to_string(smallest) + " at index " + std::to_string(at) + " is negative");
  }
  const auto largest = labels.max().item<std::int64_t>();
  const std::int64_t bound = train_classes > 0 ? train_classes : kMaxClasses;
  if (largest >= bound) {
    const auto at = labels.ge(bound).nonzero()[0][0].item<std::int64_t>();
    refuse_file(path, "label " + std::to_string(labels[at].item<std::int64_t>()) + " at index " +
                          std::to_string(at) + " is out of range: " +
                          (train_classes > 0
                               ? "the training labels have " + std::to_string(train_classes) + " classes"
                               : "labels must be below " + std::to_string(kMaxClasses)));
  }
  return train_classes > 0 ? train_classes : largest + 1;
}

std::int64_t channels_of(const std::vector<std::int64_t>& sample_shape) {
  return sample_shape.size() == 3 ? sample_shape[0] : 1;
}

Statistics compute_statistics(const Dataset::Gather& gather, const torch::Tensor& indices,
                              const std::vector<std::int64_t>& sample_shape, double value_max) {
  const std::int64_t channels = channels_of(sample_shape);
  std::vector<double> sums(static_cast<std::size_t>(channels)), squares(static_cast<std::size_t>(channels));
  std::int64_t values_per_channel = 0;
  for (std::int64_t start = 0; start < indices.size(0); start += kStatisticsChunk) {
    const auto chunk = indices.slice(0, start, std::min(indices.size(0), start + kStatisticsChunk));
    const auto samples = gather(chunk);
    values_per_channel += samples.numel() / channels;
    if (samples.scalar_type() == torch::kUInt8) {
      accumulate_bytes(samples, channels, sums, squares);
      continue;
    }
    const auto values = samples.to(torch::kFloat64).reshape({chunk.size(0), channels, -1});
    const auto chunk_sums = values.sum(std::vector<std::int64_t>{0, 2});
    const auto chunk_squares = values.square().sum(std::vector<std::int64_t>{0, 2});
    for (std::int64_t channel = 0; channel < channels; ++channel) {
      sums[static_cast<std::size_t>(channel)] += chunk_sums[channel].item<double>();
      squares[static_cast<std::size_t>(channel)] += chunk_squares[channel].item<double>();
    }
  }
  Statistics statistics;
  const double count = static_cast<double>(std::max<std::int64_t>(values_per_channel, 1));
  for (std::size_t channel = 0; channel < sums.size(); ++channel) {
    const double mean = sums[channel] / count;
    const double variance = std::max(0.0, squares[channel] / count - mean * mean);
    // Dividing after the sums keeps them exact integers for integer images.
    statistics.mean.push_back(mean / value_max);
    const double deviation = std::sqrt(variance) / value_max;
    statistics.std.push_back(deviation > 0 ? deviation : 1.0);  // a constant channel is left unscaled
  }
  return statistics;
}

Statistics configured_statistics(const DatasetSpec& spec, Dataset::InputKind kind,
                                 const std::vector<std::int64_t>& sample_shape) {
  if (spec.mean.size() != spec.std.size()) {
    throw std::runtime_error("data.mean has " + std::to_string(spec.mean.size()) +
                             " values but data.std has " + std::to_string(spec.std.size()));
  }
  if (spec.mean.empty()) return {};
  if (kind != Dataset::InputKind::kImages && kind != Dataset::InputKind::kFloats) {
    throw std::runtime_error(
        "data.mean and data.std apply to image and float inputs, not to integer ids or tokens");
  }
  const auto channels = static_cast<std::size_t>(channels_of(sample_shape));
  if (spec.mean.size() != 1 && spec.mean.size() != channels) {
    throw std::runtime_error("data.mean and data.std have " + std::to_string(spec.mean.size()) +
                             " values; samples of shape " + shape_text(sample_shape) + " have " +
                             std::to_string(channels) + " channels (give one value or one per channel)");
  }
  for (const double deviation : spec.std) {
    if (!(deviation > 0))
      throw std::runtime_error("data.std values must be positive, not " + std::to_string(deviation));
  }
  return {spec.mean, spec.std};
}

void Fnv1a::bytes(const void* data, std::size_t count) {
  const auto* byte = static_cast<const unsigned char*>(data);
  for (std::size_t i = 0; i < count; ++i) hash_ = (hash_ ^ byte[i]) * kFnvPrime;
}

void Fnv1a::text(const std::string& value) {
  number(value.size());
  bytes(value.data(), value.size());
}

void Fnv1a::shape(const std::vector<std::int64_t>& shape) {
  number(shape.size());
  for (const auto extent : shape) number(static_cast<std::uint64_t>(extent));
}

void Fnv1a::tensor(const torch::Tensor& tensor) {
  const auto contiguous = tensor.contiguous();
  bytes(contiguous.data_ptr(), contiguous.nbytes());
}

void Fnv1a::sampled(const torch::Tensor& samples) {
  const auto indices = strided_indices(samples.size(0), kFingerprintSamples);
  for (std::int64_t i = 0; i < indices.size(0); ++i) {
    const auto flat = samples[indices[i].item<std::int64_t>()].contiguous().view(-1);
    const auto bytes_taken = std::min<std::int64_t>(
        flat.numel() * static_cast<std::int64_t>(flat.element_size()), kFingerprintSampleBytes);
    bytes(flat.data_ptr(), static_cast<std::size_t>(bytes_taken));
  }
}

std::string Fnv1a::hex() const {
  char text[17];
  std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(hash_));
  return text;
}

}  // namespace filo
