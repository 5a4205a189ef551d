#pragma once
// Token files as nanoGPT writes them: a flat array of little-endian uint16 token ids (train.bin,
// val.bin), no header. Sample i is the window of `context` tokens starting at token i * context
// (windows do not overlap); its targets are the same window shifted by one token. The last window
// needs one token past it for its final target, so a file of n tokens holds (n - 1) / context
// samples and the partial window at the end is dropped.
#include <cstdint>
#include <memory>
#include <string>

#include <torch/torch.h>

#include "runtime/mapped_file.hpp"

namespace filo {

/// A mapped token file.
struct TokenFile {
  std::string path;
  std::shared_ptr<const MappedFile> file;
  torch::Tensor tokens;  // int16 [count], the uint16 ids' bit patterns (torch 1.13 has no uint16)
  std::int64_t count = 0;
};

/// Maps `path`; throws std::runtime_error naming the file when its size is odd (truncated).
TokenFile map_tokens(const std::string& path);

/// Tokens in `path` from its size alone.
std::int64_t count_tokens(const std::string& path);

/// Windows `samples` (int64 [n]) of `context` + 1 tokens each as int64 [n, context + 1]:
/// inputs are [:, :context], targets [:, 1:].
torch::Tensor token_windows(const torch::Tensor& tokens, const torch::Tensor& samples, std::int64_t context);

/// The largest id in `tokens` (one pass over the mapped pages).
std::int64_t max_token(const torch::Tensor& tokens);

}  // namespace filo
