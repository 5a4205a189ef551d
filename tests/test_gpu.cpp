// Tests that need a GPU. Where LibTorch sees none, the binary exits 77 before running anything,
// which ctest reports as skipped, never as passed (tests/CMakeLists.txt: SKIP_RETURN_CODE 77).
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <iostream>

#include <torch/cuda.h>
#include <nlohmann/json.hpp>

#include "actors/learning/averaging.hpp"
#include "actors/learning/device.hpp"
#include "actors/learning/host_staging.hpp"
#include "actors/learning/model.hpp"
#include "actors/learning/models.hpp"
#include "actors/learning/optimizers.hpp"
#include "actors/learning/training.hpp"
#include "runtime/process.hpp"
#include "runtime/scoped_thread.hpp"

#ifdef FILO_TORCH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <cuda_runtime_api.h>
#include <unistd.h>
#endif

using namespace filo;
using namespace std::chrono_literals;

namespace {
constexpr int kExitSkipped = 77;
const torch::Device kGpu(torch::kCUDA, 0);

Dataset synthetic_dataset(std::int64_t size, std::uint64_t seed) {
  torch::manual_seed(seed);
  auto images = torch::randint(0, 256, {size, 28, 28}, torch::kUInt8);
  auto labels = torch::randint(0, 10, {size}, torch::kInt64);
  return Dataset(images, labels);
}

/// What a trainer sends, as the aggregator receives it: staged through pinned buffers into frames.
std::vector<ReceivedTensor> over_the_wire(const FlatTensors& tensors, SendBuffers& buffers) {
  std::vector<zmq::message_t> frames;
  const auto metas = stage(tensors, buffers, frames);
  auto received =
      read_tensor_frames(metas, std::make_shared<std::vector<zmq::message_t>>(std::move(frames)), 0);
  REQUIRE(received);
  return received.value();
}

std::string read_file(const std::string& path) {
  std::ifstream file(path);
  return std::string(std::istreambuf_iterator<char>(file), {});
}

/// A short `filo local` run with `settings`; its summary.
nlohmann::json local_run(const std::string& name, const std::vector<std::string>& settings) {
  const std::string run_dir = "/tmp/filo-gpu-test-" + name + "-" + std::to_string(getpid());
  std::filesystem::remove_all(run_dir);
  std::filesystem::create_directories(run_dir);
  std::vector<std::string> arguments{FILO_BINARY, "local",
                                     "--epochs",  "2",
                                     "--run-dir", run_dir,
                                     "--set",     "data.train_limit=6000",
                                     "--set",     "data.test_limit=2000"};
  for (const auto& setting : settings) arguments.insert(arguments.end(), {"--set", setting});
  ChildProcess local(arguments, run_dir + "/local.log");
  const auto code = local.wait_for(300s);
  REQUIRE(code);
  REQUIRE_MESSAGE(*code == 0, read_file(run_dir + "/local.log"));
  nlohmann::json summary;
  std::ifstream(run_dir + "/summary.json") >> summary;
  return summary;
}
}  // namespace

TEST_CASE("on a GPU in fp32, 3 trainers with 50/30/20 shares equal one large-batch step") {
  const auto data = synthetic_dataset(600, 3);
  constexpr int kRounds = 6;
  constexpr std::int64_t kRoundSamples = 100;
  const std::int64_t shares[] = {50, 30, 20};
  torch::manual_seed(11);
  Model reference(build_model("mlp", ModelShape{{1, 28, 28}, 10, 0}), kGpu);
  Model combined = reference.clone();
  std::vector<torch::Tensor> reference_parameters;
  for (const auto& parameter : reference.module().named_parameters())
    reference_parameters.push_back(parameter.value);
  torch::optim::SGD reference_optimizer(reference_parameters, torch::optim::SGDOptions(0.05).momentum(0.9));
  OptimizerOptions options;
  options.name = "sgd";
  options.learning_rate = 0.05;
  options.momentum = 0.9;
  auto combined_optimizer = make_optimizer(options);
  ContributionAverager averager(combined);  // sums on the GPU, fed through pinned staging
  std::vector<Model> replicas;
  for (int t = 0; t < 3; ++t) replicas.push_back(combined.clone());
  SendBuffers pinned_buffers(/*pinned=*/true);

  for (int round = 0; round < kRounds; ++round) {
    const auto round_indices =
        torch::arange(round * kRoundSamples, (round + 1) * kRoundSamples, torch::kInt64);
    reference.zero_gradients();
    auto [images, labels] = data.batch(round_indices);
    torch::nn::functional::cross_entropy(reference.forward(images.to(kGpu)), labels.to(kGpu)).backward();
    reference_optimizer.step();
    std::int64_t start = 0;
    for (std::size_t t = 0; t < replicas.size(); ++t) {
      replicas[t].parameters().copy_from(combined.parameters());
      const auto share = round_indices.slice(0, start, start + shares[t]);
      start += shares[t];
      ShareOptions share_options;
      share_options.micro_batch = 16 + 3 * static_cast<std::int64_t>(t);
      const auto result = train_share(replicas[t], data, share, share_options);
      averager.add(over_the_wire(replicas[t].gradients(), pinned_buffers),
                   over_the_wire(replicas[t].buffers(), pinned_buffers), result.samples);
    }
    REQUIRE(averager.sums_finite());
    REQUIRE(averager.apply());
    const auto& ours = combined.gradients().groups()[0].flat;
    const auto& theirs = reference.gradients().groups()[0].flat;
    CHECK((ours - theirs).abs().max().item<double>() / theirs.abs().max().item<double>() < 1e-4);
    combined_optimizer->step(combined.parameters(), combined.gradients());
  }
  const auto& ours = combined.parameters().groups()[0].flat;
  const auto& theirs = reference.parameters().groups()[0].flat;
  const double difference = (ours - theirs).abs().max().item<double>() / theirs.abs().max().item<double>();
  INFO("max relative parameter difference " << difference);
  CHECK(difference < 1e-4);
  CHECK(ours.device() == kGpu);
}

TEST_CASE(
    "a short GPU run, and a mixed GPU and CPU fleet aggregating on the GPU, train as well as the CPU run") {
  const auto cpu = local_run("cpu", {"local.nodes=1"});
  const auto gpu = local_run("gpu", {"local.nodes=1", "node.device=cuda:0", "run.device=cuda:0"});
  const auto mixed = local_run("mixed", {"local.nodes=2", "local.devices=cuda:0,cpu", "run.device=cuda:0"});
  const double cpu_accuracy = cpu.at("final_test_accuracy");
  const double gpu_accuracy = gpu.at("final_test_accuracy");
  const double mixed_accuracy = mixed.at("final_test_accuracy");
  INFO("test accuracy: cpu " << cpu_accuracy << ", gpu " << gpu_accuracy << ", mixed " << mixed_accuracy);
  CHECK(cpu_accuracy > 0.6);
  // The same accuracy class: cuDNN's and MKL's kernels round differently, so not bit for bit.
  CHECK(std::abs(gpu_accuracy - cpu_accuracy) <= 0.02);
  CHECK(std::abs(mixed_accuracy - cpu_accuracy) <= 0.02);
  CHECK(mixed.at("nodes").size() == 2);
}

TEST_CASE(
    "under the trainer's autocast a GPU's forward pass computes in bf16 and fp16; gradients stay fp32") {
  const auto data = synthetic_dataset(64, 5);
  for (const auto& [precision, dtype] :
       {std::pair{Precision::kFp32, torch::kFloat32}, std::pair{Precision::kBf16, torch::kBFloat16},
        std::pair{Precision::kFp16, torch::kHalf}}) {
    // A model per precision, as a trainer has one precision for its whole run: TorchScript's
    // executor keeps the graph it differentiated under the first autocast dtype, and a bf16 graph's
    // backward then meets fp16 gradients (seen on an H200, LibTorch 2.11).
    torch::manual_seed(3);
    Model model(build_model("cnn", ModelShape{{1, 28, 28}, 10, 0}), kGpu);
    ShareOptions options;
    options.micro_batch = 32;
    options.precision = precision;
    const ShareResult result = train_share(model, data, torch::arange(64, torch::kInt64), options);
    CAPTURE(precision_name(precision));
    CHECK(std::string(c10::toString(result.output_dtype)) == c10::toString(dtype));
    CHECK(computed_precision(result.output_dtype) == precision_name(precision));
    for (const auto& group : model.gradients().groups()) CHECK((group.flat.scalar_type() == torch::kFloat32));
    CHECK(all_finite(model.gradients()));
  }
}

#ifdef FILO_TORCH_CUDA
TEST_CASE("the memory probe finds what a capped device holds, returns its cache and starts the peak over") {
  const auto data = synthetic_dataset(8192, 7);
  torch::manual_seed(5);
  Model model(build_model("cnn", ModelShape{{1, 28, 28}, 10, 0}), kGpu);
  // About 400 MB of activations at 8192 samples: a device capped at 256 MB cannot hold them.
  cudaDeviceProp properties{};
  REQUIRE(cudaGetDeviceProperties(&properties, 0) == cudaSuccess);
  const double cap = 256.0 * (1 << 20) / static_cast<double>(properties.totalGlobalMem);
  c10::cuda::CUDACachingAllocator::setMemoryFraction(cap, 0);
  ShareOptions options;
  const std::int64_t fits = largest_micro_batch(model, data, options, 64, 8192, {});
  c10::cuda::CUDACachingAllocator::setMemoryFraction(1.0, 0);
  INFO("fits " << fits);
  CHECK(fits >= 64);
  CHECK(fits < 8192);
  const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(0);
  // Its cache went back to the device: what stays reserved is about what stays allocated.
  CHECK(stats.reserved_bytes[0].current <= stats.allocated_bytes[0].current + (64 << 20));
  // The peak starts over: the probe's largest step is not the run's peak.
  CHECK(stats.allocated_bytes[0].peak == stats.allocated_bytes[0].current);
}
#endif

TEST_CASE(
    "work on cuda:1 from a thread made its own stays there, and its copies are waited for on its stream") {
  // Needs two GPUs (main() skips it otherwise). The thread's current device is cuda:1, as a
  // trainer's worker makes it, and nothing of it touches cuda:0.
  const torch::Device second(torch::kCUDA, 1);
  const auto data = synthetic_dataset(256, 9);
  torch::manual_seed(13);
  Model model(build_model("mlp", ModelShape{{1, 28, 28}, 10, 0}), second);
  SendBuffers pinned(/*pinned=*/true);
  HostStaging staging(/*pinned=*/true);
  std::vector<ReceivedTensor> sent;
  torch::Tensor expected;
  ScopedThread worker([&] {
    use_device_on_this_thread(second);
    ShareOptions options;
    options.micro_batch = 64;
    train_share(model, data, torch::arange(256, torch::kInt64), options);
    expected = model.gradients().groups()[0].flat.to(torch::kCPU);
    sent = over_the_wire(model.gradients(), pinned);  // device → pinned buffer → frames
    synchronize(second);
  });
  worker.join();
  REQUIRE(sent.size() == model.gradients().groups().size());
  // What the frames hold is the gradient: the copy from cuda:1 had landed before they went out.
  CHECK(torch::equal(sent[0].to_tensor(), expected));
  // And back: frames → pinned buffer → cuda:1, twice through the same buffer.
  torch::Tensor on_device = torch::zeros_like(model.gradients().groups()[0].flat);
  staging.copy_into(sent[0], on_device);
  staging.copy_into(sent[0], on_device);
  synchronize(second);
  CHECK(on_device.device() == second);
  CHECK(torch::equal(on_device.to(torch::kCPU), expected));
  CHECK(peak_memory_bytes(torch::Device(torch::kCUDA, 0)) == 0);  // nothing landed on cuda:0
}

int main(int argc, char** argv) {
  // --requires-gpus=N: the cases chosen need N GPUs (ctest's gpu-second-device), skipped with fewer.
  std::vector<char*> arguments;
  long required = 1;
  for (int i = 0; i < argc; ++i) {
    const std::string argument = argv[i];
    if (argument.rfind("--requires-gpus=", 0) == 0) {
      required = std::stol(argument.substr(16));
    } else {
      arguments.push_back(argv[i]);
    }
  }
  if (!torch::cuda::is_available()) {
    std::cout << "no CUDA device visible to this LibTorch: GPU tests skipped" << std::endl;
    return kExitSkipped;
  }
  if (static_cast<long>(torch::cuda::device_count()) < required) {
    std::cout << "fewer than " << required << " GPUs visible: skipped" << std::endl;
    return kExitSkipped;
  }
  doctest::Context context(static_cast<int>(arguments.size()), arguments.data());
  return context.run();
}
