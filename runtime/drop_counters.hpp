#pragma once
// Counts of messages a process refused, by reason ("contribution: not planned", "envelope:
// malformed msgpack", ...). Owned by the process's main function; its actors and hub only add to
// it, and the scheduler reads it into summary.json and the event stream, so that what was
// refused is a number a test can assert, not only a log line.
#include <cstdint>
#include <map>
#include <mutex>
#include <string>

namespace filo {

class DropCounters {
 public:
  void count(const std::string& reason, std::uint64_t how_many = 1) {
    std::lock_guard<std::mutex> lock(mutex_);
    counts_[reason] += how_many;
  }
  std::map<std::string, std::uint64_t> snapshot() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return counts_;
  }
  std::uint64_t total() const {
    std::lock_guard<std::mutex> lock(mutex_);
    std::uint64_t sum = 0;
    for (const auto& [reason, count] : counts_) sum += count;
    return sum;
  }

 private:
  mutable std::mutex mutex_;
  std::map<std::string, std::uint64_t> counts_;
};

}  // namespace filo
