#include "runtime/bus.hpp"

#include <sys/random.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>

#include "messages/roles.hpp"
#include "runtime/actor_loop.hpp"
#include "runtime/config.hpp"
#include "runtime/thread_name.hpp"

namespace filo {
namespace {
constexpr std::size_t kMaxForwardsPerWakeup = 256;  // lets the loop look at its stop flag
constexpr std::string_view kHubLogName = "hub";
/// Publications queued per subscriber before the hub drops them for that subscriber. A queued
/// broadcast is a whole model, so a trainer on a slow link would otherwise hold up to
/// high_water_mark models in the coordinator's memory; one that misses broadcasts asks for a
/// snapshot instead (Clone pattern), and events are small and read at once by monitors.
constexpr int kPublishQueuePerSubscriber = 32;
/// Longest name an outside peer may claim ("trainer@" + a host name + "/cuda:15" fits easily).
constexpr std::size_t kMaxPeerNameBytes = 256;
/// Bytes of whole messages one connection may queue for the hub, as a count of the run's largest,
/// and the fewest messages it may still queue (a trainer has a contribution, a heartbeat and a
/// request in flight).
constexpr std::int64_t kInboundBytesPerPeer = std::int64_t{32} << 20;
constexpr std::int64_t kMinInboundQueue = 16;
/// What libzmq may hold for one connection before the hub reads it, unless two of the run's largest
/// messages (one arriving, one waiting) need more; small messages queued behind a busy hub fit.
constexpr std::int64_t kMinConnectionBudget = std::int64_t{8} << 20;
/// Connection events queued for the hub: libzmq 4.3 blocks its I/O thread on a full monitor queue.
constexpr int kConnectionEventQueue = 100000;
/// How often the hub compares what libzmq holds per connection with the budget: at the 1.1 GB/s
/// that CurveZMQ decrypts on this VM, a connection gains at most 11 MB between two looks.
constexpr Milliseconds kInboundCheckInterval{10};
/// How often it looks for connections to its port that no event announced (a safety net).
constexpr Milliseconds kConnectionScanInterval{500};
/// Snapshot requests one name may send at once before the per-second rate applies.
constexpr double kSnapshotBurst = 8.0;
}  // namespace

void seed_routing_ids() {
  // libzmq (every release to 4.3.5 and master, 2026) starts a ROUTER's generated routing ids at
  // rand(), which it never seeds, so the first id is the same in every run. It also never checks a
  // generated id against the ids that peers chose for themselves: a peer that claims the id the
  // ROUTER will generate next makes the next connection abort the process (socket_base.cpp's
  // `zmq_assert (ok)` in add_out_pipe). Only a patched libzmq closes that; a random start makes the
  // next id a 32-bit guess, and the hub never discloses an id (see README, Security).
  unsigned int seed = 0;
  if (getrandom(&seed, sizeof seed, 0) != static_cast<ssize_t>(sizeof seed)) {
    seed = static_cast<unsigned int>(std::chrono::steady_clock::now().time_since_epoch().count());
  }
  std::srand(seed);
}

Hub::Hub(const SocketFactory& sockets, HubOptions options)
    : options_(std::move(options)),
      router_(sockets.make(zmq::socket_type::router)),
      publisher_(sockets.make(zmq::socket_type::pub)),
      model_publisher_(sockets.make(zmq::socket_type::pub)),
      refusals_(std::string(kHubLogName), options_.drops) {
  const bool curve = options_.authorized_keys != nullptr;
  if (!options_.router_endpoint.empty()) seed_routing_ids();
  if (curve && !options_.router_endpoint.empty()) {
    zap_.emplace(sockets.context(), options_.authorized_keys, options_.drops, sockets.curve().own.public_key);
  }
  // Inner actors never restart within a coordinator's life; a name there is its actor's.
  router_.set(zmq::sockopt::router_handover, 0);
  router_.bind(inproc_router_endpoint());
  publisher_.set(zmq::sockopt::sndhwm,
                 std::min(kPublishQueuePerSubscriber, sockets.limits().high_water_mark));
  publisher_.bind(inproc_publish_endpoint());
  model_publisher_.set(zmq::sockopt::sndhwm, options_.model_queue_per_trainer);
  model_publisher_.bind(inproc_model_endpoint());
  if (!options_.router_endpoint.empty()) {
    outer_router_ = sockets.make(zmq::socket_type::router);
    // The hub binds names to keys, never to routing ids. Handover stays off: with it a peer that
    // names a live connection's id takes over that connection's traffic.
    outer_router_.set(zmq::sockopt::router_handover, 0);
    outer_router_.set(zmq::sockopt::maxmsgsize, options_.max_inbound_bytes);
    // ZeroMQ queues per peer in messages, not bytes: as many as fit a byte budget at the largest
    // size, so that one peer can never park more than that in the coordinator's memory.
    const std::int64_t queued = std::clamp<std::int64_t>(kInboundBytesPerPeer / options_.max_inbound_bytes,
                                                         kMinInboundQueue, sockets.limits().high_water_mark);
    outer_router_.set(zmq::sockopt::rcvhwm, static_cast<int>(queued));
    if (curve) sockets.make_curve_server(outer_router_);
    // ZMQ_MAXMSGSIZE bounds each frame, and the queue's length whole messages; a message's frames
    // pile up in libzmq until its last one. The guard bounds those too, per connection, from the
    // kernel's count of each connection's bytes (runtime/inbound_guard.hpp).
    inbound_guard_.emplace(std::max(kMinConnectionBudget, 2 * options_.max_inbound_bytes), curve);
    if (!inbound_guard_->available()) {
      log(LogLevel::kWarn, kHubLogName,
          "this kernel does not count a TCP connection's received bytes (TCP_INFO, Linux 4.1+): one "
          "outside message's memory is bounded per frame only");
    }
    const std::string events_endpoint = "inproc://" + options_.name + "-connections";
    if (zmq_socket_monitor(outer_router_.handle(), events_endpoint.c_str(),
                           ZMQ_EVENT_ACCEPTED | ZMQ_EVENT_DISCONNECTED) != 0) {
      throw zmq::error_t();
    }
    connection_events_ = sockets.make(zmq::socket_type::pair);
    connection_events_.set(zmq::sockopt::rcvhwm, kConnectionEventQueue);
    connection_events_.connect(events_endpoint);
    outer_router_.bind(options_.router_endpoint);
    router_endpoint_ = outer_router_.get(zmq::sockopt::last_endpoint);
    const auto colon = router_endpoint_.rfind(':');
    if (router_endpoint_.rfind("tcp://", 0) == 0 && colon != std::string::npos) {
      inbound_guard_->listening_on(std::stoi(router_endpoint_.substr(colon + 1)));
    }
  }
  if (!options_.publish_endpoint.empty()) {
    // Subscribers send nothing the hub reads; CURVE keeps anyone without a key from reading.
    if (curve) sockets.make_curve_server(publisher_);
    publisher_.bind(options_.publish_endpoint);
    publish_endpoint_ = publisher_.get(zmq::sockopt::last_endpoint);
  }
  if (!options_.model_endpoint.empty()) {
    if (curve) sockets.make_curve_server(model_publisher_);
    model_publisher_.bind(options_.model_endpoint);
    model_endpoint_ = model_publisher_.get(zmq::sockopt::last_endpoint);
  }
  // The sockets move to the hub thread here; thread start is the memory barrier zmq requires.
  thread_ = std::thread([this] { run(); });
}

Hub::~Hub() {
  stop_.request_stop();
  if (thread_.joinable()) thread_.join();
  // Before the event socket closes: libzmq would block sending it events no one reads.
  if (inbound_guard_) zmq_socket_monitor(outer_router_.handle(), nullptr, 0);
}

void Hub::refuse(const std::string& peer, const std::string& reason, const std::string& detail) {
  ++refused_total_;
  refusals_.refuse(peer, reason, detail);
}

void Hub::publish(std::vector<zmq::message_t>& frames, const std::string& to) {
  const std::size_t prefix = std::char_traits<char>::length(kPublishPrefix);
  const std::string topic = to.substr(prefix);
  frames[1].rebuild(topic.data(), topic.size());
  frames.erase(frames.begin());  // [topic][envelope][body][tensors...]
  // PUB never blocks: it drops for slow subscribers. Trainers read the model publisher, monitors
  // the other; both hear that a run ends.
  const bool for_trainers = topic == kModelTopic || topic.rfind(kSnapshotTopicPrefix, 0) == 0;
  if (topic == kControlTopic) {
    std::vector<zmq::message_t> copy;
    for (const auto& frame : frames) copy.emplace_back(frame.data(), frame.size());
    zmq::send_multipart(model_publisher_, copy);
  }
  zmq::send_multipart(for_trainers ? model_publisher_ : publisher_, frames);
}

void Hub::route(zmq::socket_t& router, std::vector<zmq::message_t>& frames, const std::string& to) {
  // frames: [destination routing id][from][envelope]...: ROUTER routes on the first frame.
  try {
    if (!zmq::send_multipart(router, frames, zmq::send_flags::dontwait)) {
      log(LogLevel::kWarn, kHubLogName, "dropped a message for ", to, ": its queue is full");
    }
  } catch (const zmq::error_t& e) {
    if (e.num() != EHOSTUNREACH) throw;
    log(LogLevel::kDebug, kHubLogName, "dropped a message for ", to, " from ", frames[1].to_string(),
        ": no such peer connected");
  }
}

void Hub::forward_from_inside(std::vector<zmq::message_t>& frames) {
  // [from][to][envelope][body][tensors...]
  if (frames.size() < 4) {
    log(LogLevel::kWarn, kHubLogName, "dropped a message of ", frames.size(), " frames from ",
        frames.empty() ? std::string("?") : frames[0].to_string(),
        ": a message needs a destination, an envelope and a body");
    return;
  }
  const std::string to = frames[1].to_string();
  if (to.rfind(kPublishPrefix, 0) == 0) return publish(frames, to);
  const auto outside = bindings_.find(to);
  if (outside != bindings_.end() && outer_router_) {
    frames[1].rebuild(outside->second.routing_id.data(), outside->second.routing_id.size());
    std::swap(frames[0], frames[1]);
    return route(outer_router_, frames, to);
  }
  std::swap(frames[0], frames[1]);
  route(router_, frames, to);
}

void Hub::forward_from_outside(std::vector<zmq::message_t>& frames) {
  // [routing id][to][envelope][body][tensors...]; the routing id is the connection's, chosen by
  // the outer ROUTER; who the sender is comes from its key (User-Id) and the name it claims.
  const std::string route_id = frames[0].to_string();
  const auto known_name = name_of_route_.find(route_id);
  const std::string peer_label = known_name != name_of_route_.end() ? known_name->second : "a new connection";
  const bool curve = options_.authorized_keys != nullptr;
  // The routing-id frame is the ROUTER's own; the peer's frames carry the connection's metadata:
  // its key (User-Id) and its descriptor (ZMQ_SRCFD, answered from libzmq's "__fd" property in 4.3
  // and master; the Peer-Address that its documentation offers instead carries no port).
  const zmq::message_t& peer_frame = frames.size() > 1 ? frames[1] : frames[0];
  const char* user_id = curve ? zmq_msg_gets(peer_frame.handle(), "User-Id") : nullptr;
  const int fd = zmq_msg_get(peer_frame.handle(), ZMQ_SRCFD);
  if (inbound_guard_) inbound_guard_->delivered(fd, frames, user_id ? user_id : "");
  std::string key;
  std::optional<PeerRole> role;
  if (curve) {
    const AuthorizedKey* authorized = user_id ? options_.authorized_keys->find(user_id) : nullptr;
    if (authorized == nullptr) return refuse(peer_label, "bus: no authorized key");
    key = authorized->public_key;
    role = authorized->role;
  }
  if (frames.size() < 4) {
    return refuse(
        peer_label, "bus: malformed message",
        std::to_string(frames.size()) + " frames; a destination, an envelope and a body are needed");
  }
  std::size_t total_bytes = 0;
  for (const auto& frame : frames) total_bytes += frame.size();
  if (static_cast<std::int64_t>(total_bytes) > options_.max_inbound_bytes) {
    return refuse(peer_label, "bus: message too large",
                  std::to_string(total_bytes) + " bytes; this run's largest is " +
                      std::to_string(options_.max_inbound_bytes));
  }
  const std::string to = frames[1].to_string();
  const bool first_from_route = greeted_routes_.insert(route_id).second;
  if (greeted_routes_.size() > 4 * options_.max_peers) greeted_routes_.clear();
  auto envelope = decode_envelope(frames[2], BodyLimits{});
  if (!envelope) {
    // A node of another protocol version learns why from the registrar, once per connection.
    // It gets a name of the hub's making, bound to this connection alone, for the answer.
    if (first_from_route && to == kRegistrarName && known_name == name_of_route_.end() &&
        bindings_.size() < options_.max_peers) {
      // Numbered by the hub, never spelled from the routing id: the name reaches the peer and
      // every monitor (in the registrar's `rejected` news), and a routing id must stay unknown.
      const std::string provisional = "unadmitted-" + std::to_string(++provisional_names_);
      bindings_[provisional] = Binding{key, route_id, kSnapshotBurst, Clock::now()};
      refuse(peer_label, "bus: bad envelope", envelope.error() + "; the registrar tells it why");
      frames[0].rebuild(provisional.data(), provisional.size());
      std::swap(frames[0], frames[1]);
      return route(router_, frames, to);
    }
    return refuse(peer_label, "bus: bad envelope", envelope.error());
  }
  const std::string& claimed = envelope.value().sender;
  const MessageKind kind = envelope.value().kind;
  if (claimed.empty() || claimed.size() > kMaxPeerNameBytes) {
    return refuse(peer_label, "bus: bad sender name",
                  "empty or longer than " + std::to_string(kMaxPeerNameBytes));
  }
  if (is_internal_name(claimed)) {
    return refuse(peer_label, "bus: claims a coordinator actor's name", "claimed " + claimed);
  }
  if (known_name != name_of_route_.end() && known_name->second != claimed) {
    return refuse(peer_label, "bus: claims another name than its connection's", "claimed " + claimed);
  }
  auto binding = bindings_.find(claimed);
  if (binding != bindings_.end() && binding->second.key != key) {
    return refuse(claimed, "bus: name held by another key", "key " + key);
  }
  if (binding == bindings_.end()) {
    if (curve) {
      const AuthorizedKey* authorized = options_.authorized_keys->find(key);
      if (!authorized->node.empty() && node_of_trainer(claimed) != authorized->node) {
        return refuse(claimed, "bus: name not allowed to this key",
                      "this key may only run as node " + authorized->node);
      }
      if (!authorized->node.empty()) {
        // A member's key holds its own node's names and no more: claiming name after name, one
        // connection after another, would otherwise fill max_peers and lock out honest late joiners.
        const auto held = static_cast<std::size_t>(std::count_if(
            bindings_.begin(), bindings_.end(), [&](const auto& bound) { return bound.second.key == key; }));
        if (held >= options_.max_names_per_key) {
          return refuse(claimed, "bus: too many names for its key",
                        std::to_string(held) + " names held by key " + key);
        }
      }
    }
    if (bindings_.size() >= options_.max_peers) {
      return refuse(claimed, "bus: too many peers", std::to_string(options_.max_peers) + " names held");
    }
    binding = bindings_.emplace(claimed, Binding{key, route_id, kSnapshotBurst, Clock::now()}).first;
    log(LogLevel::kDebug, kHubLogName, claimed, " is held by ", curve ? "key " + key : "its connection");
  } else if (binding->second.routing_id != route_id) {
    // The same key on a new connection: a restarted or reconnected node takes its name back.
    name_of_route_.erase(binding->second.routing_id);
    binding->second.routing_id = route_id;
    log(LogLevel::kInfo, kHubLogName, claimed, " reconnected with the same key; it keeps its name");
  }
  name_of_route_[route_id] = claimed;
  if (inbound_guard_) inbound_guard_->named(fd, claimed);
  const Destination destination = destination_of(to);
  const bool permitted = role ? may_send(*role, kind, destination)
                              : may_send(PeerRole::kTrainer, kind, destination) ||
                                    may_send(PeerRole::kTestAid, kind, destination) ||
                                    may_send(PeerRole::kOperator, kind, destination);
  if (!permitted) {
    return refuse(claimed, "bus: not permitted to its role",
                  (role ? role_name(*role) : std::string("peer")) + " may not send " +
                      std::string(kind_name(kind)) + " to " + to);
  }
  if (kind == MessageKind::kSnapshotRequest) {
    // A token bucket: an honest trainer asks a few times in a burst (a missed broadcast, a
    // restart); a peer that asks on and on gets refused instead of a model each time.
    Binding& peer = binding->second;
    const auto now = Clock::now();
    peer.snapshot_tokens =
        std::min(kSnapshotBurst, peer.snapshot_tokens + seconds_between(peer.tokens_refilled, now) *
                                                            options_.snapshot_requests_per_second);
    peer.tokens_refilled = now;
    if (peer.snapshot_tokens < 1.0) return refuse(claimed, "bus: snapshot requests too frequent");
    peer.snapshot_tokens -= 1.0;
  }
  frames[0].rebuild(claimed.data(), claimed.size());  // from: the name its key holds
  if (destination == Destination::kTrainer) {
    const auto target = bindings_.find(to);
    if (target == bindings_.end()) {
      log(LogLevel::kDebug, kHubLogName, "dropped a message for ", to, ": no such peer connected");
      return;
    }
    frames[1].rebuild(target->second.routing_id.data(), target->second.routing_id.size());
    std::swap(frames[0], frames[1]);
    return route(outer_router_, frames, to);
  }
  std::swap(frames[0], frames[1]);
  route(router_, frames, to);
}

void Hub::read_connection_events() {
  // A monitor event: [event (uint16) and value (uint32), native order][endpoint]; the value of
  // ACCEPTED and DISCONNECTED is the connection's descriptor.
  for (std::size_t i = 0; i < kMaxForwardsPerWakeup; ++i) {
    std::vector<zmq::message_t> frames;
    if (!zmq::recv_multipart(connection_events_, std::back_inserter(frames), zmq::recv_flags::dontwait))
      return;
    if (frames.empty() || frames[0].size() < sizeof(std::uint16_t) + sizeof(std::uint32_t)) continue;
    std::uint16_t event = 0;
    std::uint32_t value = 0;
    std::memcpy(&event, frames[0].data(), sizeof event);
    std::memcpy(&value, static_cast<const char*>(frames[0].data()) + sizeof event, sizeof value);
    if (event == ZMQ_EVENT_ACCEPTED) inbound_guard_->accepted(static_cast<int>(value));
    if (event == ZMQ_EVENT_DISCONNECTED) inbound_guard_->disconnected(static_cast<int>(value));
  }
}

void Hub::enforce_inbound_budget() {
  // Events first: a descriptor closed and reused since the last look must not be judged by its
  // predecessor's bytes.
  read_connection_events();
  for (const auto& cut : inbound_guard_->enforce()) {
    refuse(cut.peer, "bus: connection over its memory budget", cut.why + "; its connection was shut down");
  }
}

void Hub::run() {
  name_this_thread("hub");
  ActorLoop loop(stop_);
  if (inbound_guard_) {
    loop.on_readable(connection_events_, [this] { read_connection_events(); });
    loop.every(kInboundCheckInterval, [this] { enforce_inbound_budget(); });
    loop.every(kConnectionScanInterval, [this] { inbound_guard_->scan(); });
  }
  loop.on_readable(router_, [this] {
    for (std::size_t i = 0; i < kMaxForwardsPerWakeup; ++i) {
      std::vector<zmq::message_t> frames;
      if (!zmq::recv_multipart(router_, std::back_inserter(frames), zmq::recv_flags::dontwait)) return;
      forward_from_inside(frames);
    }
  });
  if (outer_router_) {
    loop.on_readable(outer_router_, [this] {
      for (std::size_t i = 0; i < kMaxForwardsPerWakeup; ++i) {
        std::vector<zmq::message_t> frames;
        if (!zmq::recv_multipart(outer_router_, std::back_inserter(frames), zmq::recv_flags::dontwait))
          return;
        forward_from_outside(frames);
      }
    });
  }
  loop.run();
}

BusClient::BusClient(const SocketFactory& sockets, std::string name, BodyLimits limits)
    : name_(std::move(name)),
      limits_(limits),
      sockets_(sockets),
      dealer_(sockets.make(zmq::socket_type::dealer)) {}

void BusClient::connect(const std::string& hub_endpoint) {
  // Inside the coordinator process the routing id is the actor's name. Over tcp the hub gives each
  // connection its own and goes by the key and the envelope's sender instead.
  if (hub_endpoint.rfind("inproc://", 0) == 0) dealer_.set(zmq::sockopt::routing_id, name_);
  dealer_.connect(hub_endpoint);
}

void BusClient::disconnect(const std::string& hub_endpoint) {
  try {
    dealer_.disconnect(hub_endpoint);
  } catch (const zmq::error_t& e) {
    // ENOENT: not connected there (never was, or the endpoint's spelling resolved otherwise).
    log(LogLevel::kWarn, name_, "leaving ", hub_endpoint, ": ", e.what());
  }
}

void BusClient::subscribe(const std::string& publish_endpoint, const std::vector<std::string>& topics) {
  if (subscriber_) {
    // Keep the socket (an actor loop polls it); only move it to the new endpoint.
    for (const auto& endpoint : split_endpoints(subscribed_endpoint_)) subscriber_.disconnect(endpoint);
  } else {
    subscriber_ = sockets_.make(zmq::socket_type::sub);
    for (const auto& topic : topics) subscriber_.set(zmq::sockopt::subscribe, topic);
  }
  for (const auto& endpoint : split_endpoints(publish_endpoint)) subscriber_.connect(endpoint);
  subscribed_endpoint_ = publish_endpoint;
}

bool BusClient::send_frames(const std::string& to, MessageKind kind, zmq::message_t body, Stamp stamp,
                            std::vector<zmq::message_t> tensor_frames) {
  Envelope envelope;
  envelope.kind = kind;
  envelope.sender = name_;
  envelope.sequence = ++sequence_;
  envelope.round = stamp.round;
  envelope.model_version = stamp.model_version;
  std::vector<zmq::message_t> frames;
  frames.reserve(3 + tensor_frames.size());
  frames.emplace_back(to.data(), to.size());
  frames.push_back(encode_frame(envelope));
  frames.push_back(std::move(body));
  for (auto& frame : tensor_frames) frames.push_back(std::move(frame));
  try {
    if (zmq::send_multipart(dealer_, frames)) return true;
    log(LogLevel::kWarn, name_, "dropped ", kind_name(kind), " to ", to,
        ": the bus did not take it within the send timeout");
  } catch (const zmq::error_t& e) {
    if (e.num() != EINTR) throw;
    log(LogLevel::kWarn, name_, "dropped ", kind_name(kind), " to ", to, ": interrupted by a signal");
  }
  return false;
}

std::optional<Incoming> BusClient::receive(zmq::socket_t& socket) {
  while (true) {
    auto frames = std::make_shared<std::vector<zmq::message_t>>();
    if (!zmq::recv_multipart(socket, std::back_inserter(*frames), zmq::recv_flags::dontwait))
      return std::nullopt;
    if (frames->size() < 3) {
      refuse(frames->empty() ? std::string() : (*frames)[0].to_string(), "bus: malformed message",
             std::to_string(frames->size()) + " frames; an envelope and a body are required");
      continue;
    }
    Incoming incoming;
    incoming.from = (*frames)[0].to_string();
    auto envelope = decode_envelope((*frames)[1], limits_);
    if (!envelope) {
      refuse(incoming.from, "bus: bad envelope", envelope.error());
      if (on_rejected_envelope_ && socket.handle() == dealer_.handle())
        on_rejected_envelope_(incoming.from, envelope.error());
      continue;
    }
    incoming.envelope = std::move(envelope.value());
    const bool addressed = socket.handle() == dealer_.handle();
    if (addressed && incoming.envelope.sender != incoming.from) {
      refuse(incoming.from, "bus: sender differs from the envelope's",
             std::string(kind_name(incoming.envelope.kind)) + " claims to come from " +
                 incoming.envelope.sender);
      continue;
    }
    incoming.body = std::move((*frames)[2]);
    frames->erase(frames->begin(), frames->begin() + 3);
    incoming.tensor_frames = std::move(frames);
    return incoming;
  }
}

std::string reachable_endpoint(const std::string& endpoint, const std::string& reachable) {
  const auto scheme_end = endpoint.find("://");
  const auto port_start = endpoint.rfind(':');
  if (endpoint.rfind("tcp://", 0) != 0 || port_start == std::string::npos || port_start <= scheme_end)
    return endpoint;
  const std::string host = endpoint.substr(scheme_end + 3, port_start - scheme_end - 3);
  if (host != "0.0.0.0" && host != "*" && host != "[::]" && host != "::") return endpoint;
  const auto reachable_scheme_end = reachable.find("://");
  const auto reachable_port = reachable.rfind(':');
  if (reachable.rfind("tcp://", 0) != 0 || reachable_port == std::string::npos) return endpoint;
  return "tcp://" + reachable.substr(reachable_scheme_end + 3, reachable_port - reachable_scheme_end - 3) +
         endpoint.substr(port_start);
}

}  // namespace filo
