#pragma once
// The dashboard's page, script and style, compiled into the binary from tools/dashboard/ (see
// tools/dashboard/embed_assets.cmake): filo serves them itself, with no files at run time and
// nothing fetched from the internet.
#include <string_view>

namespace filo {

struct WebAsset {
  std::string_view name;  // "index.html", "dashboard.js", ...
  std::string_view content_type;
  std::string_view bytes;
};

/// The asset called `name`, or nullptr.
const WebAsset* find_web_asset(std::string_view name);

}  // namespace filo
