#include "actors/learning/models.hpp"

#include <cstdio>
#include <stdexcept>

namespace filo {
namespace {
constexpr const char* kModelNameKey = "filo_model_name";
namespace nn = torch::nn;
}  // namespace

torch::nn::Sequential make_model(const std::string& name) {
  if (name == "cnn") {
    return nn::Sequential(nn::Conv2d(nn::Conv2dOptions(1, 16, 5).padding(2)), nn::BatchNorm2d(16), nn::ReLU(),
                          nn::MaxPool2d(2), nn::Conv2d(nn::Conv2dOptions(16, 32, 5).padding(2)),
                          nn::BatchNorm2d(32), nn::ReLU(), nn::MaxPool2d(2), nn::Flatten(),
                          nn::Linear(32 * 7 * 7, 10));
  }
  if (name == "mlp") {
    return nn::Sequential(nn::Flatten(), nn::Linear(28 * 28, 128), nn::ReLU(), nn::Linear(128, 10));
  }
  throw std::invalid_argument("unknown model '" + name + "' (built in: cnn, mlp)");
}

void save_model(torch::nn::Sequential& model, const std::string& name, const std::string& path) {
  torch::serialize::OutputArchive archive;
  model->save(archive);
  archive.write(kModelNameKey, c10::IValue(name));
  const std::string temporary = path + ".tmp";
  archive.save_to(temporary);
  if (std::rename(temporary.c_str(), path.c_str()) != 0) {
    throw std::runtime_error("cannot move " + temporary + " to " + path);
  }
}

LoadedModel load_model(const std::string& path) {
  torch::serialize::InputArchive archive;
  try {
    archive.load_from(path);
  } catch (const c10::Error& e) {
    throw std::runtime_error("cannot read model file " + path + ": " + e.what_without_backtrace());
  }
  c10::IValue name;
  if (!archive.try_read(kModelNameKey, name) || !name.isString()) {
    throw std::runtime_error(path + " is not a filo model file (no " + kModelNameKey + ")");
  }
  LoadedModel loaded{name.toStringRef(), make_model(name.toStringRef())};
  try {
    loaded.model->load(archive);
  } catch (const c10::Error& e) {
    throw std::runtime_error("model file " + path + " does not fit model '" + loaded.name +
                             "': " + e.what_without_backtrace());
  }
  return loaded;
}

}  // namespace filo
