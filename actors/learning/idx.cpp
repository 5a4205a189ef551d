#include "actors/learning/idx.hpp"

#include <zlib.h>
#include <algorithm>
#include <array>
#include <filesystem>
#include <stdexcept>

#include "runtime/mapped_file.hpp"

namespace filo {
namespace {

constexpr std::uint32_t kImagesMagic = 0x00000803;
constexpr std::uint32_t kLabelsMagic = 0x00000801;
constexpr std::size_t kImagesHeaderBytes = 16;  // magic, count, rows, columns
constexpr unsigned kMaxGzRead = 1u << 30;       // gzread takes an unsigned length

std::string existing(const std::string& directory, const std::string& stem) {
  for (const auto& candidate : {directory + "/" + stem + ".gz", directory + "/" + stem}) {
    if (std::filesystem::exists(candidate)) return candidate;
  }
  throw std::runtime_error("dataset file " + directory + "/" + stem + "[.gz] not found" +
                           " (on Debian: apt-get install dataset-fashion-mnist, or set data.path)");
}

bool is_gzipped(const std::string& path) {
  return std::filesystem::path(path).extension() == ".gz";
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
      const unsigned piece = static_cast<unsigned>(std::min<std::size_t>(bytes, kMaxGzRead));
      const int n = gzread(file_, target, piece);
      if (n <= 0) throw std::runtime_error(path_ + ": truncated data or not a valid idx file");
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
    throw std::runtime_error(file.path() + ": idx magic " + std::to_string(found) + ", expected " +
                             std::to_string(magic) +
                             (magic == kImagesMagic ? " (uint8 images)" : " (uint8 labels)"));
  }
  return file.read_big_endian();
}

}  // namespace

IdxFiles idx_files(const std::string& name, const std::string& directory, Split split) {
  if (name != "fashion-mnist" && name != "mnist") {
    throw std::runtime_error("unknown dataset '" + name + "' (built in: fashion-mnist, mnist)");
  }
  const std::string prefix = split == Split::kTrain ? "train" : "t10k";
  return {existing(directory, prefix + "-images-idx3-ubyte"),
          existing(directory, prefix + "-labels-idx1-ubyte")};
}

torch::Tensor read_idx_images(const std::string& path) {
  GzFile file(path);
  const std::int64_t stored = read_header_count(file, kImagesMagic);
  const std::int64_t rows = file.read_big_endian();
  const std::int64_t columns = file.read_big_endian();
  if (rows == 0 || columns == 0) throw std::runtime_error(path + ": images of size 0x0");
  if (!is_gzipped(path)) {
    auto mapped = MappedFile::open(path);
    const auto needed = kImagesHeaderBytes + static_cast<std::size_t>(stored * rows * columns);
    if (mapped->size() < needed) {
      throw std::runtime_error(path + ": truncated data: " + std::to_string(stored) + " images of " +
                               std::to_string(rows) + "x" + std::to_string(columns) + " need " +
                               std::to_string(needed) + " bytes, the file holds " +
                               std::to_string(mapped->size()));
    }
    return mapped_tensor(mapped, kImagesHeaderBytes, {stored, rows, columns}, torch::kUInt8);
  }
  auto images = torch::empty({stored, rows, columns}, torch::kUInt8);
  file.read(images.data_ptr(), static_cast<std::size_t>(images.nbytes()));
  return images;
}

torch::Tensor read_idx_labels(const std::string& path) {
  GzFile file(path);
  const std::int64_t count = read_header_count(file, kLabelsMagic);
  auto labels = torch::empty({count}, torch::kUInt8);
  file.read(labels.data_ptr(), static_cast<std::size_t>(count));
  return labels;
}

std::int64_t read_idx_count(const std::string& path) {
  GzFile file(path);
  return read_header_count(file, kLabelsMagic);
}

}  // namespace filo
