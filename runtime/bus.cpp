#include "runtime/bus.hpp"

#include <algorithm>

#include "runtime/actor_loop.hpp"
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
}  // namespace

Hub::Hub(const SocketFactory& sockets, HubOptions options)
    : options_(std::move(options)),
      router_(sockets.make(zmq::socket_type::router)),
      publisher_(sockets.make(zmq::socket_type::pub)) {
  // A peer that comes back under its name on a new connection (a restarted machine that sent no
  // FIN, a link that was down) takes the name over; otherwise the stale connection keeps it.
  router_.set(zmq::sockopt::router_handover, 1);
  router_.bind(inproc_router_endpoint());
  publisher_.set(zmq::sockopt::sndhwm,
                 std::min(kPublishQueuePerSubscriber, sockets.limits().high_water_mark));
  publisher_.bind(inproc_publish_endpoint());
  if (!options_.router_endpoint.empty()) {
    router_.bind(options_.router_endpoint);
    router_endpoint_ = router_.get(zmq::sockopt::last_endpoint);
  }
  if (!options_.publish_endpoint.empty()) {
    publisher_.bind(options_.publish_endpoint);
    publish_endpoint_ = publisher_.get(zmq::sockopt::last_endpoint);
  }
  // The sockets move to the hub thread here; thread start is the memory barrier zmq requires.
  thread_ = std::thread([this] { run(); });
}

Hub::~Hub() {
  stop_.request_stop();
  if (thread_.joinable()) thread_.join();
}

void Hub::forward_one(std::vector<zmq::message_t>& frames) {
  // [from][to][envelope][body][tensors...]
  if (frames.size() < 4) {
    log(LogLevel::kWarn, kHubLogName, "dropped a message of ", frames.size(), " frames from ",
        frames.empty() ? std::string("?") : frames[0].to_string(),
        ": a message needs a destination, an envelope and a body");
    return;
  }
  const std::string to = frames[1].to_string();
  if (to.rfind(kPublishPrefix, 0) == 0) {
    const std::size_t prefix = std::char_traits<char>::length(kPublishPrefix);
    frames[1].rebuild(to.data() + prefix, to.size() - prefix);
    frames.erase(frames.begin());             // [topic][envelope][body][tensors...]
    zmq::send_multipart(publisher_, frames);  // PUB never blocks: it drops for slow subscribers
    return;
  }
  std::swap(frames[0], frames[1]);  // [to][from][envelope]...: ROUTER routes on the first frame
  try {
    if (!zmq::send_multipart(router_, frames, zmq::send_flags::dontwait)) {
      log(LogLevel::kWarn, kHubLogName, "dropped a message for ", to, ": its queue is full");
    }
  } catch (const zmq::error_t& e) {
    if (e.num() != EHOSTUNREACH) throw;
    log(LogLevel::kDebug, kHubLogName, "dropped a message for ", to, " from ", frames[1].to_string(),
        ": no such peer connected");
  }
}

void Hub::run() {
  name_this_thread("hub");
  ActorLoop loop(stop_);
  loop.on_readable(router_, [this] {
    for (std::size_t i = 0; i < kMaxForwardsPerWakeup; ++i) {
      std::vector<zmq::message_t> frames;
      if (!zmq::recv_multipart(router_, std::back_inserter(frames), zmq::recv_flags::dontwait)) return;
      forward_one(frames);
    }
  });
  loop.run();
}

BusClient::BusClient(const SocketFactory& sockets, std::string name, BodyLimits limits)
    : name_(std::move(name)),
      limits_(limits),
      sockets_(sockets),
      dealer_(sockets.make(zmq::socket_type::dealer, name_)) {}

void BusClient::connect(const std::string& hub_endpoint) {
  dealer_.connect(hub_endpoint);
}

void BusClient::subscribe(const std::string& publish_endpoint, const std::vector<std::string>& topics) {
  if (subscriber_) {
    // Keep the socket (an actor loop polls it); only move it to the new endpoint.
    if (!subscribed_endpoint_.empty()) subscriber_.disconnect(subscribed_endpoint_);
  } else {
    subscriber_ = sockets_.make(zmq::socket_type::sub);
    for (const auto& topic : topics) subscriber_.set(zmq::sockopt::subscribe, topic);
  }
  subscriber_.connect(publish_endpoint);
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
      log(LogLevel::kWarn, name_, "dropped a message of ", frames->size(),
          " frames: an envelope and a body are required");
      continue;
    }
    Incoming incoming;
    incoming.from = (*frames)[0].to_string();
    auto envelope = decode_envelope((*frames)[1], limits_);
    if (!envelope) {
      log(LogLevel::kWarn, name_, "dropped a message from ", incoming.from, ": ", envelope.error());
      if (on_rejected_envelope_ && socket.handle() == dealer_.handle())
        on_rejected_envelope_(incoming.from, envelope.error());
      continue;
    }
    incoming.envelope = std::move(envelope.value());
    const bool addressed = socket.handle() == dealer_.handle();
    if (addressed && incoming.envelope.sender != incoming.from) {
      log(LogLevel::kWarn, name_, "dropped ", kind_name(incoming.envelope.kind), " from ", incoming.from,
          ": it claims to come from ", incoming.envelope.sender);
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
