#include "actors/learning/compression.hpp"

#include <cmath>
#include <stdexcept>

#include "runtime/digest.hpp"

namespace filo {
namespace {
/// q8 codes span [-kCodeRange, kCodeRange]: symmetric, so that zero is exact.
constexpr double kCodeRange = 127.0;

std::int64_t chunks_of(std::int64_t numel, std::int64_t chunk) {
  return (numel + chunk - 1) / chunk;
}
}  // namespace

CompressionKind parse_compression(const std::string& name) {
  if (name == "none") return CompressionKind::kNone;
  if (name == "topk") return CompressionKind::kTopK;
  if (name == "topk-q8") return CompressionKind::kTopKQ8;
  throw std::invalid_argument("unknown compression '" + name + "' (known: none, topk, topk-q8)");
}

std::string compression_name(CompressionKind kind) {
  switch (kind) {
    case CompressionKind::kNone:
      return "none";
    case CompressionKind::kTopK:
      return "topk";
    case CompressionKind::kTopKQ8:
      return "topk-q8";
  }
  return "none";
}

torch::Tensor SparseGroup::decoded() const {
  if (!scales.defined()) return values;
  const auto chunk_of = torch::floor_divide(indices.to(torch::kInt64), chunk);
  return values.to(torch::kFloat32) * scales.index_select(0, chunk_of);
}

SparseGroup compress(const torch::Tensor& dense, const CompressionOptions& options) {
  TORCH_CHECK(dense.dim() == 1 && dense.scalar_type() == torch::kFloat32,
              "compress: a flat fp32 tensor is needed, not ", dense.sizes(), " ", dense.scalar_type());
  torch::NoGradGuard no_grad;
  SparseGroup sparse;
  sparse.numel = dense.numel();
  sparse.chunk = std::max<std::int64_t>(1, options.chunk);
  const std::int64_t chunk = sparse.chunk;
  const std::int64_t chunks = chunks_of(sparse.numel, chunk);
  const std::int64_t keep =
      std::clamp<std::int64_t>(static_cast<std::int64_t>(std::ceil(options.fraction * chunk)), 1, chunk);
  torch::Tensor padded = dense;
  if (chunks * chunk != sparse.numel) {
    padded = torch::zeros({chunks * chunk}, dense.options());
    padded.narrow(0, 0, sparse.numel).copy_(dense);
  }
  const torch::Tensor view = padded.view({chunks, chunk});
  const torch::Tensor magnitude = view.abs();
  // Positions within each chunk, ascending, then in the group.
  const torch::Tensor within = std::get<0>(std::get<1>(magnitude.topk(keep, 1, true, false)).sort(1));
  torch::Tensor positions =
      (within + torch::arange(chunks, within.options()).unsqueeze(1) * chunk).reshape(-1);
  if (chunks * chunk != sparse.numel) positions = positions.masked_select(positions < sparse.numel);
  sparse.indices = positions.to(torch::kInt32);
  const torch::Tensor values = dense.index_select(0, positions);
  if (options.kind != CompressionKind::kTopKQ8) {
    sparse.values = values;
    return sparse;
  }
  // One scale per chunk: its largest magnitude maps to the largest code. A chunk of zeros keeps
  // scale 1 (its codes are zero anyway), so that decoding never divides by zero.
  torch::Tensor scales = std::get<0>(magnitude.max(1)) / kCodeRange;
  scales.masked_fill_(scales == 0, 1.0);
  sparse.scales = scales;
  const torch::Tensor value_scales = scales.index_select(0, torch::floor_divide(positions, chunk));
  sparse.values = (values / value_scales).round_().clamp_(-kCodeRange, kCodeRange).to(torch::kInt8);
  return sparse;
}

void add_sparse(torch::Tensor& dense, const SparseGroup& sparse, double weight) {
  torch::NoGradGuard no_grad;
  torch::Tensor values = sparse.decoded().to(dense.device());
  if (weight != 1.0) values = values * weight;
  dense.index_add_(0, sparse.indices.to(dense.device(), torch::kInt64), values);
}

std::optional<std::string> sparse_problem(const SparseGroup& sparse, std::int64_t numel) {
  if (!sparse.indices.defined() || !sparse.values.defined()) return std::string("indices or values missing");
  if (sparse.indices.dim() != 1 || sparse.values.dim() != 1)
    return std::string("indices and values must be flat");
  if (sparse.indices.scalar_type() != torch::kInt32) return std::string("indices must be int32");
  if (sparse.indices.numel() != sparse.values.numel()) {
    return std::to_string(sparse.indices.numel()) + " indices but " + std::to_string(sparse.values.numel()) +
           " values";
  }
  if (sparse.indices.numel() > numel) return std::string("more values than the group has elements");
  const bool quantised = sparse.values.scalar_type() == torch::kInt8;
  if (!quantised && sparse.values.scalar_type() != torch::kFloat32)
    return std::string("values must be fp32 or int8 codes");
  if (quantised != sparse.scales.defined())
    return std::string("int8 codes need one scale per chunk, fp32 values none");
  if (quantised) {
    if (sparse.chunk <= 0) return std::string("no chunk size for the codes' scales");
    if (sparse.scales.dim() != 1 || sparse.scales.scalar_type() != torch::kFloat32 ||
        sparse.scales.numel() != chunks_of(numel, sparse.chunk))
      return "scales must be " + std::to_string(chunks_of(numel, sparse.chunk)) +
             " fp32 values, one per chunk";
    if (!torch::isfinite(sparse.scales).all().item<bool>()) return std::string("scales hold NaN or infinity");
  } else if (sparse.values.numel() > 0 && !torch::isfinite(sparse.values).all().item<bool>()) {
    return std::string("values hold NaN or infinity");
  }
  if (sparse.indices.numel() == 0) return std::nullopt;
  const torch::Tensor sorted = std::get<0>(sparse.indices.sort());
  if (sorted[0].item<std::int32_t>() < 0 || sorted[-1].item<std::int64_t>() >= numel)
    return "indices outside the group's " + std::to_string(numel) + " elements";
  if (sorted.numel() > 1 && (sorted.slice(0, 1) == sorted.slice(0, 0, -1)).any().item<bool>())
    return std::string("repeated indices");
  return std::nullopt;
}

CompressionOptions compression_options(const msg::RunSpec& run) {
  CompressionOptions options;
  if (run.mode != "local-sgd" && run.mode != "auto") return options;  // gradients are never compressed
  options.kind = parse_compression(run.compression);
  options.fraction = run.compression_fraction;
  options.chunk = run.compression_chunk;
  if (options.kind != CompressionKind::kNone &&
      (!(options.fraction > 0 && options.fraction <= 1) || options.chunk < 16 ||
       options.chunk > (std::int64_t{1} << 24))) {
    throw std::invalid_argument("compression " + run.compression + " with fraction " +
                                std::to_string(options.fraction) + " and chunk " +
                                std::to_string(options.chunk) +
                                ": the fraction must be in (0, 1] and the chunk between 16 and 16777216");
  }
  return options;
}

std::vector<NamedTensor> sparse_wire(const std::vector<SparseGroup>& groups,
                                     const std::vector<std::string>& group_names) {
  TORCH_CHECK(groups.size() == group_names.size(), "sparse_wire: ", groups.size(), " groups, ",
              group_names.size(), " names");
  std::vector<NamedTensor> wire;
  for (std::size_t i = 0; i < groups.size(); ++i) {
    wire.push_back({group_names[i] + ".indices", groups[i].indices});
    wire.push_back({group_names[i] + ".values", groups[i].values});
    if (groups[i].scales.defined()) wire.push_back({group_names[i] + ".scales", groups[i].scales});
  }
  return wire;
}

std::vector<NamedTensor> sparse_wire_on_host(const std::vector<SparseGroup>& groups,
                                             const FlatTensors& like) {
  std::vector<std::string> names;
  for (const auto& group : like.groups()) names.push_back(group.wire_name());
  std::vector<NamedTensor> wire = sparse_wire(groups, names);
  for (auto& part : wire) part.tensor = part.tensor.to(torch::kCPU);
  return wire;
}

Decoded<std::vector<SparseGroup>> sparse_from_wire(const std::vector<ReceivedTensor>& received,
                                                   const FlatTensors& like, std::int64_t chunk) {
  using Result = Decoded<std::vector<SparseGroup>>;
  std::vector<SparseGroup> groups;
  std::size_t next = 0;
  for (const auto& group : like.groups()) {
    const std::string name = group.wire_name();
    const auto take = [&](const std::string& part) -> std::optional<torch::Tensor> {
      if (next >= received.size() || received[next].meta().name != name + "." + part) return std::nullopt;
      return received[next++].to_tensor();
    };
    SparseGroup sparse;
    sparse.numel = group.flat.numel();
    sparse.chunk = chunk;
    auto indices = take("indices");
    auto values = take("values");
    if (!indices || !values) return Result::failure("group '" + name + "' lacks its indices or values");
    sparse.indices = *indices;
    sparse.values = *values;
    if (sparse.values.scalar_type() == torch::kInt8) {
      auto scales = take("scales");
      if (!scales) return Result::failure("group '" + name + "' has int8 codes but no scales");
      sparse.scales = *scales;
    }
    if (auto problem = sparse_problem(sparse, sparse.numel))
      return Result::failure("group '" + name + "': " + *problem);
    groups.push_back(std::move(sparse));
  }
  if (next != received.size())
    return Result::failure(std::to_string(received.size() - next) + " tensors too many");
  return Result::ok(std::move(groups));
}

std::vector<SparseGroup> ErrorFeedback::compress(const FlatTensors& change,
                                                 const CompressionOptions& options) {
  torch::NoGradGuard no_grad;
  TORCH_CHECK(change.groups().size() == residual_.groups().size(), "ErrorFeedback: layouts differ");
  std::vector<SparseGroup> sent;
  for (std::size_t i = 0; i < change.groups().size(); ++i) {
    torch::Tensor& accumulated = residual_.groups()[i].flat;
    accumulated.add_(change.groups()[i].flat);  // what was not sent before, plus this round's change
    SparseGroup sparse = filo::compress(accumulated, options);
    add_sparse(accumulated, sparse, -1.0);  // what stays for later rounds
    sent.push_back(std::move(sparse));
  }
  return sent;
}

CompressedDownlink::CompressedDownlink(const FlatTensors& parameters, const CompressionOptions& options)
    : options_(options),
      base_(parameters.zeros_like()),
      change_(parameters.zeros_like()),
      feedback_(parameters) {
  base_.copy_from(parameters);
}

std::vector<SparseGroup> CompressedDownlink::advance(FlatTensors& parameters, std::size_t contributions) {
  torch::NoGradGuard no_grad;
  for (std::size_t i = 0; i < parameters.groups().size(); ++i) {
    torch::sub_out(change_.groups()[i].flat, parameters.groups()[i].flat, base_.groups()[i].flat);
  }
  CompressionOptions options = options_;
  options.fraction =
      std::min(1.0, options.fraction * static_cast<double>(std::max<std::size_t>(1, contributions)));
  std::vector<SparseGroup> sent = feedback_.compress(change_, options);
  apply_sparse(base_, sent);
  parameters.copy_from(base_);
  return sent;
}

void CompressedDownlink::flush(FlatTensors& parameters) {
  torch::NoGradGuard no_grad;
  for (std::size_t i = 0; i < parameters.groups().size(); ++i) {
    parameters.groups()[i].flat.add_(feedback_.residual().groups()[i].flat);
  }
  base_.copy_from(parameters);
  feedback_.clear();
}

void CompressedDownlink::reset(const FlatTensors& parameters, const FlatTensors& residual) {
  base_.copy_from(parameters);
  feedback_ = ErrorFeedback(parameters);
  if (!residual.empty()) feedback_.restore(residual);
}

std::string replica_fingerprint(const FlatTensors& parameters, const FlatTensors& buffers) {
  return fingerprint_number_hex(buffers.fingerprint(parameters.fingerprint()));
}

void apply_sparse(FlatTensors& base, const std::vector<SparseGroup>& sent) {
  TORCH_CHECK(sent.size() == base.groups().size(), "apply_sparse: ", sent.size(), " groups sent, ",
              base.groups().size(), " held");
  for (std::size_t i = 0; i < sent.size(); ++i) add_sparse(base.groups()[i].flat, sent[i]);
}

}  // namespace filo
