#pragma once
// What people see: the event stream monitors subscribe to, and the end of a run.
#include <cstdint>
#include <map>
#include <string>

#include "messages/envelope.hpp"

namespace filo::msg {

// coordinator actors → monitors (published on topic "event"): one thing the cluster did.
// `type` is a stable machine name ("round", "epoch", "joined", ...); `text` is for people.
struct Event {
  static constexpr MessageKind kKind = MessageKind::kEvent;
  std::string type;
  std::string text;
  std::uint64_t round = 0;
  std::uint64_t epoch = 0;
  std::map<std::string, double> values;
  std::map<std::string, std::string> labels;
  MSGPACK_DEFINE_MAP(type, text, round, epoch, values, labels)
};

// scheduler → everyone (published on topic "control"): the run is over; nodes and monitors exit.
struct RunFinished {
  static constexpr MessageKind kKind = MessageKind::kRunFinished;
  std::string reason;
  double final_test_accuracy = 0.0;
  MSGPACK_DEFINE_MAP(reason, final_test_accuracy)
};

}  // namespace filo::msg
