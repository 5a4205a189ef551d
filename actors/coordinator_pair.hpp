#pragma once
// A coordinator pair: Binary Star (ZeroMQ guide, chapter 4) for filo's coordinator.
//
// Two coordinators, each with its own run directory, share the coordinator's key pair. Each binds
// a pair channel (bus.listen's port + 3, a PUB whose ZAP domain admits that key alone) and
// subscribes to its peer's. On it, each says every heartbeat whether it is active or passive, and
// the active one publishes every checkpoint it writes, whole: the passive one keeps it in its own
// run_dir/checkpoints, so that taking over is the resume of a restarted coordinator, from a
// checkpoint at most one round old.
//
//   passive ──(peer silent for liveness heartbeats AND a node asked here)──▶ active
//   active  ──(peer active with a newer start: it took over while this one was stopped or cut off)──▶ passive
//   active  ──(`filo failback`: the round in flight closes, its checkpoint reaches the peer)──▶ passive
//   passive ──(its active peer hands the run over, and it holds the handed-over round)──▶ active
//   primary at start: active, unless its peer says it is active (then passive)
//   either  ──(peer says the run finished)──▶ exit
//
// A passive coordinator becomes active only when a node asks it to: a partition that separates the
// two coordinators but not the nodes from the active one never makes a second active, because no
// node asks the passive one while it still hears its coordinator.
#include <atomic>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "messages/pair.hpp"
#include "runtime/clock.hpp"
#include "runtime/keys.hpp"
#include "runtime/scoped_thread.hpp"
#include "runtime/socket_factory.hpp"
#include "runtime/stop_signal.hpp"

namespace filo {

struct PairOptions {
  std::string own_endpoint;   /// this coordinator's pair channel, to bind
  std::string peer_endpoint;  /// the peer's pair channel
  std::string listen;         /// bus.listen: where a passive coordinator hears nodes ask for it
  std::string run_dir;        /// replicas go to run_dir/checkpoints
  Milliseconds heartbeat_interval{250};
  int liveness = 4;  /// heartbeats missed before the peer counts as lost
  /// Started with --standby-for: on an exact tie between two actives, this one gives way.
  bool standby = false;
  /// Keys whose trainers' requests count as a node asking; null: CURVE off (any request counts).
  std::shared_ptr<const AuthorizedKeys> authorized_keys;
};

/// Why a passive coordinator stopped being passive, and what it knew then.
struct StandbyOutcome {
  enum class Kind { kBecomeActive, kRunFinished, kStopped };
  Kind kind = Kind::kStopped;
  bool failover = false;            /// it takes over from an active peer it lost (not a primary's start)
  std::string reason;               /// for the log and the run's record
  double peer_silent_seconds = 0;   /// from the peer's last heartbeat to the decision
  std::uint64_t replica_round = 0;  /// its newest replica's round (0: none)
  Clock::time_point decided{};
};

/// Runs a passive coordinator until it must become active, the run is over or `stop`. `primary_start`:
/// the primary's start, which becomes active at once unless its peer says it is active.
/// `sockets` carries the coordinator's key pair; the loop makes its own context (the active
/// coordinator binds the same ports once this returns).
StandbyOutcome run_standby(const PairOptions& options, const CurveSettings& curve, bool primary_start,
                           const StopFlag& stop);

/// The active coordinator's side of the pair: its heartbeats and replicas, on a thread of its own,
/// and the watch for a peer that took over meanwhile.
class PairLink {
 public:
  /// The pair as this active sees it, for the event stream.
  struct Status {
    std::string peer_state = "not heard";  /// "passive", "silent", "not heard", "active", "finished"
    double peer_silent_seconds = -1.0;     /// since its last heartbeat; -1: never heard
    std::uint64_t peer_round = 0;          /// the newest checkpoint the peer says it holds
    std::uint64_t replicas = 0;
    double replica_bytes = 0.0;  /// mean
    double replica_milliseconds = 0.0;
    std::string handover;          /// a failback: what it waits for, or how it ended (empty: none asked)
    bool handover_failed = false;  /// the peer did not take the run in time: this one goes on
    bool handed_over = false;      /// the peer holds the handed-over round and was told to take over
  };

  PairLink(const SocketFactory& sockets, PairOptions options, std::string run_id, std::uint64_t incarnation);
  ~PairLink();
  PairLink(const PairLink&) = delete;
  PairLink& operator=(const PairLink&) = delete;

  /// A checkpoint was written (any thread): its file goes to the peer from the link's thread.
  void checkpoint_written(std::uint64_t round, const std::string& path);
  /// The run is over: the peer is told so until the link closes, and exits.
  void finish() { finished_ = true; }
  /// A peer became active with a newer start: this coordinator must stop acting and go passive.
  bool yield_requested() const { return yield_requested_; }
  /// Whether this active may close and plan rounds now (any thread): not once it must give way,
  /// and not for a liveness period after a freeze (SIGSTOP, a stalled machine: the link's own loop
  /// stopped for longer than the peer's liveness), while it listens whether its peer took over. A coordinator
  /// that wakes from a freeze must not close a round its peer, which took over meanwhile, closes too.
  bool may_act() const;
  std::string yield_reason() const;
  Status status() const;

  /// `filo failback`, once the round `round` closed with a checkpoint and this active plans no
  /// more: the link waits until its peer holds that checkpoint and tells it to take over
  /// (status().handed_over); the scheduler then tells its trainers and calls give_way. A peer that
  /// does not take it within kHandoverSeconds leaves this one active (status().handover_failed).
  /// Any thread.
  void hand_over(std::uint64_t round);
  /// After a handover: this coordinator stops (yield_requested) and stands by.
  void give_way() { yield_requested_ = true; }

 private:
  void run();
  void loop();
  void publish_state(zmq::socket_t& publisher, msg::PairRole role);
  void replicate(zmq::socket_t& publisher);
  void hear(zmq::socket_t& subscriber);
  void follow_handover();

  PairOptions options_;
  std::string run_id_;
  std::uint64_t incarnation_;
  zmq::socket_t publisher_;
  zmq::socket_t subscriber_;
  mutable std::mutex mutex_;
  std::optional<std::pair<std::uint64_t, std::string>> newest_checkpoint_;  // guarded by mutex_
  std::string yield_reason_;                                                // guarded by mutex_
  std::atomic<bool> yield_requested_{false};
  std::atomic<bool> finished_{false};
  std::atomic<std::int64_t> last_tick_ns_{0};  // steady clock, the link loop's latest pass
  std::atomic<bool> confirming_{false};        // woke from a freeze: waiting to hear the peer
  std::atomic<bool> replicating_{false};       // the link is reading or sending a replica
  Clock::time_point confirming_since_{};       // the link's thread only
  // The link's thread only: what replication has cost.
  std::uint64_t replicated_round_ = 0;
  std::uint64_t peer_rounds_bytes_ = 0;  // of rounds.jsonl, as the passive peer last said
  std::int64_t peer_pid_ = 0;            // the passive peer's process, as it last said
  bool awaiting_ack_ = false;            // a replica was sent that the peer has not said it holds
  bool resend_ = false;                  // a new peer holds less than the last replica sent
  std::optional<std::pair<std::uint64_t, std::string>> last_sent_;  // round and file of the last replica
  Clock::time_point last_replica_sent_{};
  double lost_after_seconds() const {
    return options_.liveness * std::chrono::duration<double>(options_.heartbeat_interval).count();
  }
  std::uint64_t replicas_ = 0;  // guarded by mutex_, as are the figures below
  std::uint64_t replica_bytes_ = 0;
  double replica_seconds_ = 0.0;
  std::optional<Clock::time_point> peer_heard_;  // guarded by mutex_
  std::optional<msg::PairState> peer_;           // guarded by mutex_: its last heartbeat
  std::optional<std::uint64_t>
      handover_round_;                     // guarded by mutex_: a failback asked to hand this round over
  Clock::time_point handover_asked_{};     // guarded by mutex_
  std::string handover_;                   // guarded by mutex_: Status::handover
  bool handover_failed_ = false;           // guarded by mutex_
  std::atomic<bool> handing_over_{false};  // it told its peer to take over (set under mutex_)
  Clock::time_point handed_over_at_{};     // the link's thread only
  StopFlag stop_;
  ScopedThread thread_;  // last: joined before the sockets close
};

}  // namespace filo
