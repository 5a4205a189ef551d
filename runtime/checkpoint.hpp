#pragma once
// Checkpoint files: the coordinator's whole state after a round, so that a coordinator killed at
// any moment resumes where it left off. Each file is written to a temporary, fsynced and renamed
// (readers never see a torn file) and carries a CRC-32 of its contents (a file damaged later is
// detected). The newest few are kept, so that a damaged newest one falls back to the previous.
//
// File layout: "filo-checkpoint 1\n", the CRC-32 of the rest as 8 hex digits and "\n", then one
// line of JSON metadata, then the binary payload (a LibTorch archive) to the end.
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "messages/tensor_frames.hpp"

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

  /// Writes the checkpoint of `round` durably, then deletes all but the newest `keep`. Returns the
  /// file's path.
  std::string write(std::uint64_t round, const nlohmann::json& meta, const std::string& payload) const;
  /// Keeps a checkpoint file's whole contents as written elsewhere (a replica from the active
  /// coordinator of a pair): checked first (throws std::runtime_error saying what is wrong, and
  /// writes nothing), then written durably like write(). Returns its round.
  std::uint64_t write_contents(const std::string& contents) const;

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

/// Writes checkpoints on a thread of its own, so that the actor that takes them never waits on
/// fsync: it hands over a snapshot and goes on. When the disk is slower than the rounds, only the
/// newest snapshot not yet written is kept (an older one would be superseded anyway).
class CheckpointWriter {
 public:
  /// Called on the writer's thread after a checkpoint is written, with what it holds; a failure it
  /// throws is logged and does not count against the checkpoint.
  using AfterWrite = std::function<void(std::uint64_t round, const nlohmann::json& meta,
                                        const std::vector<NamedTensor>& tensors)>;
  /// Called on the writer's thread after every checkpoint written, with its round and file: it must
  /// only take note (a coordinator pair's link reads the file on a thread of its own).
  using Written = std::function<void(std::uint64_t round, const std::string& path)>;

  /// `after_write` runs at most once per `after_write_every`; the newest checkpoint it skipped
  /// gets it when the writer stops, unless clear() came first.
  explicit CheckpointWriter(CheckpointStore store, AfterWrite after_write = {},
                            std::chrono::milliseconds after_write_every = std::chrono::milliseconds(0),
                            Written written = {});
  /// Writes what is pending, then joins the thread.
  ~CheckpointWriter();
  CheckpointWriter(const CheckpointWriter&) = delete;
  CheckpointWriter& operator=(const CheckpointWriter&) = delete;

  /// Writes a checkpoint of `round` whose payload is `tensors` in safetensors form (encoded on the
  /// writer's thread). The tensors must be the caller's copies: it must not change them after.
  void submit(std::uint64_t round, nlohmann::json meta, std::vector<NamedTensor> tensors);
  /// Waits until everything submitted so far is written or has failed; false after `timeout`.
  bool wait_idle(std::chrono::milliseconds timeout);
  /// Waits until idle, then deletes every checkpoint (the run finished; its model is the result).
  void clear();
  std::uint64_t written() const;
  std::uint64_t superseded() const;
  /// The last failure (a full disk must not stop training: the previous checkpoint still stands).
  std::string last_error() const;

 private:
  struct Pending {
    std::uint64_t round = 0;
    nlohmann::json meta;
    std::vector<NamedTensor> tensors;
  };
  void run();
  void call_after_write(const Pending& job);

  CheckpointStore store_;
  AfterWrite after_write_;
  Written on_written_;
  std::chrono::milliseconds after_write_every_;
  std::chrono::steady_clock::time_point last_after_write_{};  // the writer's thread only
  std::optional<Pending> skipped_after_write_;                // guarded by mutex_
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::optional<Pending> pending_;
  bool writing_ = false;
  bool stopping_ = false;
  std::uint64_t written_ = 0;
  std::uint64_t superseded_ = 0;
  std::string last_error_;
  std::thread thread_;  // last: started once everything above exists
};

/// Reads and verifies one checkpoint file; throws std::runtime_error saying what is wrong.
Checkpoint read_checkpoint(const std::string& path);
/// Verifies a checkpoint file's contents (named `origin` in errors); throws like read_checkpoint.
Checkpoint parse_checkpoint(const std::string& contents, const std::string& origin);

}  // namespace filo
