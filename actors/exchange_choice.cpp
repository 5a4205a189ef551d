#include "actors/exchange_choice.hpp"

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <sstream>

namespace filo {
namespace {

std::string milliseconds(double seconds) {
  std::ostringstream text;
  text << std::fixed << std::setprecision(seconds < 0.01 ? 2 : 0) << seconds * 1000 << " ms";
  return text.str();
}

std::string ratio(double value) {
  std::ostringstream text;
  text << std::setprecision(2) << value;
  return text.str();
}

std::uint64_t next_power_of_two(double value) {
  std::uint64_t power = 1;
  while (static_cast<double>(power) < value && power < kMaxAutoSyncSteps) power *= 2;
  return power;
}

}  // namespace

std::string Exchange::describe(const std::string& compression) const {
  if (!local) return "gradient";
  return "local-sgd" + (compressed ? " " + compression : std::string()) + " x" + std::to_string(sync_steps);
}

ExchangeChoice choose_exchange(const ExchangeRule& rule, const Exchange& current,
                               const std::vector<LinkMeasure>& fleet) {
  ExchangeChoice choice;
  choice.exchange = current;
  if (choice.exchange.sync_steps == 0)
    choice.exchange.sync_steps = std::max<std::uint64_t>(1, rule.first_sync_steps);
  double speed = 0.0;
  const LinkMeasure* slowest_whole = nullptr;
  const LinkMeasure* slowest_local = nullptr;
  for (const auto& measure : fleet) {
    if (measure.samples_per_second > 0 && std::isfinite(measure.samples_per_second))
      speed += measure.samples_per_second;
    if (measure.whole_model_seconds > 0 &&
        (!slowest_whole || measure.whole_model_seconds > slowest_whole->whole_model_seconds))
      slowest_whole = &measure;
    if (measure.local_exchange_seconds > 0 &&
        (!slowest_local || measure.local_exchange_seconds > slowest_local->local_exchange_seconds))
      slowest_local = &measure;
  }
  if (!(speed > 0)) {
    choice.reason = "no trainer's speed is known yet";
    return choice;
  }
  // Shares follow speed, so every trainer computes for the same time: the round's samples over the
  // fleet's speed.
  const double gradient_compute = static_cast<double>(rule.gradient_round_samples) / speed;
  std::string gradient_why;
  if (slowest_whole && gradient_compute > 0) {
    choice.gradient_fraction = 2 * slowest_whole->whole_model_seconds / gradient_compute;
    gradient_why = "gradient mode moves the whole model both ways each round: " +
                   milliseconds(2 * slowest_whole->whole_model_seconds) + " on " + slowest_whole->trainer +
                   "'s link against " + milliseconds(gradient_compute) + " of compute (" +
                   ratio(*choice.gradient_fraction) + ", the limit " + ratio(rule.fraction) + ")";
  }
  Exchange& next = choice.exchange;
  if (!rule.allow_gradient) {
    next.local = true;
  } else if (!choice.gradient_fraction) {
    choice.reason = "no link measured yet: " + std::string(current.local ? "local-sgd" : "gradient mode") +
                    " until one is";
  } else if (current.local && *choice.gradient_fraction <= kReturnShare * rule.fraction) {
    next.local = false;
    choice.reason = gradient_why + ": gradient mode";
  } else if (!current.local && *choice.gradient_fraction > rule.fraction) {
    next.local = true;
    choice.reason = gradient_why + ": local-sgd";
  } else {
    choice.reason = gradient_why;
  }
  next.compressed = next.local && rule.compression;
  if (!next.local) return choice;

  // The sync interval: a local-sgd round computes sync_steps micro-batches on every trainer.
  const double local_compute = static_cast<double>(fleet.size() * next.sync_steps * rule.micro_batch) / speed;
  if (current.local && slowest_local && local_compute > 0) {
    choice.local_fraction = slowest_local->local_exchange_seconds / local_compute;
    const std::string local_why = "a local-sgd round's exchange took " +
                                  milliseconds(slowest_local->local_exchange_seconds) + " on " +
                                  slowest_local->trainer + "'s link against " + milliseconds(local_compute) +
                                  " of compute (" + ratio(*choice.local_fraction) + ")";
    if (rule.sync_steps_auto && *choice.local_fraction > rule.fraction &&
        next.sync_steps < kMaxAutoSyncSteps) {
      next.sync_steps = std::min(
          kMaxAutoSyncSteps,
          next_power_of_two(static_cast<double>(next.sync_steps) * *choice.local_fraction / rule.fraction));
      choice.reason += (choice.reason.empty() ? "" : "; ") + local_why + ": sync interval " +
                       std::to_string(current.sync_steps) + " -> " + std::to_string(next.sync_steps);
    } else if (rule.sync_steps_auto && *choice.local_fraction < rule.fraction / 4 && next.sync_steps > 1) {
      next.sync_steps = next.sync_steps / 2;
      choice.reason += (choice.reason.empty() ? "" : "; ") + local_why + ": sync interval " +
                       std::to_string(current.sync_steps) + " -> " + std::to_string(next.sync_steps);
    }
  }
  return choice;
}

}  // namespace filo
