#include "runtime/http_server.hpp"

#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <cstring>
#include <stdexcept>
#include <tuple>

#include "runtime/log.hpp"

namespace filo {
namespace {
constexpr int kMaxPort = 65535;
constexpr int kMethodNotAllowed = 405;
constexpr int kInternalError = 500;

void log_daemon_error(void*, const char* format, va_list arguments) {
  char text[512];
  std::vsnprintf(text, sizeof text, format, arguments);
  std::string line(text);
  while (!line.empty() && line.back() == '\n') line.pop_back();
  log(LogLevel::kWarn, "http", line);
}

MHD_Result answer(void* self, MHD_Connection* connection, const char* url, const char* method, const char*,
                  const char*, size_t*, void**) {
  const HttpResponse reply = static_cast<const HttpServer*>(self)->respond(method, url);
  MHD_Response* response = MHD_create_response_from_buffer(
      reply.body.size(), const_cast<char*>(reply.body.data()), MHD_RESPMEM_MUST_COPY);
  if (response == nullptr) return MHD_NO;
  MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, reply.content_type.c_str());
  MHD_add_response_header(response, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
  const MHD_Result queued = MHD_queue_response(connection, static_cast<unsigned>(reply.status), response);
  MHD_destroy_response(response);
  return queued;
}

/// The IPv4 address `host` names (a literal or a name that resolves), with `port`.
sockaddr_in resolve(const std::string& host, int port) {
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (const int status = getaddrinfo(host.c_str(), nullptr, &hints, &found); status != 0)
    throw std::runtime_error("cannot serve HTTP on " + host + ": " + gai_strerror(status));
  sockaddr_in address{};
  std::memcpy(&address, found->ai_addr, sizeof address);
  freeaddrinfo(found);
  address.sin_port = htons(static_cast<std::uint16_t>(port));
  return address;
}
}  // namespace

std::pair<std::string, int> parse_listen_address(const std::string& address) {
  const auto colon = address.rfind(':');
  std::string host = colon == std::string::npos ? std::string() : address.substr(0, colon);
  const std::string port_text = colon == std::string::npos ? address : address.substr(colon + 1);
  if (host.empty()) host = "127.0.0.1";
  std::size_t used = 0;
  int port = -1;
  try {
    port = std::stoi(port_text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (port_text.empty() || used != port_text.size() || port < 0 || port > kMaxPort)
    throw std::invalid_argument("not a HOST:PORT address: '" + address + "'");
  return {host, port};
}

void HttpServer::DaemonDeleter::operator()(MHD_Daemon* daemon) const {
  MHD_stop_daemon(daemon);
}

HttpServer::HttpServer(HttpServerOptions options, Handler handler) : handler_(std::move(handler)) {
  int port = 0;
  std::tie(host_, port) = parse_listen_address(options.address);
  sockaddr_in address = resolve(host_, port);
  daemon_.reset(MHD_start_daemon(
      MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ERROR_LOG, 0, nullptr, nullptr, &answer, this,
      MHD_OPTION_EXTERNAL_LOGGER, &log_daemon_error, nullptr,  // first, so that it gets every message
      MHD_OPTION_SOCK_ADDR, reinterpret_cast<sockaddr*>(&address), MHD_OPTION_THREAD_POOL_SIZE,
      static_cast<unsigned>(options.threads), MHD_OPTION_CONNECTION_LIMIT,
      static_cast<unsigned>(options.max_connections), MHD_OPTION_CONNECTION_TIMEOUT,
      static_cast<unsigned>(options.connection_timeout_seconds), MHD_OPTION_END));
  if (!daemon_) {
    throw std::runtime_error("cannot serve HTTP on " + host_ + ":" + std::to_string(port) + ": " +
                             std::strerror(errno));
  }
  const MHD_DaemonInfo* bound = MHD_get_daemon_info(daemon_.get(), MHD_DAEMON_INFO_BIND_PORT);
  port_ = bound != nullptr ? bound->port : port;
}

HttpServer::~HttpServer() = default;

std::string HttpServer::url() const {
  const bool any = host_ == "0.0.0.0";
  return "http://" + (any ? std::string("127.0.0.1") : host_) + ":" + std::to_string(port_) + "/";
}

HttpResponse HttpServer::respond(const std::string& method, const std::string& path) const {
  if (method != "GET" && method != "HEAD")
    return {kMethodNotAllowed, "text/plain; charset=utf-8", "only GET\n"};
  try {
    return handler_(path);
  } catch (const std::exception& e) {
    return {kInternalError, "text/plain; charset=utf-8", std::string("error: ") + e.what() + "\n"};
  }
}

}  // namespace filo
