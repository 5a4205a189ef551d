#include "runtime/socket_factory.hpp"

#include <stdexcept>

#include "runtime/zap.hpp"

namespace filo {

zmq::socket_t SocketFactory::make(zmq::socket_type type, const std::string& routing_id) const {
  zmq::socket_t socket(context_, type);
  socket.set(zmq::sockopt::sndhwm, limits_.high_water_mark);
  socket.set(zmq::sockopt::rcvhwm, limits_.high_water_mark);
  socket.set(zmq::sockopt::maxmsgsize, limits_.max_message_bytes);
  socket.set(zmq::sockopt::linger, static_cast<int>(limits_.linger.count()));
  socket.set(zmq::sockopt::sndtimeo, static_cast<int>(limits_.send_timeout.count()));
  if (!routing_id.empty()) socket.set(zmq::sockopt::routing_id, routing_id);
  const bool client = type == zmq::socket_type::dealer || type == zmq::socket_type::sub;
  if (client && curve_.enabled && !curve_.server_public_key.empty()) {
    socket.set(zmq::sockopt::curve_serverkey, curve_.server_public_key);
    socket.set(zmq::sockopt::curve_publickey, curve_.own.public_key);
    socket.set(zmq::sockopt::curve_secretkey, curve_.own.secret_key);
  }
  if (type == zmq::socket_type::router) {
    // Unroutable sends fail loudly instead of vanishing, and a restarted peer with the same name
    // takes its identity over from the dead connection.
    socket.set(zmq::sockopt::router_mandatory, true);
    socket.set(zmq::sockopt::router_handover, true);
  }
  return socket;
}

void SocketFactory::make_curve_server(zmq::socket_t& socket) const {
  if (!curve_.enabled || curve_.own.secret_key.empty()) {
    throw std::logic_error("a CURVE server socket needs this process's key pair");
  }
  socket.set(zmq::sockopt::curve_server, true);
  socket.set(zmq::sockopt::curve_secretkey, curve_.own.secret_key);
  socket.set(zmq::sockopt::zap_domain, kZapDomain);
}

void SocketFactory::make_pair_server(zmq::socket_t& socket) const {
  make_curve_server(socket);
  socket.set(zmq::sockopt::zap_domain, kPairZapDomain);
}

void SocketFactory::make_pair_client(zmq::socket_t& socket) const {
  if (!curve_.enabled || curve_.own.secret_key.empty()) {
    throw std::logic_error("a pair client socket needs this process's key pair");
  }
  socket.set(zmq::sockopt::curve_serverkey, curve_.own.public_key);
  socket.set(zmq::sockopt::curve_publickey, curve_.own.public_key);
  socket.set(zmq::sockopt::curve_secretkey, curve_.own.secret_key);
}

}  // namespace filo
