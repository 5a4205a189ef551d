#pragma once
// The message bus. Actors are addressed by name, never by socket: each actor's DEALER connects to
// the Hub of the coordinator process, which forwards [to][envelope][body][tensors...] to the named
// actor as [from][envelope][body][tensors...] and relays publications to its PUB.
//
// The hub has two ROUTERs. The inner one, inproc only, serves the coordinator's own actors (routing
// id = name; trusted). The outer one, tcp, serves nodes, monitors and the test aid: it is a CurveZMQ
// server whose ZAP handler admits only authorized keys, and there a name is what a peer's envelope
// claims, bound on first use to the key that claimed it. A message from outside is forwarded only
// if its key may use that name (not an inner actor's, not another key's) and its role may send that
// kind to that destination (messages/roles.hpp); anything else is refused, counted and logged.
#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <variant>
#include <vector>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "messages/addresses.hpp"
#include "messages/codec.hpp"
#include "messages/tensor_frames.hpp"
#include "runtime/inbound_guard.hpp"
#include "runtime/keys.hpp"
#include "runtime/log.hpp"
#include "runtime/refusals.hpp"
#include "runtime/socket_factory.hpp"
#include "runtime/stop_signal.hpp"
#include "runtime/zap.hpp"

namespace filo {

/// A message as an actor receives it.
struct Incoming {
  std::string from;  // the sender's name as the hub saw it, or the topic of a publication
  Envelope envelope;
  zmq::message_t body;
  FrameList tensor_frames;  // frames after the body
};

constexpr int kModelQueuePerTrainer = 2;
/// Updates (a few percent of the model each) that wait behind a snapshot of a trainer's: at 10 Mbit/s
/// a 7.4 MB snapshot takes 6 s, a dozen rounds of a fast fleet. At most this many snapshots queue too,
/// the cost of a trainer that asks on and on (the hub's token bucket refuses most of those).
constexpr int kUpdateQueuePerTrainer = 16;

struct HubOptions {
  HubOptions() = default;
  HubOptions(std::string name_, std::string router_endpoint_, std::string publish_endpoint_)
      : name(std::move(name_)),
        router_endpoint(std::move(router_endpoint_)),
        publish_endpoint(std::move(publish_endpoint_)) {}

  std::string name = "filo-hub";  // inproc endpoints are derived from it
  std::string router_endpoint;    // tcp endpoint to bind for remote actors; empty: inproc only
  std::string publish_endpoint;   // tcp endpoint to bind for event subscribers; empty: inproc only
  std::string model_endpoint;     // tcp endpoint to bind for trainers' models; empty: inproc only
  /// Keys that may connect and their roles. Null: CURVE is off (security.curve = false) and every
  /// outside peer may act as a trainer or the test aid.
  std::shared_ptr<const AuthorizedKeys> authorized_keys;
  /// Largest message (all frames together) taken from outside: from the run's model size.
  std::int64_t max_inbound_bytes = std::int64_t{1} << 30;
  /// Names that outside peers may hold at once; a new name past this is refused.
  std::size_t max_peers = 1024;
  std::size_t max_names_per_key = 32;  /// for a key bound to one node (AuthorizedKey::node)
  /// Messages queued per trainer on the model publisher. Where each step broadcasts the whole model,
  /// only the newest matters to a trainer: on a link slower than the rounds, a deep queue would make
  /// every new model wait behind stale ones (at 10 Mbit/s, 32 models of 7 MB are three minutes).
  /// With two, a newer model is dropped while two older ones wait, and the trainer, whose plan names
  /// the version it needs, asks for a snapshot. Two, not one, so that the control message that ends
  /// a run still finds room after the last model. A compressed downlink needs every update, each
  /// small, in order, also while a snapshot crosses a slow link: kUpdateQueuePerTrainer.
  int model_queue_per_trainer = kModelQueuePerTrainer;
  /// Snapshot requests per second that one name may send.
  double snapshot_requests_per_second = 4.0;
  DropCounters* drops = nullptr;  // refusals counted here by reason; may be null
};

/// Seeds the C library's rand(), where libzmq draws the first routing id a ROUTER generates, from
/// the kernel's random source. Called by a hub that listens for outside peers, before its sockets.
void seed_routing_ids();

/// Forwards addressed messages between actors and relays publications; runs on its own thread.
class Hub {
 public:
  Hub(const SocketFactory& sockets, HubOptions options);
  ~Hub();
  Hub(const Hub&) = delete;
  Hub& operator=(const Hub&) = delete;

  std::string inproc_router_endpoint() const { return "inproc://" + options_.name; }
  std::string inproc_publish_endpoint() const { return "inproc://" + options_.name + "-pub"; }
  std::string inproc_model_endpoint() const { return "inproc://" + options_.name + "-model"; }
  /// The bound tcp endpoints (ports resolved), or empty.
  const std::string& router_endpoint() const { return router_endpoint_; }
  const std::string& publish_endpoint() const { return publish_endpoint_; }
  const std::string& model_endpoint() const { return model_endpoint_; }

  /// Outside messages refused so far (all reasons).
  std::uint64_t refused() const { return refused_total_; }
  /// What libzmq may hold for one outside connection before the hub reads it (see InboundGuard);
  /// zero without an outside endpoint.
  std::int64_t inbound_budget_bytes() const { return inbound_guard_ ? inbound_guard_->budget_bytes() : 0; }

 private:
  /// What the hub knows of a name an outside peer holds.
  struct Binding {
    std::string key;               // the public key that holds it ("" with CURVE off)
    std::string routing_id;        // its connection on the outer ROUTER
    double snapshot_tokens = 0.0;  // snapshot requests it may still send now
    Clock::time_point tokens_refilled{};
  };

  void run();
  void forward_from_inside(std::vector<zmq::message_t>& frames);
  void forward_from_outside(std::vector<zmq::message_t>& frames);
  void publish(std::vector<zmq::message_t>& frames, const std::string& to);
  void route(zmq::socket_t& router, std::vector<zmq::message_t>& frames, const std::string& to);
  void refuse(const std::string& peer, const std::string& reason, const std::string& detail = {});
  void read_connection_events();
  void enforce_inbound_budget();

  HubOptions options_;
  std::optional<ZapHandler> zap_;                     // first: it must answer before any CURVE socket binds
  zmq::socket_t router_;                              // inner: the coordinator's actors, over inproc
  zmq::socket_t outer_router_;                        // outer: nodes and the test aid, over tcp
  zmq::socket_t publisher_;                           // events and control, for monitors
  zmq::socket_t model_publisher_;                     // models, snapshots and control, for trainers
  zmq::socket_t connection_events_;                   // the outer ROUTER's accepts and disconnects
  std::optional<InboundGuard> inbound_guard_;         // what libzmq holds per outside connection
  std::map<std::string, Binding> bindings_;           // by name
  std::map<std::string, std::string> name_of_route_;  // outer routing id → name
  std::set<std::string> greeted_routes_;              // routes whose first message was seen
  std::uint64_t provisional_names_ = 0;               // names given to unadmitted connections
  Refusals refusals_;
  std::atomic<std::uint64_t> refused_total_{0};
  std::string router_endpoint_;
  std::string publish_endpoint_;
  std::string model_endpoint_;
  StopFlag stop_;
  std::thread thread_;
};

/// An actor's connection to the bus: one DEALER for addressed traffic and, optionally, one SUB.
class BusClient {
 public:
  BusClient(const SocketFactory& sockets, std::string name, BodyLimits limits = {});

  const std::string& name() const { return name_; }
  const BodyLimits& limits() const { return limits_; }
  zmq::socket_t& addressed() { return dealer_; }
  zmq::socket_t& published() { return subscriber_; }

  void connect(const std::string& hub_endpoint);
  /// Leaves a hub connected to before (a coordinator pair's other one takes over); its queued
  /// messages are dropped.
  void disconnect(const std::string& hub_endpoint);
  /// Subscribes to `topics` at `publish_endpoint` (or at each of a comma-separated list: a
  /// coordinator pair's, of which the active one publishes); called again, moves to the new one.
  void subscribe(const std::string& publish_endpoint, const std::vector<std::string>& topics);

  /// Sends `body` (plus tensor frames whose metas it already carries) to the actor `to`.
  /// Returns false, with a log line, when the queue stayed full past the send timeout.
  template <typename Message>
  bool send(const std::string& to, const Message& body, Stamp stamp = {},
            std::vector<zmq::message_t> tensor_frames = {}) {
    return send_frames(to, Message::kKind, encode_frame(body), stamp, std::move(tensor_frames));
  }
  template <typename Message>
  bool publish(const std::string& topic, const Message& body, Stamp stamp = {},
               std::vector<zmq::message_t> tensor_frames = {}) {
    return send(kPublishPrefix + topic, body, stamp, std::move(tensor_frames));
  }

  /// The next valid message on `socket`, or nothing when none is waiting. Malformed messages are
  /// logged with their reason and skipped.
  std::optional<Incoming> receive(zmq::socket_t& socket);

  /// Called with (peer, reason) for each addressed message whose envelope was rejected, so that
  /// the registrar can tell a peer of another protocol version why it is not admitted.
  void on_rejected_envelope(std::function<void(const std::string&, const std::string&)> callback) {
    on_rejected_envelope_ = std::move(callback);
  }

  /// Counts refusals in `drops` from now on (the process's counters; may be null).
  void count_refusals_in(DropCounters* drops) { refusals_.count_in(drops); }
  /// A message from `peer` refused for `reason` (the counter's key): counted, and logged with
  /// `detail` at most once per interval per peer and reason. Returns whether it was logged.
  bool refuse(const std::string& peer, const std::string& reason, const std::string& detail = {}) {
    return refusals_.refuse(peer, reason, detail);
  }

 private:
  bool send_frames(const std::string& to, MessageKind kind, zmq::message_t body, Stamp stamp,
                   std::vector<zmq::message_t> tensor_frames);

  std::string name_;
  BodyLimits limits_;
  const SocketFactory& sockets_;
  zmq::socket_t dealer_;
  zmq::socket_t subscriber_;
  std::string subscribed_endpoint_;
  std::uint64_t sequence_ = 0;
  std::function<void(const std::string&, const std::string&)> on_rejected_envelope_;
  Refusals refusals_{name_, nullptr};
};

/// Thrown by a handler that finds a message's content unusable (bad input from its sender, as
/// opposed to a failure of the actor's own): the message is refused and counted, the actor goes on.
struct BadInput : std::runtime_error {
  using std::runtime_error::runtime_error;
};

namespace detail {
template <typename Message, typename Actor>
bool handle_if_kind(Actor& actor, Incoming& incoming, BusClient& bus) {
  if (incoming.envelope.kind != Message::kKind) return false;
  auto decoded = decode_frame<Message>(incoming.body, bus.limits());
  if (!decoded) {
    bus.refuse(incoming.from, std::string(kind_name(Message::kKind)) + ": malformed body", decoded.error());
    return true;
  }
  actor.handle(decoded.value(), incoming);
  return true;
}

template <typename Actor, typename... Messages>
void dispatch_to(Actor& actor, Incoming& incoming, BusClient& bus, std::variant<Messages...>*) {
  const bool known = (handle_if_kind<Messages>(actor, incoming, bus) || ...);
  if (!known)
    bus.refuse(incoming.from, std::string(kind_name(incoming.envelope.kind)) + ": not for this actor");
}
}  // namespace detail

/// Decodes `incoming` as one of `Actor::Inbox`'s message types and calls actor.handle(message,
/// incoming). A message type in the inbox without a handler does not compile. A body that does not
/// decode, or a handler that throws BadInput, is refused, counted and logged: bad input never ends
/// an actor. Anything else a handler throws is the actor's own failure and goes on up: its thread
/// ends with the reason (ActorThread) rather than limp on having dropped work.
template <typename Actor>
void dispatch(Actor& actor, Incoming& incoming, BusClient& bus) {
  try {
    detail::dispatch_to(actor, incoming, bus, static_cast<typename Actor::Inbox*>(nullptr));
  } catch (const BadInput& e) {
    bus.refuse(incoming.from, std::string(kind_name(incoming.envelope.kind)) + ": bad input", e.what());
  }
}

/// Replaces a wildcard host (0.0.0.0, *, ::) in `endpoint` by the host of `reachable`, so that a
/// remote peer can connect to what the coordinator bound.
std::string reachable_endpoint(const std::string& endpoint, const std::string& reachable);

}  // namespace filo
