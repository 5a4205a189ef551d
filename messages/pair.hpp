#pragma once
// The coordinator pair's channel (Binary Star, ZeroMQ guide chapter 4): each coordinator of a pair
// publishes its state on its own PUB (bus.listen's port + 3) every heartbeat, and the active one
// publishes each checkpoint it writes, whole, as the replica its standby resumes from. These
// messages never cross the hub: only the two coordinators, holding the coordinator's key, may
// subscribe (the ZAP domain "filo-pair" admits no other key).
#include <cstdint>
#include <string>

#include <msgpack.hpp>

namespace filo::msg {

/// Topics on the pair channel.
inline constexpr const char* kPairStateTopic = "pair-state";
inline constexpr const char* kReplicaTopic = "pair-replica";

/// What a coordinator of a pair is now.
enum class PairRole : std::uint8_t {
  kActive = 1,    // runs the registrar, scheduler and aggregator: the fleet's coordinator
  kPassive = 2,   // holds replicas, listens for nodes asking; takes over when the active is lost
  kFinished = 3,  // the run is over: a standby that hears this exits, its work done
};

inline std::string pair_role_name(PairRole role) {
  switch (role) {
    case PairRole::kActive:
      return "active";
    case PairRole::kPassive:
      return "passive";
    case PairRole::kFinished:
      return "finished";
  }
  return "unknown";
}

/// Every heartbeat, on the pair channel: [kPairStateTopic][PairState].
struct PairState {
  PairRole role = PairRole::kPassive;
  std::string run_id;             // the run it holds (a passive one: its newest replica's; may be empty)
  std::uint64_t incarnation = 0;  // the coordinator start it is (an active one's); the newer active wins
  std::uint64_t round = 0;        // its newest checkpoint or replica
  std::int64_t pid = 0;
  /// A passive one: the bytes of the run's rounds.jsonl it holds, where the active's next replica
  /// continues the file from.
  std::uint64_t rounds_bytes = 0;
  /// An active one that hands the run over (`filo failback`): it closes no more rounds, and its
  /// passive peer, once it holds `round`, takes over without waiting for a node to ask.
  bool handing_over = false;
  /// A passive one: it is the primary, starting. Its peer, when it holds a newer checkpoint of the
  /// run (both were stopped, e.g. a requeued SLURM job, after the peer had taken over), becomes
  /// active instead, and the primary stands by.
  bool primary_starting = false;
  MSGPACK_DEFINE_MAP(role, run_id, incarnation, round, pid, rounds_bytes, handing_over, primary_starting)
};

/// After each checkpoint the active writes: [kReplicaTopic][ReplicaHeader][the checkpoint file's
/// bytes][rounds.jsonl from rounds_offset]. The file carries its own CRC-32; the standby checks it
/// before keeping the replica. The rounds' lines make the standby's rounds.jsonl the active's, so
/// that the coordinator active at the end holds the whole run's record.
struct ReplicaHeader {
  std::string run_id;
  std::uint64_t incarnation = 0;
  std::uint64_t round = 0;
  std::uint64_t bytes = 0;
  std::uint64_t rounds_offset = 0;  /// where the rounds.jsonl bytes of this replica start
  MSGPACK_DEFINE_MAP(run_id, incarnation, round, bytes, rounds_offset)
};

}  // namespace filo::msg

MSGPACK_ADD_ENUM(filo::msg::PairRole);
