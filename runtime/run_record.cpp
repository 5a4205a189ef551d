#include "runtime/run_record.hpp"

#include <fcntl.h>
#include <unistd.h>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <stdexcept>

namespace filo {

RunRecord::RunRecord(std::string run_dir, std::optional<std::uint64_t> resumed_after_round,
                     const std::string& last_line)
    : run_dir_(std::move(run_dir)) {
  std::error_code error;
  std::filesystem::create_directories(run_dir_, error);
  if (error) throw std::runtime_error("cannot create run directory " + run_dir_ + ": " + error.message());
  std::string kept;
  if (resumed_after_round) {
    std::ifstream previous(path("rounds.jsonl"));
    bool has_last = false;
    for (std::string line; std::getline(previous, line);) {
      const auto parsed = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (!parsed.is_object()) continue;
      const auto round = parsed.value("round", std::uint64_t{0});
      if (round <= *resumed_after_round) kept += line + "\n";
      has_last = has_last || round == *resumed_after_round;
    }
    if (!has_last && !last_line.empty()) kept += last_line + "\n";
  }
  write_file_atomically(path("rounds.jsonl"), kept);
  rounds_.open(path("rounds.jsonl"), std::ios::out | std::ios::app);
  if (!rounds_) throw std::runtime_error("cannot write " + path("rounds.jsonl"));
}

void RunRecord::append_round(const nlohmann::json& line) {
  rounds_ << line.dump() << '\n';
  rounds_.flush();
}

void RunRecord::write_summary(const nlohmann::json& summary) const {
  write_file_atomically(path("summary.json"), summary.dump(2) + "\n");
}

void write_file_atomically(const std::string& path, const std::string& text) {
  const std::string temporary = path + ".tmp";
  const int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) throw std::runtime_error("cannot write " + temporary + ": " + std::strerror(errno));
  std::size_t written = 0;
  while (written < text.size()) {
    const ssize_t n = ::write(fd, text.data() + written, text.size() - written);
    if (n < 0) {
      ::close(fd);
      throw std::runtime_error("cannot write " + temporary + ": " + std::strerror(errno));
    }
    written += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0) {
    const int error = errno;
    ::close(fd);
    throw std::runtime_error("cannot fsync " + temporary + ": " + std::strerror(error));
  }
  ::close(fd);
  if (std::rename(temporary.c_str(), path.c_str()) != 0) {
    throw std::runtime_error("cannot rename " + temporary + " to " + path + ": " + std::strerror(errno));
  }
  // The rename itself is durable only once the directory is.
  const std::string directory = std::filesystem::path(path).parent_path().string();
  const int directory_fd = ::open(directory.empty() ? "." : directory.c_str(), O_RDONLY | O_DIRECTORY);
  if (directory_fd >= 0) {
    ::fsync(directory_fd);
    ::close(directory_fd);
  }
}

std::string utc_now(const char* format) {
  char stamp[64];
  const std::time_t now = std::time(nullptr);
  std::tm utc{};
  gmtime_r(&now, &utc);
  if (std::strftime(stamp, sizeof stamp, format, &utc) == 0) return {};
  return stamp;
}

}  // namespace filo
