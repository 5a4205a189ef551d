#pragma once
// What a process refuses from the network, said once and counted always. Every refused message is
// counted by reason (DropCounters, read into summary.json and the event stream); a line is logged
// for the first refusal of each (peer, reason) and then at most once per interval with the number
// refused since, so that a flood writes a count, not a line per message.
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>

#include "runtime/clock.hpp"
#include "runtime/drop_counters.hpp"
#include "runtime/log.hpp"

namespace filo {

class Refusals {
 public:
  static constexpr Milliseconds kLogInterval{10000};
  /// Peers remembered for rate limiting; past this the table starts over (a flood of fresh names
  /// costs a line each at most once per interval, never memory).
  static constexpr std::size_t kMaxRemembered = 4096;

  Refusals(std::string who, DropCounters* drops, const TimeSource& time = steady_time())
      : who_(std::move(who)), drops_(drops), time_(&time) {}

  /// Counts in `drops` from now on (the process's counters; may be null).
  void count_in(DropCounters* drops) { drops_ = drops; }

  /// Counts one refusal of `reason` (a short fixed text, the counter's key) from `peer`, with
  /// `detail` for the log line.
  /// Returns whether a line was logged (the first of its kind in the interval).
  bool refuse(const std::string& peer, const std::string& reason, const std::string& detail = {}) {
    if (drops_) drops_->count(reason);
    ++total_;
    const auto now = time_->now();
    if (remembered_.size() >= kMaxRemembered) remembered_.clear();
    auto& entry = remembered_[{peer, reason}];
    ++entry.since_logged;
    if (entry.logged && now - *entry.logged < kLogInterval) return false;
    const std::uint64_t more = entry.since_logged - 1;
    entry.logged = now;
    entry.since_logged = 0;
    log(LogLevel::kWarn, who_, "refused from ", peer.empty() ? std::string("?") : peer, ": ", reason,
        detail.empty() ? std::string() : " (" + detail + ")",
        more > 0 ? "; " + std::to_string(more) + " more refused for this since the last line"
                 : std::string());
    return true;
  }

  std::uint64_t total() const { return total_; }

 private:
  struct Entry {
    std::optional<Clock::time_point> logged;
    std::uint64_t since_logged = 0;
  };
  std::string who_;
  DropCounters* drops_;
  const TimeSource* time_;
  std::map<std::pair<std::string, std::string>, Entry> remembered_;
  std::uint64_t total_ = 0;
};

}  // namespace filo
