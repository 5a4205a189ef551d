#include "actors/run_state.hpp"

#include <stdexcept>

namespace filo {
namespace {
std::vector<TrainerFailure> failures_from_json(const nlohmann::json& list) {
  std::vector<TrainerFailure> failures;
  for (const auto& failure : list) {
    failures.push_back({failure.at("trainer").get<std::string>(), failure.at("round").get<std::uint64_t>(),
                        failure.at("reason").get<std::string>()});
  }
  return failures;
}
}  // namespace

nlohmann::json ranges_json(const std::vector<msg::SampleRange>& ranges) {
  nlohmann::json list = nlohmann::json::array();
  for (const auto& range : ranges) list.push_back({range.begin, range.end});
  return list;
}

nlohmann::json failures_json(const std::vector<TrainerFailure>& failures) {
  nlohmann::json list = nlohmann::json::array();
  for (const auto& failure : failures)
    list.push_back({{"trainer", failure.trainer}, {"round", failure.round}, {"reason", failure.reason}});
  return list;
}

nlohmann::json exchanges_json(const std::vector<ExchangeRecord>& exchanges) {
  nlohmann::json records = nlohmann::json::array();
  for (const auto& record : exchanges) {
    records.push_back({{"round", record.round}, {"exchange", record.exchange}, {"reason", record.reason}});
  }
  return records;
}

nlohmann::json failovers_json(const std::vector<FailoverRecord>& failovers) {
  nlohmann::json records = nlohmann::json::array();
  for (const auto& record : failovers) {
    records.push_back({{"after_round", record.after_round},
                       {"coordinator_start", record.coordinator_start},
                       {"at", record.at},
                       {"reason", record.reason},
                       {"peer_silent_seconds", record.peer_silent_seconds},
                       {"to_first_round_seconds", record.to_first_round_seconds}});
  }
  return records;
}

nlohmann::json to_json(const RunState& state) {
  nlohmann::json totals = nlohmann::json::object();
  for (const auto& [trainer, total] : state.totals) {
    totals[trainer] = {{"samples", total.samples},
                       {"compute_seconds", total.compute_seconds},
                       {"rounds_delivered", total.rounds_delivered},
                       {"rounds_missed", total.rounds_missed}};
  }
  return {{"epoch", state.epoch},
          {"round", state.round},
          {"model_version", state.model_version},
          {"trained", ranges_json(state.trained)},
          {"epoch_samples", state.epoch_samples},
          {"epoch_loss_sum", state.epoch_loss_sum},
          {"epoch_correct", state.epoch_correct},
          {"samples_per_epoch", state.samples_per_epoch},
          {"train_loss_per_epoch", state.train_loss_per_epoch},
          {"test_metric_per_epoch", state.test_metric_per_epoch},
          {"epoch_end_seconds", state.epoch_end_seconds},
          {"totals", totals},
          {"training_seconds", state.training_seconds},
          {"last_round_record", state.last_round_record},
          {"loss_scale", state.loss_scale},
          {"good_steps", state.good_steps},
          {"failures", failures_json(state.failures)},
          {"exclusions", failures_json(state.exclusions)},
          {"exchange",
           {{"local", state.exchange.local},
            {"compressed", state.exchange.compressed},
            {"sync_steps", state.exchange.sync_steps}}},
          {"exchanges", exchanges_json(state.exchanges)},
          {"failovers", failovers_json(state.failovers)},
          {"measured_speeds", state.measured_speeds}};
}

RunState run_state_from_json(const nlohmann::json& json) {
  RunState state;
  try {
    state.epoch = json.at("epoch").get<std::uint64_t>();
    state.round = json.at("round").get<std::uint64_t>();
    state.model_version = json.at("model_version").get<std::uint64_t>();
    for (const auto& range : json.at("trained")) {
      state.trained.push_back({range.at(0).get<std::uint64_t>(), range.at(1).get<std::uint64_t>()});
    }
    state.epoch_samples = json.at("epoch_samples").get<std::uint64_t>();
    state.epoch_loss_sum = json.at("epoch_loss_sum").get<double>();
    state.epoch_correct = json.at("epoch_correct").get<std::uint64_t>();
    state.samples_per_epoch = json.at("samples_per_epoch").get<std::vector<std::uint64_t>>();
    state.train_loss_per_epoch = json.at("train_loss_per_epoch").get<std::vector<double>>();
    state.test_metric_per_epoch = json.at("test_metric_per_epoch").get<std::vector<double>>();
    state.epoch_end_seconds = json.at("epoch_end_seconds").get<std::vector<double>>();
    for (const auto& [trainer, total] : json.at("totals").items()) {
      state.totals[trainer] = TrainerTotals{
          total.at("samples").get<std::uint64_t>(), total.at("compute_seconds").get<double>(),
          total.at("rounds_delivered").get<std::uint64_t>(), total.at("rounds_missed").get<std::uint64_t>()};
    }
    state.training_seconds = json.at("training_seconds").get<double>();
    state.last_round_record = json.at("last_round_record").get<std::string>();
    state.loss_scale = json.value("loss_scale", 0.0);
    state.good_steps = json.value("good_steps", std::uint64_t{0});
    state.failures = failures_from_json(json.value("failures", nlohmann::json::array()));
    state.exclusions = failures_from_json(json.value("exclusions", nlohmann::json::array()));
    if (json.contains("exchange")) {  // older checkpoints have none: the run's configured one
      const auto& exchange = json.at("exchange");
      state.exchange.local = exchange.at("local").get<bool>();
      state.exchange.compressed = exchange.at("compressed").get<bool>();
      state.exchange.sync_steps = exchange.at("sync_steps").get<std::uint64_t>();
    }
    for (const auto& record : json.value("exchanges", nlohmann::json::array())) {
      state.exchanges.push_back({record.at("round").get<std::uint64_t>(),
                                 record.at("exchange").get<std::string>(),
                                 record.at("reason").get<std::string>()});
    }
    for (const auto& record : json.value("failovers", nlohmann::json::array())) {
      state.failovers.push_back({record.at("after_round").get<std::uint64_t>(),
                                 record.at("coordinator_start").get<std::uint64_t>(),
                                 record.at("at").get<std::string>(), record.at("reason").get<std::string>(),
                                 record.at("peer_silent_seconds").get<double>(),
                                 record.at("to_first_round_seconds").get<double>()});
    }
    state.measured_speeds =
        json.value("measured_speeds", nlohmann::json::object()).get<std::map<std::string, double>>();
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(std::string("run state in the checkpoint is malformed: ") + e.what());
  }
  return state;
}

}  // namespace filo
