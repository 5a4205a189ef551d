#include "actors/benchmarker.hpp"

#include <unistd.h>
#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include <torch/torch.h>

#include "actors/benchmarker_cuda.hpp"
#include "runtime/clock.hpp"

namespace filo {
namespace {
constexpr std::int64_t kGemmSize = 512;
constexpr std::int64_t kKibibyte = 1024;

/// A field of /proc/meminfo in bytes, or 0 when absent.
std::int64_t meminfo_bytes(const std::string& field) {
  std::ifstream meminfo("/proc/meminfo");
  std::string line;
  while (std::getline(meminfo, line)) {
    if (line.rfind(field + ":", 0) != 0) continue;
    std::istringstream values(line.substr(field.size() + 1));
    std::int64_t kibibytes = 0;
    values >> kibibytes;
    return kibibytes * kKibibyte;
  }
  return 0;
}

std::string hostname() {
  char name[256] = {};
  gethostname(name, sizeof name - 1);
  return name;
}
}  // namespace

#ifndef FILO_HAVE_CUDA
GpuProbe probe_gpus(const GpuBenchmarkOptions&) {
  return {{}, "this build of filo has no CUDA support"};
}
#endif

namespace {
struct PublishedPeaks {
  const char* name_contains;  // matched against the CUDA device name, first match wins
  double fp16, bf16, tf32, fp32, fp64;
};
// NVIDIA datasheets, dense figures (the datasheets' headline tensor figures are with sparsity,
// i.e. twice these). H200 has H100 SXM's compute.
constexpr PublishedPeaks kPublishedPeaks[] = {
    {"H100 PCIe", 756.0, 756.0, 378.0, 51.0, 51.0}, {"H100 NVL", 835.0, 835.0, 418.0, 60.0, 60.0},
    {"H200", 989.0, 989.0, 494.0, 67.0, 67.0},      {"H100", 989.0, 989.0, 494.0, 67.0, 67.0},  // SXM5
    {"A100", 312.0, 312.0, 156.0, 19.5, 19.5},
};
}  // namespace

std::optional<double> published_peak_tflops(const std::string& gpu_name, const std::string& precision) {
  for (const auto& peaks : kPublishedPeaks) {
    if (gpu_name.find(peaks.name_contains) == std::string::npos) continue;
    if (precision == "fp16") return peaks.fp16;
    if (precision == "bf16") return peaks.bf16;
    if (precision == "tf32") return peaks.tf32;
    if (precision == "fp32") return peaks.fp32;
    if (precision == "fp64") return peaks.fp64;
    return std::nullopt;
  }
  return std::nullopt;
}

std::vector<std::string> precisions_of(const msg::HardwareReport& report) {
  if (report.device.rfind("cuda", 0) != 0) return {"fp32", "fp64"};
  const auto colon = report.device.find(':');
  const int index = colon == std::string::npos ? 0 : std::atoi(report.device.c_str() + colon + 1);
  // The report of a trainer on cuda:N lists that GPU alone (the benchmarker measures only its own),
  // so the GPU is found by its device index, not by its place in the list.
  const auto gpu = std::find_if(report.gpus.begin(), report.gpus.end(),
                                [index](const msg::GpuInfo& info) { return info.index == index; });
  if (gpu == report.gpus.end()) return {};
  // Tensor-core formats by compute capability: FP16 from 5.3, BF16 and TF32 from 8.0 (Ampere).
  const int capability = gpu->compute_capability_major * 10 + gpu->compute_capability_minor;
  std::vector<std::string> precisions{"fp32", "fp64"};
  if (capability >= 53) precisions.push_back("fp16");
  if (capability >= 80) precisions.insert(precisions.end(), {"bf16", "tf32"});
  return precisions;
}

double Benchmarker::cpu_gemm_gflops(double seconds) {
  torch::NoGradGuard no_grad;
  const auto a = torch::randn({kGemmSize, kGemmSize});
  const auto b = torch::randn({kGemmSize, kGemmSize});
  auto c = torch::mm(a, b);  // warm-up: first call pays for BLAS initialisation
  const auto start = Clock::now();
  int products = 0;
  do {
    torch::mm_out(c, a, b);
    ++products;
  } while (seconds_between(start, Clock::now()) < seconds);
  const double flops = 2.0 * kGemmSize * kGemmSize * kGemmSize * products;
  return flops / seconds_between(start, Clock::now()) / 1e9;
}

msg::HardwareReport Benchmarker::report() const {
  msg::HardwareReport report;
  report.node = options_.node;
  report.device = options_.device;
  report.hostname = hostname();
  report.cpu_cores = static_cast<std::int32_t>(sysconf(_SC_NPROCESSORS_ONLN));
  report.memory_available_bytes = meminfo_bytes("MemAvailable");
  report.swap_available_bytes = meminfo_bytes("SwapFree");
  report.priority = options_.priority;
  report.torch_threads = options_.torch_threads;
  report.cpu_gemm_gflops = cpu_gemm_gflops(options_.gemm_seconds);
  GpuBenchmarkOptions gpu_options;
  gpu_options.measure = options_.measure_gpus || options_.device.rfind("cuda", 0) == 0;
  if (options_.device.rfind("cuda:", 0) == 0) gpu_options.only_device = std::stoi(options_.device.substr(5));
  GpuProbe gpus = probe_gpus(gpu_options);
  report.gpus = std::move(gpus.gpus);
  report.gpu_status = std::move(gpus.status);
  report.precisions = precisions_of(report);
  return report;
}

}  // namespace filo
