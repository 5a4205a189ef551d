#pragma once
// Sending less over slow links. In local-sgd a trainer sends its parameters' change; compressed, it
// sends only the largest `fraction` of that change's values, chosen chunk by chunk (DeMo's and
// SparseLoCo's chunked top-k: selection is one topk over a [chunks, chunk] view, and what is sent is
// spread over the whole model), optionally quantised to 8 bits with one scale per chunk. What was
// not sent is kept as an error-feedback residual and added to the next change: nothing is lost, only
// sent later. The aggregator adds sparse contributions straight into its dense sums, never making a
// dense copy of one, and sends the update it applied back the same way (CompressedDownlink).
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "actors/learning/flat_tensors.hpp"
#include "messages/membership.hpp"
#include "messages/tensor_frames.hpp"

namespace filo {

enum class CompressionKind {
  kNone,    /// dense fp32
  kTopK,    /// the largest values of each chunk, fp32
  kTopKQ8,  /// the same, as int8 codes with one fp32 scale per chunk
};
/// "none", "topk", "topk-q8"; throws std::invalid_argument naming the known ones.
CompressionKind parse_compression(const std::string& name);
std::string compression_name(CompressionKind kind);

struct CompressionOptions {
  CompressionKind kind = CompressionKind::kNone;
  double fraction = 0.01;     /// share of each chunk's values sent
  std::int64_t chunk = 4096;  /// elements per chunk
};
/// The run's compression (none outside local-sgd); throws std::invalid_argument for an unknown kind
/// or settings out of range, as a run spec from the network may carry.
CompressionOptions compression_options(const msg::RunSpec& run);

/// One flat group (of a model's fp32 parameters) compressed.
struct SparseGroup {
  std::int64_t numel = 0;  /// the dense group's size
  std::int64_t chunk = 0;  /// elements per chunk (a q8 value's scale is scales[index / chunk])
  torch::Tensor indices;   /// int32 [k], positions in the group, ascending within each chunk
  torch::Tensor values;    /// float32 [k], or int8 [k] codes (q8)
  torch::Tensor scales;    /// q8: float32 [chunks]; else undefined
  /// The values as fp32 (codes times their chunk's scale).
  torch::Tensor decoded() const;
};

/// The `fraction` largest-magnitude values of each `chunk` of `dense` (a flat fp32 CPU tensor).
SparseGroup compress(const torch::Tensor& dense, const CompressionOptions& options);
/// dense += weight * sparse (dense is the group's flat tensor, on any device).
void add_sparse(torch::Tensor& dense, const SparseGroup& sparse, double weight = 1.0);
/// Why `sparse` cannot be a compressed group of `numel` elements: indices outside it or repeated,
/// counts that differ, scales that do not cover the chunks, values that are not finite.
std::optional<std::string> sparse_problem(const SparseGroup& sparse, std::int64_t numel);

/// The wire form: per group "<group>.indices", "<group>.values" and, for q8, "<group>.scales".
std::vector<NamedTensor> sparse_wire(const std::vector<SparseGroup>& groups,
                                     const std::vector<std::string>& group_names);
/// The same for the groups of `like` (names from its groups), copied to the host: what a message's
/// frames are made from.
std::vector<NamedTensor> sparse_wire_on_host(const std::vector<SparseGroup>& groups, const FlatTensors& like);
/// Back from received tensors, checked against `like`'s groups (count, names, dtypes, sizes);
/// the reason when they do not fit.
Decoded<std::vector<SparseGroup>> sparse_from_wire(const std::vector<ReceivedTensor>& received,
                                                   const FlatTensors& like, std::int64_t chunk);

/// A trainer's error feedback: what each round's change adds to what earlier rounds did not send.
class ErrorFeedback {
 public:
  ErrorFeedback() = default;
  explicit ErrorFeedback(const FlatTensors& like) : residual_(like.zeros_like()) {}
  /// accumulated = change + residual; returns its compression and keeps accumulated - sent (as
  /// decoded) as the residual. Every group of `change` must be fp32.
  std::vector<SparseGroup> compress(const FlatTensors& change, const CompressionOptions& options);
  const FlatTensors& residual() const { return residual_; }
  /// Takes `residual`'s values (same layout): a checkpoint's.
  void restore(const FlatTensors& residual) { residual_.copy_from(residual); }
  /// Nothing held back any more (zeroed in place: no allocation).
  void clear() {
    for (auto& group : residual_.groups()) group.flat.zero_();
  }

 private:
  FlatTensors residual_;
};

/// The aggregator's side of a compressed downlink. It keeps the model every replica holds (the
/// base) and sends replicas each step's change the way trainers send theirs: compressed, with what
/// was not sent kept as a residual for later steps. So that replicas stay bit-identical to the
/// aggregator's model, the aggregator's own parameters become base plus what was sent, decoded and
/// added exactly as a replica adds it (apply_sparse on the same values).
class CompressedDownlink {
 public:
  CompressedDownlink(const FlatTensors& parameters, const CompressionOptions& options);
  /// `parameters` were stepped from base() on the sum of `contributions` compressed changes: sends
  /// their change plus the residual, compressed to as many values as those contributions held (the
  /// options' fraction times their number: at the uplink's fraction the step's change, spread over
  /// every contribution's values, reached replicas a third at a time with three trainers, and a
  /// 1-epoch run of the 1.86 M-parameter MLP lost 1.5 to 2 points); sets base() and `parameters`
  /// to base plus what was sent; returns what was sent.
  std::vector<SparseGroup> advance(FlatTensors& parameters, std::size_t contributions = 1);
  /// Before the whole model is broadcast: adds the residual (what earlier steps did not send yet) to
  /// `parameters`, which replicas will now receive whole, and starts again from them.
  void flush(FlatTensors& parameters);
  /// Starts again from `parameters` (a restored checkpoint) with `residual` (zero when empty).
  void reset(const FlatTensors& parameters, const FlatTensors& residual = {});
  const FlatTensors& base() const { return base_; }
  const FlatTensors& residual() const { return feedback_.residual(); }

 private:
  CompressionOptions options_;
  FlatTensors base_;
  FlatTensors change_;
  ErrorFeedback feedback_;
};

/// A replica's side: adds `sent` (as CompressedDownlink::advance returned it, or as received) to
/// `base`, group by group.
void apply_sparse(FlatTensors& base, const std::vector<SparseGroup>& sent);
/// What a downlink update's fingerprint says of a model: 16 hex digits of its parameters' and
/// buffers' bits.
std::string replica_fingerprint(const FlatTensors& parameters, const FlatTensors& buffers);

}  // namespace filo
