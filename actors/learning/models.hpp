#pragma once
// Built-in models, built as TorchScript modules in C++, so that they are the same kind of object as
// a model scripted in Python: trained the same way, saved as a file torch.jit.load opens. Weights
// are drawn from LibTorch's generator as PyTorch's own layers draw them; seed it first.
#include <cstdint>
#include <string>
#include <vector>

#include <torch/script.h>

namespace filo {

/// What the data says a model must take and give.
struct ModelShape {
  std::vector<std::int64_t> sample_shape;  /// one input: {C, H, W} for images, {T} for tokens
  std::int64_t classes = 10;               /// classification: outputs per sample
  std::int64_t vocabulary = 0;             /// language model: token ids are below this
};

/// Sizes of the built-in models that configuration can change.
struct BuiltInModelOptions {
  std::int64_t layers = 4;   /// gpt: transformer blocks
  std::int64_t heads = 4;    /// gpt: attention heads per block
  std::int64_t width = 128;  /// gpt: embedding width
  double dropout = 0.0;      /// gpt: dropout after attention and in the MLP
};

/// "cnn" (two 5x5 conv layers with BatchNorm, max-pooling, one linear layer: images {C, H, W}),
/// "mlp" (flatten, 128 hidden units, ReLU: any sample shape), "resnet18" (CIFAR-style: 3x3 stem, no
/// max-pool, four stages of two basic blocks: images {C, H, W}), "gpt" (a decoder-only transformer
/// with learned positions: token windows {T}). Throws std::invalid_argument naming the known models,
/// or the shape a model cannot take.
torch::jit::Module build_model(const std::string& name, const ModelShape& shape,
                               const BuiltInModelOptions& options = {});

std::vector<std::string> built_in_models();

}  // namespace filo
