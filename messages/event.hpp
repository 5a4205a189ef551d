#pragma once
// What people see: the event stream that monitors subscribe to (topic "event"), and the end of a
// run. Each family of event is one type here, filled by its one producer and read by every consumer
// (FleetState and through it the dashboard, /metrics, the terminal table and the report; the
// monitor's lines; the fault suite's history): no consumer reads figures out of keys by a naming
// convention, so a field that a producer stops filling fails to compile where it is read.
//
// Every event has `text`, a line for people. On disk (RUN_DIR/events.jsonl, `filo monitor --json`)
// an event is one JSON object: "type" (the family's stable name, event_type()), "time" (when the
// monitor received it, seconds since 1970) and its fields by name.
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>
#include <zmq.hpp>

#include "messages/codec.hpp"
#include "messages/envelope.hpp"
#include "messages/round.hpp"

namespace filo::msg {

// One trainer's part in a closed round: what it was planned, what counted, and what that cost.
struct TrainerInRound {
  std::string name;
  std::uint64_t planned = 0;
  bool delivered = false;
  std::uint64_t samples = 0;
  double compute_seconds = 0.0;
  double model_wait_seconds = 0.0;  // from its plan's arrival to the start of training
  double staging_seconds = 0.0;     // copying its results into send buffers
  double samples_per_second = 0.0;
  double arrival_seconds = 0.0;     // from the plans going out to the aggregator's report
  double idle_seconds = 0.0;        // waiting for the slowest
  std::vector<SampleRange> ranges;  // positions it delivered (none when it missed)
  std::string missed_reason;        // why its share did not count, when it did not
  double benchmark_gflops = 0.0;
  std::string device;
  std::string precision;  // what its forward pass computed in
  std::int64_t peak_memory_bytes = 0;
  std::uint64_t tensor_bytes = 0;  // what its contribution's tensors took on the wire, as received
  double norm_per_sample = 0.0;    // its contribution's norm over its samples (0: none arrived)
  MSGPACK_DEFINE_MAP(name, planned, delivered, samples, compute_seconds, model_wait_seconds, staging_seconds,
                     samples_per_second, arrival_seconds, idle_seconds, ranges, missed_reason,
                     benchmark_gflops, device, precision, peak_memory_bytes, tensor_bytes, norm_per_sample)
};

// scheduler → monitors at every round's close (type "round"). The same object, less `text`, is the
// round's line in RUN_DIR/rounds.jsonl.
struct RoundClosed {
  static constexpr MessageKind kKind = MessageKind::kRoundClosed;
  std::string text;
  std::uint64_t round = 0;
  std::uint64_t epoch = 0;
  std::uint64_t model_version = 0;  // the version this round's combination produces
  double seconds = 0.0;             // from the plans going out to the close
  double closed_seconds = 0.0;      // when it closed, in seconds since this coordinator's first round
  std::uint64_t samples = 0;
  double loss = 0.0;
  double idle_fraction = 0.0;  // of the delivered trainers' time, spent waiting for the slowest
  std::string closed_because;
  double deadline_seconds = 0.0;  // what it was given
  double loss_scale = 0.0;
  std::uint64_t epoch_samples_done = 0;
  std::uint64_t epoch_samples_total = 0;
  std::uint64_t epochs = 0;
  std::vector<TrainerInRound> trainers;
  std::string exchange;  // how its work was exchanged: "gradient", "local-sgd topk-q8 x16", ...
  MSGPACK_DEFINE_MAP(text, round, epoch, model_version, seconds, closed_seconds, samples, loss, idle_fraction,
                     closed_because, deadline_seconds, loss_scale, epoch_samples_done, epoch_samples_total,
                     epochs, trainers, exchange)
};

// scheduler → monitors once an epoch's model was scored on the test set (type "epoch").
struct EpochScored {
  static constexpr MessageKind kKind = MessageKind::kEpochScored;
  std::string text;
  std::uint64_t epoch = 0;
  std::uint64_t epochs = 0;
  std::uint64_t round = 0;
  std::string metric;  // the task's headline metric: "test_accuracy" or "test_perplexity"
  double value = 0.0;  // of `metric`
  std::map<std::string, double> metrics;
  double train_loss = 0.0;
  std::uint64_t samples = 0;
  double training_seconds = 0.0;  // when the epoch's last round closed
  MSGPACK_DEFINE_MAP(text, epoch, epochs, round, metric, value, metrics, train_loss, samples,
                     training_seconds)
};

enum class MemberChange : std::uint8_t {
  kJoined = 0,    // registrar: admitted
  kRejoined,      // registrar: admitted again after it was lost or left
  kLost,          // registrar: silent past heartbeat_interval x liveness
  kLeft,          // registrar: said goodbye
  kRejected,      // registrar: refused, with the reason
  kLeftOut,       // scheduler: the transfer rule took it out of the rounds
  kPlannedAgain,  // scheduler: back in the rounds (its link passed the rule, or it proved alive)
  kFailed,        // scheduler: its computation failed; out of the plans
  kTakenOut,      // scheduler: it missed too many rounds in a row; out of the plans until it proves alive
  kExcluded,      // scheduler: refused as a liar too often; out until an operator readmits it
  kReadmitted,    // scheduler: an operator let an excluded trainer back (`filo readmit`)
};
const char* member_change_name(MemberChange change);

// registrar or scheduler → monitors: one trainer's membership or planning changed (type: the
// change's name, "joined", "lost", "left_out", ...).
struct MemberNews {
  static constexpr MessageKind kKind = MessageKind::kMemberNews;
  std::string text;
  MemberChange change = MemberChange::kJoined;
  std::string trainer;
  std::string reason;    // why; for a join, what the trainer brought (host, cores, memory, GEMM)
  std::string hostname;  // joins
  std::uint64_t round = 0;
  std::uint32_t live_trainers = 0;  // registrar's news: how many are live after it
  MSGPACK_DEFINE_MAP(text, change, trainer, reason, hostname, round, live_trainers)
};

// One live trainer as the registrar hears it.
struct MemberStatus {
  std::string trainer;
  std::string host;
  std::string device;
  std::string precision;  // what its last heartbeat said it computes in
  double heartbeat_age_seconds = 0.0;
  std::int64_t peak_memory_bytes = 0;  // its device's peak so far, from its last heartbeat
  MSGPACK_DEFINE_MAP(trainer, host, device, precision, heartbeat_age_seconds, peak_memory_bytes)
};

// registrar → monitors every second: the roll call of live trainers (type "members").
struct FleetMembers {
  static constexpr MessageKind kKind = MessageKind::kFleetMembers;
  std::string text;
  std::vector<MemberStatus> members;
  MSGPACK_DEFINE_MAP(text, members)
};

// scheduler → monitors whenever the counts grew (type "dropped"): every message this coordinator
// process refused so far (hub, ZAP handler, actors), by reason.
struct RefusalCounts {
  static constexpr MessageKind kKind = MessageKind::kRefusalCounts;
  std::string text;
  std::map<std::string, std::uint64_t> by_reason;
  std::uint64_t total = 0;
  MSGPACK_DEFINE_MAP(text, by_reason, total)
};

// scheduler → monitors with a restarted coordinator's first round (type "resumed").
struct CoordinatorResumed {
  static constexpr MessageKind kKind = MessageKind::kCoordinatorResumed;
  std::string text;
  std::uint64_t round = 0;
  std::uint64_t epoch = 0;
  std::uint64_t coordinator_start = 0;
  std::uint64_t resumed_after_round = 0;
  MSGPACK_DEFINE_MAP(text, round, epoch, coordinator_start, resumed_after_round)
};

// scheduler → monitors: fp16 gradients overflowed, the round's step was skipped fleet-wide and the
// loss scale halved (type "overflow").
struct LossScaleOverflow {
  static constexpr MessageKind kKind = MessageKind::kLossScaleOverflow;
  std::string text;
  std::uint64_t round = 0;
  std::uint64_t epoch = 0;
  double loss_scale = 0.0;  // after halving
  MSGPACK_DEFINE_MAP(text, round, epoch, loss_scale)
};

// scheduler → monitors once the run's summary is written (type "finished").
struct RunEnded {
  static constexpr MessageKind kKind = MessageKind::kRunEnded;
  std::string text;
  std::uint64_t rounds = 0;
  std::string metric;
  double value = 0.0;
  double wall_seconds = 0.0;
  std::string run_dir;
  MSGPACK_DEFINE_MAP(text, rounds, metric, value, wall_seconds, run_dir)
};

// registrar → monitors with every join when the bus runs without CURVE (type "insecure").
struct SecurityNotice {
  static constexpr MessageKind kKind = MessageKind::kSecurityNotice;
  std::string text;
  MSGPACK_DEFINE_MAP(text)
};

// scheduler → monitors when optimizer.mode or sync_steps is "auto" and its choice of how rounds
// exchange their work changes (type "exchange"): what it chose, from which measures, and why.
struct ExchangeChosen {
  static constexpr MessageKind kKind = MessageKind::kExchangeChosen;
  std::string text;
  std::uint64_t round = 0;          // the first round planned this way
  std::string mode;                 // "gradient" or "local-sgd"
  std::string compression;          // local-sgd: how its changes travel ("none", "topk-q8", ...)
  std::uint64_t sync_steps = 0;     // local-sgd: local steps per trainer per round
  double gradient_fraction = -1.0;  // gradient mode's exchange over its compute, estimated (-1: unknown)
  double local_fraction = -1.0;     // local-sgd's, as measured in its last rounds (-1: unknown)
  std::string reason;
  MSGPACK_DEFINE_MAP(text, round, mode, compression, sync_steps, gradient_fraction, local_fraction, reason)
};

// scheduler of a coordinator pair's active → monitors (type "pair"): the pair as the active sees it,
// every second and at once when its peer's state changes (then `changed`). The passive coordinator
// publishes no events: the active speaks for the pair, and a monitor given both endpoints hears
// whichever is active.
struct PairStatus {
  static constexpr MessageKind kKind = MessageKind::kPairStatus;
  std::string text;
  std::string active;      // the active coordinator's bus.listen
  std::string peer;        // its peer's (ha.peer)
  std::string peer_state;  // "passive", "silent" (heard, then lost), "not heard", "active" (it gives way)
  double peer_silent_seconds = 0.0;   // since the peer's last heartbeat (-1: never heard)
  std::uint64_t round = 0;            // the active's last closed round
  std::uint64_t peer_round = 0;       // the newest checkpoint the peer holds
  std::uint64_t replicas = 0;         // checkpoints sent to the peer by this coordinator start
  double replica_bytes = 0.0;         // their mean size
  double replica_milliseconds = 0.0;  // what one cost this process, on average
  std::uint64_t coordinator_start = 0;
  std::uint64_t failovers = 0;  // takeovers in this run so far (summary.json's "failovers")
  std::string handover;         // a failback under way: what it waits for (empty: none)
  bool changed = false;         // the peer's state or the handover changed since the last one
  MSGPACK_DEFINE_MAP(text, active, peer, peer_state, peer_silent_seconds, round, peer_round, replicas,
                     replica_bytes, replica_milliseconds, coordinator_start, failovers, handover, changed)
};

// scheduler → everyone (published on topic "control"): the run is over; nodes and monitors exit.
struct RunFinished {
  static constexpr MessageKind kKind = MessageKind::kRunFinished;
  std::string reason;
  double final_test_accuracy = 0.0;
  MSGPACK_DEFINE_MAP(reason, final_test_accuracy)
};

/// Any event of the stream.
using AnyEvent =
    std::variant<RoundClosed, EpochScored, MemberNews, FleetMembers, RefusalCounts, CoordinatorResumed,
                 LossScaleOverflow, RunEnded, SecurityNotice, ExchangeChosen, PairStatus>;

/// What a subscriber to the "event" and "control" topics receives (a monitor's inbox).
using StreamInbox =
    std::variant<RoundClosed, EpochScored, MemberNews, FleetMembers, RefusalCounts, CoordinatorResumed,
                 LossScaleOverflow, RunEnded, SecurityNotice, ExchangeChosen, PairStatus, RunFinished>;

/// The family's stable name: "round", "epoch", the change of a MemberNews, "members", "dropped",
/// "resumed", "overflow", "finished", "insecure", "exchange", "pair".
std::string event_type(const AnyEvent& event);
const std::string& event_text(const AnyEvent& event);
/// The trainer an event is about, or empty.
std::string event_trainer(const AnyEvent& event);

/// Whether `kind` is an event's, and the event in `body` when it is; the reason when the body is
/// malformed.
bool is_event_kind(MessageKind kind);
Decoded<AnyEvent> decode_event(MessageKind kind, const zmq::message_t& body, const BodyLimits& limits);

/// One event as a JSON line: the format of `filo monitor --json` and of RUN_DIR/events.jsonl.
/// `unix_time` (seconds) says when the monitor received it.
nlohmann::json event_json(const AnyEvent& event, double unix_time);
/// The reverse; missing fields keep their defaults. Throws std::invalid_argument for an unknown type.
AnyEvent event_from_json(const nlohmann::json& line);

/// A round's line in rounds.jsonl (the event without its text), and back.
nlohmann::json round_record_json(const RoundClosed& round);
RoundClosed round_from_record(const nlohmann::json& line);

}  // namespace filo::msg

MSGPACK_ADD_ENUM(filo::msg::MemberChange);
