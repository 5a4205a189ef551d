#include "runtime/checkpoint.hpp"

#include <fcntl.h>
#include <unistd.h>
#include <zlib.h>
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <sstream>
#include <stdexcept>

#include "runtime/log.hpp"
#include "runtime/run_record.hpp"
#include "runtime/safetensors.hpp"
#include "runtime/thread_name.hpp"
#include "runtime/thread_priority.hpp"

namespace filo {
namespace {
constexpr const char* kMagic = "filo-checkpoint 1";
constexpr const char* kPrefix = "round-";
constexpr const char* kSuffix = ".ckpt";
constexpr int kRoundDigits = 9;

std::string crc32_hex(const std::string& bytes) {
  uLong crc = crc32(0L, Z_NULL, 0);
  // zlib takes uInt lengths; feed large payloads in pieces.
  constexpr std::size_t kPiece = 1u << 30;
  for (std::size_t offset = 0; offset < bytes.size(); offset += kPiece) {
    const std::size_t length = std::min(kPiece, bytes.size() - offset);
    crc = crc32(crc, reinterpret_cast<const Bytef*>(bytes.data() + offset), static_cast<uInt>(length));
  }
  std::ostringstream hex;
  hex << std::hex << std::setw(8) << std::setfill('0') << crc;
  return hex.str();
}

std::string file_name(std::uint64_t round) {
  std::ostringstream name;
  name << kPrefix << std::setw(kRoundDigits) << std::setfill('0') << round << kSuffix;
  return name.str();
}
}  // namespace

CheckpointStore::CheckpointStore(std::string directory, std::size_t keep)
    : directory_(std::move(directory)), keep_(std::max<std::size_t>(keep, 2)) {}

std::string CheckpointStore::write(std::uint64_t round, const nlohmann::json& meta,
                                   const std::string& payload) const {
  std::filesystem::create_directories(directory_);
  nlohmann::json stamped = meta;
  stamped["round"] = round;
  const std::string body = stamped.dump() + "\n" + payload;
  const std::string path = directory_ + "/" + file_name(round);
  write_file_atomically(path, std::string(kMagic) + "\n" + crc32_hex(body) + "\n" + body);
  const auto files = files_newest_first();
  for (std::size_t i = keep_; i < files.size(); ++i) std::filesystem::remove(files[i].second);
  return path;
}

std::uint64_t CheckpointStore::write_contents(const std::string& contents) const {
  const std::uint64_t round = parse_checkpoint(contents, "replica").round;
  std::filesystem::create_directories(directory_);
  write_file_atomically(directory_ + "/" + file_name(round), contents);
  const auto files = files_newest_first();
  for (std::size_t i = keep_; i < files.size(); ++i) std::filesystem::remove(files[i].second);
  return round;
}

std::vector<std::pair<std::uint64_t, std::string>> CheckpointStore::files_newest_first() const {
  std::vector<std::pair<std::uint64_t, std::string>> files;
  std::error_code error;
  for (const auto& entry : std::filesystem::directory_iterator(directory_, error)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind(kPrefix, 0) != 0 || name.size() <= std::strlen(kPrefix) + std::strlen(kSuffix) ||
        name.compare(name.size() - std::strlen(kSuffix), std::string::npos, kSuffix) != 0) {
      continue;
    }
    const std::string digits =
        name.substr(std::strlen(kPrefix), name.size() - std::strlen(kPrefix) - std::strlen(kSuffix));
    if (digits.empty() || !std::all_of(digits.begin(), digits.end(), ::isdigit)) continue;
    files.emplace_back(std::stoull(digits), entry.path().string());
  }
  std::sort(files.begin(), files.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  return files;
}

Checkpoint read_checkpoint(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) throw std::runtime_error("cannot open");
  const std::string contents((std::istreambuf_iterator<char>(file)), {});
  return parse_checkpoint(contents, path);
}

Checkpoint parse_checkpoint(const std::string& contents, const std::string& origin) {
  const std::size_t magic_end = contents.find('\n');
  if (magic_end == std::string::npos || contents.compare(0, magic_end, kMagic) != 0) {
    throw std::runtime_error("not a filo checkpoint (bad header)");
  }
  const std::size_t crc_end = contents.find('\n', magic_end + 1);
  if (crc_end == std::string::npos) throw std::runtime_error("truncated before its checksum");
  const std::string expected = contents.substr(magic_end + 1, crc_end - magic_end - 1);
  const std::string body = contents.substr(crc_end + 1);
  const std::string actual = crc32_hex(body);
  if (actual != expected) {
    throw std::runtime_error("checksum mismatch (stored " + expected + ", contents hash to " + actual +
                             "): damaged or torn");
  }
  const std::size_t meta_end = body.find('\n');
  if (meta_end == std::string::npos) throw std::runtime_error("no metadata line");
  Checkpoint checkpoint;
  checkpoint.meta = nlohmann::json::parse(body.substr(0, meta_end), nullptr, /*allow_exceptions=*/false);
  if (checkpoint.meta.is_discarded() || !checkpoint.meta.contains("round")) {
    throw std::runtime_error("metadata is not valid JSON with a round");
  }
  if (!checkpoint.meta.at("round").is_number_unsigned()) throw std::runtime_error("its round is not a count");
  checkpoint.round = checkpoint.meta.at("round").get<std::uint64_t>();
  checkpoint.payload = body.substr(meta_end + 1);
  checkpoint.path = origin;
  return checkpoint;
}

std::optional<Checkpoint> CheckpointStore::load_latest(std::vector<std::string>& problems) const {
  for (const auto& [round, path] : files_newest_first()) {
    try {
      return read_checkpoint(path);
    } catch (const std::exception& e) {
      problems.push_back(path + ": " + e.what());
    }
  }
  return std::nullopt;
}

void CheckpointStore::clear() const {
  for (const auto& [round, path] : files_newest_first()) std::filesystem::remove(path);
}

CheckpointWriter::CheckpointWriter(CheckpointStore store, AfterWrite after_write,
                                   std::chrono::milliseconds after_write_every, Written written)
    : store_(std::move(store)),
      after_write_(std::move(after_write)),
      on_written_(std::move(written)),
      after_write_every_(after_write_every),
      thread_([this] { run(); }) {}

CheckpointWriter::~CheckpointWriter() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  changed_.notify_all();
  thread_.join();
}

void CheckpointWriter::submit(std::uint64_t round, nlohmann::json meta, std::vector<NamedTensor> tensors) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (pending_) ++superseded_;
    pending_ = Pending{round, std::move(meta), std::move(tensors)};
  }
  changed_.notify_all();
}

bool CheckpointWriter::wait_idle(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mutex_);
  return changed_.wait_for(lock, timeout, [this] { return !pending_ && !writing_; });
}

void CheckpointWriter::clear() {
  std::unique_lock<std::mutex> lock(mutex_);
  changed_.wait(lock, [this] { return !pending_ && !writing_; });
  skipped_after_write_.reset();  // the run's own result supersedes it
  store_.clear();
}

std::uint64_t CheckpointWriter::written() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return written_;
}

std::uint64_t CheckpointWriter::superseded() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return superseded_;
}

std::string CheckpointWriter::last_error() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return last_error_;
}

void CheckpointWriter::call_after_write(const Pending& job) {
  try {
    after_write_(job.round, job.meta, job.tensors);
  } catch (const std::exception& e) {
    log(LogLevel::kError, "checkpoint", "after the checkpoint of round ", job.round, ": ", e.what());
  }
}

void CheckpointWriter::run() {
  name_this_thread("checkpoints");
  lower_this_thread_priority();  // checkpoints are written while the next rounds run
  std::unique_lock<std::mutex> lock(mutex_);
  while (true) {
    changed_.wait(lock, [this] { return stopping_ || pending_; });
    if (!pending_) {  // stopping with nothing left to write
      if (skipped_after_write_) {
        const Pending skipped = std::move(*skipped_after_write_);
        skipped_after_write_.reset();
        lock.unlock();
        call_after_write(skipped);
      }
      return;
    }
    Pending job = std::move(*pending_);
    pending_.reset();
    writing_ = true;
    lock.unlock();
    std::string error;
    try {
      const std::string path = store_.write(job.round, job.meta, encode_safetensors(job.tensors));
      if (on_written_) on_written_(job.round, path);
    } catch (const std::exception& e) {
      error = e.what();
      log(LogLevel::kError, "checkpoint", "checkpoint of round ", job.round, " not written: ", error);
    }
    const bool wants_after_write = error.empty() && after_write_;
    const auto now = std::chrono::steady_clock::now();
    const bool after_write_due = wants_after_write && now - last_after_write_ >= after_write_every_;
    if (after_write_due) {
      call_after_write(job);
      last_after_write_ = now;
    }
    lock.lock();
    if (after_write_due) skipped_after_write_.reset();
    if (wants_after_write && !after_write_due) skipped_after_write_ = std::move(job);
    writing_ = false;
    if (error.empty()) {
      ++written_;
    } else {
      last_error_ = error;
    }
    changed_.notify_all();
  }
}

}  // namespace filo
