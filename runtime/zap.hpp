#pragma once
// The ZAP handler (ZeroMQ RFC 27): libzmq asks it, during every CURVE handshake on a server socket
// of this context, whether the client's public key may connect. Without one, a CURVE server admits
// any key, so the hub starts it before it binds anything. It answers from the authorized keys
// alone and gives the key itself (Z85) as the connection's User-Id, which libzmq then attaches to
// every message from that connection: that is how the hub knows who sent a message.
#include <atomic>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>
#include <zmq.hpp>

#include "runtime/keys.hpp"
#include "runtime/refusals.hpp"
#include "runtime/stop_signal.hpp"

namespace filo {

/// The ZAP domain the hub's server sockets use.
constexpr const char* kZapDomain = "filo";
/// The ZAP domain of a coordinator pair's channel: only the coordinator's own key is admitted.
constexpr const char* kPairZapDomain = "filo-pair";

class ZapHandler {
 public:
  /// `pair_key`: the coordinator's own public key (Z85), the one key the pair's domain admits; empty:
  /// that domain admits none.
  ZapHandler(zmq::context_t& context, std::shared_ptr<const AuthorizedKeys> keys, DropCounters* drops,
             std::string pair_key = {});
  ~ZapHandler();
  ZapHandler(const ZapHandler&) = delete;
  ZapHandler& operator=(const ZapHandler&) = delete;

  std::uint64_t admitted() const { return admitted_; }
  std::uint64_t denied() const { return denied_; }

 private:
  void run();
  void answer(std::vector<zmq::message_t>& request);

  zmq::socket_t socket_;
  std::shared_ptr<const AuthorizedKeys> keys_;
  std::string pair_key_;
  Refusals refusals_;
  std::atomic<std::uint64_t> admitted_{0};
  std::atomic<std::uint64_t> denied_{0};
  StopFlag stop_;
  std::thread thread_;
};

}  // namespace filo
