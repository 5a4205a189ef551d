#pragma once
// Checkpoint files: the coordinator's whole state after a round, so that a coordinator killed at
// any moment resumes where it left off. Each file is written to a temporary, fsynced and renamed
// (readers never see a torn file) and carries a CRC-32 of its contents (a file damaged later is
// detected). The newest few are kept, so that a damaged newest one falls back to the previous.
//
// File layout: "filo-checkpoint 1\n", the CRC-32 of the rest as 8 hex digits and "\n", then one
// line of JSON metadata, then the binary payload (a LibTorch archive) to the end.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace filo {

struct Checkpoint {
  std::uint64_t round = 0;  // the last round it includes
  nlohmann::json meta;
  std::string payload;
  std::string path;
};

class CheckpointStore {
 public:
  /// Checkpoints live in `directory` (created on the first write); `keep` newest are kept.
  CheckpointStore(std::string directory, std::size_t keep = 3);

  /// Writes the checkpoint of `round` durably, then deletes all but the newest `keep`.
  void write(std::uint64_t round, const nlohmann::json& meta, const std::string& payload) const;

  /// The newest checkpoint whose checksum and layout hold, or none. Each newer file that is
  /// damaged is named in `problems` with what is wrong with it.
  std::optional<Checkpoint> load_latest(std::vector<std::string>& problems) const;

  /// Deletes every checkpoint (the run finished; its model file is the result).
  void clear() const;

  const std::string& directory() const { return directory_; }

 private:
  std::vector<std::pair<std::uint64_t, std::string>> files_newest_first() const;

  std::string directory_;
  std::size_t keep_;
};

/// Reads and verifies one checkpoint file; throws std::runtime_error saying what is wrong.
Checkpoint read_checkpoint(const std::string& path);

}  // namespace filo
