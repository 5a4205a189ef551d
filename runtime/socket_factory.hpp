#pragma once
// Every socket of a process is made here, so that limits (and later security and monitoring)
// apply to all of them alike.
#include <chrono>
#include <cstdint>
#include <string>
#include <zmq.hpp>

#include "runtime/keys.hpp"

namespace filo {

struct SocketLimits {
  /// Messages queued per peer before sends block or drop (ZMQ_SNDHWM / ZMQ_RCVHWM).
  int high_water_mark = 1000;
  /// Largest message a socket accepts from a peer; larger ones disconnect that peer (ZMQ_MAXMSGSIZE).
  std::int64_t max_message_bytes = std::int64_t{1} << 30;
  /// How long close() may still try to deliver queued messages.
  std::chrono::milliseconds linger{500};
  /// How long a send may block on a full queue before the message is dropped (ZMQ_SNDTIMEO).
  std::chrono::milliseconds send_timeout{2000};
  /// Largest frame a decoder accepts in one msgpack body.
  std::uint32_t max_body_bytes = 16u << 20;
};

/// This process's CurveZMQ identity. A coordinator uses its key pair for its server sockets; a node
/// or monitor uses its own pair and the coordinator's public key on every socket it connects.
struct CurveSettings {
  bool enabled = false;
  KeyPair own;
  std::string server_public_key;  // empty in the coordinator process (it connects nowhere)
};

class SocketFactory {
 public:
  SocketFactory(zmq::context_t& context, SocketLimits limits, CurveSettings curve = {})
      : context_(context), limits_(limits), curve_(std::move(curve)) {}

  /// A socket of `type` with the process's limits applied. `routing_id` names DEALER peers. Where
  /// this process is a CURVE client, DEALER and SUB sockets carry its keys.
  zmq::socket_t make(zmq::socket_type type, const std::string& routing_id = {}) const;
  /// Makes `socket` a CURVE server with this process's secret key, authenticated by the ZAP
  /// handler of the context (which must be running before the socket binds).
  void make_curve_server(zmq::socket_t& socket) const;
  /// A coordinator pair's channel: a CURVE server whose ZAP domain admits only this process's own
  /// key (the pair's two coordinators share the coordinator's key pair).
  void make_pair_server(zmq::socket_t& socket) const;
  /// Connects as the pair channel's client: this process's key, for the peer that holds the same.
  void make_pair_client(zmq::socket_t& socket) const;

  const CurveSettings& curve() const { return curve_; }

  const SocketLimits& limits() const { return limits_; }
  zmq::context_t& context() const { return context_; }

 private:
  zmq::context_t& context_;
  SocketLimits limits_;
  CurveSettings curve_;
};

}  // namespace filo
