// Cluster balance: how close filo's scheduler gets a fleet of unequal trainers to the ideal, in
// one run. It measures each trainer alone (its solo throughput), then the cluster with filo's
// proportional split and with an equal split, each a real `filo local` run of separate processes,
// and prints cluster throughput ÷ the sum of the solo throughputs, plus the per-round idle
// fraction and finish spread. Where trainers share CPUs (as `filo local` on a small machine does),
// each runs slower in the cluster than alone; so it also prints throughput ÷ the sum of the
// speeds the trainers measured inside that same run, which isolates the scheduler's share of
// the loss from the machine's.
//
//   build/cluster_balance [--slowdowns 1,2,4] [--samples 60000] [--round-samples 4096]
//                         [--node-cpus 0/1/1 --coordinator-cpus 1]
//
// --node-cpus pins the cluster runs' node i to the i-th CPU list (and --coordinator-cpus the
// coordinator), standing in for separate machines as far as the cores allow: on 2 cores, the
// fastest trainer gets a core of its own. Solo runs are never pinned: each has the whole machine,
// so the ideal is the most a trainer ever did.
//
// Throughput counts the rounds after the third (calibration and the first measured rounds
// settle shares), from the close of round 3 to the close of the last, so that the time between
// rounds (step, broadcast, planning) is included.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <map>
#include <sstream>

#include <nlohmann/json.hpp>

#include "runtime/config.hpp"
#include "runtime/process.hpp"

using namespace filo;
using nlohmann::json;

namespace {
constexpr std::size_t kSettleRounds = 3;
constexpr double kSpreadTarget = 0.10;  // trainers should finish within 10% of the round time
constexpr std::chrono::minutes kRunTimeout{20};

struct RunFigures {
  double samples_per_second = 0.0;
  double idle_fraction = 0.0;  // mean over rounds: time trainers wait for the slowest ÷ round time
  double finish_spread = 0.0;  // mean over rounds: (last arrival − first arrival) ÷ round time
  std::size_t rounds_spread_under_target = 0;  // rounds whose finish spread is under kSpreadTarget
  double sum_of_trainer_speeds = 0.0;          // each trainer's samples ÷ compute seconds in this run
  std::size_t rounds = 0;
};

RunFigures figures_of(const std::string& rounds_path) {
  std::ifstream file(rounds_path);
  std::vector<json> rounds;
  for (std::string line; std::getline(file, line);) rounds.push_back(json::parse(line));
  if (rounds.size() <= kSettleRounds + 1) {
    throw std::runtime_error(rounds_path + " has " + std::to_string(rounds.size()) +
                             " rounds; give the benchmark more --samples");
  }
  RunFigures figures;
  double samples = 0.0;
  std::map<std::string, std::pair<double, double>> per_trainer;  // samples, compute seconds
  for (std::size_t r = kSettleRounds; r < rounds.size(); ++r) {
    const json& round = rounds[r];
    for (const auto& trainer : round.at("trainers")) {
      auto& [trainer_samples, trainer_seconds] = per_trainer[trainer.at("name").get<std::string>()];
      trainer_samples += trainer.at("samples").get<double>();
      trainer_seconds += trainer.at("compute_seconds").get<double>();
    }
    samples += round.at("samples").get<double>();
    figures.idle_fraction += round.at("idle_fraction").get<double>();
    double first = 1e300, last = 0.0;
    for (const auto& trainer : round.at("trainers")) {
      if (!trainer.at("delivered").get<bool>()) continue;
      first = std::min(first, trainer.at("arrival_seconds").get<double>());
      last = std::max(last, trainer.at("arrival_seconds").get<double>());
    }
    if (last >= first) {
      const double spread = (last - first) / round.at("seconds").get<double>();
      figures.finish_spread += spread;
      if (spread < kSpreadTarget) ++figures.rounds_spread_under_target;
    }
    ++figures.rounds;
  }
  // Round kSettleRounds (0-based) is the fourth: its samples were trained after the third closed.
  const double seconds = rounds.back().at("closed_seconds").get<double>() -
                         rounds[kSettleRounds - 1].at("closed_seconds").get<double>();
  figures.samples_per_second = samples / seconds;
  for (const auto& [name, totals] : per_trainer) {
    if (totals.second > 0) figures.sum_of_trainer_speeds += totals.first / totals.second;
  }
  figures.idle_fraction /= static_cast<double>(figures.rounds);
  figures.finish_spread /= static_cast<double>(figures.rounds);
  return figures;
}

RunFigures run_local(const std::string& run_dir, const std::string& slowdowns, std::size_t nodes,
                     const std::vector<std::string>& settings) {
  std::filesystem::remove_all(run_dir);
  std::filesystem::create_directories(run_dir);
  std::vector<std::string> arguments{FILO_BINARY,   "local",   "--nodes",     std::to_string(nodes),
                                     "--slowdowns", slowdowns, "--epochs",    "1",
                                     "--run-dir",   run_dir,   "--log-level", "warn"};
  for (const auto& setting : settings) arguments.insert(arguments.end(), {"--set", setting});
  ChildProcess local(arguments, run_dir + "/local.log");
  const auto code = local.wait_for(kRunTimeout);
  if (code != std::optional<int>(0)) {
    throw std::runtime_error("filo local failed (exit " +
                             (code ? std::to_string(*code) : std::string("timeout")) + "); see " + run_dir +
                             "/local.log");
  }
  return figures_of(run_dir + "/rounds.jsonl");
}
}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"cluster balance: solo vs cluster throughput, proportional vs equal split"};
  std::string slowdowns_text = "1,2,4";
  // Defaults: the whole training set in 4096-sample rounds, so that each trainer's share is many
  // micro-batches and the time between rounds is a few percent of a round.
  std::int64_t samples = 60000;
  std::int64_t round_samples = 4096;
  std::string run_root = "/tmp/filo-cluster-balance";
  app.add_option("--slowdowns", slowdowns_text, "one trainer per factor (TEST AID slowdowns)");
  app.add_option("--samples", samples, "training samples per run (one epoch)");
  app.add_option("--round-samples", round_samples, "samples per round (global batch)");
  app.add_option("--run-root", run_root, "where the runs' directories go");
  std::string node_cpus;
  std::string coordinator_cpus;
  app.add_option("--node-cpus", node_cpus, "cluster runs: pin node i to the i-th CPU list, e.g. 0/1/1");
  app.add_option("--coordinator-cpus", coordinator_cpus, "cluster runs: pin the coordinator, e.g. 1");
  CLI11_PARSE(app, argc, argv);
  try {
    const std::vector<double> slowdowns = parse_slowdowns(slowdowns_text);
    const std::vector<std::string> settings{"data.train_limit=" + std::to_string(samples),
                                            "data.test_limit=500",
                                            "schedule.round_samples=" + std::to_string(round_samples)};
    std::cout << "cluster balance: " << slowdowns.size() << " trainers at slowdowns " << slowdowns_text
              << ", " << samples << " samples, " << round_samples << " per round; rounds after the "
              << kSettleRounds << "rd counted";
    if (!node_cpus.empty()) std::cout << "; cluster nodes pinned to " << node_cpus;
    if (!coordinator_cpus.empty()) std::cout << ", coordinator to " << coordinator_cpus;
    std::cout << "\n\n";
    double ideal = 0.0;
    std::cout << std::left << std::setw(34) << "run" << std::right << std::setw(12) << "samples/s"
              << std::setw(12) << "÷ ideal" << std::setw(14) << "idle frac." << std::setw(16)
              << "finish spread" << std::setw(16) << "rounds < 0.10" << std::setw(22)
              << "÷ in-run trainer sum"
              << "\n";
    std::cout << std::fixed;
    for (std::size_t i = 0; i < slowdowns.size(); ++i) {
      std::ostringstream factor;
      factor << slowdowns[i];
      const RunFigures solo =
          run_local(run_root + "/solo-" + std::to_string(i + 1), factor.str(), 1, settings);
      ideal += solo.samples_per_second;
      std::cout << std::left << std::setw(34) << ("solo, slowdown " + factor.str()) << std::right
                << std::setw(12) << std::setprecision(0) << solo.samples_per_second << "\n";
    }
    std::cout << std::left << std::setw(34) << "ideal (sum of solos)" << std::right << std::setw(12) << ideal
              << "\n";
    for (const char* split : {"proportional", "equal"}) {
      std::vector<std::string> run_settings = settings;
      run_settings.push_back(std::string("schedule.split=") + split);
      if (!node_cpus.empty()) run_settings.push_back("local.node_cpus=" + node_cpus);
      if (!coordinator_cpus.empty()) run_settings.push_back("run.cpus=" + coordinator_cpus);
      const RunFigures cluster =
          run_local(run_root + "/cluster-" + split, slowdowns_text, slowdowns.size(), run_settings);
      std::cout << std::left << std::setw(34) << (std::string("cluster, ") + split + " split") << std::right
                << std::setw(12) << std::setprecision(0) << cluster.samples_per_second << std::setw(12)
                << std::setprecision(2) << cluster.samples_per_second / ideal << std::setw(14)
                << cluster.idle_fraction << std::setw(16) << cluster.finish_spread << std::setw(16)
                << (std::to_string(cluster.rounds_spread_under_target) + "/" + std::to_string(cluster.rounds))
                << std::setw(22) << cluster.samples_per_second / cluster.sum_of_trainer_speeds << "\n";
    }
    std::cout << "\nruns: " << run_root << "/*/rounds.jsonl" << std::endl;
  } catch (const std::exception& e) {
    std::cerr << "cluster_balance: " << e.what() << std::endl;
    return 1;
  }
  return 0;
}
