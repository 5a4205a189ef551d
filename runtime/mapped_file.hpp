#pragma once
// Read-only memory maps of data files: a dataset larger than memory is paged in by the kernel as
// samples are read, instead of being read whole at load time.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

namespace filo {

/// A whole file mapped read-only; unmapped when the last owner lets go.
class MappedFile {
 public:
  /// Maps `path`; throws std::runtime_error naming the file when it cannot be opened or mapped.
  static std::shared_ptr<const MappedFile> open(const std::string& path);

  struct Passkey {  // lets make_shared call the constructor while nobody else can
   private:
    Passkey() = default;
    friend class MappedFile;
  };
  MappedFile(Passkey, std::string path, const std::uint8_t* data, std::size_t size)
      : path_(std::move(path)), data_(data), size_(size) {}
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::uint8_t* data() const { return data_; }
  std::size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  const std::uint8_t* data_;  // nullptr for an empty file (mmap refuses length 0)
  std::size_t size_;
};

/// A tensor over `file`'s bytes from `offset` (no copy); it keeps the mapping alive. The caller has
/// checked that the bytes lie inside the file. Never write through it: the pages are read-only.
torch::Tensor mapped_tensor(const std::shared_ptr<const MappedFile>& file, std::size_t offset,
                            const std::vector<std::int64_t>& shape, torch::ScalarType dtype);

}  // namespace filo
