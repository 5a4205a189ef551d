// The registrar's admission rules: each admits what it should and rejects with the reason.
#include <doctest/doctest.h>

#include "actors/benchmarker.hpp"
#include "actors/learning/dataset.hpp"
#include "actors/registrar.hpp"

using namespace filo;

namespace {
constexpr std::int64_t kMebibyte = 1 << 20;

msg::HardwareReport gpu_report() {
  msg::HardwareReport report;
  report.node = "box";
  report.device = "cuda:0";
  report.hostname = "box";
  report.cpu_cores = 16;
  report.memory_available_bytes = 64 * 1024 * kMebibyte;
  report.cpu_gemm_gflops = 500;
  msg::GpuInfo gpu;
  gpu.name = "NVIDIA RTX A4000";
  gpu.uuid = "GPU-1";
  gpu.compute_capability_major = 8;
  gpu.compute_capability_minor = 6;
  gpu.total_memory_bytes = 16 * 1024 * kMebibyte;
  gpu.free_memory_bytes = 15 * 1024 * kMebibyte;
  report.gpus.push_back(gpu);
  report.precisions = precisions_of(report);
  report.dataset_fingerprint = "00112233aabbccdd";
  return report;
}

std::string problem_of(const msg::HardwareReport& report, const AdmissionPolicy& policy) {
  return report_problem(report, "trainer@" + report.node + "/" + report.device, policy).value_or("");
}
}  // namespace

TEST_CASE("an empty policy admits any complete report") {
  CHECK(problem_of(gpu_report(), AdmissionPolicy{}).empty());
}

TEST_CASE("minimum host memory admits above and rejects below with both figures") {
  AdmissionPolicy policy;
  policy.min_memory_bytes = 32 * 1024 * kMebibyte;
  CHECK(problem_of(gpu_report(), policy).empty());
  policy.min_memory_bytes = 128 * 1024 * kMebibyte;
  const auto problem = problem_of(gpu_report(), policy);
  CHECK(problem.find("available memory 65536 MiB is below the required 131072 MiB") != std::string::npos);
}

TEST_CASE("minimum device memory applies to GPU trainers only") {
  AdmissionPolicy policy;
  policy.min_device_memory_bytes = 24 * 1024 * kMebibyte;
  CHECK(problem_of(gpu_report(), policy).find("device memory 16384 MiB is below the required 24576 MiB") !=
        std::string::npos);
  auto cpu = gpu_report();
  cpu.device = "cpu";
  cpu.gpus.clear();
  cpu.precisions = precisions_of(cpu);
  CHECK(problem_of(cpu, policy).empty());
}

TEST_CASE("required precisions follow the device's compute capability") {
  AdmissionPolicy policy;
  policy.required_precisions = {"bf16"};
  CHECK(problem_of(gpu_report(), policy).empty());  // compute capability 8.6
  auto old_gpu = gpu_report();
  old_gpu.gpus[0].compute_capability_major = 7;
  old_gpu.gpus[0].compute_capability_minor = 5;
  old_gpu.precisions = precisions_of(old_gpu);
  CHECK(problem_of(old_gpu, policy).find("does not compute in required precision bf16") != std::string::npos);
  policy.required_precisions = {"fp16"};
  CHECK(problem_of(old_gpu, policy).empty());
}

TEST_CASE("a trainer on cuda:1 reports its own GPU's precisions, though its report lists that GPU alone") {
  auto second = gpu_report();
  second.device = "cuda:1";
  second.gpus[0].index = 1;  // the benchmarker of cuda:1 measures and lists cuda:1 only
  second.precisions = precisions_of(second);
  CHECK(second.precisions == std::vector<std::string>{"fp32", "fp64", "fp16", "bf16", "tf32"});
  AdmissionPolicy policy;
  policy.required_precisions = {"bf16"};
  CHECK(problem_of(second, policy).empty());
}

TEST_CASE("a node whose dataset differs from the coordinator's is rejected") {
  AdmissionPolicy policy;
  policy.dataset_fingerprint = "00112233aabbccdd";
  CHECK(problem_of(gpu_report(), policy).empty());
  auto other = gpu_report();
  other.dataset_fingerprint = "ffffffffffffffff";
  const std::string differs = problem_of(other, policy);
  CHECK(differs.find("copy of the training set differs") != std::string::npos);
  // The reason never reveals what the coordinator expects: a stranger could register with it.
  CHECK(differs.find(policy.dataset_fingerprint) == std::string::npos);
  other.dataset_fingerprint.clear();
  other.dataset_problem = "/data/x/train-labels-idx1-ubyte.gz not found";
  const std::string missing = problem_of(other, policy);
  CHECK(missing.find("no copy of the run's training set") != std::string::npos);
  CHECK(missing.find("train-labels-idx1-ubyte.gz not found") != std::string::npos);
}

TEST_CASE("the fingerprint tells Fashion-MNIST's training labels from its test labels") {
  const std::string path = "/usr/share/datasets/fashion-mnist";
  const auto train = labels_fingerprint("fashion-mnist", path, Split::kTrain);
  CHECK(train.size() == 16);
  CHECK(train == labels_fingerprint("fashion-mnist", path, Split::kTrain));
  CHECK(train != labels_fingerprint("fashion-mnist", path, Split::kTest));
}
