#include "runtime/zap.hpp"

#include <array>
#include <cstring>
#include <zmq_addon.hpp>

#include "runtime/thread_name.hpp"

namespace filo {
namespace {
constexpr const char* kZapEndpoint = "inproc://zeromq.zap.01";  // fixed by RFC 27
constexpr std::size_t kZapRequestFrames = 7;  // version, id, domain, address, identity, mechanism, key
constexpr std::size_t kCurveKeyBytes = 32;
constexpr std::chrono::milliseconds kPollSlice{100};

void reply(zmq::socket_t& socket, zmq::message_t& request_id, const char* code, const std::string& text,
           const std::string& user_id) {
  std::array<zmq::const_buffer, 6> frames{zmq::str_buffer("1.0"),
                                          zmq::buffer(request_id.data(), request_id.size()),
                                          zmq::buffer(code, std::strlen(code)),
                                          zmq::buffer(text),
                                          zmq::buffer(user_id),
                                          zmq::const_buffer()};
  zmq::send_multipart(socket, frames);
}
}  // namespace

ZapHandler::ZapHandler(zmq::context_t& context, std::shared_ptr<const AuthorizedKeys> keys,
                       DropCounters* drops, std::string pair_key)
    : socket_(context, zmq::socket_type::rep),
      keys_(std::move(keys)),
      pair_key_(std::move(pair_key)),
      refusals_("zap", drops) {
  socket_.set(zmq::sockopt::linger, 0);
  socket_.bind(kZapEndpoint);
  thread_ = std::thread([this] { run(); });
}

ZapHandler::~ZapHandler() {
  stop_.request_stop();
  if (thread_.joinable()) thread_.join();
}

void ZapHandler::run() {
  name_this_thread("zap");
  zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLIN, 0};
  while (!stop_.stop_requested()) {
    if (zmq::poll(&item, 1, kPollSlice) <= 0) continue;
    std::vector<zmq::message_t> request;
    if (!zmq::recv_multipart(socket_, std::back_inserter(request), zmq::recv_flags::dontwait)) continue;
    answer(request);
  }
}

void ZapHandler::answer(std::vector<zmq::message_t>& request) {
  zmq::message_t empty;
  if (request.size() < 6) {
    // Not from libzmq; REP must still answer to stay usable.
    reply(socket_, request.size() > 1 ? request[1] : empty, "500", "malformed ZAP request", "");
    return;
  }
  const std::string address = request[3].to_string();
  const std::string mechanism = request[5].to_string();
  if (mechanism != "CURVE" || request.size() != kZapRequestFrames || request[6].size() != kCurveKeyBytes) {
    ++denied_;
    refusals_.refuse(address, "zap: not a CURVE client", "mechanism " + mechanism);
    reply(socket_, request[1], "400", "CURVE required", "");
    return;
  }
  char z85[41] = {};
  zmq_z85_encode(z85, static_cast<const std::uint8_t*>(request[6].data()), kCurveKeyBytes);
  const std::string public_key(z85);
  // The pair's channel carries the run's whole state: no fleet key there, not even an operator's.
  const bool pair_domain = request[2].to_string() == kPairZapDomain;
  const bool admitted = pair_domain ? !pair_key_.empty() && public_key == pair_key_
                                    : keys_ != nullptr && keys_->find(public_key) != nullptr;
  if (!admitted) {
    ++denied_;
    refusals_.refuse(address, pair_domain ? "zap: not the coordinator's key" : "zap: key not authorized",
                     "key " + public_key);
    reply(socket_, request[1], "400",
          pair_domain ? "only the coordinator's key may join the pair channel" : "key not authorized", "");
    return;
  }
  ++admitted_;
  reply(socket_, request[1], "200", "OK", public_key);
}

}  // namespace filo
