#pragma once
// A model as filo trains it: a TorchScript module, whether a built-in one (built as TorchScript in
// C++) or one the user scripted in Python, so that every model is one kind of object and every
// result is a file Python's torch.jit.load opens. Its trainable parameters, their gradients and
// its buffers live in flat groups (flat_tensors.hpp) that the module's tensors are views of.
#include <stdexcept>
#include <string>

#include <torch/script.h>
#include <torch/torch.h>

#include "actors/learning/flat_tensors.hpp"
#include "messages/tensor_frames.hpp"

namespace filo {

/// A model file filo cannot train, with the reason.
struct ModelError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class Model {
 public:
  /// Trains `module` as it is (its parameters that require a gradient); its tensors move into flat
  /// groups on `device`. Throws ModelError when it has no forward method or nothing to train.
  Model(torch::jit::Module module, torch::Device device = torch::kCPU);
  /// A model from a TorchScript archive's bytes; `source` names it in errors (a file, "the
  /// coordinator"). Throws ModelError: not a TorchScript archive, no forward, nothing trainable.
  static Model from_archive(const std::string& bytes, const std::string& source,
                            torch::Device device = torch::kCPU);
  static Model from_file(const std::string& path, torch::Device device = torch::kCPU);

  Model(Model&&) = default;
  Model& operator=(Model&&) = default;
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  /// An independent copy with the same weights, on `device`.
  Model clone(torch::Device device) const;
  Model clone() const { return clone(device_); }

  /// The module's forward on one batch; refuses (ModelError) an output that is not one tensor.
  torch::Tensor forward(const torch::Tensor& inputs);
  void train(bool on);

  FlatTensors& parameters() { return parameters_; }
  const FlatTensors& parameters() const { return parameters_; }
  FlatTensors& gradients() { return gradients_; }
  const FlatTensors& gradients() const { return gradients_; }
  FlatTensors& buffers() { return buffers_; }
  const FlatTensors& buffers() const { return buffers_; }
  void zero_gradients() { gradients_.zero(); }
  /// A user's forward may rebind a buffer (`self.count = self.count + 1`) instead of updating it in
  /// place; this copies such values back into the flat group and points the buffer there again.
  void reattach_buffers();

  /// The module with the current weights as TorchScript bytes (on the CPU, tensors compact).
  std::string archive() const;
  /// Every parameter and buffer by its TorchScript name ("conv1.weight"), compact CPU copies:
  /// what model.safetensors holds for Python to load.
  std::vector<NamedTensor> named_state() const;
  /// Writes archive() to `path` atomically.
  void save(const std::string& path) const;

  torch::jit::Module& module() { return module_; }
  torch::Device device() const { return device_; }
  /// Parameters' and buffers' names, dtypes and shapes: models of equal layouts exchange state.
  std::string layout() const { return parameters_.layout() + "|" + buffers_.layout(); }

 private:
  void adopt();

  torch::jit::Module module_;
  torch::Device device_;
  FlatTensors parameters_;
  FlatTensors gradients_;
  FlatTensors buffers_;
};

/// Interpreting TorchScript with graph optimisation off trains as fast as LibTorch's C++ modules
/// here (the profiling executor made a two-layer CNN's step 20% slower); call once per process.
void use_plain_torchscript_execution();

}  // namespace filo
