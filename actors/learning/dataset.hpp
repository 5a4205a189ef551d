#pragma once
// Built-in datasets, read from idx files (gzipped or not) such as Debian's dataset-fashion-mnist.
#include <cstdint>
#include <string>
#include <utility>

#include <torch/torch.h>

namespace filo {

enum class Split { kTrain, kTest };

/// Images kept as uint8 (47 MB for Fashion-MNIST's training set); batches are normalised on the fly.
class Dataset {
 public:
  Dataset() = default;
  Dataset(torch::Tensor images, torch::Tensor labels)
      : images_(std::move(images)), labels_(std::move(labels)) {}
  std::int64_t size() const { return labels_.defined() ? labels_.size(0) : 0; }
  /// Normalised float images [n,1,28,28] and int64 labels [n] for dataset `indices`.
  std::pair<torch::Tensor, torch::Tensor> batch(const torch::Tensor& indices) const;

 private:
  torch::Tensor images_;  // uint8 [n,28,28]
  torch::Tensor labels_;  // int64 [n]
};

/// Loads `split` of the dataset named `name` from `directory`, keeping the first `limit` samples
/// (0 = all). Throws std::runtime_error naming the file and what was wrong.
Dataset load_dataset(const std::string& name, const std::string& directory, Split split,
                     std::int64_t limit = 0);

/// A hex FNV-1a hash of all of `split`'s labels: nodes and coordinator compare it to make sure
/// they train on the same data. Throws like load_dataset when the files are missing.
std::string labels_fingerprint(const std::string& name, const std::string& directory, Split split);

/// Samples in `split` without loading the images (reads one idx header).
std::int64_t count_samples(const std::string& name, const std::string& directory, Split split,
                           std::int64_t limit = 0);

}  // namespace filo
