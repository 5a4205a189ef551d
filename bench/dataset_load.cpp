// Dataset loading: the time to load each split, count samples, fingerprint the training set and
// cut batches, for any dataset the loader reads (Fashion-MNIST from Debian's package by default).
// Each figure is the median of --repeats runs in this process.
//
//   build/dataset_load [--format idx] [--path /usr/share/datasets/fashion-mnist] [--image-size 0]
//                      [--context 0] [--repeats 5] [--threads 1]
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <functional>
#include <iomanip>
#include <iostream>

#include "actors/learning/dataset.hpp"

using namespace filo;

namespace {
constexpr std::int64_t kBatchSize = 64;
constexpr int kBatchesPerRun = 100;

// Median milliseconds of `repeats` runs of `action`.
double median_ms(int repeats, const std::function<void()>& action) {
  std::vector<double> times;
  for (int run = 0; run < repeats; ++run) {
    const auto start = std::chrono::steady_clock::now();
    action();
    times.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

void report(const std::string& what, double milliseconds) {
  std::cout << std::left << std::setw(34) << what << std::right << std::fixed << std::setprecision(2)
            << std::setw(10) << milliseconds << " ms" << std::endl;
}
}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Times dataset loading, counting, fingerprinting and batching"};
  DatasetSpec spec;
  std::string path = "/usr/share/datasets/fashion-mnist";
  int repeats = 5;
  int threads = 1;
  app.add_option("--format", spec.format, "idx, numpy, image_folder or tokens");
  app.add_option("--path", path, "the dataset's directory");
  app.add_option("--image-size", spec.image_size, "image_folder: square size");
  app.add_option("--context", spec.context, "tokens: window length");
  app.add_option("--repeats", repeats, "runs per figure (median)")->check(CLI::PositiveNumber);
  app.add_option("--threads", threads, "LibTorch threads")->check(CLI::PositiveNumber);
  CLI11_PARSE(app, argc, argv);
  torch::set_num_threads(threads);

  Dataset train, test;
  std::cout << spec.format << " dataset at " << path << ", " << threads << " LibTorch thread(s), median of "
            << repeats << " runs" << std::endl;
  report("load_dataset(train)", median_ms(repeats, [&] { train = load_dataset(spec, path, Split::kTrain); }));
  report("load_dataset(test)", median_ms(repeats, [&] { test = load_dataset(spec, path, Split::kTest); }));
  report("count_samples(train)", median_ms(repeats, [&] { count_samples(spec, path, Split::kTrain); }));
  report("dataset_fingerprint", median_ms(repeats, [&] { dataset_fingerprint(spec, path); }));
  const auto order = torch::randperm(train.size(), torch::kInt64);
  for (const bool augment : {false, true}) {
    spec.augment = augment;
    const Dataset data = load_dataset(spec, path, Split::kTrain);
    const double total = median_ms(repeats, [&] {
      for (int b = 0; b < kBatchesPerRun; ++b) {
        const auto start = (b * kBatchSize) % std::max<std::int64_t>(train.size() - kBatchSize, 1);
        data.batch(order.slice(0, start, start + kBatchSize), /*training=*/true, 0);
      }
    });
    report(std::string("batch(64)") + (augment ? ", augmented" : ""), total / kBatchesPerRun);
  }
  std::cout << "train " << train.size() << " samples of " << torch::IntArrayRef(train.sample_shape())
            << ", test " << test.size() << ", " << train.num_classes() << " classes";
  if (!train.mean().empty()) {
    std::cout << std::setprecision(4) << ", mean " << train.mean()[0] << ", std " << train.std()[0];
  }
  std::cout << std::endl;
  return 0;
}
