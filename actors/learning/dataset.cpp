#include "actors/learning/dataset.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <optional>
#include <stdexcept>

#include "actors/learning/dataset_support.hpp"
#include "actors/learning/idx.hpp"
#include "actors/learning/image_folder.hpp"
#include "actors/learning/npy.hpp"
#include "actors/learning/tokens.hpp"
#include "runtime/config.hpp"

namespace filo {
namespace {

// Token files up to this size are scanned once for their largest id; beyond, the bound is 65536.
constexpr std::uintmax_t kVocabularyScanBytes = std::uintmax_t{256} << 20;
constexpr std::int64_t kUInt16Values = 65536;
constexpr double kUInt8Max = 255.0;
constexpr double kUInt16Max = 65535.0;
constexpr std::uint64_t kFingerprintVersion = 1;

std::int64_t limited(std::int64_t count, std::int64_t limit) {
  return limit > 0 ? std::min(count, limit) : count;
}

// ---- formats ------------------------------------------------------------------------------------

std::string split_name(Split split) {
  return split == Split::kTrain ? "train" : "test";
}

// Applies the settings every format shares to a loader's parts.
Dataset assemble(const DatasetSpec& spec, Dataset::Parts parts,
                 const std::function<Statistics()>& train_statistics) {
  if (spec.limit > 0 && spec.limit < parts.size) {
    parts.size = spec.limit;
    if (parts.targets.defined()) parts.targets = parts.targets.slice(0, 0, spec.limit);
  }
  Statistics statistics = configured_statistics(spec, parts.kind, parts.sample_shape);
  if (statistics.mean.empty() && parts.kind == Dataset::InputKind::kImages) statistics = train_statistics();
  parts.mean = std::move(statistics.mean);
  parts.std = std::move(statistics.std);
  parts.augment = spec.augment;
  parts.seed = spec.seed;
  return Dataset(std::move(parts));
}

Dataset::Gather gather_rows(torch::Tensor samples) {
  return [samples = std::move(samples)](const torch::Tensor& indices) {
    return samples.index_select(0, indices);
  };
}

// idx: uint8 images [n, rows, columns], given a channel axis.
Dataset load_idx(const DatasetSpec& spec, const std::string& directory, Split split) {
  const IdxFiles files = idx_files(spec.name, directory, split);
  const IdxFiles train_files = idx_files(spec.name, directory, Split::kTrain);
  const auto labels = read_idx_labels(files.labels).to(torch::kInt64);
  // All of them, even under a limit: for the training split the statistics need them anyway.
  const auto all_images = read_idx_images(files.images);
  if (all_images.size(0) != labels.size(0)) {
    refuse_file(files.images, "has " + std::to_string(all_images.size(0)) + " images but " + files.labels +
                                  " has " + std::to_string(labels.size(0)) + " labels");
  }
  const auto images = all_images.slice(0, 0, limited(all_images.size(0), spec.limit));
  std::int64_t classes = 0;
  if (split == Split::kTrain) {
    classes = check_labels(files.labels, labels, 0);
  } else {
    classes = check_labels(train_files.labels, read_idx_labels(train_files.labels).to(torch::kInt64), 0);
    check_labels(files.labels, labels, classes);
  }
  Dataset::Parts parts;
  parts.kind = Dataset::InputKind::kImages;
  parts.size = images.size(0);
  parts.sample_shape = {1, images.size(1), images.size(2)};
  parts.targets = labels.slice(0, 0, images.size(0));
  parts.num_classes = classes;
  parts.value_max = kUInt8Max;
  parts.gather = gather_rows(images.unsqueeze(1));
  const auto train_statistics = [&, sample_shape = parts.sample_shape, value_max = parts.value_max] {
    const auto train_images = split == Split::kTrain ? all_images : read_idx_images(train_files.images);
    if (train_images.size(1) != images.size(1) || train_images.size(2) != images.size(2)) {
      refuse_file(files.images, "holds " + std::to_string(images.size(1)) + "x" +
                                    std::to_string(images.size(2)) + " images but " + train_files.images +
                                    " holds " + std::to_string(train_images.size(1)) + "x" +
                                    std::to_string(train_images.size(2)));
    }
    return compute_statistics(gather_rows(train_images.unsqueeze(1)),
                              strided_indices(train_images.size(0), kStatisticsSamples), sample_shape,
                              value_max);
  };
  return assemble(spec, std::move(parts), train_statistics);
}

// numpy: <split>_inputs.npy and <split>_labels.npy, mapped.
struct NumpyFiles {
  std::string inputs;
  std::string labels;
};

NumpyFiles numpy_files(const std::string& directory, Split split) {
  NumpyFiles files{directory + "/" + split_name(split) + "_inputs.npy",
                   directory + "/" + split_name(split) + "_labels.npy"};
  for (const auto& path : {files.inputs, files.labels}) {
    if (!std::filesystem::exists(path)) {
      refuse_file(
          path,
          "not found (a numpy dataset is a directory of train_inputs.npy, train_labels.npy, test_inputs.npy, "
          "test_labels.npy)");
    }
  }
  return files;
}

Dataset::InputKind kind_of(const NpyHeader& header) {
  if (header.kind == 'u' && header.item_bytes <= 2) return Dataset::InputKind::kImages;
  if (header.kind == 'f' || header.kind == 'b') return Dataset::InputKind::kFloats;
  return Dataset::InputKind::kIntegers;
}

double value_max_of(const NpyHeader& header) {
  if (kind_of(header) != Dataset::InputKind::kImages) return 1.0;
  return header.item_bytes == 1 ? kUInt8Max : kUInt16Max;
}

std::vector<std::int64_t> sample_shape_of(const NpyArray& inputs) {
  if (inputs.header.shape.empty())
    refuse_file(inputs.path, "a 0-d array holds no samples; expected shape [n, ...]");
  return {inputs.header.shape.begin() + 1, inputs.header.shape.end()};
}

// int64 [n] labels of a mapped labels file, checked against the inputs beside it.
torch::Tensor numpy_labels(const NpyArray& labels, const NpyArray& inputs) {
  if (labels.header.kind != 'i' && labels.header.kind != 'u') {
    refuse_file(labels.path,
                "labels of dtype '" + labels.header.descr + "'; labels must be integers (class numbers)");
  }
  if (labels.header.shape.size() != 1) {
    refuse_file(labels.path, "labels of shape " + shape_text(labels.header.shape) +
                                 "; expected one label per sample, [n]");
  }
  if (labels.header.shape[0] != inputs.header.shape[0]) {
    refuse_file(labels.path, "holds " + std::to_string(labels.header.shape[0]) + " labels but " +
                                 inputs.path + " holds " + std::to_string(inputs.header.shape[0]) +
                                 " samples");
  }
  return widen_unsigned(labels.header, labels.data).to(torch::kInt64);
}

Dataset::Gather gather_npy(const NpyArray& array) {
  return [data = array.data, header = array.header](const torch::Tensor& indices) {
    return widen_unsigned(header, data.index_select(0, indices));
  };
}

Dataset load_numpy(const DatasetSpec& spec, const std::string& directory, Split split) {
  const NumpyFiles files = numpy_files(directory, split);
  const NpyArray inputs = map_npy(files.inputs);
  const auto sample_shape = sample_shape_of(inputs);
  if (split == Split::kTrain && inputs.header.shape[0] == 0) refuse_file(files.inputs, "holds no samples");
  const NpyArray labels_file = map_npy(files.labels);
  const auto labels = numpy_labels(labels_file, inputs);
  // The training split's inputs and labels: the test split is checked and normalised against them.
  std::optional<NpyArray> train_inputs;
  std::int64_t classes = 0;
  if (split == Split::kTrain) {
    classes = check_labels(files.labels, labels, 0);
  } else {
    const NumpyFiles train_files = numpy_files(directory, Split::kTrain);
    train_inputs = map_npy(train_files.inputs);
    classes = check_labels(train_files.labels, numpy_labels(map_npy(train_files.labels), *train_inputs), 0);
    check_labels(files.labels, labels, classes);
    const NpyHeader& train = train_inputs->header;
    if (sample_shape_of(*train_inputs) != sample_shape || train.kind != inputs.header.kind ||
        train.item_bytes != inputs.header.item_bytes) {
      refuse_file(files.inputs, "samples of shape " + shape_text(sample_shape) + " and dtype '" +
                                    inputs.header.descr + "' but " + train_files.inputs + " holds " +
                                    shape_text(sample_shape_of(*train_inputs)) + " of '" + train.descr + "'");
    }
  }
  Dataset::Parts parts;
  parts.kind = kind_of(inputs.header);
  parts.size = inputs.header.shape[0];
  parts.sample_shape = sample_shape;
  parts.targets = labels;
  parts.num_classes = classes;
  parts.value_max = value_max_of(inputs.header);
  parts.gather = gather_npy(inputs);
  const auto train_statistics = [&] {
    const NpyArray& train = train_inputs ? *train_inputs : inputs;
    return compute_statistics(gather_npy(train), strided_indices(train.header.shape[0], kStatisticsSamples),
                              sample_shape, value_max_of(train.header));
  };
  return assemble(spec, std::move(parts), train_statistics);
}

// image_folder: <path>/train/<class>/..., <path>/test/<class>/... (or val/).
std::string image_root(const std::string& directory, Split split) {
  if (split == Split::kTrain) return directory + "/train";
  const std::string test = directory + "/test";
  const std::string val = directory + "/val";
  return !std::filesystem::is_directory(test) && std::filesystem::is_directory(val) ? val : test;
}

void check_image_size(const DatasetSpec& spec) {
  if (spec.image_size <= 0)
    throw std::runtime_error("data.image_size must be set (> 0) for data.format = image_folder");
}

Dataset::Gather gather_decoded(std::shared_ptr<const std::vector<std::string>> files, std::int64_t size) {
  return [files = std::move(files), size](const torch::Tensor& indices) {
    return decode_images(*files, indices, size);
  };
}

Dataset load_image_folder(const DatasetSpec& spec, const std::string& directory, Split split) {
  check_image_size(spec);
  const ImageFolderListing train_listing = list_image_folder(image_root(directory, Split::kTrain));
  const ImageFolderListing listing =
      split == Split::kTrain ? train_listing
                             : list_image_folder(image_root(directory, split), train_listing.classes);
  const auto stored = static_cast<std::int64_t>(listing.files.size());
  const std::int64_t count = limited(stored, spec.limit);
  const std::int64_t side = spec.image_size;
  const auto files =
      std::make_shared<const std::vector<std::string>>(listing.files.begin(), listing.files.begin() + count);
  Dataset::Parts parts;
  parts.kind = Dataset::InputKind::kImages;
  parts.size = count;
  parts.sample_shape = {3, side, side};
  parts.targets = torch::tensor(
      std::vector<std::int64_t>(listing.labels.begin(), listing.labels.begin() + count), torch::kInt64);
  parts.num_classes = static_cast<std::int64_t>(train_listing.classes.size());
  parts.value_max = kUInt8Max;
  // Decoded once, the set takes count x 3 x side x side bytes (CIFAR-10's 50000 at 32: 154 MB); beyond
  // kDecodeAtLoadBytes (ImageNet's 1.28 M at 224 would take 193 GB) each batch decodes its own images.
  const bool decode_at_load = count * 3 * side * side <= kDecodeAtLoadBytes;
  parts.gather = decode_at_load
                     ? gather_rows(decode_images(*files, torch::arange(count, torch::kInt64), side))
                     : gather_decoded(files, side);
  const auto train_statistics = [&, sample_shape = parts.sample_shape, value_max = parts.value_max,
                                 gather = parts.gather] {
    const auto train_count = static_cast<std::int64_t>(train_listing.files.size());
    const auto indices = strided_indices(train_count, kImageStatisticsSamples);
    const bool have_training_set = split == Split::kTrain && count == train_count && decode_at_load;
    const auto train_gather =
        have_training_set
            ? gather
            : gather_decoded(std::make_shared<const std::vector<std::string>>(train_listing.files), side);
    return compute_statistics(train_gather, indices, sample_shape, value_max);
  };
  return assemble(spec, std::move(parts), train_statistics);
}

// tokens: <path>/train.bin and <path>/val.bin.
std::string token_path(const std::string& directory, Split split) {
  return directory + (split == Split::kTrain ? "/train.bin" : "/val.bin");
}

void check_context(const DatasetSpec& spec) {
  if (spec.context <= 0) throw std::runtime_error("data.context must be set (> 0) for data.format = tokens");
}

std::int64_t token_windows_in(const std::string& path, std::int64_t tokens, std::int64_t context) {
  if (tokens < context + 1) {
    refuse_file(path, "holds " + std::to_string(tokens) + " tokens, fewer than data.context + 1 = " +
                          std::to_string(context + 1) + " (one window and its next token)");
  }
  return (tokens - 1) / context;
}

// train.bin's largest id + 1, or 65536 without reading a file larger than kVocabularyScanBytes.
std::int64_t vocabulary_bound(const std::string& directory) {
  const std::string path = token_path(directory, Split::kTrain);
  if (count_tokens(path) * 2 > static_cast<std::int64_t>(kVocabularyScanBytes)) return kUInt16Values;
  return max_token(map_tokens(path).tokens) + 1;
}

Dataset load_tokens(const DatasetSpec& spec, const std::string& directory, Split split) {
  check_context(spec);
  const std::string path = token_path(directory, split);
  const TokenFile file = map_tokens(path);
  const std::int64_t windows = token_windows_in(path, file.count, spec.context);
  const std::int64_t vocabulary = vocabulary_bound(directory);
  if (split == Split::kTest && vocabulary < kUInt16Values &&
      file.count * 2 <= static_cast<std::int64_t>(kVocabularyScanBytes)) {
    const std::int64_t largest = max_token(file.tokens);
    if (largest >= vocabulary) {
      refuse_file(path, "token id " + std::to_string(largest) + " is beyond the training vocabulary (" +
                            token_path(directory, Split::kTrain) + "'s largest id is " +
                            std::to_string(vocabulary - 1) + ")");
    }
  }
  Dataset::Parts parts;
  parts.kind = Dataset::InputKind::kTokens;
  parts.size = windows;
  parts.sample_shape = {spec.context};
  parts.num_classes = vocabulary;
  parts.gather = [tokens = file.tokens, context = spec.context](const torch::Tensor& indices) {
    return token_windows(tokens, indices, context);
  };
  return assemble(spec, std::move(parts), [] { return Statistics{}; });
}

void check_spec(const DatasetSpec& spec) {
  if (spec.limit < 0) throw std::runtime_error("data limit must be >= 0, not " + std::to_string(spec.limit));
  if (spec.image_size < 0) throw std::runtime_error("data.image_size must be >= 0");
  if (spec.context < 0) throw std::runtime_error("data.context must be >= 0");
}

[[noreturn]] void unknown_format(const DatasetSpec& spec) {
  throw std::runtime_error("unknown data.format '" + spec.format + "' (idx, numpy, image_folder, tokens)");
}

// A splitmix64 step: a well-mixed 64-bit value from any input, so that nearby (seed, epoch, index)
// triples draw unrelated crops.
std::uint64_t mix(std::uint64_t value) {
  value += 0x9E3779B97F4A7C15ull;
  value = (value ^ (value >> 30)) * 0xBF58476D1CE4E5B9ull;
  value = (value ^ (value >> 27)) * 0x94D049BB133111EBull;
  return value ^ (value >> 31);
}

}  // namespace

// ---- Dataset ------------------------------------------------------------------------------------

Dataset::Dataset(Parts parts)
    : kind_(parts.kind),
      size_(parts.size),
      gather_(std::move(parts.gather)),
      targets_(std::move(parts.targets)),
      sample_shape_(std::move(parts.sample_shape)),
      num_classes_(parts.num_classes),
      value_max_(parts.value_max),
      mean_(std::move(parts.mean)),
      std_(std::move(parts.std)),
      augment_(parts.augment),
      seed_(parts.seed) {
  TORCH_CHECK(gather_, "a dataset needs a gather function");
  TORCH_CHECK(kind_ == InputKind::kTokens || (targets_.defined() && targets_.size(0) == size_),
              "a classification dataset needs one target per sample");
  TORCH_CHECK(mean_.size() == std_.size(), "mean has ", mean_.size(), " values, std ", std_.size());
  if (!mean_.empty()) {
    // [1, C, 1, 1] for per-channel values of [C, H, W] samples; [1, 1, ...] for one value.
    std::vector<std::int64_t> shape(sample_shape_.size() + 1, 1);
    if (mean_.size() > 1) shape[1] = static_cast<std::int64_t>(mean_.size());
    mean_tensor_ = torch::tensor(mean_, torch::kFloat64).to(torch::kFloat32).reshape(shape);
    std_tensor_ = torch::tensor(std_, torch::kFloat64).to(torch::kFloat32).reshape(shape);
  }
}

Dataset::Dataset(torch::Tensor images, torch::Tensor labels, std::vector<double> mean,
                 std::vector<double> std)
    : Dataset([&] {
        TORCH_CHECK(images.scalar_type() == torch::kUInt8 && (images.dim() == 3 || images.dim() == 4),
                    "expected uint8 images [n, H, W] or [n, C, H, W], got ", images.scalar_type(), " ",
                    images.sizes());
        const auto samples = images.dim() == 3 ? images.unsqueeze(1) : images;
        Parts parts;
        parts.kind = InputKind::kImages;
        parts.size = samples.size(0);
        parts.sample_shape = samples.sizes().slice(1).vec();
        parts.targets = labels.to(torch::kInt64);
        parts.num_classes = labels.numel() > 0 ? parts.targets.max().item<std::int64_t>() + 1 : 0;
        parts.value_max = kUInt8Max;
        parts.gather = gather_rows(samples);
        parts.mean = std::move(mean);
        parts.std = std::move(std);
        return parts;
      }()) {}

Batch Dataset::batch(const torch::Tensor& indices, bool training, std::uint64_t epoch) const {
  TORCH_CHECK(gather_, "batch() of an empty dataset");
  TORCH_CHECK(indices.dim() == 1, "dataset indices must be 1-D, got ", indices.sizes());
  const auto index = indices.to(torch::kInt64).contiguous();
  if (index.numel() > 0) {
    TORCH_CHECK(index.min().item<std::int64_t>() >= 0 && index.max().item<std::int64_t>() < size_,
                "dataset indices must lie in [0, ", size_, ")");
  }
  const auto samples = gather_(index);
  if (kind_ == InputKind::kTokens) {
    const std::int64_t context = sample_shape_[0];
    return {samples.slice(1, 0, context).contiguous(), samples.slice(1, 1).contiguous()};
  }
  torch::Tensor inputs = kind_ == InputKind::kImages   ? samples.to(torch::kFloat32).div_(value_max_)
                         : kind_ == InputKind::kFloats ? samples.to(torch::kFloat32)
                                                       : samples.to(torch::kInt64);
  const bool image_shaped = sample_shape_.size() == 2 || sample_shape_.size() == 3;
  if (training && augment_ && image_shaped && kind_ != InputKind::kIntegers)
    inputs = augmented(inputs, index, epoch);
  // Out of place first: nothing promises that a gather's result is not shared with the dataset.
  if (mean_tensor_.defined()) inputs = inputs.sub(mean_tensor_).div_(std_tensor_);
  return {inputs, targets_.index_select(0, index)};
}

torch::Tensor Dataset::augmented(const torch::Tensor& samples, const torch::Tensor& indices,
                                 std::uint64_t epoch) const {
  // Zero padding is black for scaled images, as torchvision's RandomCrop(padding=4) pads before ToTensor.
  const std::int64_t height = samples.size(-2), width = samples.size(-1);
  const auto padded =
      torch::constant_pad_nd(samples, {kCropPadding, kCropPadding, kCropPadding, kCropPadding}, 0);
  const std::uint64_t offsets = 2 * kCropPadding + 1;
  auto out = torch::empty_like(samples);
  const auto* index = indices.data_ptr<std::int64_t>();
  for (std::int64_t i = 0; i < samples.size(0); ++i) {
    // One draw per (seed, epoch, sample index): row offset, column offset, flip bit.
    const std::uint64_t draw = mix(mix(mix(seed_) ^ epoch) ^ static_cast<std::uint64_t>(index[i]));
    const auto top = static_cast<std::int64_t>(draw % offsets);
    const auto left = static_cast<std::int64_t>((draw / offsets) % offsets);
    const bool flip = ((draw >> 32) & 1) != 0;
    const auto crop = padded[i].narrow(-2, top, height).narrow(-1, left, width);
    out[i].copy_(flip ? crop.flip({-1}) : crop);
  }
  return out;
}

// ---- free functions -----------------------------------------------------------------------------

DatasetSpec dataset_spec(const DataOptions& data, Split split, std::uint64_t seed) {
  DatasetSpec spec;
  spec.format = data.format;
  spec.name = data.dataset;
  spec.image_size = data.image_size;
  spec.context = data.context;
  spec.augment = data.augment;
  spec.mean = data.mean;
  spec.std = data.std;
  spec.limit = split == Split::kTrain ? data.train_limit : data.test_limit;
  spec.seed = seed;
  return spec;
}

DatasetSpec dataset_spec(const msg::RunSpec& run, std::int64_t limit) {
  DatasetSpec spec;
  spec.format = run.data_format;
  spec.name = run.dataset;
  spec.image_size = run.image_size;
  spec.context = run.context;
  spec.augment = run.augment;
  spec.mean = run.mean;
  spec.std = run.std;
  spec.limit = limit;
  spec.seed = run.seed;
  return spec;
}

Dataset load_dataset(const DatasetSpec& spec, const std::string& path, Split split) {
  check_spec(spec);
  if (spec.format == "idx") return load_idx(spec, path, split);
  if (spec.format == "numpy") return load_numpy(spec, path, split);
  if (spec.format == "image_folder") return load_image_folder(spec, path, split);
  if (spec.format == "tokens") return load_tokens(spec, path, split);
  unknown_format(spec);
}

std::int64_t count_samples(const DatasetSpec& spec, const std::string& path, Split split) {
  check_spec(spec);
  if (spec.format == "idx")
    return limited(read_idx_count(idx_files(spec.name, path, split).labels), spec.limit);
  if (spec.format == "numpy") {
    const std::string inputs = numpy_files(path, split).inputs;
    const NpyHeader header = read_npy_header(inputs);
    if (header.shape.empty()) refuse_file(inputs, "a 0-d array holds no samples; expected shape [n, ...]");
    return limited(header.shape[0], spec.limit);
  }
  if (spec.format == "image_folder") {
    check_image_size(spec);
    return limited(static_cast<std::int64_t>(list_image_folder(image_root(path, split)).files.size()),
                   spec.limit);
  }
  if (spec.format == "tokens") {
    check_context(spec);
    const std::string file = token_path(path, split);
    return limited(token_windows_in(file, count_tokens(file), spec.context), spec.limit);
  }
  unknown_format(spec);
}

std::string dataset_fingerprint(const DatasetSpec& spec, const std::string& path) {
  check_spec(spec);
  Fnv1a hash;
  hash.text("filo-dataset");
  hash.number(kFingerprintVersion);
  hash.text(spec.format);
  if (spec.format == "idx") {
    const IdxFiles files = idx_files(spec.name, path, Split::kTrain);
    const auto labels = read_idx_labels(files.labels);
    const auto images = read_idx_images(files.images);
    hash.shape(labels.sizes().vec());
    hash.tensor(labels);
    hash.shape(images.sizes().vec());
    hash.sampled(images);
  } else if (spec.format == "numpy") {
    const NumpyFiles files = numpy_files(path, Split::kTrain);
    const NpyArray inputs = map_npy(files.inputs);
    const NpyArray labels = map_npy(files.labels);
    sample_shape_of(inputs);  // refuses a 0-d array, as loading would
    for (const auto* array : {&inputs, &labels}) {
      hash.text(array->header.descr);
      hash.shape(array->header.shape);
    }
    hash.tensor(labels.data);
    hash.sampled(inputs.data);
  } else if (spec.format == "image_folder") {
    const std::string root = image_root(path, Split::kTrain);
    const ImageFolderListing listing = list_image_folder(root);
    for (const auto& name : listing.classes) hash.text(name);
    for (std::size_t i = 0; i < listing.files.size(); ++i) {
      hash.text(std::filesystem::relative(listing.files[i], root).string());
      hash.number(static_cast<std::uint64_t>(listing.labels[i]));
      hash.number(std::filesystem::file_size(listing.files[i]));
    }
    const auto sampled =
        strided_indices(static_cast<std::int64_t>(listing.files.size()), kFingerprintSamples);
    std::vector<char> head(kFingerprintSampleBytes);
    for (std::int64_t i = 0; i < sampled.size(0); ++i) {
      std::ifstream file(listing.files[static_cast<std::size_t>(sampled[i].item<std::int64_t>())],
                         std::ios::binary);
      file.read(head.data(), static_cast<std::streamsize>(head.size()));
      hash.bytes(head.data(), static_cast<std::size_t>(file.gcount()));
    }
  } else if (spec.format == "tokens") {
    const TokenFile file = map_tokens(token_path(path, Split::kTrain));
    hash.number(static_cast<std::uint64_t>(file.count));
    // kFingerprintSamples evenly spaced pieces of at most kFingerprintSampleBytes: the whole file up
    // to kFingerprintSamples x kFingerprintSampleBytes (64 MiB).
    const auto bytes = static_cast<std::int64_t>(file.file->size());
    const std::int64_t pieces = std::min(kFingerprintSamples, std::max<std::int64_t>(bytes, 1));
    for (std::int64_t piece = 0; piece < pieces; ++piece) {
      const std::int64_t begin = piece * bytes / pieces;
      const std::int64_t end = std::min((piece + 1) * bytes / pieces, begin + kFingerprintSampleBytes);
      hash.bytes(file.file->data() + begin, static_cast<std::size_t>(end - begin));
    }
  } else {
    unknown_format(spec);
  }
  return hash.hex();
}

Dataset load_dataset(const std::string& name, const std::string& directory, Split split, std::int64_t limit) {
  DatasetSpec spec;
  spec.name = name;
  spec.limit = limit;
  return load_dataset(spec, directory, split);
}

std::string labels_fingerprint(const std::string& name, const std::string& directory, Split split) {
  const auto labels = read_idx_labels(idx_files(name, directory, split).labels);
  Fnv1a hash;
  hash.tensor(labels);
  return hash.hex();
}

std::int64_t count_samples(const std::string& name, const std::string& directory, Split split,
                           std::int64_t limit) {
  DatasetSpec spec;
  spec.name = name;
  spec.limit = limit;
  return count_samples(spec, directory, split);
}

}  // namespace filo
