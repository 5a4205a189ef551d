#pragma once
// safetensors files, the format Hugging Face tools load: an 8-byte little-endian header length n,
// n bytes of JSON {"<name>": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...,
// "__metadata__": {"<key>": "<value>"}} padded with spaces to a multiple of 8, then the tensors'
// little-endian C-order bytes (offsets count from the end of the header). Written here with
// tensors in name order, back to back.
#include <map>
#include <string>
#include <vector>

#include "messages/tensor_frames.hpp"

namespace filo {

struct SafetensorsFile {
  std::vector<NamedTensor> tensors;  // in name order
  std::map<std::string, std::string> metadata;
};

/// Writes `tensors` (any device; bool, uint8, int8/16/32/64, float16, bfloat16, float32/64) and
/// `metadata` to `path` atomically: a temporary beside it, fsynced, then renamed over it. Throws
/// std::runtime_error for an empty, reserved or repeated name, an unsupported dtype, or an I/O error.
void write_safetensors(const std::string& path, const std::vector<NamedTensor>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

/// The bytes of a safetensors file holding `tensors` and `metadata` (checkpoints embed them).
std::string encode_safetensors(const std::vector<NamedTensor>& tensors,
                               const std::map<std::string, std::string>& metadata = {});
/// Parses `size` bytes at `bytes` as a safetensors file; `source` names it in errors. Tensors are
/// copies. Throws like read_safetensors.
SafetensorsFile decode_safetensors(const std::uint8_t* bytes, std::size_t size, const std::string& source);

/// Reads `path` into CPU tensors (copies: the file may be replaced afterwards). Throws
/// std::runtime_error naming the file and the problem: header length beyond the file, invalid JSON,
/// unknown dtype, a shape that does not match its offsets, offsets out of range or overlapping.
SafetensorsFile read_safetensors(const std::string& path);

}  // namespace filo
