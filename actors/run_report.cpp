#include "actors/run_report.hpp"

#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <stdexcept>

#include "actors/fleet_state.hpp"
#include "actors/learning/task.hpp"
#include "actors/web_assets.hpp"
#include "runtime/run_record.hpp"

namespace filo {
namespace {
std::string asset_text(const char* name) {
  const WebAsset* asset = find_web_asset(name);
  if (asset == nullptr) throw std::logic_error(std::string("web asset missing from the build: ") + name);
  return std::string(asset->bytes);
}

void replace_once(std::string& text, const std::string& from, const std::string& to) {
  const auto at = text.find(from);
  if (at == std::string::npos) throw std::logic_error("the dashboard page lacks '" + from + "'");
  text.replace(at, from.size(), to);
}

std::vector<nlohmann::json> read_json_lines(const std::string& path) {
  std::vector<nlohmann::json> lines;
  std::ifstream file(path);
  for (std::string line; std::getline(file, line);) {
    if (line.empty()) continue;
    // A run killed mid-write leaves a torn last line: what came before it still counts.
    auto parsed = nlohmann::json::parse(line, nullptr, false);
    if (!parsed.is_discarded()) lines.push_back(std::move(parsed));
  }
  return lines;
}

}  // namespace

nlohmann::json run_state_from_directory(const std::string& run_dir) {
  const std::string rounds_path = run_dir + "/rounds.jsonl";
  if (!std::filesystem::exists(rounds_path))
    throw std::runtime_error(rounds_path + " does not exist: is " + run_dir + " a run directory?");
  nlohmann::json summary = nlohmann::json::object();
  if (std::ifstream file{run_dir + "/summary.json"}) {
    summary = nlohmann::json::parse(file, nullptr, false);
    if (summary.is_discarded()) summary = nlohmann::json::object();
  }
  const std::vector<nlohmann::json> rounds = read_json_lines(rounds_path);
  const std::vector<nlohmann::json> recorded = read_json_lines(run_dir + "/events.jsonl");

  // Recorded membership and fault events go in after the last round that preceded them in the
  // recording; rounds, epochs and the end come from the run's own record, which is complete. A line
  // that is not an event of this version is left out.
  std::multimap<std::uint64_t, msg::AnyEvent> events_after_round;
  std::uint64_t last_round = 0;
  for (const auto& line : recorded) {
    msg::AnyEvent event;
    try {
      event = msg::event_from_json(line);
    } catch (const std::exception&) {
      continue;
    }
    if (const auto* round = std::get_if<msg::RoundClosed>(&event))
      last_round = round->round;
    else if (!std::holds_alternative<msg::EpochScored>(event) &&
             !std::holds_alternative<msg::RunEnded>(event))
      events_after_round.emplace(last_round, std::move(event));
  }

  const std::string metric = summary.value("metric", std::string("test_accuracy"));
  const auto figures = summary.value(metric + "_per_epoch", std::vector<double>{});
  const auto epochs = summary.contains("epochs") ? summary.at("epochs").get<std::uint64_t>()
                      : rounds.empty()           ? std::uint64_t{0}
                                                 : rounds.back().value("epoch", std::uint64_t{0});
  const auto epoch_total = summary.value("train_samples", std::uint64_t{0});
  FleetState fleet;
  const auto apply_events_after = [&](std::uint64_t round, double time) {
    const auto [from, to] = events_after_round.equal_range(round);
    for (auto it = from; it != to; ++it) fleet.apply(it->second, time);
    events_after_round.erase(from, to);
  };
  const auto end_epoch = [&](std::uint64_t epoch, std::uint64_t round, std::uint64_t samples, double time) {
    msg::EpochScored scored;
    scored.epoch = epoch;
    scored.epochs = epochs;
    scored.round = round;
    scored.samples = samples;
    scored.metric = metric;
    scored.text = "epoch " + std::to_string(epoch) + ": " + std::to_string(samples) + " samples";
    if (epoch >= 1 && epoch <= figures.size()) {
      scored.value = figures[epoch - 1];
      scored.text += ", " + metric_words(metric) + " " + std::to_string(figures[epoch - 1]);
    } else {
      scored.metric.clear();  // not scored: no figure to show
    }
    fleet.apply(scored, time);
  };

  apply_events_after(0, 0.0);
  double time_offset = 0.0;  // closed_seconds restarts with each coordinator start
  double last_closed = 0.0;
  double time = 0.0;
  std::uint64_t epoch = 0;
  std::uint64_t epoch_done = 0;
  for (const auto& line : rounds) {
    msg::RoundClosed round;
    try {
      round = msg::round_from_record(line);
    } catch (const std::exception&) {
      continue;  // a line of another version: the report shows what it can read
    }
    if (epoch != 0 && round.epoch != epoch) {
      end_epoch(epoch, round.round - 1, epoch_done, time);
      epoch_done = 0;
    }
    epoch = round.epoch;
    const double closed =
        line.contains("closed_seconds") ? round.closed_seconds : last_closed + round.seconds;
    if (closed < last_closed) time_offset += last_closed;
    last_closed = closed;
    time = time_offset + closed;
    epoch_done += round.samples;
    round.epoch_samples_done = epoch_done;
    round.epoch_samples_total = epoch_total;
    round.epochs = epochs;
    fleet.apply(round, time);
    apply_events_after(round.round, time);
  }
  for (auto& [round, event] : events_after_round)
    fleet.apply(event, time);  // after rounds no longer on record
  if (epoch != 0 && !summary.empty()) end_epoch(epoch, fleet.run().round, epoch_done, time);
  if (!summary.empty()) {
    msg::RunEnded finished;
    finished.rounds = summary.value("rounds", std::uint64_t{0});
    finished.metric = metric;
    finished.value = summary.value("final_" + metric, 0.0);
    finished.wall_seconds = summary.value("wall_seconds", 0.0);
    finished.run_dir = run_dir;
    finished.text = "run finished: " + metric_words(metric) + " " + std::to_string(finished.value) +
                    " after " + std::to_string(finished.rounds) + " rounds in " +
                    std::to_string(finished.wall_seconds) + " s";
    fleet.apply(finished, time);
  }

  nlohmann::json state = fleet.to_json(time);
  state["mode"] = "report";
  state["run_dir"] = std::filesystem::absolute(run_dir).lexically_normal().string();
  state["written"] = utc_now("%Y-%m-%d %H:%M UTC");
  state["wall_seconds"] = summary.value("wall_seconds", time);
  state["summary"] = summary;
  state["events_recorded"] = !recorded.empty();
  return state;
}

std::string report_html(const nlohmann::json& state) {
  std::string page = asset_text("index.html");
  // ASCII-only JSON with "</" broken up cannot end the inline script early.
  std::string data = state.dump(-1, ' ', true);
  for (std::size_t at = data.find("</"); at != std::string::npos; at = data.find("</", at + 3))
    data.replace(at, 2, "<\\/");
  replace_once(page, "<title>filo dashboard</title>", "<title>filo run report</title>");
  replace_once(page, "<link rel=\"stylesheet\" href=\"dashboard.css\">",
               "<style>\n" + asset_text("dashboard.css") + "</style>");
  replace_once(page, "<script src=\"dashboard.js\"></script>",
               "<script>window.FILO_STATE = " + data + ";</script>\n<script>\n" + asset_text("dashboard.js") +
                   "</script>");
  return page;
}

std::string write_run_report(const std::string& run_dir, const std::string& output) {
  const std::string path = output.empty() ? run_dir + "/report.html" : output;
  write_file_atomically(path, report_html(run_state_from_directory(run_dir)));
  return path;
}

}  // namespace filo
