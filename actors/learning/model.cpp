#include "actors/learning/model.hpp"

#include <torch/csrc/jit/runtime/graph_executor.h>

#include <fstream>
#include <map>
#include <sstream>

#include "runtime/run_record.hpp"

namespace filo {

void use_plain_torchscript_execution() {
  torch::jit::setGraphExecutorOptimize(false);
}

Model::Model(torch::jit::Module module, torch::Device device) : module_(std::move(module)), device_(device) {
  if (!module_.find_method("forward")) throw ModelError("the module has no forward method");
  module_.to(device_);
  adopt();
}

void Model::adopt() {
  std::vector<NamedTensor> trainable;
  for (const auto& parameter : module_.named_parameters(/*recurse=*/true)) {
    if (parameter.value.requires_grad()) trainable.push_back({parameter.name, parameter.value});
  }
  if (trainable.empty()) {
    throw ModelError(
        "the module has no trainable parameters (every parameter is frozen: requires_grad is False)");
  }
  std::vector<NamedTensor> buffers;
  for (const auto& buffer : module_.named_buffers(/*recurse=*/true))
    buffers.push_back({buffer.name, buffer.value});
  parameters_ = FlatTensors::adopt(trainable, device_);
  gradients_ = parameters_.zeros_like();
  // Backward adds into an existing gradient in place, so each parameter's gradient stays a view
  // of the flat gradients for the whole run.
  const auto views = gradients_.named();
  for (std::size_t i = 0; i < trainable.size(); ++i) {
    torch::Tensor parameter = trainable[i].tensor;
    parameter.mutable_grad() = views[i].tensor;
  }
  buffers_ = FlatTensors::adopt(buffers, device_);
}

Model Model::from_archive(const std::string& bytes, const std::string& source, torch::Device device) {
  std::istringstream in(bytes);
  torch::jit::Module module;
  try {
    module = torch::jit::load(in, torch::Device(torch::kCPU));
  } catch (const c10::Error& e) {
    throw ModelError(source +
                     " is not a TorchScript archive (write one with torch.jit.script(model).save(path)): " +
                     e.what_without_backtrace());
  } catch (const std::exception& e) {
    throw ModelError(source + " is not a TorchScript archive: " + e.what());
  }
  try {
    return Model(std::move(module), device);
  } catch (const ModelError& e) {
    throw ModelError(source + ": " + e.what());
  }
}

Model Model::from_file(const std::string& path, torch::Device device) {
  std::ifstream file(path, std::ios::binary);
  if (!file) throw ModelError("cannot read model file " + path);
  const std::string bytes((std::istreambuf_iterator<char>(file)), {});
  return from_archive(bytes, path, device);
}

Model Model::clone(torch::Device device) const {
  // Through an archive: a deep copy would map every view of one flat group to the same copy.
  return from_archive(archive(), "a copy of the model", device);
}

torch::Tensor Model::forward(const torch::Tensor& inputs) {
  const c10::IValue output = module_.forward({inputs});
  if (!output.isTensor()) {
    throw ModelError("the module's forward returns " + output.tagKind() + ", where filo needs one tensor");
  }
  return output.toTensor();
}

void Model::train(bool on) {
  module_.train(on);
}

void Model::reattach_buffers() {
  std::map<std::string, torch::Tensor> views;
  for (const auto& view : buffers_.named()) views.emplace(view.name, view.tensor);
  for (const auto& buffer : module_.named_buffers(/*recurse=*/true)) {
    const auto view = views.find(buffer.name);
    if (view == views.end() || buffer.value.data_ptr() == view->second.data_ptr()) continue;
    torch::NoGradGuard no_grad;
    view->second.copy_(buffer.value);
    torch::Tensor handle = buffer.value;
    handle.set_data(view->second);
  }
}

std::vector<NamedTensor> Model::named_state() const {
  std::vector<NamedTensor> state;
  for (const auto& parameter : module_.named_parameters(/*recurse=*/true))
    state.push_back({parameter.name, parameter.value.detach().to(torch::kCPU).contiguous().clone()});
  for (const auto& buffer : module_.named_buffers(/*recurse=*/true))
    state.push_back({buffer.name, buffer.value.detach().to(torch::kCPU).contiguous().clone()});
  return state;
}

std::string Model::archive() const {
  // Each tensor is saved on the CPU and of its own: a view would save its whole flat group with it.
  // The module's tensors are pointed at compact copies for the save, then back at their views.
  std::vector<std::pair<torch::Tensor, torch::Tensor>> restore;
  for (const auto& parameter : module_.named_parameters()) {
    torch::Tensor handle = parameter.value;
    restore.emplace_back(handle, handle.detach());
    handle.set_data(handle.detach().to(torch::kCPU).clone());
  }
  for (const auto& buffer : module_.named_buffers()) {
    torch::Tensor handle = buffer.value;
    restore.emplace_back(handle, handle.detach());
    handle.set_data(handle.detach().to(torch::kCPU).clone());
  }
  std::ostringstream out;
  std::exception_ptr failure;
  try {
    module_.save(out);
  } catch (...) {
    failure = std::current_exception();
  }
  for (auto& [handle, view] : restore) handle.set_data(view);
  if (failure) std::rethrow_exception(failure);
  return out.str();
}

void Model::save(const std::string& path) const {
  write_file_atomically(path, archive());
}

}  // namespace filo
