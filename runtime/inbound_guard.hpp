#pragma once
// Bounds the memory libzmq holds for the hub's outside connections before the hub reads it.
//
// libzmq (4.3.4 here, and every release to 2026) keeps a multipart message's frames in the
// connection's pipe until its last frame arrives, and ZMQ_MAXMSGSIZE bounds each frame alone: one
// key holder could park gigabytes in one endless message, with no option to stop it. What libzmq
// holds can be counted from outside it all the same. The kernel counts the bytes each TCP
// connection received (TCP_INFO) and those still waiting in its buffer (SIOCINQ); the hub counts the
// wire bytes of every message it read from that connection (ZMQ_SRCFD names it). What libzmq read
// and the hub did not is what libzmq holds: frames of a message not yet whole, or whole messages not
// yet read. A connection over budget is shut down (shutdown(2) on its descriptor, which libzmq owns
// and closes itself): libzmq drops the half-assembled message with the connection, and an honest
// peer's DEALER connects again.
//
// The budget is per connection: no honest connection holds more than one message arriving and one
// waiting. Connections without a name (of one key, or not yet identified) share budgets, so that
// opening connection after connection buys nothing; named ones are as many as the hub's caps on
// names allow, which is what a fleet's honest trainers need at once.
#include <sys/socket.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>
#include <zmq.hpp>

namespace filo {

/// The bytes one frame of `payload_bytes` takes on a ZMTP 3 connection: a flags byte and a 1- or
/// 8-byte length, and with CurveZMQ the MESSAGE command's name, nonce, MAC and inner flags byte.
std::int64_t zmtp_wire_bytes(std::size_t payload_bytes, bool curve);

/// Connections not yet identified may hold at least this many connections' budgets together: honest
/// DEALERs that reconnect at once each bring a queued message.
constexpr std::int64_t kUnidentifiedShares = 4;

class InboundGuard {
 public:
  /// `budget_bytes`: what libzmq may hold for one connection; for all of one key's connections that
  /// hold no name, together; and for all connections that have not yet sent a whole message,
  /// together, this many times the larger of kUnidentifiedShares and the named connections.
  InboundGuard(std::int64_t budget_bytes, bool curve);

  /// The outer ROUTER's port, once bound: only connections to it are watched.
  void listening_on(int port) { listen_port_ = port; }
  /// A connection accepted on the outer ROUTER (ZMQ_EVENT_ACCEPTED); replaces any record of a
  /// descriptor closed and reused since.
  void accepted(int fd);
  /// A connection that libzmq ended (ZMQ_EVENT_DISCONNECTED).
  void disconnected(int fd);
  /// Watches connections to the ROUTER's port that no event announced: a safety net (libzmq 4.3
  /// blocks, rather than drops, an event its monitor cannot queue).
  void scan();
  /// The hub read `frames` (the ROUTER's routing-id frame first, which never crossed the wire) from
  /// the connection `fd`, sent with `key` (empty with CURVE off).
  void delivered(int fd, const std::vector<zmq::message_t>& frames, const std::string& key);
  /// The hub bound the connection's messages to `name`.
  void named(int fd, const std::string& name);

  struct Cut {
    std::string peer;  // its name, else its key, else its address
    std::int64_t held_bytes = 0;
    std::string why;
  };
  /// Reads every watched connection's counters and shuts down those over budget, largest first.
  std::vector<Cut> enforce();

  std::int64_t budget_bytes() const { return budget_bytes_; }
  /// Whether this kernel reports a TCP connection's received bytes; without it nothing is bounded.
  bool available() const { return available_; }

 private:
  struct Connection {
    sockaddr_storage peer{};  // tells a reused descriptor from this connection
    socklen_t peer_length = 0;
    std::int64_t credited_bytes = 0;  // wire bytes of the messages the hub read
    std::int64_t held_bytes = 0;      // at the last enforce
    std::string key;                  // the key its messages carry; empty until its first
    std::string name;                 // empty until the hub binds one
    bool identified = false;
    bool cut = false;
  };

  std::string label(int fd, const Connection& connection) const;
  void cut(int fd, Connection& connection, const std::string& why, std::vector<Cut>& cuts);
  /// Cuts the largest holders among `fds` until they hold at most `budget` together.
  void cut_down(std::vector<int> fds, std::int64_t budget, const std::string& why, std::vector<Cut>& cuts);

  std::int64_t budget_bytes_;
  bool curve_;
  bool available_;
  int listen_port_ = -1;
  std::map<int, Connection> connections_;  // by descriptor
};

}  // namespace filo
