#pragma once
// The run directory: rounds.jsonl (one line per round, appended and flushed as rounds close) and
// summary.json (written atomically: temporary file, fsync, rename).
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

namespace filo {

class RunRecord {
 public:
  /// Creates `run_dir` if needed and starts a fresh rounds.jsonl.
  explicit RunRecord(std::string run_dir);
  void append_round(const nlohmann::json& line);
  void write_summary(const nlohmann::json& summary) const;
  const std::string& run_dir() const { return run_dir_; }
  std::string path(const std::string& file) const { return run_dir_ + "/" + file; }

 private:
  std::string run_dir_;
  std::ofstream rounds_;
};

/// Writes `text` to `path` so that readers see the old file or the new one, never a torn one.
void write_file_atomically(const std::string& path, const std::string& text);

}  // namespace filo
