#pragma once
// Built-in models. All are Sequential, so parameter and buffer names ("0.weight") are stable
// across processes and LibTorch versions.
#include <string>

#include <torch/torch.h>

namespace filo {

/// "cnn": two 5x5 conv layers (16, 32 channels) with BatchNorm, max-pooling, one linear layer.
/// "mlp": 784-128-10 with ReLU; no batch-dependent layers (exact-equivalence tests use it).
/// Throws std::invalid_argument listing the known names.
torch::nn::Sequential make_model(const std::string& name);

/// Saves `model` with its built-in name, atomically (temporary file, then rename).
void save_model(torch::nn::Sequential& model, const std::string& name, const std::string& path);

struct LoadedModel {
  std::string name;
  torch::nn::Sequential model;
};
/// Loads what save_model wrote; throws std::runtime_error naming the file.
LoadedModel load_model(const std::string& path);

}  // namespace filo
