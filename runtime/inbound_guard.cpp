#include "runtime/inbound_guard.hpp"

#include <arpa/inet.h>
#include <dirent.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstring>

namespace filo {
namespace {
/// ZMTP 3: a flags byte, then the length in one byte up to 255, else in eight.
constexpr std::size_t kLongFrameAbove = 255;
/// CurveZMQ's MESSAGE command around each frame: "\x07MESSAGE", an 8-byte nonce, a 16-byte MAC and
/// the boxed flags byte (libzmq's curve_mechanism_base_t::encode).
constexpr std::size_t kCurveMessageBytes = 8 + 8 + 16 + 1;

std::int64_t frame_bytes(std::size_t body) {
  return static_cast<std::int64_t>(body + (body > kLongFrameAbove ? 9 : 2));
}

bool same_address(const sockaddr_storage& a, socklen_t a_length, const sockaddr_storage& b,
                  socklen_t b_length) {
  return a_length == b_length && std::memcmp(&a, &b, a_length) == 0;
}

int port_of(const sockaddr_storage& address) {
  if (address.ss_family == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in&>(address).sin_port);
  if (address.ss_family == AF_INET6) return ntohs(reinterpret_cast<const sockaddr_in6&>(address).sin6_port);
  return -1;
}

/// The kernel's count of bytes this TCP connection received, or -1 where it has none (not TCP, or a
/// kernel before 4.1).
std::int64_t bytes_received(int fd) {
  tcp_info info{};
  socklen_t length = sizeof info;
  if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &length) != 0) return -1;
  if (length < offsetof(tcp_info, tcpi_bytes_received) + sizeof info.tcpi_bytes_received) return -1;
  return static_cast<std::int64_t>(info.tcpi_bytes_received);
}

bool kernel_counts_received_bytes() {
  const int probe = ::socket(AF_INET, SOCK_STREAM, 0);
  if (probe < 0) return false;
  const bool counts = bytes_received(probe) >= 0;
  ::close(probe);
  return counts;
}
}  // namespace

std::int64_t zmtp_wire_bytes(std::size_t payload_bytes, bool curve) {
  return frame_bytes(curve ? payload_bytes + kCurveMessageBytes : payload_bytes);
}

InboundGuard::InboundGuard(std::int64_t budget_bytes, bool curve)
    : budget_bytes_(budget_bytes), curve_(curve), available_(kernel_counts_received_bytes()) {}

void InboundGuard::accepted(int fd) {
  connections_.erase(fd);
  // Only a connection to the ROUTER's port: the descriptor may already be closed and reused by
  // another socket of this process (a publisher's connection, an outgoing one) by now.
  sockaddr_storage local{};
  socklen_t local_length = sizeof local;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &local_length) != 0 ||
      port_of(local) != listen_port_) {
    return;
  }
  Connection connection;
  connection.peer_length = sizeof connection.peer;
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&connection.peer), &connection.peer_length) != 0) return;
  connections_[fd] = connection;
}

void InboundGuard::disconnected(int fd) {
  connections_.erase(fd);
}

void InboundGuard::scan() {
  DIR* directory = opendir("/proc/self/fd");
  if (directory == nullptr) return;
  const int own = dirfd(directory);
  while (const dirent* entry = readdir(directory)) {
    char* end = nullptr;
    const long fd = std::strtol(entry->d_name, &end, 10);
    if (end == entry->d_name || *end != '\0' || fd == own) continue;
    sockaddr_storage local{};
    socklen_t local_length = sizeof local;
    if (getsockname(static_cast<int>(fd), reinterpret_cast<sockaddr*>(&local), &local_length) != 0) continue;
    if (port_of(local) != listen_port_) continue;
    sockaddr_storage peer{};
    socklen_t peer_length = sizeof peer;
    if (getpeername(static_cast<int>(fd), reinterpret_cast<sockaddr*>(&peer), &peer_length) != 0) continue;
    const auto known = connections_.find(static_cast<int>(fd));
    if (known == connections_.end() ||
        !same_address(known->second.peer, known->second.peer_length, peer, peer_length)) {
      accepted(static_cast<int>(fd));
    }
  }
  closedir(directory);
}

void InboundGuard::delivered(int fd, const std::vector<zmq::message_t>& frames, const std::string& key) {
  // A message read after its connection's DISCONNECTED (libzmq delivers what was queued) finds no
  // record, or its descriptor's next connection's, whose credit enforce() clamps to what that one read.
  const auto found = connections_.find(fd);
  if (fd < 0 || found == connections_.end()) return;
  Connection& connection = found->second;
  for (std::size_t i = 1; i < frames.size(); ++i)
    connection.credited_bytes += zmtp_wire_bytes(frames[i].size(), curve_);
  if (!connection.identified) {
    connection.identified = true;
    connection.key = key;
  }
}

void InboundGuard::named(int fd, const std::string& name) {
  const auto found = connections_.find(fd);
  if (found != connections_.end()) found->second.name = name;
}

std::string InboundGuard::label(int fd, const Connection& connection) const {
  if (!connection.name.empty()) return connection.name;
  if (!connection.key.empty()) return "a connection of key " + connection.key;
  char text[INET6_ADDRSTRLEN] = "?";
  if (connection.peer.ss_family == AF_INET) {
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in&>(connection.peer).sin_addr, text, sizeof text);
  } else if (connection.peer.ss_family == AF_INET6) {
    inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6&>(connection.peer).sin6_addr, text, sizeof text);
  }
  return "a connection from " + std::string(text) + ":" + std::to_string(port_of(connection.peer)) + " (fd " +
         std::to_string(fd) + ")";
}

void InboundGuard::cut(int fd, Connection& connection, const std::string& why, std::vector<Cut>& cuts) {
  // Once more, right before: the descriptor must still be this connection's.
  sockaddr_storage peer{};
  socklen_t peer_length = sizeof peer;
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &peer_length) != 0 ||
      !same_address(peer, peer_length, connection.peer, connection.peer_length)) {
    return;
  }
  ::shutdown(fd, SHUT_RDWR);
  connection.cut = true;
  cuts.push_back(Cut{
      label(fd, connection), connection.held_bytes,
      std::to_string(connection.held_bytes) + " bytes received and not yet read as whole messages; " + why});
}

void InboundGuard::cut_down(std::vector<int> fds, std::int64_t budget, const std::string& why,
                            std::vector<Cut>& cuts) {
  std::int64_t total = 0;
  for (const int fd : fds) total += connections_.at(fd).held_bytes;
  std::sort(fds.begin(), fds.end(),
            [this](int a, int b) { return connections_.at(a).held_bytes > connections_.at(b).held_bytes; });
  for (const int fd : fds) {
    if (total <= budget) return;
    Connection& connection = connections_.at(fd);
    total -= connection.held_bytes;
    cut(fd, connection, why, cuts);
  }
}

std::vector<InboundGuard::Cut> InboundGuard::enforce() {
  std::vector<Cut> cuts;
  if (!available_) return cuts;
  std::map<std::string, std::vector<int>> unnamed_by_key;
  std::vector<int> unidentified;
  std::int64_t named = 0;
  for (auto it = connections_.begin(); it != connections_.end();) {
    const int fd = it->first;
    Connection& connection = it->second;
    sockaddr_storage peer{};
    socklen_t peer_length = sizeof peer;
    // The kernel's queue first, then its count: bytes arriving in between read as held, never the
    // other way round.
    int queued = 0;
    const bool same = getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &peer_length) == 0 &&
                      same_address(peer, peer_length, connection.peer, connection.peer_length) &&
                      ioctl(fd, FIONREAD, &queued) == 0;
    const std::int64_t received = same ? bytes_received(fd) : -1;
    if (received < 0) {
      it = connections_.erase(it);  // closed, or the descriptor now belongs to something else
      continue;
    }
    ++it;
    if (connection.cut) continue;
    const std::int64_t read_by_zmq = received - queued;
    // A credit past what this connection ever delivered came from a closed one on the same descriptor.
    connection.credited_bytes = std::min(connection.credited_bytes, read_by_zmq);
    connection.held_bytes = read_by_zmq - connection.credited_bytes;
    if (!connection.identified) {
      unidentified.push_back(fd);
    } else if (connection.name.empty()) {
      unnamed_by_key[curve_ ? connection.key : std::to_string(fd)].push_back(fd);
    } else {
      ++named;
    }
  }
  const std::string budget = std::to_string(budget_bytes_);
  for (auto& [fd, connection] : connections_) {
    if (!connection.cut && connection.held_bytes > budget_bytes_) {
      cut(fd, connection, "a connection may hold " + budget, cuts);
    }
  }
  const auto still_open = [this](std::vector<int> fds) {
    fds.erase(std::remove_if(fds.begin(), fds.end(), [this](int fd) { return connections_.at(fd).cut; }),
              fds.end());
    return fds;
  };
  for (const auto& [key, fds] : unnamed_by_key) {
    cut_down(still_open(fds), budget_bytes_,
             (curve_ ? "its key's connections without a name may hold " : "a connection may hold ") + budget +
                 " together",
             cuts);
  }
  const std::int64_t unidentified_budget = budget_bytes_ * std::max(kUnidentifiedShares, named);
  cut_down(still_open(unidentified), unidentified_budget,
           "connections that have sent no whole message yet may hold " + std::to_string(unidentified_budget) +
               " together",
           cuts);
  return cuts;
}

}  // namespace filo
