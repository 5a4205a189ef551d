#pragma once
// The run directory: rounds.jsonl (one line per round, appended and flushed as rounds close) and
// summary.json (written atomically: temporary file, fsync, rename).
#include <cstdint>
#include <fstream>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

namespace filo {

class RunRecord {
 public:
  /// Creates `run_dir` if needed and starts a fresh rounds.jsonl, or, resuming after
  /// `resumed_after_round`, keeps its lines up to that round and drops later ones (rounds that
  /// closed after the checkpoint are trained again and recorded again). `last_line` is that
  /// round's own line as the checkpoint kept it: written again if the file lacks it (the
  /// coordinator died between checkpointing the round and recording it).
  explicit RunRecord(std::string run_dir, std::optional<std::uint64_t> resumed_after_round = std::nullopt,
                     const std::string& last_line = {});
  void append_round(const nlohmann::json& line);
  void write_summary(const nlohmann::json& summary) const;
  const std::string& run_dir() const { return run_dir_; }
  std::string path(const std::string& file) const { return run_dir_ + "/" + file; }

 private:
  std::string run_dir_;
  std::ofstream rounds_;
};

/// Now in UTC, as strftime's `format` writes it (run ids, failover records, report pages).
std::string utc_now(const char* format);

/// Writes `text` to `path` so that readers see the old file or the new one, never a torn one.
void write_file_atomically(const std::string& path, const std::string& text);

}  // namespace filo
