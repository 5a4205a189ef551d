// Whole clusters of real processes of the filo binary, over tcp loopback.
#include <doctest/doctest.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <random>
#include <set>
#include <thread>

#include <torch/cuda.h>
#include <unistd.h>
#include <nlohmann/json.hpp>

#include "runtime/keys.hpp"
#include "runtime/process.hpp"

using namespace filo;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {
constexpr auto kRunTimeout = 300s;

std::string fresh_run_dir(const std::string& name) {
  const std::string path = "/tmp/filo-test-" + name + "-" + std::to_string(getpid());
  std::filesystem::remove_all(path);
  std::filesystem::create_directories(path + "/logs");
  return path;
}

/// A fleet's keys in run_dir/keys, as `filo keys fleet` writes them; the setting that points every
/// process of the test at them (each finds its own key by its role).
std::string fleet_keys(const std::string& run_dir) {
  const std::string keys_dir = run_dir + "/keys";
  if (!std::filesystem::exists(keys_dir)) write_fleet_keys(keys_dir);
  return "security.keys_dir=" + keys_dir;
}

std::vector<std::string> with_overrides(std::vector<std::string> arguments,
                                        const std::vector<std::string>& overrides) {
  for (const auto& assignment : overrides) arguments.insert(arguments.end(), {"--set", assignment});
  return arguments;
}

std::size_t count_lines(const std::string& path) {
  std::ifstream file(path);
  std::size_t lines = 0;
  for (std::string line; std::getline(file, line);) ++lines;
  return lines;
}

std::string read_file(const std::string& path) {
  std::ifstream file(path);
  return std::string(std::istreambuf_iterator<char>(file), {});
}

/// A token file as data.format = "tokens" reads it: uint16 ids, back to back.
void write_tokens(const std::string& path, const std::vector<std::uint16_t>& ids) {
  std::ofstream(path, std::ios::binary)
      .write(reinterpret_cast<const char*>(ids.data()), static_cast<std::streamsize>(ids.size() * 2));
}

/// `filo local` with 2 nodes training the built-in gpt on the token files in run_dir/tokens into
/// run_dir/run, with `settings` (section.key=value) on top; it logs to run_dir/local.log.
ChildProcess gpt_on_tokens(const std::string& run_dir, const std::string& epochs,
                           const std::vector<std::string>& settings) {
  std::vector<std::string> arguments{FILO_BINARY, "local",     "--nodes",        "2",     "--epochs",
                                     epochs,      "--run-dir", run_dir + "/run", "--web", "off"};
  for (const auto& setting :
       std::vector<std::string>{"model.name=gpt", "model.task=language_model", "data.format=tokens",
                                "data.path=" + run_dir + "/tokens"})
    arguments.insert(arguments.end(), {"--set", setting});
  for (const auto& setting : settings) arguments.insert(arguments.end(), {"--set", setting});
  return ChildProcess(arguments, run_dir + "/local.log");
}

/// A coordinator and named nodes, each a separate process, each logging to run_dir/logs.
struct Cluster {
  std::string run_dir;
  std::vector<std::string> overrides;
  std::optional<ChildProcess> coordinator;
  std::map<std::string, ChildProcess> nodes;
  std::string router;

  Cluster(std::string dir, std::vector<std::string> settings)
      : run_dir(std::move(dir)), overrides(std::move(settings)) {
    overrides.insert(overrides.begin(), fleet_keys(run_dir));
    coordinator.emplace(
        with_overrides({FILO_BINARY, "coordinator", "--listen", "tcp://127.0.0.1:*", "--run-dir", run_dir},
                       overrides),
        run_dir + "/logs/coordinator.log");
    const auto deadline = std::chrono::steady_clock::now() + 60s;
    while (!std::filesystem::exists(run_dir + "/coordinator.json")) {
      REQUIRE_MESSAGE(coordinator->running(), read_file(run_dir + "/logs/coordinator.log"));
      REQUIRE(std::chrono::steady_clock::now() < deadline);
      std::this_thread::sleep_for(20ms);
    }
    json endpoints;
    std::ifstream(run_dir + "/coordinator.json") >> endpoints;
    router = endpoints.at("router");
  }

  void start_node(const std::string& name) {
    nodes.emplace(
        name, ChildProcess(
                  with_overrides({FILO_BINARY, "node", "--coordinator", router, "--name", name}, overrides),
                  run_dir + "/logs/" + name + ".log"));
  }

  json summary() const {
    json parsed;
    std::ifstream(run_dir + "/summary.json") >> parsed;
    return parsed;
  }
};
}  // namespace

TEST_CASE("a coordinator and 3 trainer processes over tcp train well above chance") {
  Cluster cluster(fresh_run_dir("e2e"), {"data.train_limit=3000", "data.test_limit=1000", "schedule.epochs=2",
                                         "schedule.min_trainers=3"});
  for (const char* name : {"node-1", "node-2", "node-3"}) cluster.start_node(name);
  const auto code = cluster.coordinator->wait_for(kRunTimeout);
  REQUIRE_MESSAGE(code, "coordinator did not finish");
  REQUIRE_MESSAGE(*code == 0, read_file(cluster.run_dir + "/logs/coordinator.log"));
  for (auto& [name, node] : cluster.nodes) {
    const auto node_code = node.wait_for(30s);
    REQUIRE(node_code);
    CHECK_MESSAGE(*node_code == 0, name, " exited with ", *node_code);
  }
  const json summary = cluster.summary();
  CHECK(summary.at("final_test_accuracy").get<double>() > 0.5);  // chance is 0.1
  CHECK(summary.at("samples_per_epoch") == json::array({3000, 3000}));
  CHECK(summary.at("epochs") == 2);
  std::uint64_t node_samples = 0;
  for (const auto& node : summary.at("nodes")) {
    CHECK(node.at("samples").get<std::uint64_t>() > 0);  // every node took part
    node_samples += node.at("samples").get<std::uint64_t>();
  }
  CHECK(node_samples == 6000);
  CHECK(count_lines(cluster.run_dir + "/rounds.jsonl") == summary.at("rounds").get<std::size_t>());
  CHECK(std::filesystem::exists(summary.at("model_file").get<std::string>()));

  // The saved model loads back and scores what the run reported.
  const std::string eval_log = cluster.run_dir + "/logs/eval.log";
  ChildProcess eval(
      {FILO_BINARY, "eval", summary.at("model_file").get<std::string>(), "--set", "data.test_limit=1000"},
      eval_log);
  REQUIRE(eval.wait_for(120s) == std::optional<int>(0));
  const json evaluated = json::parse(read_file(eval_log));
  CHECK(evaluated.at("test_accuracy").get<double>() ==
        doctest::Approx(summary.at("final_test_accuracy").get<double>()));
}

TEST_CASE(
    "nodes whose model file is gone train the coordinator's scripted model, sent to them over the bus") {
  const std::string run_dir = fresh_run_dir("model-sent");
  const std::string model_dir = run_dir + "/only-on-the-coordinator";
  std::filesystem::create_directories(model_dir);
  const std::string script = run_dir + "/write_model.py";
  std::ofstream(script) << R"(import sys, torch
class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 8, 5, stride=2)
        self.head = torch.nn.Linear(8 * 12 * 12, 10)
    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).flatten(1))
torch.manual_seed(1)
torch.jit.script(Net()).save(sys.argv[1])
)";
  ChildProcess writer({"/usr/bin/python3", script, model_dir + "/net.pt"}, run_dir + "/write.log");
  REQUIRE_MESSAGE(writer.wait_for(120s) == std::optional<int>(0), read_file(run_dir + "/write.log"));
  // Every process gets the same settings, model.path included; the file goes once the coordinator
  // has read it, so a node that opened it would fail.
  Cluster cluster(run_dir, {"model.path=" + model_dir + "/net.pt", "data.train_limit=3000",
                            "data.test_limit=500", "schedule.epochs=1", "schedule.min_trainers=2"});
  std::filesystem::remove_all(model_dir);
  for (const char* name : {"node-1", "node-2"}) cluster.start_node(name);
  const auto code = cluster.coordinator->wait_for(kRunTimeout);
  REQUIRE(code);
  REQUIRE_MESSAGE(*code == 0, read_file(cluster.run_dir + "/logs/coordinator.log"));
  const json summary = cluster.summary();
  CHECK(summary.at("final_test_accuracy").get<double>() > 0.5);  // chance is 0.1
  for (const auto& node : summary.at("nodes")) CHECK(node.at("samples").get<std::uint64_t>() > 0);
  // The result is the user's module: its own attribute names, loadable without the original file.
  const auto tensors = read_file(run_dir + "/model.safetensors");
  CHECK(tensors.find("conv.weight") != std::string::npos);
  CHECK(tensors.find("head.weight") != std::string::npos);
}

TEST_CASE("a trainer killed during the run costs only its share: the others finish every epoch") {
  Cluster cluster(fresh_run_dir("kill"), {"data.train_limit=4000", "data.test_limit=500", "schedule.epochs=2",
                                          "schedule.min_trainers=3", "schedule.round_samples=96"});
  for (const char* name : {"node-1", "node-2", "node-3"}) cluster.start_node(name);
  const std::string rounds = cluster.run_dir + "/rounds.jsonl";
  const auto deadline = std::chrono::steady_clock::now() + 120s;
  while (count_lines(rounds) < 8) {
    REQUIRE(std::chrono::steady_clock::now() < deadline);
    std::this_thread::sleep_for(10ms);
  }
  cluster.nodes.at("node-2").signal(SIGKILL);

  const auto code = cluster.coordinator->wait_for(kRunTimeout);
  REQUIRE_MESSAGE(code, "coordinator hung after a trainer was killed");
  REQUIRE_MESSAGE(*code == 0, read_file(cluster.run_dir + "/logs/coordinator.log"));
  CHECK(cluster.nodes.at("node-1").wait_for(30s) == std::optional<int>(0));
  CHECK(cluster.nodes.at("node-3").wait_for(30s) == std::optional<int>(0));
  CHECK(cluster.nodes.at("node-2").wait_for(1s) == std::optional<int>(128 + SIGKILL));

  const json summary = cluster.summary();
  CHECK(summary.at("samples_per_epoch") == json::array({4000, 4000}));
  std::map<std::string, std::uint64_t> per_node;
  for (const auto& node : summary.at("nodes")) per_node[node.at("name")] = node.at("samples");
  CHECK(per_node["node-2"] < per_node["node-1"]);
  CHECK(per_node["node-1"] + per_node["node-2"] + per_node["node-3"] == 8000);
  CHECK(summary.at("final_test_accuracy").get<double>() > 0.4);
  // The round the killed trainer was in closed without it, and its samples were trained by others.
  bool missed = false;
  std::ifstream file(rounds);
  for (std::string line; std::getline(file, line);) {
    const json round = json::parse(line);
    for (const auto& trainer : round.at("trainers")) missed |= !trainer.at("delivered").get<bool>();
  }
  CHECK(missed);
  CHECK(read_file(cluster.run_dir + "/logs/coordinator.log").find("trainer@node-2/cpu lost") !=
        std::string::npos);
}

TEST_CASE("a node configured with a slower heartbeat follows the coordinator's and is never declared lost") {
  Cluster cluster(fresh_run_dir("heartbeat"),
                  {"data.train_limit=2000", "data.test_limit=200", "schedule.epochs=1",
                   "bus.heartbeat_interval_ms=150", "bus.liveness=3"});
  // Its own interval (1.5 s) alone would miss the coordinator's 0.45 s timeout three times over.
  cluster.nodes.emplace("node-1", ChildProcess({FILO_BINARY, "node", "--coordinator", cluster.router,
                                                "--name", "node-1", "--set", "bus.heartbeat_interval_ms=1500",
                                                "--set", fleet_keys(cluster.run_dir)},
                                               cluster.run_dir + "/logs/node-1.log"));
  const auto code = cluster.coordinator->wait_for(kRunTimeout);
  REQUIRE_MESSAGE(code == std::optional<int>(0), read_file(cluster.run_dir + "/logs/coordinator.log"));
  CHECK(cluster.nodes.at("node-1").wait_for(30s) == std::optional<int>(0));
  const std::string log = read_file(cluster.run_dir + "/logs/coordinator.log");
  CHECK_MESSAGE(log.find("trainer@node-1/cpu lost") == std::string::npos, log);
}

TEST_CASE("a node that does not meet the admission policy is told why and exits 2") {
  Cluster cluster(fresh_run_dir("rejected"),
                  {"data.train_limit=500", "data.test_limit=100", "admission.required_precisions=bf16"});
  cluster.start_node("cpu-only");
  const auto code = cluster.nodes.at("cpu-only").wait_for(60s);
  REQUIRE(code);
  CHECK(*code == 2);
  CHECK(
      read_file(cluster.run_dir + "/logs/cpu-only.log").find("does not compute in required precision bf16") !=
      std::string::npos);
  CHECK(read_file(cluster.run_dir + "/logs/coordinator.log")
            .find("refused from trainer@cpu-only/cpu: admission: rejected") != std::string::npos);
  cluster.coordinator->stop(5s);
}

TEST_CASE("a node facing no coordinator gives up with a clear error") {
  const std::string run_dir = fresh_run_dir("unreachable");
  ChildProcess node({FILO_BINARY, "node", "--coordinator", "tcp://127.0.0.1:9", "--name", "lonely", "--set",
                     "bus.connect_timeout_seconds=1", "--set", fleet_keys(run_dir)},
                    run_dir + "/logs/node.log");
  CHECK(node.wait_for(60s) == std::optional<int>(3));
  CHECK(read_file(run_dir + "/logs/node.log").find("no answer from the coordinator at tcp://127.0.0.1:9") !=
        std::string::npos);
}

TEST_CASE("bad flags and configs and data paths are refused with what was wrong") {
  const std::string run_dir = fresh_run_dir("errors");
  const auto run = [&](std::vector<std::string> arguments) {
    const std::string log = run_dir + "/logs/out.log";
    std::filesystem::remove(log);
    ChildProcess process(arguments, log);
    const auto code = process.wait_for(60s);
    return std::make_pair(code.value_or(-1), read_file(log));
  };
  auto [code, text] = run({FILO_BINARY, "coordinator", "--set", "schedule.epochz=2"});
  CHECK(code == 2);
  CHECK(text.find("unknown configuration key 'schedule.epochz'") != std::string::npos);
  std::tie(code, text) =
      run({FILO_BINARY, "coordinator", "--set", "data.path=/nonexistent", "--run-dir", run_dir});
  CHECK(code == 1);
  CHECK(text.find("dataset file /nonexistent/train-") != std::string::npos);
  std::tie(code, text) = run({FILO_BINARY, "local", "--config", "/nonexistent.toml"});
  CHECK(code != 0);
  CHECK(text.find("/nonexistent.toml") != std::string::npos);
  std::tie(code, text) =
      run({FILO_BINARY, "coordinator", "--set", "model.name=resnet9000", "--run-dir", run_dir});
  CHECK(code == 1);
  CHECK(text.find("unknown model 'resnet9000'") != std::string::npos);
  // A test aid's value too, before the node reaches for any coordinator.
  std::tie(code, text) = run({FILO_BINARY, "node", "--coordinator", "tcp://127.0.0.1:9", "--set",
                              "security.curve=false", "--set", "node.lie=scale=-10,lazy"});
  CHECK(code == 2);
  CHECK(text.find("node.lie: 'lazy' is not one of") != std::string::npos);
}

TEST_CASE(
    "a trainer whose computation fails is out of the plans within a round, and the run still ends exact") {
  Cluster cluster(fresh_run_dir("failing-trainer"),
                  {"data.train_limit=2000", "data.test_limit=300", "schedule.epochs=1",
                   "schedule.min_trainers=2", "schedule.round_samples=128"});
  cluster.start_node("node-1");
  // The test aid throws inside node-2's computation of round 5, as a LibTorch or CUDA error would.
  cluster.nodes.emplace(
      "node-2", ChildProcess(with_overrides({FILO_BINARY, "node", "--coordinator", cluster.router, "--name",
                                             "node-2", "--set", "node.fail_at_round=5"},
                                            cluster.overrides),
                             cluster.run_dir + "/logs/node-2.log"));
  const auto code = cluster.coordinator->wait_for(kRunTimeout);
  REQUIRE_MESSAGE(code == std::optional<int>(0), read_file(cluster.run_dir + "/logs/coordinator.log"));
  CHECK(cluster.nodes.at("node-1").wait_for(30s) == std::optional<int>(0));
  // The failing node exits non-zero with the reason in its log.
  CHECK(cluster.nodes.at("node-2").wait_for(30s) == std::optional<int>(4));
  CHECK(read_file(cluster.run_dir + "/logs/node-2.log").find("fail_at_round") != std::string::npos);

  const json summary = cluster.summary();
  CHECK(summary.at("samples_per_epoch") == json::array({2000}));
  REQUIRE(summary.at("failures").size() == 1);
  CHECK(summary.at("failures").at(0).at("trainer") == "trainer@node-2/cpu");
  CHECK(summary.at("failures").at(0).at("round") == 5);
  CHECK(summary.at("failures").at(0).at("reason").get<std::string>().find("fail_at_round") !=
        std::string::npos);
  for (const auto& node : summary.at("nodes"))
    CHECK(node.contains("failure") == (node.at("name") == "node-2"));
  // Round 5 closed without node-2's share, for its failure, and no later round planned it.
  std::ifstream rounds(cluster.run_dir + "/rounds.jsonl");
  bool failed_round_seen = false;
  for (std::string line; std::getline(rounds, line);) {
    const json round = json::parse(line);
    for (const auto& trainer : round.at("trainers")) {
      if (trainer.at("name") != "trainer@node-2/cpu") continue;
      if (round.at("round") == 5) {
        failed_round_seen = true;
        CHECK_FALSE(trainer.at("delivered").get<bool>());
        CHECK(trainer.at("missed_reason").get<std::string>().find("failed") != std::string::npos);
      }
      CHECK_MESSAGE(round.at("round").get<int>() <= 5, "node-2 planned in round ", round.at("round"));
    }
  }
  CHECK(failed_round_seen);
}

TEST_CASE("a trainer whose every micro-batch takes three liveness windows trains a whole epoch, never lost") {
  // The liveness window is 0.1 s x 3; slowed 100x, a micro-batch of 32 takes about two seconds (a
  // slowed calibration's five micro-batches too, so they are kept small). The trainer computes on
  // its own thread and keeps answering heartbeats meanwhile.
  const std::string run_dir = fresh_run_dir("long-micro-batch");
  ChildProcess local({FILO_BINARY,   "local",
                      "--nodes",     "1",
                      "--slowdowns", "100",
                      "--epochs",    "1",
                      "--run-dir",   run_dir,
                      "--web",       "off",
                      "--set",       "data.train_limit=128",
                      "--set",       "data.test_limit=100",
                      "--set",       "schedule.round_samples=64",
                      "--set",       "schedule.micro_batch=32",
                      "--set",       "bus.heartbeat_interval_ms=100",
                      "--set",       "bus.liveness=3"},
                     run_dir + "/local.log");
  const auto code = local.wait_for(kRunTimeout);
  if (!code) local.stop(3s);
  REQUIRE_MESSAGE(code == std::optional<int>(0), read_file(run_dir + "/local.log"));
  json summary;
  std::ifstream(run_dir + "/summary.json") >> summary;
  CHECK(summary.at("samples_per_epoch") == json::array({128}));
  CHECK(summary.at("nodes").at(0).at("rounds_missed") == 0);
  std::ifstream rounds(run_dir + "/rounds.jsonl");
  for (std::string line; std::getline(rounds, line);) {
    const json trainer = json::parse(line).at("trainers").at(0);
    // The premise: two micro-batches of 32, each past three liveness windows (0.9 s).
    CHECK(trainer.at("compute_seconds").get<double>() >= 2 * 0.9);
  }
  const std::string log = read_file(run_dir + "/logs/coordinator.log");
  CHECK_MESSAGE(log.find(" lost") == std::string::npos, log);
  // Its micro-batches were the configured 32, not shrunk to fit the liveness window.
  CHECK(log.find("calibrated: ") != std::string::npos);
  CHECK_MESSAGE(log.find("at micro-batch 32") != std::string::npos, log);
  CHECK(log.find("at most ") == std::string::npos);  // no cap on its micro-batches
}

TEST_CASE(
    "with slowdowns 1 2 4 the faster trainers get larger shares and every sample is still trained once") {
  const std::string run_dir = fresh_run_dir("slowdowns");
  ChildProcess local(
      {FILO_BINARY, "local", "--slowdowns", "1,2,4", "--epochs", "1", "--run-dir", run_dir, "--set",
       "data.train_limit=6000", "--set", "data.test_limit=500", "--set", "schedule.round_samples=256"},
      run_dir + "/local.log");
  const auto code = local.wait_for(kRunTimeout);
  REQUIRE(code);
  REQUIRE_MESSAGE(*code == 0, read_file(run_dir + "/local.log"));
  std::map<std::string, double> planned;
  std::ifstream file(run_dir + "/rounds.jsonl");
  int round = 0;
  for (std::string line; std::getline(file, line);) {
    const json parsed = json::parse(line);
    if (++round <= 3) continue;  // shares settle after the first measured rounds
    for (const auto& trainer : parsed.at("trainers"))
      planned[trainer.at("name")] += trainer.at("planned").get<double>();
  }
  const double fast = planned["trainer@node-1/cpu"];
  const double medium = planned["trainer@node-2/cpu"];
  const double slow = planned["trainer@node-3/cpu"];
  INFO("planned after round 3: " << fast << " : " << medium << " : " << slow);
  CHECK(fast > medium);
  CHECK(medium > slow);
  CHECK(fast > 2 * slow);
  json summary;
  std::ifstream(run_dir + "/summary.json") >> summary;
  CHECK(summary.at("samples_per_epoch") == json::array({6000}));
}

TEST_CASE("a trainer whose share takes longer than the minimum deadline still delivers every round") {
  // Slowed 8x, 1024 samples take about 2 s or more here: past deadline_min_seconds (1 s).
  const std::string run_dir = fresh_run_dir("slow-share");
  ChildProcess local({FILO_BINARY, "local", "--nodes", "1", "--slowdowns", "8", "--epochs", "1", "--run-dir",
                      run_dir, "--set", "data.train_limit=2048", "--set", "data.test_limit=100", "--set",
                      "schedule.round_samples=1024", "--set", "schedule.deadline_min_seconds=1"},
                     run_dir + "/local.log");
  const auto code = local.wait_for(120s);
  if (!code) local.stop(3s);
  REQUIRE_MESSAGE(code == std::optional<int>(0), read_file(run_dir + "/local.log"));
  std::ifstream rounds(run_dir + "/rounds.jsonl");
  std::size_t delivered_rounds = 0;
  for (std::string line; std::getline(rounds, line);) {
    const json round = json::parse(line);
    CHECK(round.at("samples") == 1024);
    delivered_rounds += 1;
  }
  CHECK(delivered_rounds == 2);
}

TEST_CASE("filo local runs a whole cluster and writes its summary") {
  const std::string run_dir = fresh_run_dir("local");
  ChildProcess local({FILO_BINARY, "local", "--nodes", "2", "--epochs", "1", "--run-dir", run_dir, "--set",
                      "data.train_limit=2000", "--set", "data.test_limit=500"},
                     run_dir + "/local.log");
  const auto code = local.wait_for(kRunTimeout);
  REQUIRE(code);
  CHECK_MESSAGE(*code == 0, read_file(run_dir + "/local.log"));
  json summary;
  std::ifstream(run_dir + "/summary.json") >> summary;
  CHECK(summary.at("samples_per_epoch") == json::array({2000}));
  CHECK(summary.at("nodes").size() == 2);
  // Training ends with the last round; the final evaluation after it is counted apart.
  CHECK(summary.at("training_seconds").get<double>() == summary.at("epoch_end_seconds").back().get<double>());
  CHECK(summary.at("final_evaluation_seconds").get<double>() > 0.0);
  CHECK(read_file(run_dir + "/local.log").find("epoch 1/1") != std::string::npos);
  // The result loads in Python: model.safetensors read with the standard library and numpy alone
  // holds exactly what torch.jit.load(model.pt) holds, by name, with the run's normalisation.
  const std::string script = run_dir + "/check_results.py";
  std::ofstream(script) << R"(import json, struct, sys, numpy as np, torch
run = sys.argv[1]
raw = open(run + '/model.safetensors', 'rb').read()
length = struct.unpack('<Q', raw[:8])[0]
header = json.loads(raw[8:8 + length])
meta = header.pop('__metadata__')
dtypes = {'F32': np.float32, 'I64': np.int64, 'F64': np.float64}
module = torch.jit.load(run + '/model.pt')
expected = dict(module.named_parameters()); expected.update(dict(module.named_buffers()))
assert sorted(header) == sorted(expected), (sorted(header), sorted(expected))
for name, entry in header.items():
    start, end = entry['data_offsets']
    values = np.frombuffer(raw[8 + length + start:8 + length + end], dtype=dtypes[entry['dtype']]).reshape(entry['shape'])
    assert np.array_equal(values, expected[name].detach().numpy()), name
assert meta['task'] == 'classification' and len(json.loads(meta['mean'])) == 1, meta
print('ok', len(header), 'tensors')
)";
  ChildProcess python({"/usr/bin/python3", script, run_dir}, run_dir + "/check_results.log");
  CHECK_MESSAGE(python.wait_for(120s) == std::optional<int>(0), read_file(run_dir + "/check_results.log"));
  // filo eval scores either file alike, and refuses weights that do not fit the configured model.
  const auto evaluate = [&](const std::string& file, const std::string& model) {
    const std::string log =
        run_dir + "/eval-" + model + "-" + std::filesystem::path(file).extension().string() + ".log";
    ChildProcess eval({FILO_BINARY, "eval", run_dir + "/" + file, "--set", "data.test_limit=500", "--set",
                       "model.name=" + model},
                      log);
    const auto code = eval.wait_for(120s);
    const std::string text = read_file(log);
    const auto brace = text.rfind('{');
    return std::make_pair(code.value_or(-1),
                          brace == std::string::npos ? json() : json::parse(text.substr(brace)));
  };
  const auto [pt_code, from_pt] = evaluate("model.pt", "cnn");
  const auto [tensors_code, from_tensors] = evaluate("model.safetensors", "cnn");
  REQUIRE(pt_code == 0);
  REQUIRE(tensors_code == 0);
  CHECK(from_pt.at("test_accuracy") == from_tensors.at("test_accuracy"));
  CHECK(from_pt.at("test_accuracy").get<double>() ==
        doctest::Approx(summary.at("final_test_accuracy").get<double>()));
  CHECK(evaluate("model.safetensors", "mlp").first == 2);
}

TEST_CASE(
    "a Python-scripted module trained by 3 nodes at unequal shares steps as Python's large batch does, "
    "within "
    "1e-5") {
  // Python writes a module and a float dataset of exactly one round (96 samples), then, after filo
  // trained it for one round at slowdowns 1,2,4 (so the three shares differ), steps its own copy of
  // the module from the same weights on the whole batch and compares with filo's model.pt.
  const std::string run_dir = fresh_run_dir("python-step");
  const std::string script = run_dir + "/python_step.py";
  std::ofstream(script) << R"(import json, os, sys, numpy as np, torch
mode, out = sys.argv[1], sys.argv[2]
class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 6, 3, padding=1)
        self.hidden = torch.nn.Linear(6 * 4 * 4, 24)
        self.head = torch.nn.Linear(24, 5)
    def forward(self, x):
        x = torch.nn.functional.max_pool2d(torch.tanh(self.conv(x)), 2)
        return self.head(torch.relu(self.hidden(x.flatten(1))))
if mode == 'write':
    torch.manual_seed(7)
    torch.jit.script(Net()).save(out + '/net.pt')
    generator = np.random.default_rng(5)
    os.makedirs(out + '/data', exist_ok=True)
    for split, n in (('train', 96), ('test', 40)):
        np.save(f'{out}/data/{split}_inputs.npy', generator.standard_normal((n, 2, 8, 8), dtype=np.float32))
        np.save(f'{out}/data/{split}_labels.npy', generator.integers(0, 5, n).astype(np.int64))
else:
    module = torch.jit.load(out + '/net.pt')
    inputs = torch.from_numpy(np.load(out + '/data/train_inputs.npy'))
    labels = torch.from_numpy(np.load(out + '/data/train_labels.npy'))
    optimizer = torch.optim.SGD(module.parameters(), lr=0.5)
    torch.nn.functional.cross_entropy(module(inputs), labels).backward()
    optimizer.step()
    ours = dict(module.named_parameters())
    theirs = dict(torch.jit.load(out + '/run/model.pt').named_parameters())
    assert sorted(ours) == sorted(theirs), (sorted(ours), sorted(theirs))
    initial = dict(torch.jit.load(out + '/net.pt').named_parameters())
    worst = max(((ours[n] - theirs[n]).abs().max() / ours[n].abs().max()).item() for n in ours)
    moved = min(((ours[n] - initial[n]).abs().max() / ours[n].abs().max()).item() for n in ours)
    print(json.dumps({'max_relative_difference': worst, 'smallest_relative_step': moved}))
)";
  ChildProcess writer({"/usr/bin/python3", script, "write", run_dir}, run_dir + "/write.log");
  REQUIRE_MESSAGE(writer.wait_for(120s) == std::optional<int>(0), read_file(run_dir + "/write.log"));

  ChildProcess local(
      {FILO_BINARY, "local", "--nodes", "3", "--slowdowns", "1,2,4", "--epochs", "1", "--run-dir",
       run_dir + "/run", "--web", "off", "--set", "model.path=" + run_dir + "/net.pt", "--set",
       "data.format=numpy", "--set", "data.path=" + run_dir + "/data", "--set", "schedule.round_samples=96",
       // Exactly one large-batch step holds for the mean (README); centered clipping,
       // the default with 3 contributions, is robust instead.
       "--set", "robust.combine=mean", "--set", "schedule.micro_batch=8", "--set", "optimizer.name=sgd",
       "--set", "optimizer.learning_rate=0.5", "--set", "optimizer.momentum=0"},
      run_dir + "/local.log");
  const auto code = local.wait_for(kRunTimeout);
  REQUIRE(code);
  REQUIRE_MESSAGE(*code == 0, read_file(run_dir + "/local.log"));
  // One round, split three ways, unequally.
  REQUIRE(count_lines(run_dir + "/run/rounds.jsonl") == 1);
  const json round = json::parse(read_file(run_dir + "/run/rounds.jsonl"));
  std::set<std::int64_t> shares;
  for (const auto& trainer : round.at("trainers")) {
    CHECK(trainer.at("delivered").get<bool>());
    shares.insert(trainer.at("planned").get<std::int64_t>());
  }
  INFO(round.dump());
  CHECK(shares.size() == 3);
  CHECK(shares.count(0) == 0);

  ChildProcess compare({"/usr/bin/python3", script, "compare", run_dir}, run_dir + "/compare.log");
  const auto compared = compare.wait_for(120s);
  const std::string text = read_file(run_dir + "/compare.log");
  REQUIRE_MESSAGE(compared == std::optional<int>(0), text);
  const json figures = json::parse(text.substr(text.rfind('{')));
  INFO(figures.dump());
  CHECK(figures.at("max_relative_difference").get<double>() < 1e-5);
  CHECK(figures.at("smallest_relative_step").get<double>() > 1e-3);  // every tensor really moved
}

TEST_CASE("gpt on a token file: the training loss falls well below its start, and perplexity is reported") {
  // Token ids from a rule with noise: the next id is (7 * id + 3) mod 50 nine times in ten, any id
  // otherwise. A model that learns the rule gets a loss near 0.1 * ln 50 + 0.33 ≈ 0.7, from ln 50 ≈ 3.9.
  const std::string run_dir = fresh_run_dir("gpt");
  std::filesystem::create_directories(run_dir + "/tokens");
  std::mt19937 generator(11);
  for (const auto& [split, count] : {std::pair<std::string, int>{"train", 40000}, {"val", 8000}}) {
    std::vector<std::uint16_t> ids(count);
    std::uint16_t id = 1;
    for (auto& slot : ids) {
      id = generator() % 10 == 0 ? static_cast<std::uint16_t>(generator() % 50)
                                 : static_cast<std::uint16_t>((7 * id + 3) % 50);
      slot = id;
    }
    write_tokens(run_dir + "/tokens/" + split + ".bin", ids);
  }
  ChildProcess local = gpt_on_tokens(run_dir, "6",
                                     {"model.layers=2", "model.heads=2", "model.width=64", "data.context=32",
                                      "schedule.round_samples=64", "schedule.micro_batch=32"});
  const auto code = local.wait_for(kRunTimeout);
  REQUIRE(code);
  const std::string log = read_file(run_dir + "/local.log");
  REQUIRE_MESSAGE(*code == 0, log);
  std::vector<double> losses;
  std::ifstream rounds(run_dir + "/run/rounds.jsonl");
  for (std::string line; std::getline(rounds, line);)
    losses.push_back(json::parse(line).at("loss").get<double>());
  REQUIRE(losses.size() >= 30);
  const double start = losses.front();
  const double end = std::accumulate(losses.end() - 5, losses.end(), 0.0) / 5;
  INFO("loss of the first round " << start << ", mean of the last 5 " << end);
  CHECK(start > 3.0);  // about ln 50
  CHECK(end < 0.4 * start);
  // The task's own metric, in the summary and in what filo local prints.
  const json summary = json::parse(read_file(run_dir + "/run/summary.json"));
  CHECK(summary.at("metric") == "test_perplexity");
  CHECK(summary.at("test_perplexity_per_epoch").size() == 6);
  const double perplexity = summary.at("final_test_perplexity");
  CHECK(perplexity > 1.0);
  CHECK(perplexity < 4.0);  // against 50 for a model that learned nothing
  CHECK_FALSE(summary.contains("final_test_accuracy"));
  CHECK(log.find("test perplexity") != std::string::npos);
}

TEST_CASE(
    "a model whose micro-batch outlasts the liveness window trains at its configured size and no trainer is "
    "lost") {
  // A gpt of 3 M parameters over 128 tokens: a step of the configured 64 windows takes seconds on
  // one CPU thread, longer than the coordinator's 1 s window of heartbeats. Trainers compute on a
  // thread of their own and keep answering heartbeats meanwhile.
  const std::string run_dir = fresh_run_dir("long-steps");
  std::filesystem::create_directories(run_dir + "/tokens");
  for (const auto& [split, count] : {std::pair<std::string, int>{"train", 129 * 96}, {"val", 129 * 16}}) {
    std::vector<std::uint16_t> ids(count);
    for (int i = 0; i < count; ++i) ids[i] = static_cast<std::uint16_t>((i * 7) % 100);
    write_tokens(run_dir + "/tokens/" + split + ".bin", ids);
  }
  ChildProcess local = gpt_on_tokens(run_dir, "1",
                                     {"model.layers=4", "model.width=256", "data.context=128",
                                      "schedule.round_samples=96", "schedule.micro_batch=64"});
  const auto code = local.wait_for(kRunTimeout);
  REQUIRE(code);
  REQUIRE_MESSAGE(*code == 0, read_file(run_dir + "/local.log"));
  const std::string coordinator_log = read_file(run_dir + "/run/logs/coordinator.log");
  INFO(coordinator_log);
  CHECK(coordinator_log.find(" lost") == std::string::npos);
  CHECK(coordinator_log.find("per micro-batch") == std::string::npos);  // no cap on micro-batches
  CHECK(read_file(run_dir + "/run/logs/node-1.log").find("at micro-batch 64") != std::string::npos);
  const json summary = json::parse(read_file(run_dir + "/run/summary.json"));
  CHECK(summary.at("samples_per_epoch") == json::array({96}));
  for (const auto& node : summary.at("nodes")) CHECK(node.at("rounds_missed") == 0);
}

TEST_CASE(
    "a trainer slowed down mid-run through the bus gets a smaller share within 3 rounds, and an operator's "
    "readmit reaches the scheduler") {
  Cluster cluster(fresh_run_dir("slow-mid-run"),
                  {"data.train_limit=16000", "data.test_limit=200", "schedule.epochs=1",
                   "schedule.min_trainers=2", "schedule.round_samples=256", "schedule.max_transfer_ratio=0"});
  for (const char* name : {"node-1", "node-2"}) cluster.start_node(name);
  const std::string rounds = cluster.run_dir + "/rounds.jsonl";
  const auto deadline = std::chrono::steady_clock::now() + 120s;
  while (count_lines(rounds) < 8) {
    REQUIRE(std::chrono::steady_clock::now() < deadline);
    std::this_thread::sleep_for(10ms);
  }
  const std::size_t before = count_lines(rounds);
  ChildProcess aid({FILO_BINARY, "slowdown", "--coordinator", cluster.router, "--trainer",
                    "trainer@node-2/cpu", "--factor", "8", "--set", fleet_keys(cluster.run_dir)},
                   cluster.run_dir + "/logs/slowdown.log");
  REQUIRE(aid.wait_for(60s) == std::optional<int>(0));
  // The trainer takes the new factor by this round at the latest.
  const std::size_t sent = count_lines(rounds);
  // An operator's command crosses the same bus with the operator key: the scheduler receives it
  // and, node-1 not being excluded, refuses it by name (its consumer's tests are in test_rounds).
  ChildProcess readmit({FILO_BINARY, "readmit", "--coordinator", cluster.router, "--trainer",
                        "trainer@node-1/cpu", "--set", fleet_keys(cluster.run_dir)},
                       cluster.run_dir + "/logs/readmit.log");
  REQUIRE(readmit.wait_for(60s) == std::optional<int>(0));
  const auto code = cluster.coordinator->wait_for(kRunTimeout);
  REQUIRE(code == std::optional<int>(0));
  const json summary = json::parse(read_file(cluster.run_dir + "/summary.json"));
  CHECK(summary.at("dropped").value("readmit: not excluded", 0) == 1);
  CHECK(summary.at("dropped").value("bus: not permitted to its role", 0) == 0);

  std::vector<double> share;  // node-2's planned fraction of each round
  std::ifstream file(rounds);
  for (std::string line; std::getline(file, line);) {
    const json round = json::parse(line);
    double total = 0.0, slowed = 0.0;
    for (const auto& trainer : round.at("trainers")) {
      total += trainer.at("planned").get<double>();
      if (trainer.at("name") == "trainer@node-2/cpu") slowed = trainer.at("planned").get<double>();
    }
    share.push_back(total > 0 ? slowed / total : 0.0);
  }
  REQUIRE(share.size() > sent + 3);
  double baseline = 0.0;
  for (std::size_t r = 3; r < before; ++r) baseline += share[r];
  baseline /= static_cast<double>(before - 3);
  // Round numbers are 1-based, the vector 0-based: share[sent + 2] is round sent + 3. Factor 8,
  // not 4: with smoothing weight 0.3, three rounds move the estimate two thirds of the way, and at
  // 4x that lands near the 0.7 line on a machine whose CPU contention already swings speeds.
  INFO("node-2's share: " << baseline << " before the slowdown, " << share[sent + 2]
                          << " three rounds after it arrived");
  CHECK(share[sent + 2] < 0.7 * baseline);
  CHECK(read_file(cluster.run_dir + "/logs/node-2.log").find("slowdown 1 -> 8") != std::string::npos);
}

TEST_CASE("a node or coordinator asked for a GPU this machine lacks exits 2 naming the device") {
  const std::string run_dir = fresh_run_dir("no-device");
  // cuda:N past the GPUs visible here: cuda:0 on a machine without one, as on this project's CI.
  const std::string missing =
      "cuda:" + std::to_string(torch::cuda::is_available() ? torch::cuda::device_count() : 0);
  const auto run = [&](std::vector<std::string> arguments) {
    const std::string log = run_dir + "/logs/out.log";
    std::filesystem::remove(log);
    ChildProcess process(arguments, log);
    const auto code = process.wait_for(60s);
    return std::make_pair(code.value_or(-1), read_file(log));
  };
  // The node stops before it looks for a coordinator (there is none at this address).
  auto [code, text] = run({FILO_BINARY, "node", "--coordinator", "tcp://127.0.0.1:9", "--set",
                           "node.device=" + missing, "--set", "bus.connect_timeout_seconds=30"});
  CHECK(code == 2);
  CHECK(text.find("node.device is " + missing) != std::string::npos);
  std::tie(code, text) = run({FILO_BINARY, "coordinator", "--listen", "tcp://127.0.0.1:*", "--run-dir",
                              run_dir, "--set", "run.device=" + missing});
  CHECK(code == 2);
  CHECK(text.find("run.device is " + missing) != std::string::npos);
}

TEST_CASE("bf16 training on the CPU through autocast reaches the accuracy of the same run in fp32") {
  // Two short `filo local` runs that differ only in train.precision. One node: its shares, and so
  // its batches, do not depend on measured speeds, so the runs see the same samples in the same
  // order and differ only by bf16's rounding.
  std::map<std::string, double> accuracy;
  for (const std::string precision : {"fp32", "bf16"}) {
    const std::string run_dir = fresh_run_dir("precision-" + precision);
    ChildProcess local({FILO_BINARY, "local", "--nodes", "1", "--epochs", "2", "--run-dir", run_dir, "--set",
                        "data.train_limit=4000", "--set", "data.test_limit=2000", "--set",
                        "schedule.round_samples=128", "--set", "train.precision=" + precision},
                       run_dir + "/local.log");
    const auto code = local.wait_for(kRunTimeout);
    REQUIRE(code);
    REQUIRE_MESSAGE(*code == 0, read_file(run_dir + "/local.log"));
    json summary;
    std::ifstream(run_dir + "/summary.json") >> summary;
    accuracy[precision] = summary.at("final_test_accuracy").get<double>();
    // The trainer really computed in the precision asked for: rounds.jsonl records the dtype of its
    // forward pass's output (fp32 if autocast did nothing), not the configured label.
    std::ifstream rounds(run_dir + "/rounds.jsonl");
    std::string last;
    for (std::string line; std::getline(rounds, line);) last = line;
    CHECK(json::parse(last).at("trainers").at(0).at("precision") == precision);
  }
  INFO("test accuracy: fp32 " << accuracy["fp32"] << ", bf16 " << accuracy["bf16"]);
  CHECK(accuracy["fp32"] > 0.6);
  CHECK(std::abs(accuracy["bf16"] - accuracy["fp32"]) <= 0.01);
}
