#pragma once
// idx files (MNIST, Fashion-MNIST): a big-endian magic (0x0801 labels, 0x0803 images), one 32-bit
// big-endian count per axis, then uint8 data. Gzipped files are inflated into memory (Debian ships
// them so); plain ones are mapped.
#include <cstdint>
#include <string>

#include <torch/torch.h>

#include "actors/learning/dataset.hpp"

namespace filo {

struct IdxFiles {
  std::string images;
  std::string labels;
};

/// The files of `split` of built-in dataset `name` (fashion-mnist or mnist) in `directory`, gzipped
/// or not. Throws std::runtime_error naming a missing file.
IdxFiles idx_files(const std::string& name, const std::string& directory, Split split);

/// uint8 [count, rows, columns], as stored. Throws naming the file when it is truncated.
torch::Tensor read_idx_images(const std::string& path);

/// uint8 [count] labels.
torch::Tensor read_idx_labels(const std::string& path);

/// Samples in an idx file, from its header only.
std::int64_t read_idx_count(const std::string& path);

}  // namespace filo
