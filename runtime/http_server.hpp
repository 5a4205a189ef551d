#pragma once
// A small embedded HTTP server (GNU libmicrohttpd, from Debian) that answers GET requests with
// whatever its handler returns. libmicrohttpd runs the handler on its own threads, so the
// handler must only read state that is safe to share (the dashboard hands it immutable snapshots).
#include <functional>
#include <memory>
#include <string>
#include <utility>

struct MHD_Daemon;

namespace filo {

struct HttpResponse {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};

struct HttpServerOptions {
  /// HOST:PORT to listen on (IPv4 or a name that resolves to one); PORT alone means
  /// 127.0.0.1:PORT; port 0 picks a free one.
  std::string address = "127.0.0.1:0";
  /// Threads that serve connections.
  int threads = 2;
  /// Connections served at once; more wait in the kernel's queue.
  int max_connections = 64;
  /// A connection idle this long is closed, so a stuck client cannot hold a thread.
  int connection_timeout_seconds = 10;
};

class HttpServer {
 public:
  using Handler = std::function<HttpResponse(const std::string& path)>;

  /// Starts listening; throws std::runtime_error saying why when it cannot.
  HttpServer(HttpServerOptions options, Handler handler);
  ~HttpServer();  // stops the daemon and joins its threads
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  int port() const { return port_; }
  const std::string& host() const { return host_; }
  /// http://HOST:PORT/ as a browser on this machine would open it.
  std::string url() const;

  /// Called by libmicrohttpd's threads.
  HttpResponse respond(const std::string& method, const std::string& path) const;

 private:
  Handler handler_;
  std::string host_;
  int port_ = 0;
  struct DaemonDeleter {
    void operator()(MHD_Daemon* daemon) const;
  };
  std::unique_ptr<MHD_Daemon, DaemonDeleter> daemon_;
};

/// Splits "HOST:PORT", ":PORT" or "PORT" into host and port (host defaults to 127.0.0.1:
/// a dashboard is private unless the user says otherwise). Throws std::invalid_argument.
std::pair<std::string, int> parse_listen_address(const std::string& address);

}  // namespace filo
