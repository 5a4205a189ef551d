#pragma once
// Line-oriented logging to stderr: one line per call, prefixed with time, level and who speaks.
#include <sstream>
#include <string>
#include <string_view>

namespace filo {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

/// Sets the lowest level that is printed (process-wide; the CLI sets it once from --log-level).
void set_log_level(LogLevel level);
LogLevel log_level();
/// Parses "debug", "info", "warn" or "error"; throws std::invalid_argument naming the value.
LogLevel parse_log_level(std::string_view text);

/// `text` with every control character (newline, carriage return, escape...) written as \xNN, so
/// that a name from the network cannot forge a log line or move a terminal's cursor.
std::string printable(std::string_view text);

/// Writes one line; who and text pass through printable() first.
void write_log_line(LogLevel level, std::string_view who, const std::string& text);

template <typename... Parts>
void log(LogLevel level, std::string_view who, const Parts&... parts) {
  if (level < log_level()) return;
  std::ostringstream line;
  (line << ... << parts);
  write_log_line(level, who, line.str());
}

}  // namespace filo
