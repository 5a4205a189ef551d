#include "actors/learning/dataset.hpp"

#include <zlib.h>
#include <array>
#include <cstdio>
#include <filesystem>
#include <stdexcept>
#include <vector>

namespace filo {
namespace {

constexpr std::uint32_t kImagesMagic = 0x00000803;
constexpr std::uint32_t kLabelsMagic = 0x00000801;
// Fashion-MNIST's training-set mean and standard deviation of pixel values in [0, 1].
constexpr double kPixelMean = 0.2860;
constexpr double kPixelStd = 0.3530;

struct IdxFiles {
  std::string images;
  std::string labels;
};

std::string existing(const std::string& directory, const std::string& stem) {
  for (const auto& candidate : {directory + "/" + stem + ".gz", directory + "/" + stem}) {
    if (std::filesystem::exists(candidate)) return candidate;
  }
  throw std::runtime_error("dataset file " + directory + "/" + stem + "[.gz] not found" +
                           " (on Debian: apt-get install dataset-fashion-mnist, or set data.path)");
}

IdxFiles files_for(const std::string& name, const std::string& directory, Split split) {
  if (name != "fashion-mnist" && name != "mnist") {
    throw std::runtime_error("unknown dataset '" + name + "' (built in: fashion-mnist, mnist)");
  }
  const std::string prefix = split == Split::kTrain ? "train" : "t10k";
  return {existing(directory, prefix + "-images-idx3-ubyte"),
          existing(directory, prefix + "-labels-idx1-ubyte")};
}

// A gzip reader (zlib reads plain files through the same calls) that closes itself.
class GzFile {
 public:
  explicit GzFile(const std::string& path) : path_(path), file_(gzopen(path.c_str(), "rb")) {
    if (file_ == nullptr) throw std::runtime_error("cannot open " + path);
  }
  ~GzFile() { gzclose(file_); }
  GzFile(const GzFile&) = delete;
  GzFile& operator=(const GzFile&) = delete;

  void read(void* into, std::size_t bytes) {
    auto* target = static_cast<char*>(into);
    while (bytes > 0) {
      const unsigned piece = static_cast<unsigned>(std::min<std::size_t>(bytes, 1u << 30));
      const int n = gzread(file_, target, piece);
      if (n <= 0) throw std::runtime_error(path_ + " is truncated or not a valid idx file");
      target += n;
      bytes -= static_cast<std::size_t>(n);
    }
  }
  std::uint32_t read_big_endian() {
    std::array<unsigned char, 4> bytes{};
    read(bytes.data(), bytes.size());
    return (std::uint32_t{bytes[0]} << 24) | (std::uint32_t{bytes[1]} << 16) |
           (std::uint32_t{bytes[2]} << 8) | std::uint32_t{bytes[3]};
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  gzFile file_;
};

std::int64_t read_header_count(GzFile& file, std::uint32_t magic) {
  const std::uint32_t found = file.read_big_endian();
  if (found != magic) {
    throw std::runtime_error(file.path() + " has idx magic " + std::to_string(found) + ", expected " +
                             std::to_string(magic));
  }
  return file.read_big_endian();
}

std::int64_t apply_limit(std::int64_t count, std::int64_t limit) {
  return limit > 0 ? std::min(count, limit) : count;
}

}  // namespace

std::pair<torch::Tensor, torch::Tensor> Dataset::batch(const torch::Tensor& indices) const {
  auto images = images_.index_select(0, indices).to(torch::kFloat32).div_(255.0);
  images.sub_(kPixelMean).div_(kPixelStd);
  return {images.unsqueeze(1), labels_.index_select(0, indices)};
}

Dataset load_dataset(const std::string& name, const std::string& directory, Split split, std::int64_t limit) {
  const IdxFiles files = files_for(name, directory, split);
  GzFile images_file(files.images);
  const std::int64_t image_count = read_header_count(images_file, kImagesMagic);
  const std::int64_t rows = images_file.read_big_endian();
  const std::int64_t columns = images_file.read_big_endian();
  if (rows != 28 || columns != 28) {
    throw std::runtime_error(files.images + " holds " + std::to_string(rows) + "x" + std::to_string(columns) +
                             " images; built-in models take 28x28");
  }
  GzFile labels_file(files.labels);
  const std::int64_t label_count = read_header_count(labels_file, kLabelsMagic);
  if (label_count != image_count) {
    throw std::runtime_error(files.images + " has " + std::to_string(image_count) + " images but " +
                             files.labels + " has " + std::to_string(label_count) + " labels");
  }
  const std::int64_t count = apply_limit(image_count, limit);
  auto images = torch::empty({count, rows, columns}, torch::kUInt8);
  images_file.read(images.data_ptr(), static_cast<std::size_t>(images.nbytes()));
  auto raw_labels = torch::empty({count}, torch::kUInt8);
  labels_file.read(raw_labels.data_ptr(), static_cast<std::size_t>(count));
  if (raw_labels.max().item<int>() > 9) {
    throw std::runtime_error(files.labels + " holds a label above 9");
  }
  return Dataset(std::move(images), raw_labels.to(torch::kInt64));
}

std::string labels_fingerprint(const std::string& name, const std::string& directory, Split split) {
  GzFile labels_file(files_for(name, directory, split).labels);
  const std::int64_t count = read_header_count(labels_file, kLabelsMagic);
  std::vector<unsigned char> labels(static_cast<std::size_t>(count));
  labels_file.read(labels.data(), labels.size());
  std::uint64_t hash = 14695981039346656037ull;
  for (unsigned char label : labels) {
    hash ^= label;
    hash *= 1099511628211ull;
  }
  char text[17];
  std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(hash));
  return text;
}

std::int64_t count_samples(const std::string& name, const std::string& directory, Split split,
                           std::int64_t limit) {
  GzFile labels_file(files_for(name, directory, split).labels);
  return apply_limit(read_header_count(labels_file, kLabelsMagic), limit);
}

}  // namespace filo
