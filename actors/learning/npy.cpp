#include "actors/learning/npy.hpp"

#include <cctype>
#include <cstring>
#include <fstream>
#include <limits>
#include <stdexcept>

namespace filo {
namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr std::size_t kMagicBytes = 6;
constexpr std::size_t kVersionOneLengthAt = kMagicBytes + 2;  // after magic and two version bytes
constexpr std::size_t kPrefixVersionOne = kVersionOneLengthAt + 2;
constexpr std::size_t kPrefixVersionTwo = kVersionOneLengthAt + 4;
// NumPy itself refuses headers beyond this (numpy.lib.format._MAX_HEADER_SIZE is 10000, raised
// on request); a larger claim is a damaged file, not a dict worth reading.
constexpr std::size_t kMaxHeaderBytes = 1 << 20;
// Version 1.0 headers are padded so that the data starts at a multiple of this.
constexpr std::size_t kHeaderAlignment = 64;

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "npy reading assumes a little-endian host");

[[noreturn]] void refuse(const std::string& path, const std::string& problem) {
  throw std::runtime_error(path + ": " + problem);
}

// A Python dict literal of the three keys .npy headers use. Values are strings, True/False or tuples
// of integers; anything else (a list descr is a structured dtype) is refused by name.
class HeaderParser {
 public:
  HeaderParser(std::string path, std::string text) : path_(std::move(path)), text_(std::move(text)) {}

  NpyHeader parse() {
    NpyHeader header;
    bool have_descr = false, have_order = false, have_shape = false;
    expect('{');
    while (!try_consume('}')) {
      const std::string key = string_literal();
      expect(':');
      if (key == "descr") {
        if (peek() == '[') refuse(path_, "structured dtypes (a list descr) are not supported");
        header.descr = string_literal();
        have_descr = true;
      } else if (key == "fortran_order") {
        if (boolean_literal()) refuse(path_, "fortran_order arrays are not supported; save with C order");
        have_order = true;
      } else if (key == "shape") {
        header.shape = integer_tuple();
        have_shape = true;
      } else {
        refuse(path_, "unknown header key '" + key + "'");
      }
      if (!try_consume(',')) {
        expect('}');
        break;
      }
    }
    if (!have_descr || !have_order || !have_shape) {
      refuse(path_, "header lacks one of 'descr', 'fortran_order', 'shape'");
    }
    return header;
  }

 private:
  void skip_space() {
    while (position_ < text_.size() && std::isspace(static_cast<unsigned char>(text_[position_])))
      ++position_;
  }
  char peek() {
    skip_space();
    return position_ < text_.size() ? text_[position_] : '\0';
  }
  bool try_consume(char c) {
    if (peek() != c) return false;
    ++position_;
    return true;
  }
  void expect(char c) {
    if (!try_consume(c)) {
      refuse(path_, std::string("malformed header: expected '") + c + "' at byte " +
                        std::to_string(position_) + " of '" + text_ + "'");
    }
  }
  std::string string_literal() {
    const char quote = peek();
    if (quote != '\'' && quote != '"') expect('\'');
    const std::size_t end = text_.find(quote, ++position_);
    if (end == std::string::npos) refuse(path_, "malformed header: unterminated string");
    std::string value = text_.substr(position_, end - position_);
    position_ = end + 1;
    return value;
  }
  bool boolean_literal() {
    skip_space();
    for (const auto& [word, value] : {std::pair{"True", true}, std::pair{"False", false}}) {
      if (text_.compare(position_, std::strlen(word), word) == 0) {
        position_ += std::strlen(word);
        return value;
      }
    }
    refuse(path_, "malformed header: fortran_order is neither True nor False");
  }
  std::vector<std::int64_t> integer_tuple() {
    std::vector<std::int64_t> values;
    expect('(');
    while (!try_consume(')')) {
      skip_space();
      std::int64_t value = 0;
      std::size_t digits = 0;
      for (; position_ < text_.size() && std::isdigit(static_cast<unsigned char>(text_[position_]));
           ++position_) {
        if (value > (std::numeric_limits<std::int64_t>::max() - 9) / 10)
          refuse(path_, "shape entry too large");
        value = value * 10 + (text_[position_] - '0');
        ++digits;
      }
      if (digits == 0) refuse(path_, "malformed header: shape holds something other than integers");
      try_consume('L');  // Python 2 wrote long integers with a suffix
      values.push_back(value);
      if (!try_consume(',')) {
        expect(')');
        break;
      }
    }
    return values;
  }

  std::string path_;
  std::string text_;
  std::size_t position_ = 0;
};

// Checks descr and fills kind, width and byte order.
void decode_descr(const std::string& path, NpyHeader& header) {
  const std::string& descr = header.descr;
  if (descr.size() >= 2 && descr[1] == 'O') {
    refuse(path, "object dtype ('" + descr + "') cannot be read without Python");
  }
  if (descr.size() < 3 || std::string("<>|=").find(descr[0]) == std::string::npos) {
    refuse(path, "unsupported dtype '" + descr + "'");
  }
  const char kind = descr[1];
  const std::string width = descr.substr(2);
  if (std::string("biuf").find(kind) == std::string::npos) {
    refuse(path, "dtype '" + descr + "' is not a number (supported: bool, int, uint, float)");
  }
  if (width.find_first_not_of("0123456789") != std::string::npos) {
    refuse(path, "unsupported dtype '" + descr + "'");
  }
  const int bytes = std::stoi(width);
  const bool known =
      (kind == 'b' && bytes == 1) ||
      ((kind == 'i' || kind == 'u') && (bytes == 1 || bytes == 2 || bytes == 4 || bytes == 8)) ||
      (kind == 'f' && (bytes == 2 || bytes == 4 || bytes == 8));
  if (!known) refuse(path, "unsupported dtype '" + descr + "'");
  header.kind = kind;
  header.item_bytes = bytes;
  header.big_endian = descr[0] == '>' && bytes > 1;
}

torch::ScalarType storage_type(const NpyHeader& header) {
  switch (header.kind) {
    case 'b':
      return torch::kBool;
    case 'f':
      return header.item_bytes == 2   ? torch::kHalf
             : header.item_bytes == 4 ? torch::kFloat32
                                      : torch::kFloat64;
    case 'u':
      if (header.item_bytes == 1) return torch::kUInt8;
      [[fallthrough]];  // wider unsigned: the signed type of the same width holds the bits
    default:
      return header.item_bytes == 1   ? torch::kInt8
             : header.item_bytes == 2 ? torch::kInt16
             : header.item_bytes == 4 ? torch::kInt32
                                      : torch::kInt64;
  }
}

std::uint32_t little_endian(const unsigned char* bytes, std::size_t count) {
  std::uint32_t value = 0;
  for (std::size_t i = count; i-- > 0;) value = (value << 8) | bytes[i];
  return value;
}

// Parses the header out of the file's first bytes (`prefix` holds at least its whole header).
NpyHeader parse_header(const std::string& path, const unsigned char* bytes, std::size_t available) {
  if (available < kPrefixVersionOne || std::memcmp(bytes, kMagic, kMagicBytes) != 0) {
    refuse(path, "not a .npy file (no \\x93NUMPY magic)");
  }
  const unsigned major = bytes[kMagicBytes];
  if (major < 1 || major > 3) refuse(path, "unsupported .npy format version " + std::to_string(major));
  const std::size_t prefix = major == 1 ? kPrefixVersionOne : kPrefixVersionTwo;
  if (available < prefix) refuse(path, "truncated header");
  const std::size_t header_bytes = little_endian(bytes + kVersionOneLengthAt, prefix - kVersionOneLengthAt);
  if (header_bytes > kMaxHeaderBytes)
    refuse(path, "header length " + std::to_string(header_bytes) + " is implausible");
  if (prefix + header_bytes > available) {
    refuse(path, "truncated header: it claims " + std::to_string(header_bytes) + " bytes, the file holds " +
                     std::to_string(available - prefix));
  }
  NpyHeader header =
      HeaderParser(path, std::string(reinterpret_cast<const char*>(bytes) + prefix, header_bytes)).parse();
  decode_descr(path, header);
  header.data_offset = prefix + header_bytes;
  return header;
}

// Size check shared by header-only and mapped reads.
void check_data_fits(const std::string& path, const NpyHeader& header, std::size_t file_bytes) {
  const std::int64_t elements = header.elements();
  if (elements < 0) refuse(path, "shape's element count overflows");
  const auto data_bytes = static_cast<unsigned __int128>(elements) * static_cast<unsigned>(header.item_bytes);
  if (header.data_offset + data_bytes > file_bytes) {
    refuse(path, "truncated data: shape needs " + std::to_string(static_cast<std::uint64_t>(data_bytes)) +
                     " bytes after the header, the file holds " +
                     std::to_string(file_bytes - header.data_offset));
  }
}

}  // namespace

std::int64_t NpyHeader::elements() const {
  std::int64_t count = 1;
  for (const std::int64_t extent : shape) {
    if (extent != 0 && count > std::numeric_limits<std::int64_t>::max() / extent) return -1;
    count *= extent;
  }
  return count;
}

NpyHeader read_npy_header(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) refuse(path, "cannot open");
  file.seekg(0, std::ios::end);
  const auto file_bytes = static_cast<std::size_t>(file.tellg());
  file.seekg(0);
  // The fixed prefix first, then as much of the header as it claims.
  std::vector<unsigned char> bytes(std::min(file_bytes, kPrefixVersionTwo));
  file.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  if (bytes.size() >= kPrefixVersionOne && std::memcmp(bytes.data(), kMagic, kMagicBytes) == 0) {
    const std::size_t prefix = bytes[kMagicBytes] == 1 ? kPrefixVersionOne : kPrefixVersionTwo;
    const std::size_t claimed =
        prefix + little_endian(bytes.data() + kVersionOneLengthAt, prefix - kVersionOneLengthAt);
    bytes.resize(std::min({file_bytes, claimed, prefix + kMaxHeaderBytes}));
    file.seekg(0);
    file.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  }
  NpyHeader header = parse_header(path, bytes.data(), bytes.size());
  check_data_fits(path, header, file_bytes);
  return header;
}

NpyArray map_npy(const std::string& path) {
  auto file = MappedFile::open(path);
  NpyHeader header = parse_header(path, file->data(), file->size());
  check_data_fits(path, header, file->size());
  torch::Tensor data;
  if (header.big_endian) {
    // Swapping needs a writable copy: big-endian files live in memory, not in the mapping.
    const auto bytes =
        mapped_tensor(file, header.data_offset, {header.elements(), header.item_bytes}, torch::kUInt8);
    data = bytes.flip({1}).contiguous().view(storage_type(header)).reshape(header.shape);
  } else {
    data = mapped_tensor(file, header.data_offset, header.shape, storage_type(header));
  }
  return {path, std::move(header), std::move(data)};
}

torch::Tensor widen_unsigned(const NpyHeader& header, const torch::Tensor& piece) {
  if (header.kind != 'u' || header.item_bytes == 1) return piece;
  if (header.item_bytes == 2) return piece.to(torch::kInt32).bitwise_and(0xFFFF);
  if (header.item_bytes == 4) return piece.to(torch::kInt64).bitwise_and(std::int64_t{0xFFFFFFFF});
  return piece;
}

std::string npy_bytes(const torch::Tensor& tensor) {
  const auto contiguous = tensor.cpu().contiguous();
  std::string descr;
  switch (contiguous.scalar_type()) {
    case torch::kBool:
      descr = "|b1";
      break;
    case torch::kUInt8:
      descr = "|u1";
      break;
    case torch::kInt8:
      descr = "|i1";
      break;
    case torch::kInt16:
      descr = "<i2";
      break;
    case torch::kInt32:
      descr = "<i4";
      break;
    case torch::kInt64:
      descr = "<i8";
      break;
    case torch::kHalf:
      descr = "<f2";
      break;
    case torch::kFloat32:
      descr = "<f4";
      break;
    case torch::kFloat64:
      descr = "<f8";
      break;
    default:
      TORCH_CHECK(false, "npy_bytes: no .npy dtype for ", contiguous.scalar_type());
  }
  std::string shape = "(";
  for (std::int64_t axis = 0; axis < contiguous.dim(); ++axis) {
    if (axis > 0) shape += ", ";
    shape += std::to_string(contiguous.size(axis));
  }
  if (contiguous.dim() == 1) shape += ",";  // Python's one-tuple
  shape += ")";
  std::string dict = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': " + shape + ", }";
  // Pad with spaces so that data starts aligned, ending in a newline as NumPy does.
  const std::size_t unpadded = kPrefixVersionOne + dict.size() + 1;
  dict.append((kHeaderAlignment - unpadded % kHeaderAlignment) % kHeaderAlignment, ' ');
  dict += '\n';
  std::string bytes(kMagic, kMagicBytes);
  bytes += '\x01';
  bytes += '\x00';
  bytes += static_cast<char>(dict.size() & 0xFF);
  bytes += static_cast<char>(dict.size() >> 8);
  bytes += dict;
  bytes.append(static_cast<const char*>(contiguous.data_ptr()), contiguous.nbytes());
  return bytes;
}

}  // namespace filo
