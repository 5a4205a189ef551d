#include "runtime/mapped_file.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cerrno>
#include <cstring>
#include <stdexcept>

namespace filo {
namespace {
// Closes the descriptor however open() leaves; the mapping outlives it.
class FileDescriptor {
 public:
  explicit FileDescriptor(int fd) : fd_(fd) {}
  ~FileDescriptor() {
    if (fd_ >= 0) ::close(fd_);
  }
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};
}  // namespace

std::shared_ptr<const MappedFile> MappedFile::open(const std::string& path) {
  const FileDescriptor fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) throw std::runtime_error("cannot open " + path + ": " + std::strerror(errno));
  struct stat status {};
  if (::fstat(fd.get(), &status) != 0) {
    throw std::runtime_error("cannot stat " + path + ": " + std::strerror(errno));
  }
  if (!S_ISREG(status.st_mode)) throw std::runtime_error(path + " is not a regular file");
  const auto size = static_cast<std::size_t>(status.st_size);
  const std::uint8_t* data = nullptr;
  if (size > 0) {
    void* mapped = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd.get(), 0);
    if (mapped == MAP_FAILED) throw std::runtime_error("cannot map " + path + ": " + std::strerror(errno));
    data = static_cast<const std::uint8_t*>(mapped);
  }
  return std::make_shared<const MappedFile>(Passkey{}, path, data, size);
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) ::munmap(const_cast<std::uint8_t*>(data_), size_);
}

torch::Tensor mapped_tensor(const std::shared_ptr<const MappedFile>& file, std::size_t offset,
                            const std::vector<std::int64_t>& shape, torch::ScalarType dtype) {
  TORCH_CHECK(offset <= file->size(), "offset ", offset, " beyond ", file->path());
  // from_blob wants a mutable pointer; the tensor is only ever read (index_select copies out).
  auto* start = const_cast<std::uint8_t*>(file->data()) + offset;
  return torch::from_blob(
      start, shape, [file](void*) {}, torch::TensorOptions().dtype(dtype));
}

}  // namespace filo
