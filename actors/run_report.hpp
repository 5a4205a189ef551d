#pragma once
// `filo report`: the dashboard's page for a finished run, drawn from its run directory and written
// as one self-contained HTML file (style, script and data inlined; nothing loaded from elsewhere).
#include <string>

#include <nlohmann/json.hpp>

namespace filo {

/// The dashboard's state of the run in `run_dir`, replayed from rounds.jsonl and summary.json,
/// with membership and fault events from events.jsonl where a monitor recorded one. Throws
/// std::runtime_error naming what is missing.
nlohmann::json run_state_from_directory(const std::string& run_dir);

/// The dashboard page with `state` inlined.
std::string report_html(const nlohmann::json& state);

/// Writes the report of `run_dir` to `output` (default RUN_DIR/report.html); returns the path.
std::string write_run_report(const std::string& run_dir, const std::string& output = {});

}  // namespace filo
