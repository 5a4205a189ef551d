// Aggregation throughput: summing N contributions into the aggregator's sums with the aggregator's
// own ContributionAverager (frames as they arrive from the bus, 1 MiB each), against plain copies
// of the same bytes measured in the same run: memcpy of the frames on the CPU, a device-to-device
// copy on a GPU. Models of 1 MiB to 1 GiB, capped by free host and device memory.
//
//   build/aggregation [--contributions 4] [--threads N] [--max-mb 1024] [--seconds-per-size 1]
//
// Throughput counts contribution bytes per second (N x model bytes / time), for both columns.
#include <sys/sysinfo.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <thread>
#include <vector>

#include <torch/cuda.h>
#include <CLI/CLI.hpp>

#include "actors/learning/averaging.hpp"
#include "actors/learning/compute_threads.hpp"
#include "runtime/clock.hpp"

using namespace filo;

namespace {
constexpr std::size_t kMebibyte = std::size_t{1} << 20;
constexpr std::int64_t kModelSizesMb[] = {1, 16, 256, 1024};
constexpr int kMinRepeats = 3;
/// Host memory the benchmark leaves free: it shares the machine.
constexpr double kHostMemoryShare = 0.5;

/// One contribution as the aggregator holds it: a gradient group in 1 MiB frames.
struct Contribution {
  std::vector<ReceivedTensor> gradients;
};

Contribution make_contribution(std::int64_t numel) {
  // zmq allocates each received frame separately; so does this, so that the reads are like theirs.
  const auto bytes = static_cast<std::size_t>(numel) * sizeof(float);
  auto frames = std::make_shared<std::vector<zmq::message_t>>();
  const torch::Tensor values = torch::randn({numel});
  for (std::size_t offset = 0; offset < bytes; offset += kChunkBytes) {
    const std::size_t length = std::min(kChunkBytes, bytes - offset);
    frames->emplace_back(static_cast<const char*>(values.data_ptr()) + offset, length);
  }
  TensorMeta meta;
  meta.name = "float32";
  meta.dtype = WireDType::kFloat32;
  meta.shape = {numel};
  meta.frames = static_cast<std::uint32_t>(frames->size());
  auto received = read_tensor_frames({meta}, frames, 0);
  TORCH_CHECK(received, "benchmark contribution: ", received.error());
  return Contribution{received.value()};
}

/// Best seconds of `run` over at least kMinRepeats repeats and `budget` seconds.
template <typename Run>
double best_seconds(double budget, const Run& run) {
  double best = 1e30;
  double spent = 0;
  for (int repeat = 0; repeat < kMinRepeats || spent < budget; ++repeat) {
    const auto started = Clock::now();
    run();
    const double seconds = seconds_between(started, Clock::now());
    best = std::min(best, seconds);
    spent += seconds;
  }
  return best;
}

double gigabytes_per_second(std::size_t bytes, double seconds) {
  return static_cast<double>(bytes) / 1e9 / seconds;
}

std::size_t available_host_bytes() {
  struct sysinfo info {};
  sysinfo(&info);
  return static_cast<std::size_t>(info.freeram + info.bufferram) * info.mem_unit;
}

void print_row(const char* where, std::int64_t megabytes, double ours, const char* against, double plain) {
  std::printf("%-4s %6lld MB   filo sum %7.2f GB/s   %-22s %7.2f GB/s   ratio %.2f\n", where,
              static_cast<long long>(megabytes), ours, against, plain, ours / plain);
  std::fflush(stdout);
}
}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"filo's aggregation (summing contributions) against plain copies of the same bytes"};
  int contributions = 4;
  int threads = static_cast<int>(std::max(1U, std::thread::hardware_concurrency()));
  std::int64_t max_mb = 1024;
  double seconds_per_size = 1.0;
  app.add_option("--contributions", contributions, "contributions summed per round")
      ->check(CLI::Range(1, 64));
  app.add_option("--threads", threads, "LibTorch threads, as run.threads gives the coordinator")
      ->check(CLI::Range(1, 256));
  app.add_option("--max-mb", max_mb, "largest model in MB");
  app.add_option("--seconds-per-size", seconds_per_size, "time spent measuring each size and column");
  CLI11_PARSE(app, argc, argv);
  set_compute_threads(threads);
  torch::NoGradGuard no_grad;

  std::printf("aggregation: %d contributions per round, %d LibTorch thread(s), memcpy on one thread\n",
              contributions, threads);
  std::printf("CPU: ContributionAverager::add of frames into host sums, against memcpy of the frames\n");
  for (const std::int64_t megabytes : kModelSizesMb) {
    if (megabytes > max_mb) break;
    const std::size_t bytes = static_cast<std::size_t>(megabytes) * kMebibyte;
    // N contributions, the sums, the model's gradients and a copy destination.
    if (static_cast<double>(bytes) * (contributions + 3) > kHostMemoryShare * available_host_bytes()) {
      std::printf("CPU  %6lld MB   skipped: needs %.1f GB of host memory, more than half of what is free\n",
                  static_cast<long long>(megabytes), static_cast<double>(bytes) * (contributions + 3) / 1e9);
      continue;
    }
    const std::int64_t numel = static_cast<std::int64_t>(bytes / sizeof(float));
    std::vector<Contribution> held;
    for (int c = 0; c < contributions; ++c) held.push_back(make_contribution(numel));
    FlatTensors gradients = FlatTensors::adopt({{"w", torch::zeros({numel})}}, torch::kCPU);
    FlatTensors buffers;
    ContributionAverager averager(gradients, buffers, Combine::kSummedGradients);
    const double summing = best_seconds(seconds_per_size, [&] {
      averager.clear();
      for (const auto& contribution : held) averager.add(contribution.gradients, {}, 1);
    });
    // The combine before sums were overwritten by their round's first contribution: zero, then add.
    torch::Tensor sum = torch::empty({numel});
    const double zero_then_add = best_seconds(seconds_per_size, [&] {
      sum.zero_();
      for (const auto& contribution : held) contribution.gradients.front().add_to(sum, 1.0);
    });
    torch::Tensor destination = torch::empty({numel});
    const double copying = best_seconds(seconds_per_size, [&] {
      for (const auto& contribution : held) contribution.gradients.front().copy_into(destination);
    });
    const std::size_t moved = bytes * static_cast<std::size_t>(contributions);
    print_row("CPU", megabytes, gigabytes_per_second(moved, summing), "memcpy",
              gigabytes_per_second(moved, copying));
    std::printf("                 (zero then add every contribution, as before: %.2f GB/s, ratio %.2f)\n",
                gigabytes_per_second(moved, zero_then_add), copying / zero_then_add);
  }

  if (!torch::cuda::is_available()) {
    std::printf("GPU: skipped, no CUDA device visible to this LibTorch\n");
    return 0;
  }
  const torch::Device device(torch::kCUDA, 0);
  std::printf(
      "GPU: sums on cuda:0; 'resident' adds contributions already on the device against a\n"
      "     device-to-device copy; 'from host' is the aggregator's path (frames -> pinned buffer ->\n"
      "     device -> add) against a pinned host-to-device copy\n");
  for (const std::int64_t megabytes : kModelSizesMb) {
    if (megabytes > max_mb) break;
    const std::size_t bytes = static_cast<std::size_t>(megabytes) * kMebibyte;
    const std::int64_t numel = static_cast<std::int64_t>(bytes / sizeof(float));
    std::vector<torch::Tensor> on_device;
    FlatTensors gradients;
    torch::Tensor copy_destination;
    try {
      for (int c = 0; c < contributions; ++c) on_device.push_back(torch::randn({numel}, device));
      gradients = FlatTensors::adopt({{"w", torch::zeros({numel})}}, device);
      copy_destination = torch::empty({numel}, device);
    } catch (const c10::Error&) {
      std::printf("GPU  %6lld MB   skipped: the device has too little free memory\n",
                  static_cast<long long>(megabytes));
      continue;
    }
    torch::Tensor sum = torch::zeros({numel}, device);
    const double resident = best_seconds(seconds_per_size, [&] {
      sum.copy_(on_device.front());
      for (std::size_t c = 1; c < on_device.size(); ++c) sum.add_(on_device[c]);
      torch::cuda::synchronize();
    });
    const double device_copy = best_seconds(seconds_per_size, [&] {
      for (const auto& contribution : on_device) copy_destination.copy_(contribution);
      torch::cuda::synchronize();
    });
    const std::size_t moved = bytes * static_cast<std::size_t>(contributions);
    print_row("GPU", megabytes, gigabytes_per_second(moved, resident), "device copy (resident)",
              gigabytes_per_second(moved, device_copy));
    on_device.clear();
    if (static_cast<double>(bytes) * (contributions + 2) > kHostMemoryShare * available_host_bytes())
      continue;
    std::vector<Contribution> held;
    for (int c = 0; c < contributions; ++c) held.push_back(make_contribution(numel));
    FlatTensors buffers;
    ContributionAverager averager(gradients, buffers, Combine::kSummedGradients);
    const double from_host = best_seconds(seconds_per_size, [&] {
      averager.clear();
      for (const auto& contribution : held) averager.add(contribution.gradients, {}, 1);
      torch::cuda::synchronize();
    });
    const torch::Tensor pinned = torch::randn({numel}).pin_memory();
    const double host_copy = best_seconds(seconds_per_size, [&] {
      for (int c = 0; c < contributions; ++c) copy_destination.copy_(pinned, /*non_blocking=*/true);
      torch::cuda::synchronize();
    });
    print_row("GPU", megabytes, gigabytes_per_second(moved, from_host), "pinned host->device",
              gigabytes_per_second(moved, host_copy));
  }
  return 0;
}
