// Datasets in every format load with the right shapes, dtypes and normalisation; malformed files are
// refused naming the file and the problem; safetensors files round-trip and read back in Python.
// Fixtures are written at test time: .npy files from C++ bytes and from NumPy, images through
// stb_image_write, token files as raw uint16.
#include <doctest/doctest.h>

#include <stb_image_write.h>
#include <unistd.h>
#include <zlib.h>
#include <array>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>

#include <nlohmann/json.hpp>

#include "actors/learning/dataset.hpp"
#include "actors/learning/npy.hpp"
#include "runtime/config.hpp"
#include "runtime/process.hpp"
#include "runtime/safetensors.hpp"

using namespace filo;
namespace fs = std::filesystem;

namespace {

const std::string kFashionMnist = "/usr/share/datasets/fashion-mnist";
const std::string kPython = "/usr/bin/python3";

// A fresh directory under /tmp, removed with everything in it at the end of the test.
class TemporaryDirectory {
 public:
  explicit TemporaryDirectory(const std::string& name)
      : path_("/tmp/filo-test-" + name + "-" + std::to_string(getpid())) {
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TemporaryDirectory() { fs::remove_all(path_); }
  TemporaryDirectory(const TemporaryDirectory&) = delete;
  TemporaryDirectory& operator=(const TemporaryDirectory&) = delete;
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

void write_file(const std::string& path, const std::string& bytes) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream(path, std::ios::binary) << bytes;
}

std::string read_file(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>()};
}

void write_npy(const std::string& path, const torch::Tensor& tensor) {
  write_file(path, npy_bytes(tensor));
}

// A .npy file with a hand-written header dict, for headers npy_bytes would never write.
std::string npy_with_header(const std::string& dict, const std::string& data) {
  std::string header = dict;
  header.append((64 - (10 + header.size() + 1) % 64) % 64, ' ');
  header += '\n';
  std::string bytes = std::string("\x93NUMPY\x01\x00", 8);
  bytes += static_cast<char>(header.size() & 0xFF);
  bytes += static_cast<char>(header.size() >> 8);
  return bytes + header + data;
}

// The message of the std::runtime_error `action` throws ("" if it throws none).
std::string refusal(const std::function<void()>& action) {
  try {
    action();
  } catch (const std::runtime_error& error) {
    return error.what();
  }
  return "";
}

// Checks that `action` is refused with a message naming `file` and containing `problem`.
void check_refused(const std::function<void()>& action, const std::string& file, const std::string& problem) {
  const std::string message = refusal(action);
  INFO("message: ", message);
  CHECK(message.find(file) != std::string::npos);
  CHECK(message.find(problem) != std::string::npos);
}

// Runs a Python script; returns its exit code, its output in `output`.
int run_python(const TemporaryDirectory& directory, const std::string& script,
               const std::vector<std::string>& arguments, std::string& output) {
  write_file(directory / "script.py", script);
  std::vector<std::string> command = {kPython, directory / "script.py"};
  command.insert(command.end(), arguments.begin(), arguments.end());
  ChildProcess python(command, directory / "python.log");
  const auto code = python.wait_for(std::chrono::seconds(60));
  output = read_file(directory / "python.log");
  return code.value_or(-1);
}

std::int64_t resident_kib() {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6));
  }
  return -1;
}

// An idx file: big-endian magic and extents, then uint8 data, gzipped when the name ends in .gz.
void write_idx(const std::string& path, std::uint32_t magic, const std::vector<std::uint32_t>& extents,
               const torch::Tensor& data) {
  std::string bytes;
  for (const std::uint32_t value : [&] {
         std::vector<std::uint32_t> words = {magic};
         words.insert(words.end(), extents.begin(), extents.end());
         return words;
       }()) {
    for (int shift = 24; shift >= 0; shift -= 8) bytes += static_cast<char>((value >> shift) & 0xFF);
  }
  const auto contiguous = data.contiguous();
  bytes.append(static_cast<const char*>(contiguous.data_ptr()), contiguous.nbytes());
  if (fs::path(path).extension() != ".gz") return write_file(path, bytes);
  gzFile file = gzopen(path.c_str(), "wb");
  REQUIRE(file != nullptr);
  gzwrite(file, bytes.data(), static_cast<unsigned>(bytes.size()));
  gzclose(file);
}

// A small idx dataset of `rows` x `columns` images whose pixels count up, labels 0..classes-1.
void write_idx_dataset(const TemporaryDirectory& directory, std::int64_t rows, std::int64_t columns,
                       std::int64_t train, std::int64_t test, std::int64_t classes) {
  for (const auto& [prefix, count] : {std::pair{"train", train}, std::pair{"t10k", test}}) {
    const auto images = torch::arange(count * rows * columns, torch::kInt64).remainder(256).to(torch::kUInt8);
    const auto labels = torch::arange(count, torch::kInt64).remainder(classes).to(torch::kUInt8);
    const auto n = static_cast<std::uint32_t>(count);
    write_idx(directory / (std::string(prefix) + "-images-idx3-ubyte.gz"), 0x803,
              {n, static_cast<std::uint32_t>(rows), static_cast<std::uint32_t>(columns)}, images);
    write_idx(directory / (std::string(prefix) + "-labels-idx1-ubyte"), 0x801, {n}, labels);
  }
}

// A solid-colour RGB image of `width` x `height`.
void write_image(const std::string& path, int width, int height, std::array<std::uint8_t, 3> colour) {
  fs::create_directories(fs::path(path).parent_path());
  std::vector<std::uint8_t> pixels;
  for (int i = 0; i < width * height; ++i) pixels.insert(pixels.end(), colour.begin(), colour.end());
  const bool jpeg = fs::path(path).extension() == ".jpg";
  const int written = jpeg ? stbi_write_jpg(path.c_str(), width, height, 3, pixels.data(), 95)
                           : stbi_write_png(path.c_str(), width, height, 3, pixels.data(), width * 3);
  REQUIRE(written != 0);
}

torch::Tensor indices(std::initializer_list<std::int64_t> values) {
  return torch::tensor(std::vector<std::int64_t>(values), torch::kInt64);
}

}  // namespace

TEST_CASE("idx data: Fashion-MNIST normalises with its training set's statistics, 0.2860 and 0.3530") {
  DatasetSpec spec;  // the defaults: idx, fashion-mnist
  const Dataset train = load_dataset(spec, kFashionMnist, Split::kTrain);
  CHECK(train.size() == 60000);
  CHECK(train.sample_shape() == std::vector<std::int64_t>{1, 28, 28});
  CHECK(train.num_classes() == 10);
  CHECK_FALSE(train.is_tokens());
  REQUIRE(train.mean().size() == 1);
  CHECK(std::abs(train.mean()[0] - 0.2860) < 5e-4);
  CHECK(std::abs(train.std()[0] - 0.3530) < 5e-4);

  // The test split is normalised with the training set's statistics, not its own.
  const Dataset test = load_dataset(spec, kFashionMnist, Split::kTest);
  CHECK(test.size() == 10000);
  CHECK(test.mean() == train.mean());
  CHECK(test.std() == train.std());

  // Normalised inputs have mean ~0 and std ~1 over many samples; targets are the labels.
  const auto [inputs, targets] = train.batch(torch::arange(0, 6000, torch::kInt64));
  CHECK((inputs.scalar_type() == torch::kFloat32));
  CHECK(inputs.sizes() == torch::IntArrayRef{6000, 1, 28, 28});
  CHECK(std::abs(inputs.mean().item<double>()) < 0.02);
  CHECK(std::abs(inputs.std().item<double>() - 1.0) < 0.02);
  CHECK((targets.scalar_type() == torch::kInt64));
  CHECK(targets.max().item<std::int64_t>() == 9);

  // The compatibility overloads give what the old loader gave.
  const Dataset limited = load_dataset("fashion-mnist", kFashionMnist, Split::kTrain, 100);
  CHECK(limited.size() == 100);
  CHECK(count_samples("fashion-mnist", kFashionMnist, Split::kTrain, 100) == 100);
  spec.limit = 250;
  CHECK(count_samples(spec, kFashionMnist, Split::kTrain) == 250);
  CHECK(load_dataset(spec, kFashionMnist, Split::kTrain).mean() ==
        train.mean());  // the limit changes no statistic
}

TEST_CASE("idx data of any image size loads; malformed idx files are refused naming the file") {
  TemporaryDirectory directory("idx");
  write_idx_dataset(directory, 10, 12, 20, 8, 3);
  const Dataset train = load_dataset(DatasetSpec{}, directory.path(), Split::kTrain);
  CHECK(train.size() == 20);
  CHECK(train.sample_shape() == std::vector<std::int64_t>{1, 10, 12});
  CHECK(train.num_classes() == 3);
  const auto [inputs, targets] = train.batch(indices({1, 4}));
  CHECK(inputs.sizes() == torch::IntArrayRef{2, 1, 10, 12});
  CHECK(targets.equal(indices({1, 1})));
  CHECK(count_samples(DatasetSpec{}, directory.path(), Split::kTest) == 8);

  SUBCASE("a wrong magic number") {
    write_idx(directory / "train-images-idx3-ubyte.gz", 0x802, {20, 10, 12},
              torch::zeros({20, 10, 12}, torch::kUInt8));
    check_refused([&] { load_dataset(DatasetSpec{}, directory.path(), Split::kTrain); },
                  directory / "train-images-idx3-ubyte.gz", "idx magic");
  }
  SUBCASE("fewer labels than images") {
    write_idx(directory / "train-labels-idx1-ubyte", 0x801, {19}, torch::zeros({19}, torch::kUInt8));
    check_refused([&] { load_dataset(DatasetSpec{}, directory.path(), Split::kTrain); },
                  directory / "train-images-idx3-ubyte.gz", "has 20 images but");
  }
  SUBCASE("truncated image data") {
    write_idx(directory / "train-images-idx3-ubyte.gz", 0x803, {20, 10, 12},
              torch::zeros({19, 10, 12}, torch::kUInt8));
    check_refused([&] { load_dataset(DatasetSpec{}, directory.path(), Split::kTrain); },
                  directory / "train-images-idx3-ubyte.gz", "truncated");
  }
  SUBCASE("a test label beyond the training set's classes") {
    write_idx(directory / "t10k-labels-idx1-ubyte", 0x801, {8}, torch::full({8}, 3, torch::kUInt8));
    check_refused([&] { load_dataset(DatasetSpec{}, directory.path(), Split::kTest); },
                  directory / "t10k-labels-idx1-ubyte", "label 3 at index 0 is out of range");
  }
}

TEST_CASE("numpy data: images are scaled and normalised, floats and integers used as they are") {
  TemporaryDirectory directory("numpy");
  torch::manual_seed(3);
  const auto images = torch::randint(0, 256, {6, 3, 4, 4}, torch::kInt64).to(torch::kUInt8);
  write_npy(directory / "train_inputs.npy", images);
  write_npy(directory / "train_labels.npy", indices({0, 1, 2, 3, 4, 0}));
  write_npy(directory / "test_inputs.npy", images.slice(0, 0, 2));
  write_npy(directory / "test_labels.npy", indices({4, 1}).to(torch::kInt32));
  DatasetSpec spec;
  spec.format = "numpy";

  const Dataset train = load_dataset(spec, directory.path(), Split::kTrain);
  CHECK(train.input_kind() == Dataset::InputKind::kImages);
  CHECK(train.sample_shape() == std::vector<std::int64_t>{3, 4, 4});
  CHECK(train.num_classes() == 5);
  const auto scaled = images.to(torch::kFloat64).div(255);
  const auto channel_mean = scaled.mean(std::vector<std::int64_t>{0, 2, 3});
  const auto channel_std = scaled.std(std::vector<std::int64_t>{0, 2, 3}, /*unbiased=*/false);
  REQUIRE(train.mean().size() == 3);
  for (int channel = 0; channel < 3; ++channel) {
    CHECK(train.mean()[channel] == doctest::Approx(channel_mean[channel].item<double>()));
    CHECK(train.std()[channel] == doctest::Approx(channel_std[channel].item<double>()));
  }
  const auto expected =
      ((scaled - channel_mean.view({1, 3, 1, 1})) / channel_std.view({1, 3, 1, 1})).to(torch::kFloat32);
  const auto [inputs, targets] = train.batch(indices({5, 2}));
  CHECK(inputs.allclose(expected.index_select(0, indices({5, 2})), 1e-5, 1e-5));
  CHECK(targets.equal(indices({0, 2})));
  const Dataset test = load_dataset(spec, directory.path(), Split::kTest);
  CHECK(test.mean() == train.mean());
  CHECK(test.batch(indices({0})).targets.equal(indices({4})));

  SUBCASE("configured statistics replace computed ones, one value or one per channel") {
    spec.mean = {0.5};
    spec.std = {0.25};
    const auto configured = load_dataset(spec, directory.path(), Split::kTrain).batch(indices({1})).inputs;
    CHECK(configured.allclose(((scaled[1] - 0.5) / 0.25).unsqueeze(0).to(torch::kFloat32), 1e-5, 1e-5));
    spec.mean = {0.1, 0.2};
    spec.std = {1.0, 1.0};
    CHECK(refusal([&] { load_dataset(spec, directory.path(), Split::kTrain); }).find("3 channels") !=
          std::string::npos);
  }
  SUBCASE("float32 inputs are used as they are, int64 inputs stay integers") {
    const auto features = torch::randn({6, 7});
    write_npy(directory / "train_inputs.npy", features);
    const Dataset floats = load_dataset(spec, directory.path(), Split::kTrain);
    CHECK(floats.input_kind() == Dataset::InputKind::kFloats);
    CHECK(floats.mean().empty());
    CHECK(floats.batch(indices({3, 0})).inputs.equal(features.index_select(0, indices({3, 0}))));
    const auto ids = torch::randint(0, 1000, {6, 5}, torch::kInt64);
    write_npy(directory / "train_inputs.npy", ids);
    const auto batch = load_dataset(spec, directory.path(), Split::kTrain).batch(indices({4}));
    CHECK((batch.inputs.scalar_type() == torch::kInt64));
    CHECK(batch.inputs.equal(ids.slice(0, 4, 5)));
  }
}

TEST_CASE("numpy data written by NumPy: uint16, big-endian and version 2.0 files read as NumPy wrote them") {
  TemporaryDirectory directory("numpy-python");
  std::string output;
  const int code = run_python(directory, R"(
import os, sys, numpy as np
from numpy.lib import format as npy
def save(folder, inputs, labels, version=None):
    os.makedirs(folder, exist_ok=True)
    for split in ("train", "test"):
        for name, array in (("inputs", inputs), ("labels", labels)):
            with open(f"{folder}/{split}_{name}.npy", "wb") as f:
                npy.write_array(f, array, version=version)
out = sys.argv[1]
save(out + "/u16", (np.arange(16, dtype=np.uint32) * 4099 % 65536).astype(np.uint16).reshape(4, 2, 2),
     np.array([3, 0, 1, 2], dtype=np.uint8))
save(out + "/big", (np.arange(8, dtype=np.float32) / 8 - 0.25).reshape(2, 2, 2).astype(">f4"),
     np.array([1, 70000], dtype=">i8"), version=(2, 0))
)",
                              {directory.path()}, output);
  INFO(output);
  REQUIRE(code == 0);
  DatasetSpec spec;
  spec.format = "numpy";
  spec.mean = {0.0};
  spec.std = {1.0};  // identity normalisation: the scaled values themselves
  const Dataset words = load_dataset(spec, directory / "u16", Split::kTrain);
  CHECK(words.input_kind() == Dataset::InputKind::kImages);
  const auto expected = torch::arange(16, torch::kInt64).mul(4099).remainder(65536).reshape({4, 2, 2});
  CHECK(words.batch(torch::arange(4, torch::kInt64))
            .inputs.allclose(expected.to(torch::kFloat32).div(65535.0)));
  CHECK(words.batch(indices({0})).targets.equal(indices({3})));

  spec.mean.clear();
  spec.std.clear();
  const Dataset big = load_dataset(spec, directory / "big", Split::kTest);
  CHECK(big.input_kind() == Dataset::InputKind::kFloats);
  const auto [inputs, targets] = big.batch(indices({0, 1}));
  CHECK(inputs.equal(torch::arange(8, torch::kFloat32).div(8).sub(0.25).reshape({2, 2, 2})));
  CHECK(targets.equal(indices({1, 70000})));
  CHECK(big.num_classes() == 70001);
}

TEST_CASE("numpy data: malformed files are refused with the file and the problem") {
  TemporaryDirectory directory("numpy-malformed");
  write_npy(directory / "train_inputs.npy", torch::zeros({4, 3}, torch::kFloat32));
  write_npy(directory / "train_labels.npy", indices({0, 1, 1, 0}));
  DatasetSpec spec;
  spec.format = "numpy";
  const std::string inputs = directory / "train_inputs.npy";
  const std::string labels = directory / "train_labels.npy";
  const auto load = [&] { load_dataset(spec, directory.path(), Split::kTrain); };
  REQUIRE(refusal(load).empty());
  const std::string floats(4 * 3 * 4, '\0');

  SUBCASE("no magic") {
    write_file(inputs, "PK\x03\x04 a zip file, not an array");
    check_refused(load, inputs, "not a .npy file");
  }
  SUBCASE("Fortran order") {
    write_file(inputs, npy_with_header("{'descr': '<f4', 'fortran_order': True, 'shape': (4, 3), }", floats));
    check_refused(load, inputs, "fortran_order");
  }
  SUBCASE("object dtype") {
    write_file(inputs, npy_with_header("{'descr': '|O', 'fortran_order': False, 'shape': (4, 3), }", floats));
    check_refused(load, inputs, "object dtype");
  }
  SUBCASE("complex dtype") {
    write_file(inputs,
               npy_with_header("{'descr': '<c8', 'fortran_order': False, 'shape': (4, 3), }", floats));
    check_refused(load, inputs, "is not a number");
  }
  SUBCASE("structured dtype") {
    write_file(inputs,
               npy_with_header("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (4,), }", floats));
    check_refused(load, inputs, "structured dtypes");
  }
  SUBCASE("a malformed header dict") {
    write_file(inputs,
               npy_with_header("{'descr': '<f4', 'fortran_order': False, 'shape': [4, 3], }", floats));
    check_refused(load, inputs, "malformed header");
  }
  SUBCASE("a header longer than the file") {
    std::string bytes = npy_bytes(torch::zeros({4, 3}));
    bytes[8] = '\xff';
    bytes[9] = '\x7f';
    write_file(inputs, bytes.substr(0, 64));
    check_refused(load, inputs, "truncated header");
  }
  SUBCASE("truncated data") {
    const std::string bytes = npy_bytes(torch::zeros({4, 3}));
    write_file(inputs, bytes.substr(0, bytes.size() - 1));
    check_refused(load, inputs, "truncated data");
  }
  SUBCASE("a negative label") {
    write_npy(labels, indices({0, 1, -2, 0}));
    check_refused(load, labels, "label -2 at index 2 is negative");
  }
  SUBCASE("fewer labels than inputs") {
    write_npy(labels, indices({0, 1, 1}));
    check_refused(load, labels, "holds 3 labels but");
  }
  SUBCASE("float labels") {
    write_npy(labels, torch::zeros({4}));
    check_refused(load, labels, "labels must be integers");
  }
  SUBCASE("a missing file") {
    fs::remove(labels);
    check_refused(load, labels, "not found");
  }
}

TEST_CASE("image folder data: classes sorted by name, images decoded, resized and normalised") {
  TemporaryDirectory directory("images");
  // Classes written out of order; images of different sizes and formats.
  write_image(directory / "train/cat/b.png", 8, 6, {200, 100, 0});
  write_image(directory / "train/cat/a.jpg", 5, 5, {200, 100, 0});
  write_image(directory / "train/ant/x.png", 3, 9, {0, 50, 100});
  write_image(directory / "train/bird/nested/y.png", 4, 4, {10, 20, 30});
  write_file(directory / "train/bird/notes.txt", "not an image: ignored");
  write_image(directory / "test/cat/c.png", 6, 6, {200, 100, 0});
  DatasetSpec spec;
  spec.format = "image_folder";
  spec.image_size = 4;

  const Dataset train = load_dataset(spec, directory.path(), Split::kTrain);
  CHECK(train.size() == 4);
  CHECK(train.num_classes() == 3);
  CHECK(train.sample_shape() == std::vector<std::int64_t>{3, 4, 4});
  // ant = 0, bird = 1, cat = 2; within a class, files in path order (a.jpg before b.png).
  CHECK(train.batch(torch::arange(4, torch::kInt64)).targets.equal(indices({0, 1, 2, 2})));
  // Per-channel statistics of the solid colours, weighted by image count.
  const double red_mean = (0 + 10 + 200 + 200) / 4.0 / 255.0;
  CHECK(train.mean()[0] == doctest::Approx(red_mean).epsilon(0.01));
  spec.mean = {0, 0, 0};
  spec.std = {1, 1, 1};
  const auto pixels = load_dataset(spec, directory.path(), Split::kTrain).batch(indices({0})).inputs;
  CHECK(pixels.sizes() == torch::IntArrayRef{1, 3, 4, 4});
  CHECK(pixels[0][1].sub(50 / 255.0).abs().max().item<double>() <
        2 / 255.0);  // ant's green, resized from 3x9
  const Dataset test = load_dataset(spec, directory.path(), Split::kTest);
  CHECK(test.size() == 1);
  CHECK(test.batch(indices({0})).targets.equal(indices({2})));  // "cat" keeps its training number
  CHECK(count_samples(spec, directory.path(), Split::kTrain) == 4);

  SUBCASE("an empty class folder") {
    fs::create_directories(directory / "train/dog");
    check_refused([&] { load_dataset(spec, directory.path(), Split::kTrain); }, directory / "train/dog",
                  "empty class folder");
  }
  SUBCASE("a test class the training set lacks") {
    write_image(directory / "test/dog/d.png", 4, 4, {1, 2, 3});
    check_refused([&] { load_dataset(spec, directory.path(), Split::kTest); }, directory / "test/dog",
                  "not in the training set's classes");
  }
  SUBCASE("an undecodable image") {
    write_file(directory / "train/cat/broken.png", "\x89PNG\r\n\x1a\n but not really");
    check_refused([&] { load_dataset(spec, directory.path(), Split::kTrain); },
                  directory / "train/cat/broken.png", "cannot decode image");
  }
  SUBCASE("no image size") {
    spec.image_size = 0;
    CHECK(refusal([&] { load_dataset(spec, directory.path(), Split::kTrain); }).find("data.image_size") !=
          std::string::npos);
  }
}

TEST_CASE("augmented data: the crop and flip of a sample depend only on seed, epoch and sample index") {
  TemporaryDirectory directory("augment");
  write_idx_dataset(directory, 8, 8, 32, 4, 4);
  DatasetSpec spec;
  spec.augment = true;
  const Dataset data = load_dataset(spec, directory.path(), Split::kTrain);
  const auto all = torch::arange(32, torch::kInt64);
  const auto plain = data.batch(all).inputs;
  const auto epoch_zero = data.batch(all, /*training=*/true, 0).inputs;
  // Alone or in another batch, sample 7 is augmented the same way.
  CHECK(data.batch(indices({7}), true, 0).inputs[0].equal(epoch_zero[7]));
  CHECK(data.batch(indices({20, 7, 3}), true, 0).inputs[1].equal(epoch_zero[7]));
  // Training changes samples, evaluation does not; another epoch or seed changes them again.
  CHECK(data.batch(all, false, 5).inputs.equal(plain));
  CHECK_FALSE(epoch_zero.equal(plain));
  CHECK_FALSE(data.batch(all, true, 1).inputs.equal(epoch_zero));
  spec.seed = 2;
  CHECK_FALSE(
      load_dataset(spec, directory.path(), Split::kTrain).batch(all, true, 0).inputs.equal(epoch_zero));
  // An augmented sample is a crop of the zero-padded (black) image, maybe mirrored.
  const double black = -data.mean()[0] / data.std()[0];
  const auto padded = torch::constant_pad_nd(plain[7][0], {4, 4, 4, 4}, black);
  bool found = false;
  for (int top = 0; top <= 8 && !found; ++top) {
    for (int left = 0; left <= 8 && !found; ++left) {
      const auto crop = padded.narrow(0, top, 8).narrow(1, left, 8);
      found = crop.allclose(epoch_zero[7][0], 1e-5, 1e-5) ||
              crop.flip({1}).allclose(epoch_zero[7][0], 1e-5, 1e-5);
    }
  }
  CHECK(found);
}

TEST_CASE("token data: windows of context tokens, targets the next tokens, ids read unsigned") {
  TemporaryDirectory directory("tokens");
  std::vector<std::uint16_t> tokens(101);
  for (std::size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<std::uint16_t>(i);
  tokens[50] = 60000;  // above int16's range: must not read negative
  write_file(directory / "train.bin",
             std::string(reinterpret_cast<const char*>(tokens.data()), tokens.size() * 2));
  write_file(directory / "val.bin", std::string(reinterpret_cast<const char*>(tokens.data()), 40 * 2));
  DatasetSpec spec;
  spec.format = "tokens";
  spec.context = 8;

  const Dataset train = load_dataset(spec, directory.path(), Split::kTrain);
  CHECK(train.is_tokens());
  CHECK(train.size() == 12);  // (101 - 1) / 8: the partial window at the end is dropped
  CHECK(train.sample_shape() == std::vector<std::int64_t>{8});
  CHECK(train.num_classes() == 60001);
  CHECK(train.mean().empty());
  const auto [inputs, targets] = train.batch(indices({0, 6}));
  CHECK((inputs.scalar_type() == torch::kInt64));
  CHECK(inputs[0].equal(torch::arange(0, 8, torch::kInt64)));
  CHECK(targets[0].equal(torch::arange(1, 9, torch::kInt64)));
  CHECK(inputs[1][2].item<std::int64_t>() == 60000);
  CHECK(targets[1][1].item<std::int64_t>() == 60000);
  CHECK(train.batch(indices({11})).targets[0][7].item<std::int64_t>() == 96);
  CHECK(load_dataset(spec, directory.path(), Split::kTest).size() == 4);
  CHECK(count_samples(spec, directory.path(), Split::kTrain) == 12);

  SUBCASE("an odd byte count") {
    write_file(directory / "train.bin", std::string(11, '\0'));
    check_refused([&] { load_dataset(spec, directory.path(), Split::kTrain); }, directory / "train.bin",
                  "truncated");
  }
  SUBCASE("fewer tokens than one window") {
    write_file(directory / "val.bin", std::string(8 * 2, '\0'));
    check_refused([&] { load_dataset(spec, directory.path(), Split::kTest); }, directory / "val.bin",
                  "fewer than data.context + 1");
  }
  SUBCASE("a validation id beyond the training vocabulary") {
    std::vector<std::uint16_t> beyond(20, 60001);
    write_file(directory / "val.bin",
               std::string(reinterpret_cast<const char*>(beyond.data()), beyond.size() * 2));
    check_refused([&] { load_dataset(spec, directory.path(), Split::kTest); }, directory / "val.bin",
                  "beyond the training vocabulary");
  }
}

TEST_CASE("large .npy and token data are memory-mapped: loading a 4 GiB file reads almost none of it") {
  TemporaryDirectory directory("mapped");
  constexpr std::int64_t kSamples = std::int64_t{1} << 20;
  constexpr std::int64_t kFeatures = 1024;
  // Sparse files: a header, then 4 GiB of zeros that take no disk and were never written.
  const std::string header = npy_with_header(
      "{'descr': '<f4', 'fortran_order': False, 'shape': (" + std::to_string(kSamples) + ", 1024), }", "");
  write_file(directory / "train_inputs.npy", header);
  fs::resize_file(directory / "train_inputs.npy", header.size() + kSamples * kFeatures * 4);
  write_npy(directory / "train_labels.npy", torch::zeros({kSamples}, torch::kInt64));
  write_file(directory / "train.bin", "");
  fs::resize_file(directory / "train.bin", std::uintmax_t{4} << 30);

  const std::int64_t before = resident_kib();
  DatasetSpec spec;
  spec.format = "numpy";
  const Dataset arrays = load_dataset(spec, directory.path(), Split::kTrain);
  CHECK(arrays.size() == kSamples);
  CHECK(arrays.batch(indices({0, kSamples - 1})).inputs.sizes() == torch::IntArrayRef{2, kFeatures});
  spec.format = "tokens";
  spec.context = 1024;
  const Dataset tokens = load_dataset(spec, directory.path(), Split::kTrain);
  CHECK(tokens.size() == ((std::int64_t{2} << 30) - 1) / 1024);
  CHECK(tokens.num_classes() == 65536);  // too large to scan for its largest id
  CHECK(tokens.batch(indices({tokens.size() - 1})).inputs.sum().item<std::int64_t>() == 0);
  const std::int64_t grown_mib = (resident_kib() - before) / 1024;
  INFO("resident memory grew by ", grown_mib, " MiB for 8 GiB of mapped files");
  CHECK(grown_mib < 64);  // the labels (8 MiB) and a few pages, not the 8 GiB
}

TEST_CASE("dataset fingerprints are equal for equal content and differ for one changed label") {
  TemporaryDirectory directory("fingerprint");
  DatasetSpec spec;
  spec.format = "numpy";
  torch::manual_seed(5);
  const auto images = torch::randint(0, 256, {50, 1, 5, 5}, torch::kInt64).to(torch::kUInt8);
  const auto labels = torch::randint(0, 10, {50}, torch::kInt64);
  for (const std::string copy : {"a", "b"}) {
    write_npy(directory / (copy + "/train_inputs.npy"), images);
    write_npy(directory / (copy + "/train_labels.npy"), labels);
  }
  const std::string a = dataset_fingerprint(spec, directory / "a");
  CHECK(a.size() == 16);
  CHECK(a == dataset_fingerprint(spec, directory / "b"));
  auto changed = labels.clone();
  changed[33] = (labels[33].item<std::int64_t>() + 1) % 10;
  write_npy(directory / "b/train_labels.npy", changed);
  CHECK(a != dataset_fingerprint(spec, directory / "b"));
  write_npy(directory / "b/train_labels.npy", labels);
  auto brighter = images.clone();
  brighter[0][0][0][0] =
      static_cast<std::uint8_t>(images[0][0][0][0].item<std::uint8_t>() ^ 1);  // sample 0 is sampled
  write_npy(directory / "b/train_inputs.npy", brighter);
  CHECK(a != dataset_fingerprint(spec, directory / "b"));

  // idx: Fashion-MNIST's training set, and its labels alone still tell it from its test set.
  const std::string fashion = dataset_fingerprint(DatasetSpec{}, kFashionMnist);
  CHECK(fashion == dataset_fingerprint(DatasetSpec{}, kFashionMnist));
  CHECK(fashion != a);

  // Tokens: one changed token of a small file changes it.
  std::vector<std::uint16_t> tokens(5000, 7);
  write_file(directory / "t/train.bin",
             std::string(reinterpret_cast<const char*>(tokens.data()), tokens.size() * 2));
  spec.format = "tokens";
  spec.context = 16;
  const std::string token_print = dataset_fingerprint(spec, directory / "t");
  tokens[4321] = 8;
  write_file(directory / "t/train.bin",
             std::string(reinterpret_cast<const char*>(tokens.data()), tokens.size() * 2));
  CHECK(token_print != dataset_fingerprint(spec, directory / "t"));
}

TEST_CASE("data configuration: format keys, comma-separated mean and std, and their checks") {
  const Config config =
      load_config("", {"data.format=image_folder", "data.path=/srv/pets", "data.image_size=64",
                       "data.augment=true", "data.mean=0.4914, 0.4822,0.4465", "data.std=0.247,0.243,0.261",
                       "data.test_limit=500", "data.train_limit=2000"});
  const DatasetSpec train = dataset_spec(config.data, Split::kTrain, 9);
  CHECK(train.format == "image_folder");
  CHECK(train.image_size == 64);
  CHECK(train.augment);
  CHECK(train.mean == std::vector<double>{0.4914, 0.4822, 0.4465});
  CHECK(train.std == std::vector<double>{0.247, 0.243, 0.261});
  CHECK(train.limit == 2000);
  CHECK(train.seed == 9);
  CHECK(dataset_spec(config.data, Split::kTest, 9).limit == 500);
  // The defaults are the built-in idx Fashion-MNIST.
  const DatasetSpec defaults = dataset_spec(load_config("", {}).data, Split::kTrain, 1);
  CHECK(defaults.format == "idx");
  CHECK(defaults.name == "fashion-mnist");
  CHECK(defaults.mean.empty());

  const auto refused = [](const std::vector<std::string>& overrides) {
    try {
      load_config("", overrides);
    } catch (const ConfigError& error) {
      return std::string(error.what());
    }
    return std::string();
  };
  CHECK(refused({"data.format=csv"}).find("data.format") != std::string::npos);
  CHECK(refused({"data.format=image_folder"}).find("data.image_size must be > 0") != std::string::npos);
  CHECK(refused({"data.format=tokens"}).find("data.context must be > 0") != std::string::npos);
  CHECK(refused({"data.mean=0.5,x", "data.std=1,1"}).find("data.mean: 'x' is not a number") !=
        std::string::npos);
  CHECK(refused({"data.mean=0.5", "data.std=1,1"}).find("as many values") != std::string::npos);
  CHECK(refused({"data.mean=0.5", "data.std=0"}).find("data.std values must be > 0") != std::string::npos);
}

TEST_CASE("safetensors: a round trip keeps names, dtypes, shapes, values and metadata") {
  TemporaryDirectory directory("safetensors");
  const std::vector<NamedTensor> tensors = {
      {"weight", torch::arange(12, torch::kFloat32).reshape({3, 4}).mul(0.5)},
      {"bias", torch::tensor({-1.5, 2.25}, torch::kFloat64)},
      {"half", torch::tensor({0.5, -2.0, 65504.0}, torch::kFloat32).to(torch::kHalf)},
      {"brain", torch::tensor({1.0, -3.0}, torch::kFloat32).to(torch::kBFloat16)},
      {"steps", torch::tensor({std::int64_t{1} << 40, std::int64_t{-7}}, torch::kInt64)},
      {"counts", torch::arange(6, torch::kInt32).reshape({2, 3})},
      {"small", torch::tensor({-300, 300}, torch::kInt16)},
      {"signed", torch::tensor({-128, 127}, torch::kInt8)},
      {"pixels", torch::arange(250, 256, torch::kInt64).to(torch::kUInt8)},
      {"mask", torch::tensor({true, false, true}, torch::kBool)},
      {"empty", torch::zeros({0, 3})},
      {"scalar", torch::tensor(3.0f)},
  };
  const std::map<std::string, std::string> metadata = {{"format", "pt"}, {"dataset_mean", "0.2860"}};
  const std::string path = directory / "model.safetensors";
  write_safetensors(path, tensors, metadata);
  CHECK_FALSE(fs::exists(path + ".tmp"));

  const SafetensorsFile read = read_safetensors(path);
  CHECK(read.metadata == metadata);
  REQUIRE(read.tensors.size() == tensors.size());
  for (std::size_t i = 1; i < read.tensors.size(); ++i)
    CHECK(read.tensors[i - 1].name < read.tensors[i].name);
  for (const auto& [name, tensor] : tensors) {
    const auto found =
        std::find_if(read.tensors.begin(), read.tensors.end(), [&](const auto& t) { return t.name == name; });
    REQUIRE(found != read.tensors.end());
    INFO(name);
    CHECK((found->tensor.scalar_type() == tensor.scalar_type()));
    CHECK(found->tensor.sizes() == tensor.sizes());
    CHECK(found->tensor.equal(tensor));
  }
  // The layout: header length, JSON padded to 8 bytes, then data in name order.
  const std::string bytes = read_file(path);
  std::uint64_t length = 0;
  std::memcpy(&length, bytes.data(), 8);
  CHECK(length % 8 == 0);
  const auto header = nlohmann::json::parse(bytes.substr(8, length));
  CHECK(header.at("bias").at("data_offsets") == nlohmann::json({0, 16}));
  CHECK(header.at("brain").at("data_offsets") == nlohmann::json({16, 20}));
  CHECK(header.at("weight").at("dtype") == "F32");
}

TEST_CASE("safetensors written here read back in Python with json, struct and numpy alone, and back") {
  TemporaryDirectory directory("safetensors-python");
  const std::string path = directory / "model.safetensors";
  write_safetensors(path,
                    {{"weight", torch::arange(12, torch::kFloat32).reshape({3, 4}).mul(0.5)},
                     {"steps", torch::tensor({std::int64_t{1} << 40, std::int64_t{-7}}, torch::kInt64)},
                     {"brain", torch::tensor({1.0, -3.0}, torch::kFloat32).to(torch::kBFloat16)},
                     {"half", torch::tensor({0.5, -2.0}, torch::kFloat32).to(torch::kHalf)}},
                    {{"model", "cnn"}});
  std::string output;
  const int code = run_python(directory, R"(
import json, struct, sys, numpy as np
path, back = sys.argv[1], sys.argv[2]
data = open(path, "rb").read()
(n,) = struct.unpack("<Q", data[:8])
header = json.loads(data[8:8 + n])
body = data[8 + n:]
types = {"F32": "<f4", "I64": "<i8", "F16": "<f2", "BF16": "<u2"}
def array(name):
    entry = header[name]
    begin, end = entry["data_offsets"]
    values = np.frombuffer(body[begin:end], dtype=types[entry["dtype"]]).reshape(entry["shape"])
    if entry["dtype"] == "BF16":
        values = (values.astype(np.uint32) << 16).view(np.float32)
    return values
assert header["__metadata__"] == {"model": "cnn"}, header["__metadata__"]
assert np.array_equal(array("weight"), np.arange(12, dtype=np.float32).reshape(3, 4) * 0.5)
assert np.array_equal(array("steps"), np.array([1 << 40, -7]))
assert np.array_equal(array("brain"), np.array([1.0, -3.0], dtype=np.float32))
assert np.array_equal(array("half"), np.array([0.5, -2.0], dtype=np.float16))
# And a file written by Python for the C++ reader: tensors out of name order, metadata.
tensors = {"z": np.array([[1, 2], [3, 4]], dtype="<i4"), "a": np.array([2.5], dtype="<f8")}
meta, blobs, offset = {"__metadata__": {"source": "python"}}, b"", 0
for name, value in tensors.items():
    raw = value.tobytes()
    meta[name] = {"dtype": {"<i4": "I32", "<f8": "F64"}[value.dtype.str], "shape": list(value.shape),
                  "data_offsets": [offset, offset + len(raw)]}
    blobs, offset = blobs + raw, offset + len(raw)
text = json.dumps(meta).encode()
open(back, "wb").write(struct.pack("<Q", len(text)) + text + blobs)
print("ok")
)",
                              {path, directory / "python.safetensors"}, output);
  INFO(output);
  REQUIRE(code == 0);
  CHECK(output.find("ok") != std::string::npos);
  const SafetensorsFile from_python = read_safetensors(directory / "python.safetensors");
  CHECK(from_python.metadata.at("source") == "python");
  REQUIRE(from_python.tensors.size() == 2);
  CHECK(from_python.tensors[0].name == "a");
  CHECK(from_python.tensors[0].tensor.equal(torch::tensor({2.5}, torch::kFloat64)));
  CHECK(from_python.tensors[1].tensor.equal(torch::tensor({1, 2, 3, 4}, torch::kInt32).reshape({2, 2})));
}

TEST_CASE("safetensors: malformed files are refused with the reason") {
  TemporaryDirectory directory("safetensors-malformed");
  const std::string path = directory / "bad.safetensors";
  // A file with `header` (a JSON text) and `data` bytes after it.
  const auto write = [&](const std::string& header, const std::string& data) {
    std::string bytes(8, '\0');
    const std::uint64_t length = header.size();
    std::memcpy(bytes.data(), &length, 8);
    write_file(path, bytes + header + data);
  };
  const auto read = [&] { read_safetensors(path); };
  const std::string eight(8, '\0');

  SUBCASE("a header length beyond the file") {
    std::string bytes(8, '\0');
    const std::uint64_t length = 1000;
    std::memcpy(bytes.data(), &length, 8);
    write_file(path, bytes + "{}");
    check_refused(read, path, "header length 1000 beyond the file");
  }
  SUBCASE("a header that is not JSON") {
    write("{\"a\": ", eight);
    check_refused(read, path, "not a JSON object");
  }
  SUBCASE("an unknown dtype") {
    write(R"({"a": {"dtype": "Q7", "shape": [2], "data_offsets": [0, 8]}})", eight);
    check_refused(read, path, "unknown or unsupported dtype Q7");
  }
  SUBCASE("offsets beyond the data") {
    write(R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})", eight);
    check_refused(read, path, "out of range");
  }
  SUBCASE("overlapping tensors") {
    write(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
              "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})",
          eight);
    check_refused(read, path, "overlap");
  }
  SUBCASE("a shape that does not match its offsets") {
    write(R"({"a": {"dtype": "F64", "shape": [2], "data_offsets": [0, 8]}})", eight);
    check_refused(read, path, "needs 16 bytes");
  }
}
