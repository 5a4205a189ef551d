#pragma once
// A user's data in one of four formats behind one interface; DatasetSpec says which and how.
//
//   idx           MNIST / Fashion-MNIST files, gzipped or not (the built-in default, any image size):
//                 <path>/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]
//   numpy         <path>/{train,test}_{inputs,labels}.npy; inputs any dtype of npy.hpp and any sample
//                 shape (images channels-first), labels 1-D integers
//   image_folder  <path>/{train,test}/<class>/**/*.png|jpg|...; test/ may be named val/ instead
//   tokens        <path>/{train,val}.bin: uint16 token ids, read in windows of `context` (tokens.hpp)
//
// Inputs become model inputs thus: uint8 and uint16 arrays (idx, image folders, such .npy files) are
// images, scaled to [0, 1] by the type's maximum and normalised per channel with the training set's
// mean and standard deviation (or the configured ones); float and bool arrays become float32 as they
// are (normalised only when a mean and std are configured); other integer arrays (ids, categories) are
// int64 as they are. The channel axis is the first axis of 3-D samples [C, H, W]; samples of any
// other rank are normalised as one channel.
//
// Large files stay on disk: .npy and .bin files are memory-mapped, so the kernel pages samples in as
// batches read them. Image folders are decoded once at load unless that would take more than
// kDecodeAtLoadBytes, and then per batch.
//
// The statistics are those of the whole training split (data.limit does not change them, so that
// a limited training set and the test set are normalised alike), computed over an evenly strided,
// deterministic subset: every sample when there are at most kStatisticsSamples (65536: exact for
// MNIST, Fashion-MNIST, CIFAR), else samples i * n / kStatisticsSamples; image folders use at most
// kImageStatisticsSamples images, since each must be decoded. A channel whose std is 0 gets 1.
//
// Malformed files are refused with a std::runtime_error whose message begins with the file's path
// and says what is wrong.
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "messages/membership.hpp"

namespace filo {

struct DataOptions;  // runtime/config.hpp

enum class Split { kTrain, kTest };

/// Statistics come from at most this many training samples (evenly strided).
constexpr std::int64_t kStatisticsSamples = 65536;
/// ... and from at most this many images of an image folder, which must be decoded for it.
constexpr std::int64_t kImageStatisticsSamples = 1024;
/// An image folder whose decoded pixels (n x 3 x size x size bytes) would exceed this is decoded per batch.
constexpr std::int64_t kDecodeAtLoadBytes = std::int64_t{4} << 30;
/// Fashion-MNIST's training-set statistics (tests/test_datasets.cpp checks that they are what is computed).
constexpr double kFashionMnistMean = 0.2860;
constexpr double kFashionMnistStd = 0.3530;
/// Training augmentation pads images by this many pixels on each side before a random crop.
constexpr std::int64_t kCropPadding = 4;

/// What the coordinator's configuration names (data.*); travels to nodes.
struct DatasetSpec {
  std::string format = "idx";          /// idx, numpy, image_folder, tokens
  std::string name = "fashion-mnist";  /// idx only: fashion-mnist or mnist (file naming)
  std::int64_t image_size = 0;         /// image_folder: resize to this square size (required there)
  std::int64_t context = 0;            /// tokens: window length (required there)
  bool augment = false;           /// images: random crop (pad kCropPadding) + horizontal flip when training
  std::vector<double> mean, std;  /// per channel (or one for all); empty: computed for integer images
  std::int64_t limit = 0;         /// first N samples; 0 = all
  std::uint64_t seed = 1;         /// augmentation randomness
};

/// A batch: model inputs and what they should produce (class numbers, or next tokens).
struct Batch {
  torch::Tensor inputs;
  torch::Tensor targets;
};

class Dataset {
 public:
  /// How stored samples become model inputs (see the file comment).
  enum class InputKind { kImages, kFloats, kIntegers, kTokens };
  /// Stored samples of dataset indices (int64 [n]) in their stored type: [n, sample shape...],
  /// or for tokens int64 windows [n, context + 1].
  using Gather = std::function<torch::Tensor(const torch::Tensor& indices)>;

  /// What a format's loader hands over.
  struct Parts {
    InputKind kind = InputKind::kFloats;
    std::int64_t size = 0;
    Gather gather;
    torch::Tensor targets;  // int64 [size]; undefined for tokens
    std::vector<std::int64_t> sample_shape;
    std::int64_t num_classes = 0;
    double value_max = 1.0;         // kImages: the stored type's maximum, which scales to 1
    std::vector<double> mean, std;  // per channel of scaled values, or one value; empty: none
    bool augment = false;
    std::uint64_t seed = 1;
  };

  Dataset() = default;
  explicit Dataset(Parts parts);
  /// In-memory uint8 images [n, H, W] (given a channel axis) or [n, C, H, W] with labels [n]:
  /// synthetic sets for tests. Normalised like Fashion-MNIST unless told otherwise, as the
  /// idx-only Dataset normalised every set.
  Dataset(torch::Tensor images, torch::Tensor labels, std::vector<double> mean = {kFashionMnistMean},
          std::vector<double> std = {kFashionMnistStd});

  std::int64_t size() const { return size_; }
  /// Inputs and targets for dataset `indices` (int64 [n]). With `training`, a dataset configured to
  /// augment crops and flips each sample as (seed, epoch, sample index) decide, so a sample's
  /// augmentation does not depend on which trainer trains it.
  Batch batch(const torch::Tensor& indices, bool training = false, std::uint64_t epoch = 0) const;
  /// One sample's input shape, e.g. {1, 28, 28} or {context}.
  std::vector<std::int64_t> sample_shape() const { return sample_shape_; }
  /// Classification: the training labels' maximum + 1 (or the class folder count); tokens: the
  /// vocabulary bound (train.bin's largest id + 1, or 65536 for files too large to scan).
  std::int64_t num_classes() const { return num_classes_; }
  bool is_tokens() const { return kind_ == InputKind::kTokens; }
  InputKind input_kind() const { return kind_; }
  /// Per-channel normalisation of scaled inputs; empty where inputs are not normalised.
  const std::vector<double>& mean() const { return mean_; }
  const std::vector<double>& std() const { return std_; }

 private:
  torch::Tensor augmented(const torch::Tensor& samples, const torch::Tensor& indices,
                          std::uint64_t epoch) const;

  InputKind kind_ = InputKind::kFloats;
  std::int64_t size_ = 0;
  Gather gather_;
  torch::Tensor targets_;
  std::vector<std::int64_t> sample_shape_;
  std::int64_t num_classes_ = 0;
  double value_max_ = 1.0;
  std::vector<double> mean_, std_;
  torch::Tensor mean_tensor_, std_tensor_;  // broadcastable over a batch; undefined: no normalisation
  bool augment_ = false;
  std::uint64_t seed_ = 1;
};

/// The spec the configuration's data.* keys describe for `split` (its limit), augmenting with `seed`
/// (the run's schedule.seed).
DatasetSpec dataset_spec(const DataOptions& data, Split split, std::uint64_t seed);

/// The spec of the run's dataset as the coordinator named it in `run`, with `limit` samples (0 =
/// all): every node reads its own copy alike.
DatasetSpec dataset_spec(const msg::RunSpec& run, std::int64_t limit);

/// Loads `split` of the dataset `spec` describes from `path` (a directory). Throws
/// std::runtime_error naming the file and what was wrong.
Dataset load_dataset(const DatasetSpec& spec, const std::string& path, Split split);

/// Samples in `split` (after spec.limit) from headers, sizes and directory listings only.
std::int64_t count_samples(const DatasetSpec& spec, const std::string& path, Split split);

/// A hex hash of the training split's content, so that coordinator and nodes can check they hold the
/// same data: the format, the shapes and dtypes, every label (tokens: the token count), and the
/// bytes of kFingerprintSamples evenly strided samples (at most kFingerprintSampleBytes of each;
/// image folders: of each sampled file, plus every file's relative path and size). spec.limit and
/// the spec's other settings are not part of it.
std::string dataset_fingerprint(const DatasetSpec& spec, const std::string& path);
constexpr std::int64_t kFingerprintSamples = 1024;
constexpr std::int64_t kFingerprintSampleBytes = 65536;

/// Compatibility with the idx-only loader: load_dataset({.name = name, .limit = limit}, ...).
Dataset load_dataset(const std::string& name, const std::string& directory, Split split,
                     std::int64_t limit = 0);

/// A hex FNV-1a hash of all of `split`'s idx labels (the fingerprint before dataset_fingerprint).
std::string labels_fingerprint(const std::string& name, const std::string& directory, Split split);

/// Compatibility: count_samples of the idx dataset `name`.
std::int64_t count_samples(const std::string& name, const std::string& directory, Split split,
                           std::int64_t limit = 0);

}  // namespace filo
