#pragma once
// The benchmarker: what a node has (from /proc and the CUDA runtime) and how fast its CPU
// multiplies matrices through the BLAS the trainer uses.
#include <optional>
#include <string>
#include <vector>

#include "messages/membership.hpp"

namespace filo {

struct BenchmarkerOptions {
  std::string node;            /// this node's name
  std::string device = "cpu";  /// the device the trainer will use
  int priority = 0;
  int torch_threads = 1;
  double gemm_seconds = 0.3;  /// time budget of the CPU GEMM score
  /// Run the cuBLAS GEMM and pinned-copy benchmarks on each GPU (a few seconds per GPU). Nodes
  /// training on a GPU and `filo bench` do; CPU nodes only list their GPUs.
  bool measure_gpus = false;
};

class Benchmarker final {
 public:
  explicit Benchmarker(BenchmarkerOptions options) : options_(std::move(options)) {}
  /// A complete hardware report, CPU GEMM score included.
  msg::HardwareReport report() const;
  /// FP32 GEMM GFLOP/s of 512x512 products on this process's LibTorch threads.
  static double cpu_gemm_gflops(double seconds);

 private:
  BenchmarkerOptions options_;
};

/// A GPU's published dense (no sparsity) peak in TFLOP/s for a GEMM precision ("fp16", "bf16",
/// "tf32", "fp32", "fp64"), from NVIDIA's datasheets, for the GPUs filo knows; none otherwise.
/// FP64 is the FP64 tensor-core figure, which cuBLAS DGEMM uses on these parts.
std::optional<double> published_peak_tflops(const std::string& gpu_name, const std::string& precision);

/// The precisions the report's device computes in, from its kind and compute capability.
std::vector<std::string> precisions_of(const msg::HardwareReport& report);

}  // namespace filo
