#include "actors/dashboard.hpp"

#include "actors/web_assets.hpp"

namespace filo {
namespace {
constexpr Milliseconds kTick{200};
constexpr const char* kPrometheusContentType = "text/plain; version=0.0.4; charset=utf-8";
constexpr const char* kJsonContentType = "application/json";
}  // namespace

Dashboard::Dashboard(const SocketFactory& sockets, DashboardOptions options, const StopFlag& stop)
    : options_(std::move(options)), started_(Clock::now()), bus_(sockets, "dashboard"), loop_(stop) {
  if (!options_.record_path.empty()) {
    record_.open(options_.record_path, std::ios::app);
    if (!record_) throw std::runtime_error("cannot append events to " + options_.record_path);
  }
  publish_snapshot();
  bus_.subscribe(options_.events_endpoint, {kEventTopic, kControlTopic});
  loop_.on_readable(bus_.published(), [this] {
    while (auto incoming = bus_.receive(bus_.published())) dispatch(*this, *incoming, bus_);
  });
  loop_.every(options_.snapshot_interval, [this] { publish_snapshot(); });
  loop_.every(kTick, [this] {
    if (options_.keep_going && !options_.keep_going()) {
      exit_code_ = 1;
      loop_.quit();
    }
  });
  HttpServerOptions server;
  server.address = options_.web_address;
  server_ = std::make_unique<HttpServer>(server, [this](const std::string& path) { return respond(path); });
}

int Dashboard::run() {
  loop_.run();
  publish_snapshot();
  return exit_code_;
}

void Dashboard::take(const msg::AnyEvent& event) {
  fleet_.apply(event, now());
  if (record_.is_open()) record_ << msg::event_json(event, unix_time_now()).dump() << "\n" << std::flush;
}

void Dashboard::handle(const msg::RunFinished&, const Incoming&) {
  publish_snapshot();
  if (options_.exit_when_finished) loop_.quit();
}

void Dashboard::publish_snapshot() {
  // Heartbeat ages and "seconds since" grow without events, so the metrics are always redone;
  // rendering a few kilobytes four times a second is nothing beside a training round.
  auto snapshot = std::make_shared<DashboardSnapshot>();
  nlohmann::json state = fleet_.to_json(now());
  state["mode"] = "live";
  state["source"] = options_.events_endpoint;
  snapshot->state_json = state.dump();
  snapshot->metrics = fleet_.prometheus_text(now());
  std::lock_guard<std::mutex> lock(snapshot_mutex_);
  snapshot_ = std::move(snapshot);
}

HttpResponse Dashboard::respond(const std::string& path) const {
  std::shared_ptr<const DashboardSnapshot> snapshot;
  {
    std::lock_guard<std::mutex> lock(snapshot_mutex_);
    snapshot = snapshot_;
  }
  if (path == "/api/state") return {200, kJsonContentType, snapshot->state_json};
  if (path == "/metrics") return {200, kPrometheusContentType, snapshot->metrics};
  const std::string name = path == "/" ? "index.html" : path.substr(1);
  if (const WebAsset* asset = find_web_asset(name))
    return {200, std::string(asset->content_type), std::string(asset->bytes)};
  return {404, "text/plain; charset=utf-8", "no such page: " + path + "\n"};
}

}  // namespace filo
