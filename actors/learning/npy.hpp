#pragma once
// NumPy .npy files (format versions 1.0, 2.0 and 3.0), parsed here rather than through a library:
// "\x93NUMPY", major and minor version bytes, the header length (2 bytes little-endian in 1.0, 4 in
// 2.0 and 3.0), then a Python dict literal {'descr': '<f4', 'fortran_order': False, 'shape': (N, ...)}
// padded with spaces and a newline, then the C-order array data.
//
// Accepted dtypes: b1, i1, u1, i2, u2, i4, u4, i8, u8, f2, f4, f8, little-endian or byte-order free;
// big-endian ones are byte-swapped into memory (they cannot be mapped). Refused with the file and
// the reason: Fortran order, object, string, complex, datetime and structured dtypes.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "runtime/mapped_file.hpp"

namespace filo {

/// A .npy header: what the array holds and where its data begins.
struct NpyHeader {
  std::string descr;                // as written, e.g. "<f4"
  char kind = 'f';                  // NumPy's kind: 'b' bool, 'i' signed, 'u' unsigned, 'f' float
  int item_bytes = 4;               // bytes per element
  bool big_endian = false;          // stored most significant byte first
  std::vector<std::int64_t> shape;  // C order
  std::size_t data_offset = 0;      // bytes before the array data
  std::int64_t elements() const;
};

/// An array ready to read. `data` has the torch dtype of the same width; torch 1.13 has no unsigned
/// types beyond uint8, so u2, u4 and u8 arrive as int16, int32, int64 bit patterns and
/// widen_unsigned() turns a gathered piece into values.
struct NpyArray {
  std::string path;
  NpyHeader header;
  torch::Tensor data;  // shape header.shape; a view of the mapped file unless byte-swapped
};

/// Reads and checks `path`'s header only; throws std::runtime_error naming the file and the problem.
NpyHeader read_npy_header(const std::string& path);

/// Maps `path` (little-endian data is never copied), checking header and size against the file.
NpyArray map_npy(const std::string& path);

/// Values of a piece of `array`'s data: unsigned kinds wider than a byte become the next wider
/// signed type (u2 -> int32, u4 -> int64; u8 stays int64, so values of 2^63 and more read negative).
torch::Tensor widen_unsigned(const NpyHeader& header, const torch::Tensor& piece);

/// The bytes of a .npy file holding `tensor` (C order, little-endian, version 1.0): for tests and
/// exports. Unsigned widths other than uint8 cannot be expressed (torch has none).
std::string npy_bytes(const torch::Tensor& tensor);

}  // namespace filo
