// CUDA runtime queries and cuBLAS / copy benchmarks for the benchmarker. Every CUDA and cuBLAS
// call is checked; a failure names the call and its status string and ends that GPU's benchmark
// (its listing stays).
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <stdexcept>
#include <string>

#include "actors/benchmarker_cuda.hpp"

namespace filo {
namespace {
/// Pinned buffer size of the host↔device copy test: large enough that per-copy latency is noise.
constexpr std::size_t kCopyBytes = std::size_t{256} << 20;
constexpr int kWarmUpRuns = 3;
/// Largest GEMM side; smaller when the GPU's free memory would not hold three such matrices
/// with room to spare.
constexpr int kGemmSide = 8192;
constexpr int kMinGemmSide = 1024;

struct CudaFailure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

std::string failure(const char* call, cudaError_t status) {
  return std::string(call) + " failed: " + cudaGetErrorName(status) + " (" + cudaGetErrorString(status) + ")";
}

void check(cudaError_t status, const char* call) {
  if (status != cudaSuccess) throw CudaFailure(failure(call, status));
}

void check(cublasStatus_t status, const char* call) {
  if (status != CUBLAS_STATUS_SUCCESS) {
    throw CudaFailure(std::string(call) + " failed: " + cublasGetStatusName(status) + " (" +
                      cublasGetStatusString(status) + ")");
  }
}

std::string uuid_text(const cudaUUID_t& uuid) {
  char text[48];
  const auto* b = reinterpret_cast<const unsigned char*>(uuid.bytes);
  std::snprintf(text, sizeof text, "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
                b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
                b[15]);
  return text;
}

// RAII owners, so that a failed call half-way through frees what was allocated.
class DeviceBuffer {
 public:
  explicit DeviceBuffer(std::size_t bytes) { check(cudaMalloc(&data_, bytes), "cudaMalloc"); }
  ~DeviceBuffer() { cudaFree(data_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  void* get() const { return data_; }

 private:
  void* data_ = nullptr;
};

class PinnedBuffer {
 public:
  explicit PinnedBuffer(std::size_t bytes) { check(cudaMallocHost(&data_, bytes), "cudaMallocHost"); }
  ~PinnedBuffer() { cudaFreeHost(data_); }
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  void* get() const { return data_; }

 private:
  void* data_ = nullptr;
};

class Event {
 public:
  Event() { check(cudaEventCreate(&event_), "cudaEventCreate"); }
  ~Event() { cudaEventDestroy(event_); }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  cudaEvent_t get() const { return event_; }

 private:
  cudaEvent_t event_{};
};

class CublasHandle {
 public:
  CublasHandle() { check(cublasCreate(&handle_), "cublasCreate"); }
  ~CublasHandle() { cublasDestroy(handle_); }
  CublasHandle(const CublasHandle&) = delete;
  CublasHandle& operator=(const CublasHandle&) = delete;
  cublasHandle_t get() const { return handle_; }

 private:
  cublasHandle_t handle_{};
};

/// Milliseconds between two recorded events, after the second has completed.
float elapsed_ms(const Event& start, const Event& stop) {
  check(cudaEventSynchronize(stop.get()), "cudaEventSynchronize");
  float ms = 0.0f;
  check(cudaEventElapsedTime(&ms, start.get(), stop.get()), "cudaEventElapsedTime");
  return ms;
}

/// Runs `work` until it has been timed for at least `seconds` by CUDA events (after warm-up
/// runs), and returns the mean milliseconds per run.
template <typename Work>
double mean_ms_per_run(const Work& work, double seconds) {
  for (int run = 0; run < kWarmUpRuns; ++run) work();
  check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
  Event start, stop;
  // Time one run to size a batch that fills the budget, then time the batch as a whole.
  check(cudaEventRecord(start.get()), "cudaEventRecord");
  work();
  check(cudaEventRecord(stop.get()), "cudaEventRecord");
  const double one_ms = std::max(1e-3, static_cast<double>(elapsed_ms(start, stop)));
  const int runs = std::max(3, static_cast<int>(seconds * 1000.0 / one_ms));
  check(cudaEventRecord(start.get()), "cudaEventRecord");
  for (int run = 0; run < runs; ++run) work();
  check(cudaEventRecord(stop.get()), "cudaEventRecord");
  return elapsed_ms(start, stop) / runs;
}

// Inputs of non-trivial values: all-zero matrices draw less power and overstate the clock.
template <typename T>
__global__ void fill_kernel(T* data, std::size_t count) {
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    const unsigned hash = static_cast<unsigned>(i) * 2654435761u;
    data[i] = T(static_cast<float>((hash >> 16) & 0xff) / 256.0f - 0.5f);
  }
}

template <typename T>
void fill(void* data, std::size_t count) {
  fill_kernel<T><<<1024, 256>>>(static_cast<T*>(data), count);
  check(cudaGetLastError(), "fill_kernel launch");
}

struct GemmCase {
  const char* precision;
  cudaDataType_t data_type;
  cublasComputeType_t compute_type;
  std::size_t element_bytes;
  void (*fill)(void*, std::size_t);
};

double gemm_tflops(const CublasHandle& cublas, const GemmCase& test, std::size_t free_bytes, double seconds) {
  int side = kGemmSide;
  while (side > kMinGemmSide && 3 * std::size_t(side) * side * test.element_bytes > free_bytes / 2) side /= 2;
  const std::size_t count = std::size_t(side) * side;
  DeviceBuffer a(count * test.element_bytes), b(count * test.element_bytes), c(count * test.element_bytes);
  test.fill(a.get(), count);
  test.fill(b.get(), count);
  test.fill(c.get(), count);
  const bool double_scalars = test.compute_type == CUBLAS_COMPUTE_64F;
  const float alpha_f = 1.0f, beta_f = 0.0f;
  const double alpha_d = 1.0, beta_d = 0.0;
  const void* alpha = double_scalars ? static_cast<const void*>(&alpha_d) : &alpha_f;
  const void* beta = double_scalars ? static_cast<const void*>(&beta_d) : &beta_f;
  const double ms = mean_ms_per_run(
      [&] {
        check(cublasGemmEx(cublas.get(), CUBLAS_OP_N, CUBLAS_OP_N, side, side, side, alpha, a.get(),
                           test.data_type, side, b.get(), test.data_type, side, beta, c.get(), test.data_type,
                           side, test.compute_type, CUBLAS_GEMM_DEFAULT),
              "cublasGemmEx");
      },
      seconds);
  return 2.0 * side * double(side) * side / (ms * 1e-3) / 1e12;
}

double copy_gbps(void* to, const void* from, cudaMemcpyKind kind, double seconds) {
  const double ms = mean_ms_per_run(
      [&] { check(cudaMemcpyAsync(to, from, kCopyBytes, kind), "cudaMemcpyAsync"); }, seconds);
  return kCopyBytes / (ms * 1e-3) / 1e9;
}

void measure(int device, msg::GpuInfo& info, const cudaDeviceProp& properties, double seconds) {
  check(cudaSetDevice(device), "cudaSetDevice");
  {
    PinnedBuffer host(kCopyBytes);
    DeviceBuffer on_device(kCopyBytes);
    info.host_to_device_gbps = copy_gbps(on_device.get(), host.get(), cudaMemcpyHostToDevice, seconds);
    info.device_to_host_gbps = copy_gbps(host.get(), on_device.get(), cudaMemcpyDeviceToHost, seconds);
  }
  CublasHandle cublas;
  const int capability = properties.major * 10 + properties.minor;
  std::vector<GemmCase> cases{
      {"fp32", CUDA_R_32F, CUBLAS_COMPUTE_32F, 4, fill<float>},
      {"fp64", CUDA_R_64F, CUBLAS_COMPUTE_64F, 8, fill<double>},
  };
  if (capability >= 53) cases.push_back({"fp16", CUDA_R_16F, CUBLAS_COMPUTE_32F, 2, fill<__half>});
  if (capability >= 80) {
    cases.push_back({"bf16", CUDA_R_16BF, CUBLAS_COMPUTE_32F, 2, fill<__nv_bfloat16>});
    cases.push_back({"tf32", CUDA_R_32F, CUBLAS_COMPUTE_32F_FAST_TF32, 4, fill<float>});
  }
  for (const auto& test : cases) {
    std::size_t free_bytes = 0, total_bytes = 0;
    check(cudaMemGetInfo(&free_bytes, &total_bytes), "cudaMemGetInfo");
    info.gemm_tflops[test.precision] = gemm_tflops(cublas, test, free_bytes, seconds);
  }
}
}  // namespace

GpuProbe probe_gpus(const GpuBenchmarkOptions& options) {
  GpuProbe probe;
  int count = 0;
  if (cudaError_t status = cudaGetDeviceCount(&count); status != cudaSuccess) {
    const bool no_gpu = status == cudaErrorNoDevice || status == cudaErrorInsufficientDriver;
    probe.status = (no_gpu ? std::string("no NVIDIA GPU or driver on this machine; ") : std::string()) +
                   failure("cudaGetDeviceCount", status);
    return probe;
  }
  if (count == 0) probe.status = "the CUDA runtime sees no GPU";
  for (int device = 0; device < count; ++device) {
    if (options.only_device >= 0 && device != options.only_device) continue;
    cudaDeviceProp properties{};
    if (cudaError_t status = cudaGetDeviceProperties(&properties, device); status != cudaSuccess) {
      probe.status = failure("cudaGetDeviceProperties", status);
      continue;
    }
    msg::GpuInfo info;
    info.index = device;
    info.name = properties.name;
    info.uuid = uuid_text(properties.uuid);
    info.compute_capability_major = properties.major;
    info.compute_capability_minor = properties.minor;
    info.total_memory_bytes = static_cast<std::int64_t>(properties.totalGlobalMem);
    try {
      check(cudaSetDevice(device), "cudaSetDevice");
      std::size_t free_bytes = 0, total_bytes = 0;
      check(cudaMemGetInfo(&free_bytes, &total_bytes), "cudaMemGetInfo");
      info.free_memory_bytes = static_cast<std::int64_t>(free_bytes);
      if (options.measure) measure(device, info, properties, options.seconds_per_test);
    } catch (const CudaFailure& failed) {
      info.benchmark_status = failed.what();
      cudaGetLastError();  // clear a sticky launch error so the next device starts clean
    }
    probe.gpus.push_back(std::move(info));
  }
  return probe;
}

}  // namespace filo
