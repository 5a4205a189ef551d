#include "actors/learning/image_folder.hpp"

#include <stb_image.h>
#include <stb_image_resize.h>
#include <algorithm>
#include <cctype>
#include <filesystem>
#include <memory>
#include <stdexcept>

#include <ATen/Parallel.h>

namespace filo {
namespace {

constexpr int kChannels = 3;  // RGB, as torchvision's default loader converts every image
// Images per parallel task: decoding one takes from ~50 us (32x32 PNG) to milliseconds (photos).
constexpr std::int64_t kDecodeGrain = 16;

bool is_image(const std::filesystem::path& path) {
  static const std::vector<std::string> kExtensions = {".png", ".jpg", ".jpeg", ".bmp", ".gif",
                                                       ".tga", ".ppm", ".pgm",  ".pnm"};
  std::string extension = path.extension().string();
  std::transform(extension.begin(), extension.end(), extension.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return std::find(kExtensions.begin(), kExtensions.end(), extension) != kExtensions.end();
}

// Hidden entries (".ipynb_checkpoints", ".DS_Store") are editor and OS litter, not classes or images.
bool is_hidden(const std::filesystem::path& path) {
  return path.filename().string().rfind('.', 0) == 0;
}

std::vector<std::string> images_under(const std::filesystem::path& folder) {
  std::vector<std::string> files;
  for (auto it = std::filesystem::recursive_directory_iterator(
           folder, std::filesystem::directory_options::follow_directory_symlink);
       it != std::filesystem::recursive_directory_iterator(); ++it) {
    if (is_hidden(it->path())) {
      if (it->is_directory()) it.disable_recursion_pending();
      continue;
    }
    if (it->is_regular_file() && is_image(it->path())) files.push_back(it->path().string());
  }
  std::sort(files.begin(), files.end());
  return files;
}

// stb_image frees what it allocates through its own call.
struct StbFree {
  void operator()(unsigned char* pixels) const { stbi_image_free(pixels); }
};

// Decodes one file into `target` (size x size x 3 HWC scratch), then writes it CHW into `out`.
void decode_one(const std::string& path, std::int64_t size, std::vector<unsigned char>& resized,
                std::uint8_t* out) {
  int width = 0, height = 0, channels_in_file = 0;
  const std::unique_ptr<unsigned char, StbFree> pixels(
      stbi_load(path.c_str(), &width, &height, &channels_in_file, kChannels));
  if (!pixels) {
    const char* reason = stbi_failure_reason();
    throw std::runtime_error(path + ": cannot decode image (" + (reason ? reason : "unknown reason") + ")");
  }
  const int side = static_cast<int>(size);
  resized.resize(static_cast<std::size_t>(size * size * kChannels));
  if (stbir_resize_uint8(pixels.get(), width, height, 0, resized.data(), side, side, 0, kChannels) == 0) {
    throw std::runtime_error(path + ": cannot resize " + std::to_string(width) + "x" +
                             std::to_string(height) + " to " + std::to_string(size) + "x" +
                             std::to_string(size));
  }
  const std::int64_t plane = size * size;
  for (std::int64_t pixel = 0; pixel < plane; ++pixel) {
    for (int channel = 0; channel < kChannels; ++channel) {
      out[channel * plane + pixel] = resized[static_cast<std::size_t>(pixel * kChannels + channel)];
    }
  }
}

}  // namespace

ImageFolderListing list_image_folder(const std::string& root, const std::vector<std::string>& classes) {
  if (!std::filesystem::is_directory(root)) throw std::runtime_error(root + ": image folder not found");
  std::vector<std::string> found;
  for (const auto& entry : std::filesystem::directory_iterator(root)) {
    if (entry.is_directory() && !is_hidden(entry.path())) found.push_back(entry.path().filename().string());
  }
  std::sort(found.begin(), found.end());
  if (found.empty())
    throw std::runtime_error(root + ": no class folders (expected " + root + "/<class>/<image>)");
  ImageFolderListing listing{root, classes.empty() ? found : classes, {}, {}};
  for (const auto& name : found) {
    const auto place = std::find(listing.classes.begin(), listing.classes.end(), name);
    if (place == listing.classes.end()) {
      throw std::runtime_error(root + "/" + name + ": class folder not in the training set's classes");
    }
    const auto files = images_under(std::filesystem::path(root) / name);
    if (files.empty()) throw std::runtime_error(root + "/" + name + ": empty class folder (no images)");
    listing.files.insert(listing.files.end(), files.begin(), files.end());
    listing.labels.insert(listing.labels.end(), files.size(), place - listing.classes.begin());
  }
  return listing;
}

torch::Tensor decode_images(const std::vector<std::string>& files, const torch::Tensor& indices,
                            std::int64_t size) {
  TORCH_CHECK(size > 0, "image size must be positive, not ", size);
  const auto index = indices.to(torch::kInt64).contiguous();
  const std::int64_t count = index.size(0);
  auto images = torch::empty({count, kChannels, size, size}, torch::kUInt8);
  const std::int64_t* wanted = index.data_ptr<std::int64_t>();
  std::uint8_t* out = images.data_ptr<std::uint8_t>();
  const std::int64_t image_bytes = kChannels * size * size;
  // Errors are kept per image and the first rethrown here: exceptions must not leave a parallel region.
  std::vector<std::string> problems(static_cast<std::size_t>(count));
  at::parallel_for(0, count, kDecodeGrain, [&](std::int64_t begin, std::int64_t end) {
    std::vector<unsigned char> resized;
    for (std::int64_t i = begin; i < end; ++i) {
      try {
        TORCH_CHECK(wanted[i] >= 0 && wanted[i] < static_cast<std::int64_t>(files.size()), "image index ",
                    wanted[i], " outside 0..", files.size());
        decode_one(files[static_cast<std::size_t>(wanted[i])], size, resized, out + i * image_bytes);
      } catch (const std::exception& error) {
        problems[static_cast<std::size_t>(i)] = error.what();
      }
    }
  });
  for (const auto& problem : problems) {
    if (!problem.empty()) throw std::runtime_error(problem);
  }
  return images;
}

}  // namespace filo
