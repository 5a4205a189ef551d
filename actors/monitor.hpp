#pragma once
// A monitor subscribes to the coordinator's event stream and shows what the cluster does:
// readable lines with a live progress view, a live table of the trainers, or one JSON object
// per line.
#include <fstream>
#include <functional>
#include <map>
#include <string>
#include <variant>

#include "actors/fleet_state.hpp"
#include "messages/event.hpp"
#include "runtime/actor_loop.hpp"
#include "runtime/bus.hpp"

namespace filo {

/// kText: readable lines, with the epoch's progress redrawn in place on a terminal (and printed
/// every 10% elsewhere); kTable: one row per trainer redrawn in place, with membership and fault
/// events printed above it (a terminal; elsewhere it falls back to kText); kJson: one JSON
/// object per event.
enum class MonitorStyle { kText, kTable, kJson };

struct MonitorOptions {
  std::string events_endpoint;  /// the coordinator's PUB endpoint
  MonitorStyle style = MonitorStyle::kText;
  bool exit_when_finished = true;
  /// When set, every event is appended here as one JSON line (a run's events.jsonl).
  std::string record_path;
  /// Polled every tick; returning false ends the monitor (e.g. the coordinator process died).
  std::function<bool()> keep_going;
};

class Monitor final {
 public:
  using Inbox = msg::StreamInbox;

  Monitor(const SocketFactory& sockets, MonitorOptions options, const StopFlag& stop);
  /// Returns 0 after RunFinished (or when stopped), 1 when keep_going said to stop first.
  int run();

  /// Every event family: shown, recorded and kept in the fleet's state alike.
  template <typename Event>
  void handle(const Event& event, const Incoming&) {
    show(msg::AnyEvent(event));
  }
  void handle(const msg::RunFinished& finished, const Incoming& from);

 private:
  void show(const msg::AnyEvent& event);
  void show_progress(const msg::RoundClosed& round);
  void end_progress_line();
  void draw_table();
  void clear_table();

  MonitorOptions options_;
  BusClient bus_;
  ActorLoop loop_;
  int exit_code_ = 0;
  bool terminal_ = false;
  bool progress_line_open_ = false;
  int last_reported_decile_ = -1;
  std::uint64_t last_epoch_ = 0;
  Clock::time_point last_draw_{};
  std::ofstream record_;
  Clock::time_point started_ = Clock::now();
  FleetState fleet_;
  int table_lines_ = 0;  // lines of the table on screen, to move back over when redrawing
};

/// The events endpoint of a coordinator listening at `coordinator` (its port + 1).
std::string events_endpoint_of(const std::string& coordinator);

}  // namespace filo
