#pragma once
// A blocking HTTP/1.0 GET for tests and benchmarks that read filo's dashboard; with a deadline.
#include <chrono>
#include <optional>
#include <string>

namespace filo {

struct HttpReply {
  int status = 0;
  std::string body;
};

/// GETs http://HOST:PORT/PATH (IPv4); nothing when the server cannot be reached or does not
/// answer within `timeout`.
std::optional<HttpReply> http_get(const std::string& host, int port, const std::string& path,
                                  std::chrono::milliseconds timeout = std::chrono::milliseconds(10000));

}  // namespace filo
