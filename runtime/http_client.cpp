#include "runtime/http_client.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

namespace filo {
namespace {
/// Closes a file descriptor when it goes out of scope.
class FileDescriptor {
 public:
  explicit FileDescriptor(int fd) : fd_(fd) {}
  ~FileDescriptor() {
    if (fd_ >= 0) ::close(fd_);
  }
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};
}  // namespace

std::optional<HttpReply> http_get(const std::string& host, int port, const std::string& path,
                                  std::chrono::milliseconds timeout) {
  FileDescriptor socket(::socket(AF_INET, SOCK_STREAM, 0));
  if (socket.get() < 0) return std::nullopt;
  timeval limit{static_cast<time_t>(timeout.count() / 1000),
                static_cast<suseconds_t>(timeout.count() % 1000 * 1000)};
  ::setsockopt(socket.get(), SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
  ::setsockopt(socket.get(), SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof limit);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<std::uint16_t>(port));
  if (::inet_pton(AF_INET, host.c_str(), &address.sin_addr) != 1) return std::nullopt;
  if (::connect(socket.get(), reinterpret_cast<sockaddr*>(&address), sizeof address) != 0)
    return std::nullopt;
  const std::string request = "GET " + path + " HTTP/1.0\r\nHost: " + host + "\r\nConnection: close\r\n\r\n";
  if (::send(socket.get(), request.data(), request.size(), MSG_NOSIGNAL) !=
      static_cast<ssize_t>(request.size()))
    return std::nullopt;
  std::string response;
  char buffer[16384];
  for (ssize_t n; (n = ::recv(socket.get(), buffer, sizeof buffer, 0)) != 0;) {
    if (n < 0) return std::nullopt;  // timed out or reset
    response.append(buffer, static_cast<std::size_t>(n));
  }
  // "HTTP/1.x STATUS reason\r\n...headers...\r\n\r\nbody"
  const auto space = response.find(' ');
  const auto body = response.find("\r\n\r\n");
  if (space == std::string::npos || body == std::string::npos) return std::nullopt;
  return HttpReply{std::atoi(response.c_str() + space + 1), response.substr(body + 4)};
}

}  // namespace filo
