// Time between rounds: how much of a round no trainer computes. It runs the default `filo local`
// (or reads a finished run directory with --from) and prints, from the run's own record:
//
//   the measure of the issue that set the goal: a round's wall time (training seconds ÷ rounds)
//   minus its slowest trainer's compute time, as a fraction of the round's wall time;
//
//   where the last trainer to arrive spent its round (it is the one the round waits for): the
//   scheduler's turn between a close and the next plans, the wait for the new model (plan in,
//   combine, step and broadcast), its compute, staging its contribution into send buffers, and the
//   hops (plan in, contribution to the aggregator, the aggregator's report to the scheduler);
//
//   the aggregator's combine, step and publish times (inside the trainers' wait for the model),
//   and the training time to the first epoch at or above --accuracy.
//
//   build/round_overhead [--epochs 3] [--set section.key=value ...] [--from RUN_DIR]
#include <CLI/CLI.hpp>
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>

#include <nlohmann/json.hpp>

#include "runtime/process.hpp"

using namespace filo;
using nlohmann::json;

namespace {
constexpr std::chrono::minutes kRunTimeout{30};
constexpr double kMillisecond = 1e-3;

struct Part {
  const char* what;
  double sum = 0.0;
};

json read_json(const std::string& path) {
  std::ifstream file(path);
  if (!file) throw std::runtime_error("cannot read " + path);
  return json::parse(file);
}
}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"time between rounds on the default filo local run, with its breakdown"};
  std::string from;
  std::string epochs = "3";
  std::vector<std::string> settings;
  double accuracy_goal = 0.88;
  app.add_option("--from", from, "read this finished run directory instead of running filo local");
  app.add_option("--epochs", epochs, "epochs of the filo local run");
  app.add_option("--set", settings, "configuration override for the run, section.key=value (repeatable)");
  app.add_option("--accuracy", accuracy_goal,
                 "report the training time to the first epoch at this test accuracy");
  CLI11_PARSE(app, argc, argv);

  std::string run_dir = from;
  if (run_dir.empty()) {
    run_dir = (std::filesystem::temp_directory_path() / ("filo-round-overhead-" + std::to_string(getpid())))
                  .string();
    std::filesystem::remove_all(run_dir);
    std::filesystem::create_directories(run_dir);
    std::vector<std::string> arguments{FILO_BINARY, "local", "--epochs", epochs, "--run-dir", run_dir};
    for (const auto& setting : settings) arguments.insert(arguments.end(), {"--set", setting});
    std::cout << "running filo local (" << epochs << " epochs) into " << run_dir << " ..." << std::endl;
    ChildProcess local(arguments, run_dir + "-local.log");
    const auto code = local.wait_for(kRunTimeout);
    if (code != std::optional<int>(0)) {
      std::cerr << "round_overhead: filo local failed; see " << run_dir << "-local.log" << std::endl;
      return 1;
    }
  }

  const json summary = read_json(run_dir + "/summary.json");
  std::vector<json> rounds;
  {
    std::ifstream file(run_dir + "/rounds.jsonl");
    for (std::string line; std::getline(file, line);) rounds.push_back(json::parse(line));
  }
  if (rounds.size() < 2) throw std::runtime_error(run_dir + "/rounds.jsonl has fewer than 2 rounds");

  const double training_seconds = summary.at("training_seconds").get<double>();
  const double wall = training_seconds / static_cast<double>(rounds.size());
  double slowest_sum = 0.0;
  Part close_to_plan{"scheduler: from a round's close to the next plans going out"};
  Part model_wait{"last trainer: plan in hand, waiting for the new model"};
  Part compute{"last trainer: compute"};
  Part staging{"last trainer: copying its contribution into send buffers"};
  Part hops{"hops: plan in, contribution to the aggregator, its report to the scheduler"};
  double previous_close = 0.0;
  std::size_t measured = 0;
  for (const auto& round : rounds) {
    double slowest = 0.0;
    const json* last = nullptr;
    for (const auto& trainer : round.at("trainers")) {
      if (!trainer.value("delivered", false)) continue;
      slowest = std::max(slowest, trainer.at("compute_seconds").get<double>());
      if (!last || trainer.at("arrival_seconds").get<double>() > last->at("arrival_seconds").get<double>()) {
        last = &trainer;
      }
    }
    slowest_sum += slowest;
    const double closed = round.at("closed_seconds").get<double>();
    const double seconds = round.at("seconds").get<double>();
    if (last != nullptr && measured + 1 < rounds.size()) {
      // The first round is timed from the run's start; from the second on, close to close.
      if (round.at("round").get<std::uint64_t>() > rounds.front().at("round").get<std::uint64_t>()) {
        close_to_plan.sum += std::max(0.0, closed - previous_close - seconds);
        const double arrival = last->at("arrival_seconds").get<double>();
        const double waited = last->value("model_wait_seconds", 0.0);
        const double computed = last->at("compute_seconds").get<double>();
        const double staged = last->value("staging_seconds", 0.0);
        model_wait.sum += waited;
        compute.sum += computed;
        staging.sum += staged;
        hops.sum += std::max(0.0, arrival - waited - computed - staged);
        ++measured;
      }
    }
    previous_close = closed;
  }
  const double slowest = slowest_sum / static_cast<double>(rounds.size());
  const double between = wall - slowest;

  std::cout << std::fixed;
  std::cout << "run " << run_dir << ": " << rounds.size() << " rounds, " << std::setprecision(1)
            << training_seconds << " s of training, final test accuracy " << std::setprecision(4)
            << summary.value("final_test_accuracy", 0.0) << "\n\n";
  std::cout << std::setprecision(2) << "round wall time (training seconds / rounds)   " << wall / kMillisecond
            << " ms\n"
            << "slowest trainer's compute, mean              " << slowest / kMillisecond << " ms\n"
            << "time between rounds                          " << between / kMillisecond
            << " ms = " << std::setprecision(3) << between / wall
            << " of round time (goal: at most 0.10)\n\n";
  std::cout << "where the last trainer to arrive spent its round, mean over " << measured
            << " rounds (ms):\n";
  for (const Part* part : {&close_to_plan, &model_wait, &compute, &staging, &hops}) {
    std::cout << "  " << std::left << std::setw(78) << part->what << std::right << std::setw(8)
              << std::setprecision(3)
              << part->sum / static_cast<double>(std::max<std::size_t>(1, measured)) / kMillisecond << "\n";
  }
  const json timing = summary.value("aggregator_timing", json::object());
  std::cout << "inside the wait for the model, the aggregator's (ms): combine "
            << timing.value("combine_seconds", 0.0) / kMillisecond << ", step "
            << timing.value("step_seconds", 0.0) / kMillisecond << ", publish "
            << timing.value("publish_seconds", 0.0) / kMillisecond << "\n";
  const auto accuracies = summary.value("test_accuracy_per_epoch", std::vector<double>{});
  const auto ends = summary.value("epoch_end_seconds", std::vector<double>{});
  for (std::size_t epoch = 0; epoch < accuracies.size() && epoch < ends.size(); ++epoch) {
    if (accuracies[epoch] >= accuracy_goal) {
      std::cout << "\ntest accuracy " << std::setprecision(4) << accuracies[epoch] << " >= " << accuracy_goal
                << " after epoch " << epoch + 1 << ", at " << std::setprecision(1) << ends[epoch]
                << " s of training\n";
      break;
    }
  }
  return 0;
}
