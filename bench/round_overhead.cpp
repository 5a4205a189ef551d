// Time between rounds: how much of a round no trainer computes. It runs the default `filo local`
// and, side by side, the same run with --nodes 3 (the default before filo local started one node
// per CPU on machines with fewer than 3), or reads finished run directories with --from; for each
// run it prints, from the run's own record:
//
//   the measure of the issue that set the goal: a round's wall time (training seconds ÷ rounds;
//   training ends with the last round, before the final evaluation) minus its slowest trainer's
//   compute time, as a fraction of the round's wall time;
//
//   where the last trainer to arrive spent its round (it is the one the round waits for): the
//   scheduler's turn between a close and the next plans, the wait for the new model (plan in,
//   combine, step and broadcast), its compute, staging its contribution into send buffers, and the
//   hops (plan in, contribution to the aggregator, the aggregator's report to the scheduler);
//
//   the aggregator's combine, step and publish times (inside the trainers' wait for the model),
//   and the training time to the first epoch at or above --accuracy.
//
//   build/round_overhead [--epochs 3] [--versus-nodes 3|0] [--set section.key=value ...]
//                        [--from RUN_DIR ...]
#include <CLI/CLI.hpp>
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <optional>
#include <sstream>

#include <unistd.h>
#include <nlohmann/json.hpp>

#include "runtime/config.hpp"
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

/// One run's figures, read from its summary.json and rounds.jsonl.
struct RunFigures {
  std::string label;
  std::size_t rounds = 0;
  std::size_t trainers = 0;
  double training_seconds = 0.0;
  double wall = 0.0;     // a round's wall time
  double slowest = 0.0;  // its slowest trainer's compute
  double final_accuracy = 0.0;
  std::optional<std::pair<std::size_t, double>> goal_reached;  // epoch, training seconds
};

/// Prints the figures of the run in `run_dir` and returns them.
RunFigures analyse(const std::string& run_dir, const std::string& label, double accuracy_goal) {
  const json summary = read_json(run_dir + "/summary.json");
  std::vector<json> rounds;
  {
    std::ifstream file(run_dir + "/rounds.jsonl");
    for (std::string line; std::getline(file, line);) rounds.push_back(json::parse(line));
  }
  if (rounds.size() < 2) throw std::runtime_error(run_dir + "/rounds.jsonl has fewer than 2 rounds");

  RunFigures figures;
  figures.label = label;
  figures.rounds = rounds.size();
  figures.trainers = summary.value("nodes", json::array()).size();
  figures.training_seconds = summary.at("training_seconds").get<double>();
  figures.final_accuracy = summary.value("final_test_accuracy", 0.0);
  figures.wall = figures.training_seconds / static_cast<double>(rounds.size());
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
  figures.slowest = slowest_sum / static_cast<double>(rounds.size());
  const double wall = figures.wall;
  const double between = wall - figures.slowest;

  std::cout << std::fixed;
  std::cout << "\n== " << label << ": " << run_dir << ", " << figures.trainers << " trainers, "
            << rounds.size() << " rounds, " << std::setprecision(1) << figures.training_seconds
            << " s of training, final test accuracy " << std::setprecision(4) << figures.final_accuracy
            << "\n\n";
  std::cout << std::setprecision(2) << "round wall time (training seconds / rounds)   " << wall / kMillisecond
            << " ms\n"
            << "slowest trainer's compute, mean              " << figures.slowest / kMillisecond << " ms\n"
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
            << timing.value("publish_seconds", 0.0) / kMillisecond
            << "; after the publish, scoring directions " << timing.value("score_seconds", 0.0) / kMillisecond
            << "\n";
  const auto accuracies = summary.value("test_accuracy_per_epoch", std::vector<double>{});
  const auto ends = summary.value("epoch_end_seconds", std::vector<double>{});
  for (std::size_t epoch = 0; epoch < accuracies.size() && epoch < ends.size(); ++epoch) {
    if (accuracies[epoch] >= accuracy_goal) {
      std::cout << "\ntest accuracy " << std::setprecision(4) << accuracies[epoch] << " >= " << accuracy_goal
                << " after epoch " << epoch + 1 << ", at " << std::setprecision(1) << ends[epoch]
                << " s of training\n";
      figures.goal_reached = std::make_pair(epoch + 1, ends[epoch]);
      break;
    }
  }
  return figures;
}

/// Runs `filo local` into a fresh directory; returns the directory, or nothing when it failed.
std::optional<std::string> run_local(const std::string& name, const std::string& epochs,
                                     const std::vector<std::string>& extra) {
  const std::string run_dir = (std::filesystem::temp_directory_path() /
                               ("filo-round-overhead-" + std::to_string(getpid()) + "-" + name))
                                  .string();
  std::filesystem::remove_all(run_dir);
  std::filesystem::create_directories(run_dir);
  std::vector<std::string> arguments{FILO_BINARY, "local", "--epochs", epochs, "--run-dir", run_dir};
  arguments.insert(arguments.end(), extra.begin(), extra.end());
  std::cout << "running filo local (" << name << ", " << epochs << " epochs) into " << run_dir << " ..."
            << std::endl;
  ChildProcess local(arguments, run_dir + "-local.log");
  if (local.wait_for(kRunTimeout) != std::optional<int>(0)) {
    std::cerr << "round_overhead: filo local failed; see " << run_dir << "-local.log" << std::endl;
    return std::nullopt;
  }
  return run_dir;
}
}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"time between rounds on the default filo local run, with its breakdown"};
  std::vector<std::string> from;
  std::string epochs = "3";
  std::vector<std::string> settings;
  double accuracy_goal = 0.88;
  int versus_nodes = kDefaultLocalNodes;
  app.add_option("--from", from, "read these finished run directories instead of running filo local");
  app.add_option("--epochs", epochs, "epochs of the filo local runs");
  app.add_option("--set", settings, "configuration override for the runs, section.key=value (repeatable)");
  app.add_option("--accuracy", accuracy_goal,
                 "report the training time to the first epoch at this test accuracy");
  app.add_option("--versus-nodes", versus_nodes,
                 "also run --nodes N, side by side, when the default starts fewer (0: do not)");
  CLI11_PARSE(app, argc, argv);

  std::vector<RunFigures> runs;
  if (!from.empty()) {
    for (const auto& run_dir : from) runs.push_back(analyse(run_dir, run_dir, accuracy_goal));
  } else {
    std::vector<std::string> extra;
    for (const auto& setting : settings) extra.insert(extra.end(), {"--set", setting});
    const auto defaults = run_local("default", epochs, extra);
    if (!defaults) return 1;
    runs.push_back(analyse(*defaults, "default filo local", accuracy_goal));
    if (versus_nodes > 0 && runs.front().trainers < static_cast<std::size_t>(versus_nodes)) {
      extra.insert(extra.end(), {"--nodes", std::to_string(versus_nodes)});
      const auto versus = run_local(std::to_string(versus_nodes) + "-nodes", epochs, extra);
      if (!versus) return 1;
      runs.push_back(analyse(*versus, "--nodes " + std::to_string(versus_nodes), accuracy_goal));
    }
  }
  if (runs.size() > 1) {
    std::ostringstream to_goal;
    to_goal << "to " << std::fixed << std::setprecision(2) << accuracy_goal << ", s";
    std::cout << "\nside by side (between: time between rounds, as a fraction of round time):\n"
              << std::left << std::setw(22) << "run" << std::right << std::setw(9) << "trainers"
              << std::setw(11) << "round ms" << std::setw(13) << "between" << std::setw(22) << to_goal.str()
              << std::setw(11) << "final acc"
              << "\n";
    for (const auto& run : runs) {
      std::ostringstream reached;
      if (run.goal_reached) {
        reached << std::fixed << std::setprecision(1) << run.goal_reached->second << " (epoch "
                << run.goal_reached->first << ")";
      } else {
        reached << "not reached";
      }
      std::cout << std::left << std::setw(22) << run.label << std::right << std::setw(9) << run.trainers
                << std::setw(11) << std::setprecision(2) << run.wall / kMillisecond << std::setw(13)
                << std::setprecision(3) << (run.wall - run.slowest) / run.wall << std::setw(22)
                << reached.str() << std::setw(11) << std::setprecision(4) << run.final_accuracy << "\n";
    }
  }
  return 0;
}
