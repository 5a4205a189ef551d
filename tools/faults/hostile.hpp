#pragma once
// The fault suite's attacker: hostile traffic against a real coordinator while an honest run goes
// on, class by class, at least kMessagesPerClass messages each (oversized messages excepted: each
// is megabytes, so fewer). Each class says which refusal reasons it must show in summary.json.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "runtime/keys.hpp"

namespace filo {

struct HostileTarget {
  std::string router;               // the coordinator's ROUTER, tcp://HOST:PORT
  std::string publish;              // its PUB
  std::string coordinator_key;      // its public key (Z85)
  KeyPair intruder;                 // an authorized trainer key, bound to node "intruder"
  std::vector<std::string> honest;  // honest trainers' names, to impersonate
  std::int64_t max_inbound_bytes;   // the largest message the hub takes (from the model's size)
};

constexpr std::uint64_t kMessagesPerClass = 10000;

struct AttackClass {
  std::string name;
  std::uint64_t sent = 0;
  /// Refusal reasons (summary.json "dropped") this class must have raised, with at least how many.
  std::map<std::string, std::uint64_t> expected;
  /// Messages that must have left the attacker; 0 where they are few by design (megabytes each, or
  /// subscriptions) and a send may time out.
  std::uint64_t must_send = kMessagesPerClass;
};

/// Runs every class, one after the other; returns what was sent.
std::vector<AttackClass> run_attacks(const HostileTarget& target);

}  // namespace filo
