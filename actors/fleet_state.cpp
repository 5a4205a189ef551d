#include "actors/fleet_state.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iomanip>
#include <set>
#include <sstream>

namespace filo {
namespace {
constexpr int kTableBarWidth = 20;

/// Keeps a long run's series bounded: past `limit` points, every other older point goes.
void append_thinned(std::vector<SeriesPoint>& series, SeriesPoint point, std::size_t limit) {
  series.push_back(point);
  if (series.size() <= limit) return;
  std::vector<SeriesPoint> thinned;
  thinned.reserve(limit / 2 + 2);
  for (std::size_t i = 0; i + 1 < series.size(); i += 2) thinned.push_back(series[i]);
  thinned.push_back(series.back());
  series.swap(thinned);
}

nlohmann::json optional_json(const std::optional<double>& value) {
  return value ? nlohmann::json(*value) : nlohmann::json(nullptr);
}

nlohmann::json series_json(const std::vector<SeriesPoint>& series) {
  nlohmann::json points = nlohmann::json::array();
  for (const auto& point : series) points.push_back({point.time, point.x, point.value});
  return points;
}

std::string prometheus_number(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  char text[32];
  std::snprintf(text, sizeof text, "%.17g", value);
  return text;
}

std::string prometheus_label_value(const std::string& value) {
  std::string escaped;
  for (char c : value) {
    if (c == '\\')
      escaped += "\\\\";
    else if (c == '"')
      escaped += "\\\"";
    else if (c == '\n')
      escaped += "\\n";
    else
      escaped += c;
  }
  return escaped;
}

/// Writes one metric family: HELP, TYPE, then its samples.
class MetricWriter {
 public:
  explicit MetricWriter(std::ostringstream& out) : out_(out) {}
  void family(const std::string& name, const std::string& type, const std::string& help) {
    out_ << "# HELP " << name << " " << help << "\n# TYPE " << name << " " << type << "\n";
    name_ = name;
  }
  void sample(double value, const std::vector<std::pair<std::string, std::string>>& labels = {}) {
    out_ << name_;
    if (!labels.empty()) {
      out_ << "{";
      for (std::size_t i = 0; i < labels.size(); ++i)
        out_ << (i ? "," : "") << labels[i].first << "=\"" << prometheus_label_value(labels[i].second)
             << "\"";
      out_ << "}";
    }
    out_ << " " << prometheus_number(value) << "\n";
  }

 private:
  std::ostringstream& out_;
  std::string name_;
};
}  // namespace

const char* state_name(TrainerState state) {
  switch (state) {
    case TrainerState::kTraining:
      return "training";
    case TrainerState::kLost:
      return "lost";
    case TrainerState::kLeft:
      return "left";
    case TrainerState::kRejected:
      return "rejected";
    case TrainerState::kLeftOut:
      return "left_out";
    case TrainerState::kFailed:
      return "failed";
    case TrainerState::kTakenOut:
      return "taken_out";
    case TrainerState::kExcluded:
      return "excluded";
  }
  return "training";
}

double unix_time_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::pair<std::string, std::string> machine_and_device(const std::string& trainer) {
  const auto at = trainer.find('@');
  const auto slash = trainer.find('/', at == std::string::npos ? 0 : at);
  if (at == std::string::npos || slash == std::string::npos) return {trainer, ""};
  return {trainer.substr(at + 1, slash - at - 1), trainer.substr(slash + 1)};
}

TrainerView& FleetState::trainer(const std::string& name) {
  auto found = trainers_.find(name);
  if (found != trainers_.end()) return found->second;
  TrainerView view;
  view.name = name;
  std::tie(view.machine, view.device) = machine_and_device(name);
  return trainers_.emplace(name, std::move(view)).first->second;
}

void FleetState::note(const std::string& type, std::uint64_t round, double time, const std::string& trainer,
                      const std::string& text) {
  events_.push_back(EventView{time, round, type, trainer, text});
  if (events_.size() > kMaxEvents) events_.pop_front();
}

void FleetState::apply(const msg::AnyEvent& event, double time) {
  ++events_seen_;
  std::visit([&](const auto& typed) { apply_event(typed, time); }, event);
}

void FleetState::apply_event(const msg::RoundClosed& event, double time) {
  run_.round = event.round;
  run_.epoch = event.epoch;
  ++run_.rounds_seen;
  run_.epochs = event.epochs;
  run_.epoch_samples_done = static_cast<double>(event.epoch_samples_done);
  run_.epoch_samples_total = static_cast<double>(event.epoch_samples_total);
  run_.idle_fraction = event.idle_fraction;
  if (!event.exchange.empty()) run_.exchange = event.exchange;
  run_.samples += event.samples;
  run_.loss = event.loss;
  append_thinned(loss_, SeriesPoint{time, static_cast<double>(event.round), event.loss}, kMaxSeriesPoints);

  double planned_total = 0.0;
  std::set<std::string> planned;
  for (const auto& part : event.trainers) {
    planned_total += static_cast<double>(part.planned);
    planned.insert(part.name);
  }
  RoundView round{event.round, event.epoch, time, event.seconds, {}};
  for (auto& [name, view] : trainers_) {
    if (planned.count(name) > 0) continue;
    view.planned_samples = 0.0;  // not in this round's plan: its share now is none
    view.share = 0.0;
  }
  for (const auto& part : event.trainers) {
    TrainerView& view = trainer(part.name);
    TimelineEntry entry;
    entry.trainer = part.name;
    entry.planned = static_cast<double>(part.planned);
    entry.delivered = part.delivered;
    view.planned_samples = entry.planned;
    view.share = planned_total > 0 ? entry.planned / planned_total : 0.0;
    if (!part.device.empty()) view.device = part.device;
    if (!part.precision.empty()) view.precision = part.precision;
    if (part.peak_memory_bytes > 0) view.peak_memory_bytes = static_cast<double>(part.peak_memory_bytes);
    if (part.delivered) {
      ++view.rounds_delivered;
      entry.samples = static_cast<double>(part.samples);
      view.samples += part.samples;
      view.last_delivery_at = time;
      view.samples_per_second = part.samples_per_second;
      view.idle_seconds = part.idle_seconds;
      view.idle_seconds_total += part.idle_seconds;
      view.compute_seconds = part.compute_seconds;
      view.arrival_seconds = part.arrival_seconds;
      if (part.compute_seconds > 0) {
        view.recent.emplace_back(static_cast<double>(part.samples), part.compute_seconds);
        if (view.recent.size() > kRecentRounds) view.recent.pop_front();
        double recent_samples = 0.0, recent_seconds = 0.0;
        for (const auto& [samples, compute] : view.recent) {
          recent_samples += samples;
          recent_seconds += compute;
        }
        view.recent_samples_per_second = recent_samples / recent_seconds;
      }
      entry.compute_seconds = part.compute_seconds;
      entry.arrival_seconds = part.arrival_seconds;
      entry.idle_seconds = part.idle_seconds;
      append_thinned(speed_[part.name],
                     SeriesPoint{time, static_cast<double>(event.round), view.samples_per_second},
                     kMaxSeriesPoints);
    } else {
      ++view.rounds_missed;
      note("missed", event.round, time, part.name,
           "round " + std::to_string(event.round) + " closed without " + part.name + ": " +
               std::to_string(part.planned) + " samples reassigned: " + part.missed_reason);
    }
    round.trainers.push_back(entry);
  }
  timeline_.push_back(std::move(round));
  if (timeline_.size() > kTimelineRounds) timeline_.pop_front();
}

void FleetState::apply_event(const msg::EpochScored& event, double time) {
  run_.epoch = std::max(run_.epoch, event.epoch);
  if (event.epochs > 0) run_.epochs = event.epochs;
  if (event.metric == "test_accuracy") {
    run_.test_accuracy = event.value;
    append_thinned(accuracy_, SeriesPoint{time, static_cast<double>(event.epoch), event.value},
                   kMaxSeriesPoints);
  } else if (event.metric == "test_perplexity") {
    run_.test_perplexity = event.value;
  }
  note("epoch", event.round, time, "", event.text);
}

void FleetState::apply_event(const msg::MemberNews& event, double time) {
  TrainerView& view = trainer(event.trainer);
  using Change = msg::MemberChange;
  switch (event.change) {
    case Change::kJoined:
    case Change::kPlannedAgain:
    case Change::kReadmitted:
      view.state = TrainerState::kTraining;
      break;
    case Change::kRejoined:
      view.state = TrainerState::kTraining;
      ++view.rejoins;
      break;
    case Change::kLost:
      view.state = TrainerState::kLost;
      ++view.losses;
      break;
    case Change::kLeft:
      // A trainer that failed leaves too; its failure is the better reason to show.
      if (view.state != TrainerState::kFailed) view.state = TrainerState::kLeft;
      break;
    case Change::kRejected:
      view.state = TrainerState::kRejected;
      break;
    case Change::kLeftOut:
      view.state = TrainerState::kLeftOut;
      break;
    case Change::kFailed:
      view.state = TrainerState::kFailed;
      break;
    case Change::kTakenOut:
      view.state = TrainerState::kTakenOut;
      break;
    case Change::kExcluded:
      view.state = TrainerState::kExcluded;
      break;
  }
  if (!event.hostname.empty()) view.host = event.hostname;
  if (view.state == TrainerState::kTraining) {
    view.reason.clear();
  } else if (event.change != Change::kLeft || view.state == TrainerState::kLeft) {
    view.reason = event.reason;
  }
  note(msg::member_change_name(event.change), event.round, time, event.trainer, event.text);
}

void FleetState::apply_event(const msg::FleetMembers& event, double time) {
  // The registrar's roll call is the authority on who is live and on heartbeats.
  for (const auto& member : event.members) {
    TrainerView& view = trainer(member.trainer);
    if (view.state == TrainerState::kLost || view.state == TrainerState::kLeft) {
      view.state = TrainerState::kTraining;
      view.reason.clear();
    }
    if (!member.host.empty()) view.host = member.host;
    if (!member.device.empty()) view.device = member.device;
    if (!member.precision.empty()) view.precision = member.precision;
    if (member.peak_memory_bytes > 0) view.peak_memory_bytes = static_cast<double>(member.peak_memory_bytes);
    view.heartbeat_age_seconds = member.heartbeat_age_seconds;
    view.heartbeat_age_at = time;
  }
}

void FleetState::apply_event(const msg::RefusalCounts& event, double) {
  for (const auto& [reason, count] : event.by_reason) run_.dropped[reason] = static_cast<double>(count);
}

void FleetState::apply_event(const msg::CoordinatorResumed& event, double time) {
  note("resumed", event.round, time, "", event.text);
}

void FleetState::apply_event(const msg::LossScaleOverflow& event, double time) {
  note("overflow", event.round, time, "", event.text);
}

void FleetState::apply_event(const msg::RunEnded& event, double time) {
  run_.finished = true;
  run_.finished_text = event.text;
  run_.run_dir = event.run_dir;
  note("finished", event.rounds, time, "", event.text);
}

void FleetState::apply_event(const msg::SecurityNotice& event, double time) {
  note("insecure", 0, time, "", event.text);
}

void FleetState::apply_event(const msg::ExchangeChosen& event, double time) {
  note("exchange", event.round, time, "", event.text);
}

void FleetState::apply_event(const msg::PairStatus& event, double time) {
  run_.pair = event;
  // Every second for the page and /metrics; the event list only when something changed.
  if (event.changed) note("pair", event.round, time, "", event.text);
}

std::optional<double> FleetState::heartbeat_age(const TrainerView& trainer, double now) const {
  if (!trainer.heartbeat_age_seconds) return std::nullopt;
  // A trainer that is no longer live has no heartbeat to age: the last roll call's figure would lie.
  if (trainer.state == TrainerState::kLost || trainer.state == TrainerState::kLeft ||
      trainer.state == TrainerState::kRejected || trainer.state == TrainerState::kFailed)
    return std::nullopt;
  return *trainer.heartbeat_age_seconds + std::max(0.0, now - trainer.heartbeat_age_at);
}

nlohmann::json FleetState::to_json(double now) const {
  nlohmann::json trainers = nlohmann::json::array();
  for (const auto& [name, view] : trainers_) {
    trainers.push_back(
        {{"name", name},
         {"machine", view.machine},
         {"host", view.host},
         {"device", view.device},
         {"precision", view.precision},
         {"state", state_name(view.state)},
         {"reason", view.reason},
         {"rejoins", view.rejoins},
         {"losses", view.losses},
         {"planned_samples", view.planned_samples},
         {"share", view.share},
         {"samples_per_second", view.samples_per_second},
         {"recent_samples_per_second", view.recent_samples_per_second},
         {"idle_seconds", view.idle_seconds},
         {"idle_seconds_total", view.idle_seconds_total},
         {"compute_seconds", optional_json(view.compute_seconds)},
         {"arrival_seconds", optional_json(view.arrival_seconds)},
         {"peak_memory_bytes", optional_json(view.peak_memory_bytes)},
         {"heartbeat_age_seconds", optional_json(heartbeat_age(view, now))},
         {"since_delivery_seconds",
          view.last_delivery_at < 0 ? nlohmann::json(nullptr) : nlohmann::json(now - view.last_delivery_at)},
         {"rounds_delivered", view.rounds_delivered},
         {"rounds_missed", view.rounds_missed},
         {"samples", view.samples}});
  }
  nlohmann::json speed = nlohmann::json::object();
  for (const auto& [name, series] : speed_) speed[name] = series_json(series);
  nlohmann::json timeline = nlohmann::json::array();
  for (const auto& round : timeline_) {
    nlohmann::json entries = nlohmann::json::array();
    for (const auto& entry : round.trainers) {
      entries.push_back({{"trainer", entry.trainer},
                         {"planned", entry.planned},
                         {"samples", entry.samples},
                         {"arrival_seconds", entry.arrival_seconds},
                         {"compute_seconds", entry.compute_seconds},
                         {"idle_seconds", entry.idle_seconds},
                         {"delivered", entry.delivered}});
    }
    timeline.push_back({{"round", round.round},
                        {"epoch", round.epoch},
                        {"time", round.time},
                        {"seconds", round.seconds},
                        {"trainers", entries}});
  }
  nlohmann::json events = nlohmann::json::array();
  for (const auto& event : events_) {
    events.push_back({{"time", event.time},
                      {"round", event.round},
                      {"type", event.type},
                      {"trainer", event.trainer},
                      {"text", event.text}});
  }
  return {{"now", now},
          {"run",
           {{"round", run_.round},
            {"epoch", run_.epoch},
            {"epochs", run_.epochs},
            {"epoch_samples_done", run_.epoch_samples_done},
            {"epoch_samples_total", run_.epoch_samples_total},
            {"loss", run_.loss},
            {"idle_fraction", run_.idle_fraction},
            {"test_accuracy", optional_json(run_.test_accuracy)},
            {"test_perplexity", optional_json(run_.test_perplexity)},
            {"samples", run_.samples},
            {"rounds_seen", run_.rounds_seen},
            {"finished", run_.finished},
            {"finished_text", run_.finished_text},
            {"run_dir", run_.run_dir},
            {"exchange", run_.exchange},
            {"pair", run_.pair ? msg::event_json(*run_.pair, 0.0) : nlohmann::json()},
            {"dropped", run_.dropped}}},
          {"trainers", trainers},
          {"loss", series_json(loss_)},
          {"accuracy", series_json(accuracy_)},
          {"speed", speed},
          {"timeline", timeline},
          {"events", events},
          {"events_seen", events_seen_}};
}

std::string FleetState::prometheus_text(double now) const {
  std::ostringstream out;
  MetricWriter metric(out);
  using Labels = std::vector<std::pair<std::string, std::string>>;
  const auto of = [](const TrainerView& view) {
    return Labels{{"trainer", view.name}, {"machine", view.machine}};
  };

  metric.family("filo_run_round", "gauge", "The last round that closed.");
  metric.sample(static_cast<double>(run_.round));
  metric.family("filo_run_epoch", "gauge", "The epoch of the last round (1-based).");
  metric.sample(static_cast<double>(run_.epoch));
  metric.family("filo_run_epochs", "gauge", "Epochs the run trains.");
  metric.sample(static_cast<double>(run_.epochs));
  metric.family("filo_run_epoch_progress_ratio", "gauge", "Share of the epoch's samples trained so far.");
  metric.sample(run_.epoch_samples_total > 0 ? run_.epoch_samples_done / run_.epoch_samples_total : 0.0);
  metric.family("filo_run_loss", "gauge", "Mean training loss of the last round.");
  metric.sample(run_.loss);
  if (run_.test_accuracy) {
    metric.family("filo_run_test_accuracy", "gauge", "Test accuracy after the last evaluated epoch.");
    metric.sample(*run_.test_accuracy);
  }
  if (run_.test_perplexity) {
    metric.family("filo_run_test_perplexity", "gauge",
                  "Test perplexity after the last evaluated epoch (language models).");
    metric.sample(*run_.test_perplexity);
  }
  metric.family("filo_run_idle_ratio", "gauge",
                "Share of the last round trainers spent waiting for the slowest.");
  metric.sample(run_.idle_fraction);
  metric.family("filo_run_samples_total", "counter", "Samples aggregated in the rounds this monitor saw.");
  metric.sample(static_cast<double>(run_.samples));
  metric.family("filo_run_rounds_seen_total", "counter", "Rounds this monitor saw close.");
  metric.sample(static_cast<double>(run_.rounds_seen));
  metric.family("filo_run_finished", "gauge", "1 once the run has finished.");
  metric.sample(run_.finished ? 1.0 : 0.0);
  if (!run_.dropped.empty()) {
    metric.family("filo_messages_dropped_total", "counter", "Messages the coordinator refused, by reason.");
    for (const auto& [reason, count] : run_.dropped) metric.sample(count, {{"reason", reason}});
  }
  if (run_.pair) {
    const msg::PairStatus& pair = *run_.pair;
    metric.family("filo_pair_peer_up", "gauge",
                  "1 while the active coordinator hears its standby, passive and holding replicas.");
    metric.sample(pair.peer_state == "passive" ? 1.0 : 0.0, {{"active", pair.active}, {"peer", pair.peer}});
    metric.family("filo_pair_peer_behind_rounds", "gauge",
                  "Rounds the standby's newest checkpoint is behind the active's last round.");
    metric.sample(static_cast<double>(pair.round - std::min(pair.round, pair.peer_round)));
    metric.family("filo_pair_failovers_total", "counter", "Takeovers by a standby coordinator in this run.");
    metric.sample(static_cast<double>(pair.failovers));
    metric.family("filo_pair_replica_seconds", "gauge",
                  "What one checkpoint replica cost the active coordinator, on average.");
    metric.sample(pair.replica_milliseconds / 1000.0);
  }
  metric.family("filo_monitor_events_total", "counter", "Events this monitor received.");
  metric.sample(static_cast<double>(events_seen_));
  if (trainers_.empty()) return out.str();

  metric.family("filo_trainer_info", "gauge", "A trainer's machine, host, device and precision (always 1).");
  for (const auto& [name, view] : trainers_) {
    metric.sample(1.0, {{"trainer", name},
                        {"machine", view.machine},
                        {"host", view.host},
                        {"device", view.device},
                        {"precision", view.precision}});
  }
  metric.family("filo_trainer_state", "gauge", "1 for the trainer's current state, 0 for the others.");
  for (const auto& [name, view] : trainers_) {
    for (auto state :
         {TrainerState::kTraining, TrainerState::kLost, TrainerState::kLeft, TrainerState::kRejected,
          TrainerState::kLeftOut, TrainerState::kFailed, TrainerState::kTakenOut, TrainerState::kExcluded}) {
      metric.sample(view.state == state ? 1.0 : 0.0, {{"trainer", name}, {"state", state_name(state)}});
    }
  }
  const auto per_trainer = [&](const std::string& family, const std::string& type, const std::string& help,
                               auto value_of) {
    metric.family(family, type, help);
    for (const auto& [name, view] : trainers_) metric.sample(value_of(view), of(view));
  };
  per_trainer("filo_trainer_samples_per_second", "gauge",
              "Samples/s the trainer computed in its last delivered round.",
              [](const TrainerView& v) { return v.samples_per_second; });
  per_trainer("filo_trainer_recent_samples_per_second", "gauge",
              "Samples/s over the trainer's last 10 delivered rounds (samples / compute seconds).",
              [](const TrainerView& v) { return v.recent_samples_per_second; });
  per_trainer("filo_trainer_planned_samples", "gauge", "Samples planned for the trainer in the last round.",
              [](const TrainerView& v) { return v.planned_samples; });
  per_trainer("filo_trainer_share_ratio", "gauge", "The trainer's planned share of the last round's samples.",
              [](const TrainerView& v) { return v.share; });
  per_trainer("filo_trainer_idle_seconds", "gauge",
              "Seconds the trainer waited for the slowest in its last delivered round.",
              [](const TrainerView& v) { return v.idle_seconds; });
  per_trainer("filo_trainer_idle_seconds_total", "counter",
              "Seconds the trainer waited for the slowest, all rounds seen.",
              [](const TrainerView& v) { return v.idle_seconds_total; });
  per_trainer("filo_trainer_rounds_delivered_total", "counter",
              "Rounds whose share the trainer delivered in time.",
              [](const TrainerView& v) { return static_cast<double>(v.rounds_delivered); });
  per_trainer("filo_trainer_rounds_missed_total", "counter",
              "Rounds that closed without the trainer's share.",
              [](const TrainerView& v) { return static_cast<double>(v.rounds_missed); });
  per_trainer("filo_trainer_samples_total", "counter", "Samples the trainer delivered.",
              [](const TrainerView& v) { return static_cast<double>(v.samples); });
  per_trainer("filo_trainer_rejoins_total", "counter", "Times the trainer came back after it was lost.",
              [](const TrainerView& v) { return static_cast<double>(v.rejoins); });
  metric.family("filo_trainer_heartbeat_age_seconds", "gauge",
                "Seconds since the registrar last heard the trainer.");
  for (const auto& [name, view] : trainers_)
    if (auto age = heartbeat_age(view, now)) metric.sample(*age, of(view));
  metric.family("filo_trainer_seconds_since_delivery", "gauge",
                "Seconds since the trainer's last delivered round.");
  for (const auto& [name, view] : trainers_)
    if (view.last_delivery_at >= 0) metric.sample(now - view.last_delivery_at, of(view));
  metric.family("filo_trainer_peak_memory_bytes", "gauge",
                "The trainer's peak device memory in its last round.");
  for (const auto& [name, view] : trainers_)
    if (view.peak_memory_bytes) metric.sample(*view.peak_memory_bytes, of(view));
  return out.str();
}

std::string FleetState::table_text(double now) const {
  std::ostringstream out;
  const double fraction =
      run_.epoch_samples_total > 0 ? run_.epoch_samples_done / run_.epoch_samples_total : 0.0;
  const int filled = std::clamp(static_cast<int>(fraction * kTableBarWidth), 0, kTableBarWidth);
  out << "round " << run_.round << "  epoch " << run_.epoch << "/" << run_.epochs << " ["
      << std::string(filled, '#') << std::string(kTableBarWidth - filled, '.') << "] " << std::setw(3)
      << static_cast<int>(fraction * 100) << "%  loss " << std::fixed << std::setprecision(3) << run_.loss
      << "  idle " << static_cast<int>(run_.idle_fraction * 100) << "%";
  if (run_.test_accuracy) out << "  test accuracy " << std::setprecision(4) << *run_.test_accuracy;
  if (run_.test_perplexity) out << "  test perplexity " << std::setprecision(2) << *run_.test_perplexity;
  if (run_.finished) out << "  finished";
  out << "\n";
  if (run_.pair) out << run_.pair->text << "\n";
  out << std::left << std::setw(26) << "trainer" << std::setw(14) << "machine" << std::setw(8) << "device"
      << std::setw(10) << "state" << std::right << std::setw(7) << "share" << std::setw(11) << "samples/s"
      << std::setw(8) << "idle s" << std::setw(11) << "heartbeat" << std::setw(10) << "delivered"
      << std::setw(8) << "missed"
      << "  note\n";
  for (const auto& [name, view] : trainers_) {
    const auto age = heartbeat_age(view, now);
    std::ostringstream heartbeat;
    if (age)
      heartbeat << std::fixed << std::setprecision(1) << *age << " s";
    else
      heartbeat << "-";
    std::string note = view.reason;
    if (view.rejoins > 0)
      note = "rejoined x" + std::to_string(view.rejoins) + (note.empty() ? "" : "; " + note);
    out << std::left << std::setw(26) << name << std::setw(14) << view.machine << std::setw(8) << view.device
        << std::setw(10) << state_name(view.state) << std::right << std::setw(6)
        << static_cast<int>(view.share * 100 + 0.5) << "%" << std::setw(11)
        << static_cast<long long>(view.recent_samples_per_second + 0.5) << std::setw(8)
        << std::setprecision(2) << view.idle_seconds << std::setw(11) << heartbeat.str() << std::setw(10)
        << view.rounds_delivered << std::setw(8) << view.rounds_missed << "  " << note << "\n";
  }
  return out.str();
}

}  // namespace filo
