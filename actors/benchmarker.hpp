#pragma once
// The benchmarker: what a node has (from /proc and the CUDA runtime) and how fast its CPU
// multiplies matrices through the BLAS the trainer uses.
#include <string>
#include <vector>

#include "messages/membership.hpp"

namespace filo {

struct BenchmarkerOptions {
  std::string node;            /// this node's name
  std::string device = "cpu";  /// the device the trainer will use
  int priority = 0;
  int torch_threads = 1;
  double gemm_seconds = 0.3;   /// time budget of the CPU GEMM score
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

/// The precisions the report's device computes in, from its kind and compute capability.
std::vector<std::string> precisions_of(const msg::HardwareReport& report);

}  // namespace filo
