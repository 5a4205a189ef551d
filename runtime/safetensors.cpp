#include "runtime/safetensors.hpp"

#include <fcntl.h>
#include <unistd.h>
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <limits>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "runtime/mapped_file.hpp"

namespace filo {
namespace {

constexpr std::size_t kLengthBytes = 8;
constexpr std::size_t kHeaderAlignment = 8;
// The reference implementation refuses headers beyond 100 MB: no real model needs more.
constexpr std::uint64_t kMaxHeaderBytes = 100'000'000;
constexpr char kMetadataKey[] = "__metadata__";

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "safetensors data is little-endian, as this host");

struct DTypeName {
  torch::ScalarType type;
  const char* name;
};
constexpr DTypeName kDTypes[] = {
    {torch::kBool, "BOOL"},   {torch::kUInt8, "U8"},    {torch::kInt8, "I8"},  {torch::kInt16, "I16"},
    {torch::kInt32, "I32"},   {torch::kInt64, "I64"},   {torch::kHalf, "F16"}, {torch::kBFloat16, "BF16"},
    {torch::kFloat32, "F32"}, {torch::kFloat64, "F64"},
};

[[noreturn]] void refuse(const std::string& path, const std::string& problem) {
  throw std::runtime_error(path + ": " + problem);
}

// Closes on every path out; the temporary is removed unless committed.
class TemporaryFile {
 public:
  explicit TemporaryFile(std::string path) : path_(std::move(path)) {
    fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd_ < 0) throw std::runtime_error("cannot write " + path_ + ": " + std::strerror(errno));
  }
  ~TemporaryFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_) ::unlink(path_.c_str());
  }
  TemporaryFile(const TemporaryFile&) = delete;
  TemporaryFile& operator=(const TemporaryFile&) = delete;

  void write(const void* data, std::size_t bytes) {
    const auto* from = static_cast<const char*>(data);
    while (bytes > 0) {
      const ssize_t written = ::write(fd_, from, bytes);
      if (written < 0 && errno == EINTR) continue;
      if (written <= 0) throw std::runtime_error("cannot write " + path_ + ": " + std::strerror(errno));
      from += written;
      bytes -= static_cast<std::size_t>(written);
    }
  }
  /// fsync, close and rename over `target`, then fsync the directory so that the rename lasts.
  void commit(const std::string& target) {
    if (::fsync(fd_) != 0) throw std::runtime_error("cannot fsync " + path_ + ": " + std::strerror(errno));
    ::close(fd_);
    fd_ = -1;
    if (std::rename(path_.c_str(), target.c_str()) != 0) {
      throw std::runtime_error("cannot rename " + path_ + " to " + target + ": " + std::strerror(errno));
    }
    committed_ = true;
    const std::string directory = std::filesystem::path(target).parent_path().string();
    const int directory_fd = ::open(directory.empty() ? "." : directory.c_str(), O_RDONLY | O_DIRECTORY);
    if (directory_fd >= 0) {
      ::fsync(directory_fd);
      ::close(directory_fd);
    }
  }

 private:
  std::string path_;
  int fd_ = -1;
  bool committed_ = false;
};

std::string shape_text(const std::vector<std::int64_t>& shape) {
  return nlohmann::json(shape).dump();
}

}  // namespace

namespace {
/// The header text (padded) and the tensors in name order, on the CPU, contiguous.
std::pair<std::string, std::vector<NamedTensor>> prepared(const std::vector<NamedTensor>& tensors,
                                                          const std::map<std::string, std::string>& metadata,
                                                          const std::string& path) {
  std::vector<NamedTensor> sorted;
  for (const auto& named : tensors) {
    if (named.name.empty() || named.name == kMetadataKey) {
      throw std::runtime_error(path + ": a tensor may not be named '" + named.name + "'");
    }
    sorted.push_back({named.name, named.tensor.cpu().contiguous()});
  }
  std::sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  nlohmann::json header = nlohmann::json::object();
  std::uint64_t offset = 0;
  for (std::size_t i = 0; i < sorted.size(); ++i) {
    const auto& [name, tensor] = sorted[i];
    if (i > 0 && sorted[i - 1].name == name)
      throw std::runtime_error(path + ": two tensors named '" + name + "'");
    const auto* dtype = std::find_if(std::begin(kDTypes), std::end(kDTypes), [&](const DTypeName& known) {
      return known.type == tensor.scalar_type();
    });
    if (dtype == std::end(kDTypes)) {
      throw std::runtime_error(path + ": tensor '" + name + "' has dtype " +
                               std::string(c10::toString(tensor.scalar_type())) +
                               ", which safetensors cannot hold");
    }
    const std::uint64_t end = offset + tensor.nbytes();
    header[name] = {{"dtype", dtype->name}, {"shape", tensor.sizes().vec()}, {"data_offsets", {offset, end}}};
    offset = end;
  }
  if (!metadata.empty()) header[kMetadataKey] = metadata;
  std::string text = header.dump();
  text.append((kHeaderAlignment - text.size() % kHeaderAlignment) % kHeaderAlignment, ' ');
  return {std::move(text), std::move(sorted)};
}
}  // namespace

void write_safetensors(const std::string& path, const std::vector<NamedTensor>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  const auto [text, sorted] = prepared(tensors, metadata, path);
  const std::uint64_t length = text.size();  // little-endian, as this host (static_assert above)
  TemporaryFile file(path + ".tmp");
  file.write(&length, kLengthBytes);
  file.write(text.data(), text.size());
  for (const auto& named : sorted) file.write(named.tensor.data_ptr(), named.tensor.nbytes());
  file.commit(path);
}

std::string encode_safetensors(const std::vector<NamedTensor>& tensors,
                               const std::map<std::string, std::string>& metadata) {
  const auto [text, sorted] = prepared(tensors, metadata, "safetensors");
  const std::uint64_t length = text.size();
  std::size_t total = kLengthBytes + text.size();
  for (const auto& named : sorted) total += named.tensor.nbytes();
  std::string bytes;
  bytes.reserve(total);
  bytes.append(reinterpret_cast<const char*>(&length), kLengthBytes);
  bytes.append(text);
  for (const auto& named : sorted)
    bytes.append(static_cast<const char*>(named.tensor.data_ptr()), named.tensor.nbytes());
  return bytes;
}

SafetensorsFile read_safetensors(const std::string& path) {
  const auto file = MappedFile::open(path);
  return decode_safetensors(file->data(), file->size(), path);
}

SafetensorsFile decode_safetensors(const std::uint8_t* bytes, std::size_t size, const std::string& path) {
  if (size < kLengthBytes) refuse(path, "shorter than the 8-byte header length");
  std::uint64_t length = 0;
  std::memcpy(&length, bytes, kLengthBytes);
  if (length > size - kLengthBytes) {
    refuse(path, "header length " + std::to_string(length) + " beyond the file's " + std::to_string(size) +
                     " bytes");
  }
  if (length > kMaxHeaderBytes) refuse(path, "header length " + std::to_string(length) + " above 100 MB");
  const auto* begin = reinterpret_cast<const char*>(bytes) + kLengthBytes;
  const nlohmann::json header =
      nlohmann::json::parse(begin, begin + length, nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded() || !header.is_object()) refuse(path, "header is not a JSON object");
  const std::uint64_t data_bytes = size - kLengthBytes - length;
  const std::uint8_t* data = bytes + kLengthBytes + length;

  SafetensorsFile result;
  struct Extent {
    std::uint64_t begin, end;
    std::string name;
  };
  std::vector<Extent> extents;
  for (const auto& [name, entry] : header.items()) {
    if (name == kMetadataKey) {
      if (!entry.is_object()) refuse(path, "__metadata__ is not an object");
      for (const auto& [key, value] : entry.items()) {
        if (!value.is_string()) refuse(path, "__metadata__ value of '" + key + "' is not a string");
        result.metadata[key] = value.get<std::string>();
      }
      continue;
    }
    const std::string what = "tensor '" + name + "'";
    if (!entry.is_object() || !entry.contains("dtype") || !entry.contains("shape") ||
        !entry.contains("data_offsets")) {
      refuse(path, what + " lacks dtype, shape or data_offsets");
    }
    const auto& dtype_entry = entry["dtype"];
    const std::string dtype_name =
        dtype_entry.is_string() ? dtype_entry.get<std::string>() : dtype_entry.dump();
    const auto* dtype = std::find_if(std::begin(kDTypes), std::end(kDTypes),
                                     [&](const DTypeName& known) { return dtype_name == known.name; });
    if (dtype == std::end(kDTypes)) refuse(path, what + " has unknown or unsupported dtype " + dtype_name);
    const auto& shape_entry = entry["shape"];
    const auto& offsets = entry["data_offsets"];
    if (!shape_entry.is_array() || !std::all_of(shape_entry.begin(), shape_entry.end(),
                                                [](const auto& v) { return v.is_number_unsigned(); })) {
      refuse(path, what + " has a shape that is not a list of non-negative integers");
    }
    if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
        !offsets[1].is_number_unsigned()) {
      refuse(path, what + " has data_offsets that are not two non-negative integers");
    }
    std::vector<std::int64_t> shape;
    std::uint64_t elements = 1;
    for (const auto& extent : shape_entry) {
      const auto value = extent.get<std::uint64_t>();
      if (value > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()) ||
          (value != 0 && elements > std::numeric_limits<std::uint64_t>::max() / 16 / value)) {
        refuse(path, what + " has a shape too large to exist");
      }
      elements *= value;
      shape.push_back(static_cast<std::int64_t>(value));
    }
    const auto first = offsets[0].get<std::uint64_t>();
    const auto last = offsets[1].get<std::uint64_t>();
    if (first > last || last > data_bytes) {
      refuse(path, what + " has data_offsets [" + std::to_string(first) + ", " + std::to_string(last) +
                       "] out of range (the data holds " + std::to_string(data_bytes) + " bytes)");
    }
    const std::uint64_t needed = elements * c10::elementSize(dtype->type);
    if (last - first != needed) {
      refuse(path, what + " of shape " + shape_text(shape) + " and dtype " + dtype_name + " needs " +
                       std::to_string(needed) + " bytes; its data_offsets span " +
                       std::to_string(last - first));
    }
    auto tensor = torch::empty(shape, dtype->type);
    if (needed > 0) std::memcpy(tensor.data_ptr(), data + first, needed);
    result.tensors.push_back({name, std::move(tensor)});
    extents.push_back({first, last, name});
  }
  // Empty tensors occupy no bytes and cannot overlap anything.
  extents.erase(
      std::remove_if(extents.begin(), extents.end(), [](const Extent& e) { return e.begin == e.end; }),
      extents.end());
  std::sort(extents.begin(), extents.end(),
            [](const Extent& a, const Extent& b) { return a.begin < b.begin; });
  for (std::size_t i = 1; i < extents.size(); ++i) {
    if (extents[i].begin < extents[i - 1].end) {
      refuse(path, "tensors '" + extents[i - 1].name + "' and '" + extents[i].name + "' overlap in the data");
    }
  }
  return result;
}

}  // namespace filo
