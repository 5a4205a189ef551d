#pragma once
// The message bus. Actors are addressed by name, never by socket: each actor's DEALER (routing id
// = its name) connects to the process-spanning Hub's ROUTER, over inproc inside the coordinator
// process or over tcp from other machines. The hub forwards [to][envelope][body][tensors...] to
// the named actor as [from][envelope][body][tensors...], and relays publications to its PUB.
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <variant>
#include <vector>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "messages/addresses.hpp"
#include "messages/codec.hpp"
#include "messages/tensor_frames.hpp"
#include "runtime/log.hpp"
#include "runtime/socket_factory.hpp"
#include "runtime/stop_signal.hpp"

namespace filo {

/// A message as an actor receives it.
struct Incoming {
  std::string from;  // the sender's name as the hub saw it, or the topic of a publication
  Envelope envelope;
  zmq::message_t body;
  FrameList tensor_frames;  // frames after the body
};

struct HubOptions {
  std::string name = "filo-hub";  // inproc endpoints are derived from it
  std::string router_endpoint;    // tcp endpoint to bind for remote actors; empty: inproc only
  std::string publish_endpoint;   // tcp endpoint to bind for subscribers; empty: inproc only
};

/// Forwards addressed messages between actors and relays publications; runs on its own thread.
class Hub {
 public:
  Hub(const SocketFactory& sockets, HubOptions options);
  ~Hub();
  Hub(const Hub&) = delete;
  Hub& operator=(const Hub&) = delete;

  std::string inproc_router_endpoint() const { return "inproc://" + options_.name; }
  std::string inproc_publish_endpoint() const { return "inproc://" + options_.name + "-pub"; }
  /// The bound tcp endpoints (ports resolved), or empty.
  const std::string& router_endpoint() const { return router_endpoint_; }
  const std::string& publish_endpoint() const { return publish_endpoint_; }

 private:
  void run();
  void forward_one(std::vector<zmq::message_t>& frames);

  HubOptions options_;
  zmq::socket_t router_;
  zmq::socket_t publisher_;
  std::string router_endpoint_;
  std::string publish_endpoint_;
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
  /// Subscribes to `topics` at `publish_endpoint`; called again, moves to the new endpoint.
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
};

namespace detail {
template <typename Message, typename Actor>
bool handle_if_kind(Actor& actor, Incoming& incoming, const BodyLimits& limits, std::string_view who) {
  if (incoming.envelope.kind != Message::kKind) return false;
  auto decoded = decode_frame<Message>(incoming.body, limits);
  if (!decoded) {
    log(LogLevel::kWarn, who, "dropped ", kind_name(Message::kKind), " from ", incoming.from, ": ",
        decoded.error());
    return true;
  }
  actor.handle(decoded.value(), incoming);
  return true;
}

template <typename Actor, typename... Messages>
void dispatch_to(Actor& actor, Incoming& incoming, const BodyLimits& limits, std::string_view who,
                 std::variant<Messages...>*) {
  const bool known = (handle_if_kind<Messages>(actor, incoming, limits, who) || ...);
  if (!known) {
    log(LogLevel::kWarn, who, "dropped ", kind_name(incoming.envelope.kind), " from ", incoming.from,
        ": not a message this actor takes");
  }
}
}  // namespace detail

/// Decodes `incoming` as one of `Actor::Inbox`'s message types and calls actor.handle(message,
/// incoming). A message type in the inbox without a handler does not compile. A handler that
/// throws on bad content is logged and the message dropped: bad input never ends an actor.
template <typename Actor>
void dispatch(Actor& actor, Incoming& incoming, const BodyLimits& limits, std::string_view who) {
  try {
    detail::dispatch_to(actor, incoming, limits, who, static_cast<typename Actor::Inbox*>(nullptr));
  } catch (const std::exception& e) {
    log(LogLevel::kError, who, "dropped ", kind_name(incoming.envelope.kind), " from ", incoming.from,
        ": handler failed: ", e.what());
  }
}

/// Replaces a wildcard host (0.0.0.0, *, ::) in `endpoint` by the host of `reachable`, so that a
/// remote peer can connect to what the coordinator bound.
std::string reachable_endpoint(const std::string& endpoint, const std::string& reachable);

}  // namespace filo
