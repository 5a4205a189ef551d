#include "actors/monitor.hpp"

#include <unistd.h>
#include <algorithm>
#include <cstdio>
#include <iomanip>
#include <iostream>

#include <nlohmann/json.hpp>

#include "runtime/config.hpp"

namespace filo {
namespace {
constexpr Milliseconds kTick{200};
constexpr Milliseconds kRedrawInterval{100};
constexpr Milliseconds kTableRedrawInterval{500};
constexpr int kBarWidth = 30;

std::string short_name(const std::string& trainer) {
  const auto at = trainer.find('@');
  return at == std::string::npos ? trainer : trainer.substr(at + 1);
}
}  // namespace

std::string events_endpoint_of(const std::string& coordinator) {
  // A coordinator pair's two ("tcp://A:5555,tcp://B:5555"): both publishers, of which only the
  // active one binds, so that a monitor follows a failover by itself.
  std::string events;
  for (const auto& endpoint : split_endpoints(coordinator)) {
    BusOptions bus;
    bus.listen = endpoint;
    events += (events.empty() ? "" : ",") + publish_endpoint_for(bus);
  }
  return events;
}

Monitor::Monitor(const SocketFactory& sockets, MonitorOptions options, const StopFlag& stop)
    : options_(std::move(options)), bus_(sockets, "monitor"), loop_(stop), terminal_(isatty(STDOUT_FILENO)) {
  if (options_.style == MonitorStyle::kTable && !terminal_) options_.style = MonitorStyle::kText;
  if (!options_.record_path.empty()) {
    record_.open(options_.record_path, std::ios::app);
    if (!record_) throw std::runtime_error("cannot append events to " + options_.record_path);
  }
  if (options_.style == MonitorStyle::kTable) loop_.every(kTableRedrawInterval, [this] { draw_table(); });
  bus_.subscribe(options_.events_endpoint, {kEventTopic, kControlTopic});
  loop_.on_readable(bus_.published(), [this] {
    while (auto incoming = bus_.receive(bus_.published())) dispatch(*this, *incoming, bus_);
  });
  loop_.every(kTick, [this] {
    if (options_.keep_going && !options_.keep_going()) {
      exit_code_ = 1;
      loop_.quit();
    }
  });
}

int Monitor::run() {
  loop_.run();
  end_progress_line();
  if (options_.style == MonitorStyle::kTable) draw_table();
  return exit_code_;
}

void Monitor::show(const msg::AnyEvent& event) {
  const double unix_time = unix_time_now();
  if (record_.is_open()) record_ << msg::event_json(event, unix_time).dump() << "\n" << std::flush;
  if (options_.style == MonitorStyle::kJson) {
    std::cout << msg::event_json(event, unix_time).dump() << std::endl;
    return;
  }
  // A coordinator pair's state comes every second: a line only when it changed.
  const auto* pair = std::get_if<msg::PairStatus>(&event);
  const bool tabled = std::holds_alternative<msg::RoundClosed>(event) ||
                      std::holds_alternative<msg::FleetMembers>(event) ||
                      std::holds_alternative<msg::RefusalCounts>(event) || (pair && !pair->changed);
  if (options_.style == MonitorStyle::kTable) {
    fleet_.apply(event, seconds_between(started_, Clock::now()));
    if (tabled) return;  // in the table
    clear_table();
    std::cout << msg::event_text(event) << std::endl;
    draw_table();
    return;
  }
  if (const auto* round = std::get_if<msg::RoundClosed>(&event)) {
    // One line per round would scroll too fast to read: a progress line instead.
    show_progress(*round);
    return;
  }
  if (std::holds_alternative<msg::FleetMembers>(event)) return;  // a roll call a second would drown the lines
  if (pair && !pair->changed) return;
  end_progress_line();
  std::cout << msg::event_text(event) << std::endl;
}

void Monitor::show_progress(const msg::RoundClosed& round) {
  const double total = static_cast<double>(round.epoch_samples_total);
  const double fraction = total > 0 ? static_cast<double>(round.epoch_samples_done) / total : 0.0;
  if (round.epoch != last_epoch_) {
    last_epoch_ = round.epoch;
    last_reported_decile_ = -1;
  }
  const int decile = static_cast<int>(fraction * 10);
  const bool redraw = terminal_ && Clock::now() - last_draw_ >= kRedrawInterval;
  if (!redraw && (terminal_ || decile == last_reported_decile_)) return;
  last_draw_ = Clock::now();
  last_reported_decile_ = decile;
  std::ostringstream line;
  const int filled = static_cast<int>(fraction * kBarWidth);
  line << "epoch " << round.epoch << "/" << round.epochs << " [" << std::string(filled, '#')
       << std::string(kBarWidth - filled, '.') << "] " << std::setw(3) << static_cast<int>(fraction * 100)
       << "%  round " << round.round << "  loss " << std::fixed << std::setprecision(3) << round.loss
       << "  idle " << static_cast<int>(round.idle_fraction * 100) << "% |";
  for (const auto& trainer : round.trainers) {
    line << " " << short_name(trainer.name) << " " << static_cast<int>(trainer.samples_per_second) << "/s x"
         << trainer.planned;
  }
  if (terminal_) {
    std::cout << "\r" << line.str() << "\033[K" << std::flush;
    progress_line_open_ = true;
  } else {
    std::cout << line.str() << std::endl;
  }
}

void Monitor::end_progress_line() {
  if (progress_line_open_) std::cout << std::endl;
  progress_line_open_ = false;
}

void Monitor::clear_table() {
  // Back to the table's first line, then erase to the end of the screen.
  if (table_lines_ > 0) std::cout << "\033[" << table_lines_ << "F\033[J";
  table_lines_ = 0;
}

void Monitor::draw_table() {
  const std::string table = fleet_.table_text(seconds_between(started_, Clock::now()));
  clear_table();
  std::cout << table << std::flush;
  table_lines_ = static_cast<int>(std::count(table.begin(), table.end(), '\n'));
}

void Monitor::handle(const msg::RunFinished& finished, const Incoming&) {
  end_progress_line();
  if (options_.style == MonitorStyle::kJson) {
    std::cout << nlohmann::json{{"type", "run_finished"},
                                {"text", finished.reason},
                                {"final_test_accuracy", finished.final_test_accuracy}}
                     .dump()
              << std::endl;
  }
  if (options_.exit_when_finished) loop_.quit();
}

}  // namespace filo
