#pragma once
// Image folders in torchvision's ImageFolder layout: <root>/<class>/**/<image>, one folder per class,
// classes numbered in the order of their sorted names, images in the order of their sorted paths.
// Decoded with stb_image (PNG, JPEG, BMP, GIF, TGA, PNM), converted to RGB like torchvision's
// default loader, and resized to a square with stb_image_resize (aspect ratio not kept, as
// transforms.Resize((s, s)) does).
#include <cstdint>
#include <string>
#include <vector>

#include <torch/torch.h>

namespace filo {

/// An image folder's files and their class numbers, without decoding anything.
struct ImageFolderListing {
  std::string root;
  std::vector<std::string> classes;  // sorted folder names; class i is classes[i]
  std::vector<std::string> files;    // full paths, grouped by class, sorted within each
  std::vector<std::int64_t> labels;  // class number of each file
};

/// Lists `root`. With `classes` given (the training set's), folder names are numbered by their place
/// there and a folder unknown to it is refused; otherwise the folders found define the classes.
/// Throws std::runtime_error naming a missing root, an empty class folder or a folder without classes.
ImageFolderListing list_image_folder(const std::string& root, const std::vector<std::string>& classes = {});

/// Decodes `files[indices]` (int64 [n]) into uint8 [n, 3, size, size], on all of LibTorch's threads.
/// Throws std::runtime_error naming the first file that cannot be decoded and stb_image's reason.
torch::Tensor decode_images(const std::vector<std::string>& files, const torch::Tensor& indices,
                            std::int64_t size);

}  // namespace filo
