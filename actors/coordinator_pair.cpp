#include "actors/coordinator_pair.hpp"

#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <sstream>
#include <string_view>
#include <vector>

#include "messages/codec.hpp"
#include "messages/envelope.hpp"
#include "messages/membership.hpp"
#include "runtime/checkpoint.hpp"
#include "runtime/log.hpp"
#include "runtime/thread_name.hpp"
#include "runtime/zap.hpp"

namespace filo {
namespace {
constexpr const char* kLogName = "pair";
/// How often the active link looks for a checkpoint to replicate, and the standby's poll slice.
constexpr Milliseconds kPollSlice{10};
/// A replica carries a whole checkpoint (model and optimizer state): at most this much is taken.
constexpr std::int64_t kMaxReplicaBytes = std::int64_t{4} << 30;
/// Replicas queued for a slow peer: only the newest matters, so a short queue.
constexpr int kReplicaQueue = 4;
/// A heartbeat's frames (PairState is a few hundred bytes).
constexpr std::int64_t kMaxStateBytes = std::int64_t{1} << 16;
/// The link's loop not passing for this fraction of the peer's liveness time means a frozen or
/// starved process: the active holds its rounds until the link has run again.
constexpr double kFrozenFraction = 0.5;
/// Connections a standby remembers as having asked for it (a node's trainers and heartbeats).
constexpr std::size_t kMaxVoters = 4096;
/// A standby says it holds a newer replica at most this often in its log.
constexpr double kReplicaLogSeconds = 10.0;
/// `filo failback`: how long the active waits for its peer to hold the handed-over checkpoint
/// before it gives up and goes on (a replica of the built-in CNN takes milliseconds; one of a
/// large model over a slow link, seconds).
constexpr double kHandoverSeconds = 30.0;
/// A primary that would resume from a checkpoint of its own waits this long to hear its peer,
/// which may hold a newer one: a requeued SLURM job starts the pair as two job steps, seconds
/// apart on a busy cluster, and a primary that started alone would throw the peer's rounds away.
/// A primary with nothing to resume starts after twice the peer's liveness.
constexpr double kResumingPrimaryPeerWaitSeconds = 10.0;

BodyLimits pair_limits() {
  BodyLimits limits;
  limits.max_bytes = 1u << 16;
  limits.max_string = 1u << 12;
  return limits;
}

void send_state(zmq::socket_t& publisher, const msg::PairState& state) {
  std::array<zmq::message_t, 2> frames{zmq::message_t(std::string(msg::kPairStateTopic)),
                                       encode_frame(state)};
  zmq::send_multipart(publisher, frames, zmq::send_flags::dontwait);
}

/// A file read straight into a frame.
zmq::message_t read_whole_file(const std::string& path) {
  std::ifstream file(path, std::ios::binary | std::ios::ate);
  if (!file) throw std::runtime_error("cannot open " + path);
  const auto size = static_cast<std::size_t>(file.tellg());
  zmq::message_t frame(size);
  file.seekg(0);
  if (!file.read(static_cast<char*>(frame.data()), static_cast<std::streamsize>(size)))
    throw std::runtime_error("cannot read " + path);
  return frame;
}

/// rounds.jsonl from `offset` to its last complete line (the scheduler may be writing the next).
std::string rounds_from(const std::string& path, std::uint64_t offset) {
  std::ifstream file(path, std::ios::binary);
  if (!file) return {};
  file.seekg(static_cast<std::streamoff>(offset));
  std::string tail(std::istreambuf_iterator<char>(file), {});
  const auto last_line_end = tail.rfind('\n');
  tail.resize(last_line_end == std::string::npos ? 0 : last_line_end + 1);
  return tail;
}

std::uint64_t file_size_or_zero(const std::string& path) {
  std::error_code error;
  const auto size = std::filesystem::file_size(path, error);
  return error ? 0 : size;
}

/// The pair channel's sockets, made alike for both sides.
zmq::socket_t pair_publisher(const SocketFactory& sockets, const std::string& endpoint) {
  zmq::socket_t publisher = sockets.make(zmq::socket_type::pub);
  publisher.set(zmq::sockopt::sndhwm, kReplicaQueue);
  publisher.set(zmq::sockopt::linger, 200);
  if (sockets.curve().enabled) sockets.make_pair_server(publisher);
  publisher.bind(endpoint);
  return publisher;
}

/// The peer's heartbeats (`topic` kPairStateTopic), or its replicas (kReplicaTopic), each on a
/// connection of its own: a PUB sends a subscriber only the topics it asked for, so a replica that
/// takes seconds to cross never holds up the heartbeats behind it on one TCP stream.
zmq::socket_t pair_subscriber(const SocketFactory& sockets, const std::string& endpoint,
                              const char* topic = msg::kPairStateTopic) {
  const bool replicas = std::string_view(topic) == msg::kReplicaTopic;
  zmq::socket_t subscriber = sockets.make(zmq::socket_type::sub);
  subscriber.set(zmq::sockopt::rcvhwm, kReplicaQueue);
  subscriber.set(zmq::sockopt::maxmsgsize, replicas ? kMaxReplicaBytes : kMaxStateBytes);
  subscriber.set(zmq::sockopt::linger, 0);
  if (sockets.curve().enabled) sockets.make_pair_client(subscriber);
  subscriber.set(zmq::sockopt::subscribe, topic);
  subscriber.connect(endpoint);
  return subscriber;
}

/// zmq::poll that a signal interrupting it (SIGTERM to the process) only cuts short.
void poll_for(zmq::pollitem_t* items, std::size_t count, Milliseconds timeout) {
  try {
    zmq::poll(items, count, timeout);
  } catch (const zmq::error_t& e) {
    if (e.num() != EINTR) throw;
  }
}

/// One message from the peer's channel, or nothing.
std::optional<std::vector<zmq::message_t>> receive_frames(zmq::socket_t& socket) {
  std::vector<zmq::message_t> frames;
  if (!zmq::recv_multipart(socket, std::back_inserter(frames), zmq::recv_flags::dontwait))
    return std::nullopt;
  return frames;
}

std::optional<msg::PairState> as_state(const std::vector<zmq::message_t>& frames) {
  if (frames.size() != 2 || frames[0].to_string_view() != msg::kPairStateTopic) return std::nullopt;
  auto state = decode_frame<msg::PairState>(frames[1], pair_limits());
  if (!state) {
    log(LogLevel::kWarn, kLogName, "a malformed pair state from the peer: ", state.error());
    return std::nullopt;
  }
  return state.value();
}

/// The passive side: hears the peer and keeps its replicas; hears nodes that ask for it.
class Standby {
 public:
  Standby(const PairOptions& options, const CurveSettings& curve, bool primary_start)
      : options_(options),
        primary_start_(primary_start),
        sockets_(context_, SocketLimits{}, curve),
        store_(options.run_dir + "/checkpoints"),
        started_(Clock::now()) {
    if (curve.enabled) {
      zap_.emplace(context_, options.authorized_keys, nullptr, curve.own.public_key);
    }
    listener_ = sockets_.make(zmq::socket_type::router);
    listener_.set(zmq::sockopt::linger, 0);
    listener_.set(zmq::sockopt::maxmsgsize, std::int64_t{1} << 20);  // a node's report, never a model
    if (curve.enabled) sockets_.make_curve_server(listener_);
    listener_.bind(options.listen);
    publisher_ = pair_publisher(sockets_, options.own_endpoint);
    subscriber_ = pair_subscriber(sockets_, options.peer_endpoint);
    replica_subscriber_ = pair_subscriber(sockets_, options.peer_endpoint, msg::kReplicaTopic);
    // The newest checkpoint of this run directory until a replica comes: a primary that restarts
    // passive resumes from its own if it must take over before its peer sends one.
    std::vector<std::string> problems;
    if (auto newest = store_.load_latest(problems)) {
      replica_round_ = newest->round;
      run_id_ = newest->meta.value("run", nlohmann::json::object()).value("run_id", std::string());
      replica_incarnation_ = newest->meta.value("incarnation", std::uint64_t{0});
    }
  }

  StandbyOutcome run(const StopFlag& stop) {
    log(LogLevel::kInfo, kLogName,
        primary_start_ ? "primary starting: listening to its peer at "
                       : "passive: standing by for the coordinator at ",
        options_.peer_endpoint, "; nodes that lose it may ask at ", options_.listen);
    const double lost_after = static_cast<double>(options_.liveness) *
                              std::chrono::duration<double>(options_.heartbeat_interval).count();
    const double primary_wait =
        replica_round_ > 0 ? std::max(2 * lost_after, kResumingPrimaryPeerWaitSeconds) : 2 * lost_after;
    if (primary_start_ && replica_round_ > 0)
      log(LogLevel::kInfo, kLogName, "primary: it holds a checkpoint of round ", replica_round_,
          "; it waits up to ", primary_wait, " s to hear its peer, which may hold a newer one");
    Clock::time_point next_heartbeat = Clock::now();
    while (!stop.stop_requested()) {
      std::array<zmq::pollitem_t, 3> items{{{subscriber_.handle(), 0, ZMQ_POLLIN, 0},
                                            {replica_subscriber_.handle(), 0, ZMQ_POLLIN, 0},
                                            {listener_.handle(), 0, ZMQ_POLLIN, 0}}};
      poll_for(items.data(), items.size(), kPollSlice);
      const Clock::time_point now = Clock::now();
      while (auto frames = receive_frames(replica_subscriber_)) {
        if (frames->size() == 4 && (*frames)[0].to_string_view() == msg::kReplicaTopic) keep_replica(*frames);
      }
      while (auto frames = receive_frames(subscriber_)) {
        if (auto state = as_state(*frames)) {
          if (!peer_heard_)
            log(LogLevel::kInfo, kLogName, "heard the peer, ", msg::pair_role_name(state->role), ", after ",
                seconds_between(started_, now), " s");
          if (said_lost_) {
            log(LogLevel::kInfo, kLogName, "heard the peer again (", msg::pair_role_name(state->role),
                ") after ", seconds_between(*peer_heard_, now),
                " s of silence: no node asked here meanwhile");
            said_lost_ = false;
          }
          if (!peer_heard_) peer_first_heard_ = now;
          peer_heard_ = now;
          peer_ = *state;
        }
      }
      while (auto frames = receive_frames(listener_)) note_request(*frames, now);
      if (now >= next_heartbeat) {
        say_state();
        next_heartbeat = now + options_.heartbeat_interval;
      }
      const double silent = seconds_between(peer_heard_.value_or(started_), now);
      if (peer_heard_ && peer_->role == msg::PairRole::kFinished) {
        return outcome(StandbyOutcome::Kind::kRunFinished, false, "the active coordinator finished the run",
                       silent, now);
      }
      if (primary_start_) {
        if (peer_heard_ && peer_->role == msg::PairRole::kActive) {
          primary_start_ = false;  // its peer took over: this one stays passive
          log(LogLevel::kWarn, kLogName, "the peer at ", options_.peer_endpoint,
              " is active (coordinator start ", peer_->incarnation, ", round ", peer_->round,
              "): this coordinator stays passive");
        } else if (peer_heard_ && peer_->role == msg::PairRole::kPassive && peer_holds_newer(*peer_) &&
                   seconds_between(*peer_first_heard_, now) < 4 * lost_after) {
          // Both started together (a requeued job) after the peer had taken over: the peer resumes
          // from its newer checkpoint, and this one waits to hear it active.
          if (!said_peer_newer_)
            log(LogLevel::kInfo, kLogName, "primary: its peer holds round ", peer_->round,
                " of the run, newer than ", replica_round_, ": the peer becomes active, this one stands by");
          said_peer_newer_ = true;
          // (A peer that does not take it within 4 liveness periods of being heard: this one
          // starts after all. Counted from then, not from this one's start: a peer heard late in
          // this one's wait for it would otherwise find it active as it takes over, and two act.)
        } else if (peer_heard_ && peer_->role == msg::PairRole::kPassive) {
          return outcome(StandbyOutcome::Kind::kBecomeActive, false, "primary: its peer is passive", silent,
                         now);
        } else if (silent > primary_wait) {
          // At least twice the peer's liveness: a peer that is active must be heard before this one
          // acts too.
          std::ostringstream why;
          why << "primary: no peer heard in " << primary_wait << " s";
          return outcome(StandbyOutcome::Kind::kBecomeActive, false, why.str(), silent, now);
        }
        continue;
      }
      // `filo failback`: the active handed the run over and this one holds the round it closed last.
      if (peer_heard_ && peer_->role == msg::PairRole::kActive && peer_->handing_over && cleared_ &&
          peer_->run_id == run_id_ && peer_->incarnation == replica_incarnation_ &&
          replica_round_ >= peer_->round && replica_round_ > 0) {
        return outcome(
            StandbyOutcome::Kind::kBecomeActive, true,
            "failback: the active coordinator handed the run over at round " + std::to_string(peer_->round),
            0.0, now);
      }
      // Binary Star's rule: lost the active AND a node asked (votes older than the loss do not count).
      const bool peer_lost = silent > lost_after;
      const bool asked = last_request_ && seconds_between(*last_request_, now) <= lost_after;
      // The primary starts while this one holds a newer checkpoint of the run: this one resumes it.
      if (peer_heard_ && !peer_lost && peer_->role == msg::PairRole::kPassive && peer_->primary_starting &&
          replica_round_ > 0 && holds_newer_than(*peer_)) {
        return outcome(StandbyOutcome::Kind::kBecomeActive, false,
                       "the primary starts holding round " + std::to_string(peer_->round) +
                           ", this one round " + std::to_string(replica_round_) +
                           " of the run: this one resumes it",
                       0.0, now);
      }
      if (peer_lost && !said_lost_ && peer_heard_) {
        log(LogLevel::kWarn, kLogName, "the active coordinator has been silent for ", silent,
            " s: this one takes over once a node asks for it (none does while the active reaches the nodes)");
        said_lost_ = true;
      }
      if (peer_lost && asked) {
        return outcome(StandbyOutcome::Kind::kBecomeActive, true,
                       "the active coordinator was silent for " + std::to_string(silent) + " s and " +
                           requester_ + " asked here",
                       silent, now);
      }
      // Both passive (the active was restarted before its peer noticed it gone): nodes that lost it
      // ask; the one holding the newer state takes over (on a tie, the primary), else none would.
      const bool peer_passive = peer_heard_ && !peer_lost && peer_->role == msg::PairRole::kPassive;
      if (peer_passive && asked &&
          (replica_round_ > peer_->round || (replica_round_ == peer_->round && !options_.standby))) {
        return outcome(StandbyOutcome::Kind::kBecomeActive, true,
                       "both coordinators were passive and " + requester_ +
                           " asked here; this one holds round " + std::to_string(replica_round_) +
                           ", its peer round " + std::to_string(peer_->round),
                       0.0, now);
      }
    }
    return outcome(StandbyOutcome::Kind::kStopped, false, "stopped", 0.0, Clock::now());
  }

 private:
  StandbyOutcome outcome(StandbyOutcome::Kind kind, bool failover, std::string reason, double silent,
                         Clock::time_point now) {
    StandbyOutcome result;
    result.kind = kind;
    result.failover = failover;
    result.reason = std::move(reason);
    result.peer_silent_seconds = silent;
    result.replica_round = replica_round_;
    result.decided = now;
    log(LogLevel::kWarn, kLogName, result.reason, replica_round_ ? "; newest replica: round " : "",
        replica_round_ ? std::to_string(replica_round_) : std::string());
    if (kind == StandbyOutcome::Kind::kBecomeActive) {
      if (replica_round_ == 0)
        log(LogLevel::kWarn, kLogName, "it holds no checkpoint of the run: it starts the run afresh");
      // Said at once, before the active's start-up (model, checkpoint, hub): an old active that
      // wakes from a freeze hears it first, with the start this one resumes as, and gives way.
      send_state(publisher_, msg::PairState{msg::PairRole::kActive, run_id_, replica_incarnation_ + 1,
                                            replica_round_, getpid(), 0});
    }
    return result;
  }

  void keep_replica(const std::vector<zmq::message_t>& frames) {
    auto header = decode_frame<msg::ReplicaHeader>(frames[1], pair_limits());
    if (!header || header.value().bytes != frames[2].size()) {
      log(LogLevel::kError, kLogName, "a replica from the peer was refused: ",
          header ? "its size does not match its header" : header.error());
      return;
    }
    try {
      // Checkpoints of another history (this one's own, from when it was active; an active that
      // restarted from an older checkpoint) could outrank the replica: a new history replaces them
      // all, and the rounds' record starts over from the active's first line.
      const msg::ReplicaHeader& held = header.value();
      if (!cleared_ || held.run_id != run_id_ || held.incarnation != replica_incarnation_) {
        store_.clear();
        std::error_code ignored;
        std::filesystem::resize_file(rounds_path(), 0, ignored);
        cleared_ = true;
      }
      replica_round_ = store_.write_contents(frames[2].to_string());
      run_id_ = held.run_id;
      replica_incarnation_ = held.incarnation;
      keep_rounds(held.rounds_offset, frames[3]);
      say_state();  // at once: the active sends the next replica once this one is acknowledged
    } catch (const std::exception& e) {
      log(LogLevel::kError, kLogName, "a replica of round ", header.value().round,
          " was refused: ", e.what());
      return;
    }
    const Clock::time_point now = Clock::now();
    if (!last_replica_log_ || seconds_between(*last_replica_log_, now) > kReplicaLogSeconds) {
      log(LogLevel::kInfo, kLogName, "holding the run ", run_id_, " as of round ", replica_round_, " (",
          frames[2].size(), " bytes from coordinator start ", header.value().incarnation, ")");
      last_replica_log_ = now;
    }
  }

  std::string rounds_path() const { return options_.run_dir + "/rounds.jsonl"; }

  /// Whether the peer holds a newer checkpoint of this run than this one, and the reverse: the
  /// two sides of one rule, so that exactly one of two coordinators started together resumes.
  bool peer_holds_newer(const msg::PairState& peer) const {
    return peer.round > replica_round_ && (run_id_.empty() || peer.run_id == run_id_);
  }
  bool holds_newer_than(const msg::PairState& peer) const {
    return replica_round_ > peer.round && (peer.run_id.empty() || peer.run_id == run_id_);
  }

  void say_state() {
    // Until the first replica, its rounds.jsonl may be of a history the active has left: 0.
    const std::uint64_t rounds_bytes = cleared_ ? file_size_or_zero(rounds_path()) : 0;
    send_state(publisher_, msg::PairState{msg::PairRole::kPassive, run_id_, 0, replica_round_, getpid(),
                                          rounds_bytes, false, primary_start_});
  }

  /// The active's rounds.jsonl from `offset`: written there (the file cut to `offset` first), so
  /// that a repeat of lines already held changes nothing.
  void keep_rounds(std::uint64_t offset, const zmq::message_t& lines) {
    const std::string path = rounds_path();
    const std::uint64_t held = file_size_or_zero(path);
    if (offset > held) return;  // a replica was missed: the next one starts where this file ends
    if (!std::filesystem::exists(path)) std::ofstream(path, std::ios::binary).flush();
    std::filesystem::resize_file(path, offset);
    std::ofstream file(path, std::ios::binary | std::ios::app);
    file.write(static_cast<const char*>(lines.data()), static_cast<std::streamsize>(lines.size()));
    if (!file.flush()) throw std::runtime_error("cannot write " + path);
  }

  /// A node asks for this coordinator when it reports having lost the one it had (a trainer's
  /// report with lost_coordinator), and so do that connection's later messages (its heartbeats
  /// while it waits). A node that merely starts, and tries this endpoint first, does not: else a
  /// partition between the two coordinators and a node starting up would make two actives.
  void note_request(const std::vector<zmq::message_t>& frames, Clock::time_point now) {
    if (frames.size() < 4) return;
    std::string requester = "a node";
    if (options_.authorized_keys) {
      const char* user_id = zmq_msg_gets(const_cast<zmq_msg_t*>(frames[1].handle()), "User-Id");
      const AuthorizedKey* key = user_id ? options_.authorized_keys->find(user_id) : nullptr;
      if (key == nullptr || key->role != PeerRole::kTrainer) return;
      if (!key->node.empty()) requester = "node " + key->node;
    }
    const std::string route = frames[0].to_string();
    bool lost_one = voters_.count(route) > 0;
    if (!lost_one) {
      auto envelope = decode_frame<Envelope>(frames[2], pair_limits());
      if (!envelope || envelope.value().kind != MessageKind::kHardwareReport) return;
      BodyLimits limits;
      limits.max_bytes = 1u << 20;
      auto report = decode_frame<msg::HardwareReport>(frames[3], limits);
      if (!report || report.value().lost_coordinator.empty()) return;
      lost_one = true;
      if (voters_.size() < kMaxVoters) voters_.insert(route);
      requester = requester == "a node" ? "node " + report.value().node.substr(0, 64) : requester;
    }
    if (!last_request_)
      log(LogLevel::kInfo, kLogName, requester, " lost its coordinator and asks for this one");
    last_request_ = now;
    requester_ = requester;
  }

  const PairOptions& options_;
  bool primary_start_;
  zmq::context_t context_;
  SocketFactory sockets_;
  std::optional<ZapHandler> zap_;  // before the sockets: it must answer before any CURVE socket binds
  zmq::socket_t listener_;
  zmq::socket_t publisher_;
  zmq::socket_t subscriber_;          // the peer's heartbeats
  zmq::socket_t replica_subscriber_;  // its replicas, on a connection of their own
  CheckpointStore store_;
  Clock::time_point started_;
  std::optional<Clock::time_point> peer_heard_;
  std::optional<Clock::time_point> peer_first_heard_;
  std::optional<msg::PairState> peer_;
  std::optional<Clock::time_point> last_request_;
  std::set<std::string> voters_;  // connections whose report said they lost their coordinator
  std::string requester_;
  std::optional<Clock::time_point> last_replica_log_;
  std::uint64_t replica_round_ = 0;
  std::string run_id_;
  std::uint64_t replica_incarnation_ = 0;  // the coordinator start its newest checkpoint is from
  bool cleared_ = false;
  bool said_lost_ = false;  // it said the active is silent, and has not heard it since
  bool said_peer_newer_ = false;
};
}  // namespace

StandbyOutcome run_standby(const PairOptions& options, const CurveSettings& curve, bool primary_start,
                           const StopFlag& stop) {
  Standby standby(options, curve, primary_start);
  return standby.run(stop);
}  // its sockets and context close here: the active coordinator binds the same ports next

PairLink::PairLink(const SocketFactory& sockets, PairOptions options, std::string run_id,
                   std::uint64_t incarnation)
    : options_(std::move(options)),
      run_id_(std::move(run_id)),
      incarnation_(incarnation),
      publisher_(pair_publisher(sockets, options_.own_endpoint)),
      subscriber_(pair_subscriber(sockets, options_.peer_endpoint)) {
  thread_ = ScopedThread([this] { run(); });
}

PairLink::~PairLink() {
  stop_.request_stop();
  thread_.join();
  std::lock_guard<std::mutex> lock(mutex_);
  if (replicas_ > 0) {
    log(LogLevel::kInfo, kLogName, replicas_, " replicas sent to the peer, ", replica_bytes_ / replicas_,
        " bytes and ", 1000.0 * replica_seconds_ / static_cast<double>(replicas_),
        " ms of this process each");
  }
}

void PairLink::checkpoint_written(std::uint64_t round, const std::string& path) {
  std::lock_guard<std::mutex> lock(mutex_);
  newest_checkpoint_ = std::make_pair(round, path);
}

std::string PairLink::yield_reason() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return yield_reason_;
}

PairLink::Status PairLink::status() const {
  std::lock_guard<std::mutex> lock(mutex_);
  Status status;
  if (peer_heard_) {
    status.peer_silent_seconds = seconds_between(*peer_heard_, Clock::now());
    status.peer_state =
        status.peer_silent_seconds > lost_after_seconds() ? "silent" : msg::pair_role_name(peer_->role);
    status.peer_round = peer_->round;
  }
  status.replicas = replicas_;
  if (replicas_ > 0) {
    status.replica_bytes = static_cast<double>(replica_bytes_) / static_cast<double>(replicas_);
    status.replica_milliseconds = 1000.0 * replica_seconds_ / static_cast<double>(replicas_);
  }
  status.handover = handover_;
  status.handover_failed = handover_failed_;
  status.handed_over = handing_over_;
  return status;
}

void PairLink::hand_over(std::uint64_t round) {
  std::lock_guard<std::mutex> lock(mutex_);
  handover_round_ = round;
  handover_asked_ = Clock::now();
  handover_failed_ = false;
  handover_ = "waiting for the peer to hold round " + std::to_string(round);
  log(LogLevel::kInfo, kLogName, "failback: handing the run to the peer at ", options_.peer_endpoint,
      " once it holds round ", round);
}

void PairLink::follow_handover() {
  std::unique_lock<std::mutex> lock(mutex_);
  if (handing_over_ && !yield_requested_ &&
      seconds_between(handed_over_at_, Clock::now()) > lost_after_seconds()) {
    yield_requested_ = true;
    return;
  }
  if (!handover_round_ || handing_over_) return;
  const std::uint64_t round = *handover_round_;
  const Clock::time_point now = Clock::now();
  const bool peer_listening = peer_heard_ && seconds_between(*peer_heard_, now) <= lost_after_seconds();
  // The peer holds `round` as this link sent it: a replica of this history, acknowledged (a peer
  // that merely says a round that high may hold its own older history's checkpoint of it).
  const bool sent_and_held = replicated_round_ >= round && !awaiting_ack_;
  if (peer_listening && peer_->role == msg::PairRole::kPassive && peer_->round >= round && sent_and_held) {
    handing_over_ = true;
    handover_ = "handed over at round " + std::to_string(round) + ": the peer at " + options_.peer_endpoint +
                " takes over";
    yield_reason_ = "failback: the run was handed to the peer at " + options_.peer_endpoint + " at round " +
                    std::to_string(round);
    lock.unlock();
    log(LogLevel::kInfo, kLogName, "failback: the peer holds round ", round, "; it takes over now");
    publish_state(publisher_, msg::PairRole::kActive);  // at once: the next heartbeat says it again
    // No give_way here: the scheduler tells its trainers to move first, then gives way. A scheduler
    // that does not within a liveness period (stopped, failed) is given way for.
    handed_over_at_ = Clock::now();
    return;
  }
  if (seconds_between(handover_asked_, now) > kHandoverSeconds) {
    handover_failed_ = true;
    handover_ = "abandoned: the peer did not hold round " + std::to_string(round) + " within " +
                std::to_string(static_cast<int>(kHandoverSeconds)) + " s (it " +
                (peer_listening ? "holds round " + std::to_string(peer_->round) : std::string("is silent")) +
                "); this coordinator stays active";
    handover_round_.reset();
    log(LogLevel::kWarn, kLogName, "failback ", handover_);
  }
}

bool PairLink::may_act() const {
  if (yield_requested_ || confirming_) return false;
  // The link's loop passes every 10 ms: when it has not for a while (and is not busy sending a
  // replica), this process was frozen or starved, and the link has not yet heard what the peer did
  // meanwhile.
  if (replicating_) return true;
  const auto tick = Clock::time_point(Clock::duration(last_tick_ns_.load()));
  return seconds_between(tick, Clock::now()) < kFrozenFraction * lost_after_seconds();
}

void PairLink::run() {
  name_this_thread("pair");
  try {
    loop();
  } catch (const std::exception& e) {
    // The run goes on without its standby's replicas; said loudly, never swallowed.
    log(LogLevel::kError, kLogName, "the link to the standby failed: ", e.what(),
        "; this coordinator goes on, but its standby holds no newer state from now on");
  }
}

void PairLink::loop() {
  Clock::time_point next_heartbeat = Clock::now();
  Clock::time_point last_pass = Clock::now();
  last_tick_ns_ = last_pass.time_since_epoch().count();
  while (!stop_.stop_requested()) {
    zmq::pollitem_t item{subscriber_.handle(), 0, ZMQ_POLLIN, 0};
    poll_for(&item, 1, kPollSlice);
    const Clock::time_point pass = Clock::now();
    // Half the peer's liveness: the standby and the nodes count the silence from this one's last
    // heartbeat, up to one interval before the freeze began.
    if (seconds_between(last_pass, pass) > kFrozenFraction * lost_after_seconds() && !confirming_) {
      log(LogLevel::kWarn, kLogName, "this coordinator was frozen for ", seconds_between(last_pass, pass),
          " s: it closes no round for a liveness period, listening whether its peer took over meanwhile");
      confirming_since_ = pass;
      confirming_ = true;
    }
    hear(subscriber_);
    // A whole liveness period of listening: what the peer said while this one was frozen comes
    // first, oldest first (a passive state from before it took over, then its active ones, among
    // them the one it said as it decided, before its own start-up).
    if (confirming_ && seconds_between(confirming_since_, pass) > lost_after_seconds()) {
      if (!yield_requested_) log(LogLevel::kInfo, kLogName, "still the active coordinator after the freeze");
      confirming_ = false;
    }
    last_tick_ns_ = Clock::now().time_since_epoch().count();
    if (!finished_) {
      replicating_ = true;
      replicate(publisher_);
      replicating_ = false;
      follow_handover();
    }
    const Clock::time_point now = Clock::now();
    if (now >= next_heartbeat) {
      publish_state(publisher_, finished_ ? msg::PairRole::kFinished : msg::PairRole::kActive);
      next_heartbeat = now + options_.heartbeat_interval;
    }
    // The time spent reading and sending a replica is no freeze.
    last_pass = Clock::now();
    last_tick_ns_ = last_pass.time_since_epoch().count();
  }
  if (finished_) publish_state(publisher_, msg::PairRole::kFinished);  // once more, as it closes
  if (handing_over_) publish_state(publisher_, msg::PairRole::kActive);
}

void PairLink::publish_state(zmq::socket_t& publisher, msg::PairRole role) {
  send_state(publisher,
             msg::PairState{role, run_id_, incarnation_, replicated_round_, getpid(), 0, handing_over_});
}

void PairLink::replicate(zmq::socket_t& publisher) {
  const Clock::time_point started = Clock::now();
  // One replica in flight at a time: the next goes once the peer says it holds this one. Replicas
  // sent faster than the link and CurveZMQ carry them filled the peer's queue, and the heartbeats
  // queued behind them made a live active look lost. Unanswered for a liveness period (dropped
  // before the peer's subscription was up, or lost with a peer that restarted), or asked for by a
  // new peer, the newest goes again.
  const bool answer_overdue =
      awaiting_ack_ && seconds_between(last_replica_sent_, started) >= lost_after_seconds();
  if (awaiting_ack_ && !answer_overdue && !resend_) return;
  std::optional<std::pair<std::uint64_t, std::string>> newest;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    newest.swap(newest_checkpoint_);
  }
  if (!newest || newest->first <= replicated_round_)
    newest = (answer_overdue || resend_) ? last_sent_ : std::nullopt;
  resend_ = false;
  if (!newest) return;
  std::optional<zmq::message_t> contents;
  try {
    contents = read_whole_file(newest->second);
  } catch (const std::exception& e) {
    // Pruned already by newer ones: the next checkpoint goes instead.
    log(LogLevel::kWarn, kLogName, "checkpoint of round ", newest->first, " not replicated: ", e.what());
    return;
  }
  const std::size_t bytes = contents->size();
  // The rounds' lines the peer lacks; from the start where its file is not a prefix of this one's.
  const std::string rounds_path = options_.run_dir + "/rounds.jsonl";
  const std::uint64_t offset = peer_rounds_bytes_ <= file_size_or_zero(rounds_path) ? peer_rounds_bytes_ : 0;
  const msg::ReplicaHeader header{run_id_, incarnation_, newest->first, bytes, offset};
  std::array<zmq::message_t, 4> frames{zmq::message_t(std::string(msg::kReplicaTopic)), encode_frame(header),
                                       std::move(*contents),
                                       zmq::message_t(rounds_from(rounds_path, offset))};
  zmq::send_multipart(publisher, frames, zmq::send_flags::dontwait);
  replicated_round_ = newest->first;
  last_sent_ = newest;
  awaiting_ack_ = true;
  last_replica_sent_ = Clock::now();
  std::lock_guard<std::mutex> lock(mutex_);
  ++replicas_;
  replica_bytes_ += bytes;
  replica_seconds_ += seconds_between(started, Clock::now());
}

void PairLink::hear(zmq::socket_t& subscriber) {
  while (auto frames = receive_frames(subscriber)) {
    const auto state = as_state(*frames);
    if (state) {
      std::lock_guard<std::mutex> lock(mutex_);
      peer_heard_ = Clock::now();
      peer_ = *state;
    }
    if (state && state->role == msg::PairRole::kPassive) {
      peer_rounds_bytes_ = state->rounds_bytes;
      // A new standby (another process) is sent the newest replica at once, whatever it holds.
      if (state->pid != peer_pid_)
        log(LogLevel::kInfo, kLogName, "a passive peer (pid ", state->pid, ", holding round ", state->round,
            ") listens at ", options_.peer_endpoint);
      if (state->pid != peer_pid_ && state->round < replicated_round_) resend_ = true;
      if (state->pid != peer_pid_ || state->round >= replicated_round_) awaiting_ack_ = false;
      peer_pid_ = state->pid;
    }
    if (!state || state->role != msg::PairRole::kActive || yield_requested_) continue;
    // Two actives: the peer took over while this one was stopped or cut off from the nodes. The
    // newer start wins; on an exact tie, the one started as the standby gives way.
    const bool peer_newer =
        state->incarnation > incarnation_ || (state->incarnation == incarnation_ && options_.standby);
    if (!peer_newer) continue;
    // The peer took the run this one handed over (`filo failback`): this one plans nothing more,
    // and its scheduler tells the trainers to move before it gives way (follow_handover gives way
    // for it a liveness period on). Yielding now would leave them to notice by a liveness period
    // of silence: failbacks took 1.4-1.6 s instead of 0.9 (faults-stop-active, 2026-12-05).
    if (handing_over_) continue;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      yield_reason_ = "the peer at " + options_.peer_endpoint + " is active too, with coordinator start " +
                      std::to_string(state->incarnation) + " (this one: " + std::to_string(incarnation_) +
                      ") at round " + std::to_string(state->round);
    }
    yield_requested_ = true;
  }
}

}  // namespace filo
