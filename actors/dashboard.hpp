#pragma once
// The live dashboard: a monitor that keeps the fleet's state from the coordinator's event stream
// and serves it to browsers (a page, its JSON, Prometheus /metrics) with an embedded HTTP server
// (libmicrohttpd). Only the actor's thread touches the fleet state; every snapshot_interval it renders
// the JSON and the metrics into immutable strings that the server's threads hand out under a
// mutex held just long enough to copy a pointer. A slow or stuck browser therefore never slows
// the bus, and a monitor never sends anything to the coordinator: watching costs the run nothing.
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <variant>

#include "actors/fleet_state.hpp"
#include "messages/event.hpp"
#include "runtime/actor_loop.hpp"
#include "runtime/bus.hpp"
#include "runtime/http_server.hpp"

namespace filo {

struct DashboardOptions {
  std::string events_endpoint;  /// the coordinator's PUB endpoint
  /// HOST:PORT to serve on; loopback unless told otherwise; port 0 picks a free one.
  std::string web_address = "127.0.0.1:8080";
  /// When set, every event is appended here as one JSON line (what `filo report` reads).
  std::string record_path;
  bool exit_when_finished = true;
  /// Polled every tick; returning false ends the dashboard.
  std::function<bool()> keep_going;
  /// How often the served state is brought up to date.
  Milliseconds snapshot_interval{250};
};

/// What the page is rendered from, made on the actor's thread and only read elsewhere.
struct DashboardSnapshot {
  std::string state_json;
  std::string metrics;
};

class Dashboard final {
 public:
  using Inbox = msg::StreamInbox;

  /// Subscribes and starts serving at once; throws std::runtime_error when the address is taken.
  Dashboard(const SocketFactory& sockets, DashboardOptions options, const StopFlag& stop);
  /// The page's address, for people to open.
  std::string url() const { return server_->url(); }
  /// Returns 0 after RunFinished (or when stopped), 1 when keep_going said to stop first.
  int run();

  /// Every event family goes into the fleet's state (and the record) alike.
  template <typename Event>
  void handle(const Event& event, const Incoming&) {
    take(msg::AnyEvent(event));
  }
  void handle(const msg::RunFinished& finished, const Incoming& from);

  /// The HTTP answer for `path`; runs on the HTTP server's threads.
  HttpResponse respond(const std::string& path) const;

 private:
  double now() const { return seconds_between(started_, Clock::now()); }
  void publish_snapshot();
  void take(const msg::AnyEvent& event);

  DashboardOptions options_;
  Clock::time_point started_;
  FleetState fleet_;
  std::ofstream record_;
  mutable std::mutex snapshot_mutex_;
  std::shared_ptr<const DashboardSnapshot> snapshot_;
  BusClient bus_;
  ActorLoop loop_;
  int exit_code_ = 0;
  // Last: the server's threads call respond(), which reads the members above, so it must stop
  // (be destroyed) first.
  std::unique_ptr<HttpServer> server_;
};

}  // namespace filo
