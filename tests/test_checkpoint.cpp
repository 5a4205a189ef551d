// Checkpoints survive as written or are detected as damaged, and the previous one is used.
#include <doctest/doctest.h>

#include <unistd.h>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>
#include <sstream>
#include <thread>

#include "actors/scheduler.hpp"
#include "runtime/checkpoint.hpp"
#include "runtime/thread_priority.hpp"

using namespace filo;

namespace {
std::string fresh_directory(const std::string& name) {
  const std::string path = "/tmp/filo-test-" + name + "-" + std::to_string(getpid());
  std::filesystem::remove_all(path);
  return path;
}

std::string binary_payload(char seed) {
  std::string payload(100000, '\0');
  for (std::size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<char>(seed + i * 31);
  return payload;
}
}  // namespace

TEST_CASE("a checkpoint reads back as written, and only the newest few are kept") {
  CheckpointStore store(fresh_directory("checkpoints"), 3);
  for (std::uint64_t round = 1; round <= 5; ++round)
    store.write(round, {{"epoch", 1}}, binary_payload(char(round)));
  std::vector<std::string> problems;
  const auto latest = store.load_latest(problems);
  REQUIRE(latest);
  CHECK(problems.empty());
  CHECK(latest->round == 5);
  CHECK(latest->meta.at("epoch") == 1);
  CHECK(latest->payload == binary_payload(5));
  std::size_t files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(store.directory()))
    files += entry.is_regular_file();
  CHECK(files == 3);
}

TEST_CASE("a damaged or truncated newest checkpoint is named and the previous good one is used") {
  CheckpointStore store(fresh_directory("damaged"), 3);
  store.write(7, {{"epoch", 2}}, binary_payload('a'));
  store.write(8, {{"epoch", 2}}, binary_payload('b'));
  store.write(9, {{"epoch", 2}}, binary_payload('c'));
  const std::string newest = store.directory() + "/round-000000009.ckpt";
  const std::string middle = store.directory() + "/round-000000008.ckpt";
  {  // one flipped byte in the payload of the newest
    std::fstream file(newest, std::ios::in | std::ios::out | std::ios::binary);
    file.seekp(-100, std::ios::end);
    file.put('X');
  }
  std::filesystem::resize_file(middle, std::filesystem::file_size(middle) / 2);  // torn
  std::vector<std::string> problems;
  const auto latest = store.load_latest(problems);
  REQUIRE(latest);
  CHECK(latest->round == 7);
  CHECK(latest->payload == binary_payload('a'));
  REQUIRE(problems.size() == 2);
  CHECK(problems[0].find("round-000000009.ckpt: checksum mismatch") != std::string::npos);
  CHECK(problems[1].find("round-000000008.ckpt") != std::string::npos);
}

TEST_CASE("the untrained positions of an epoch are the complement of the trained ranges") {
  const std::vector<msg::SampleRange> trained{{40, 60}, {0, 10}, {10, 20}, {90, 100}};
  const auto untrained = untrained_ranges(trained, 100);
  REQUIRE(untrained.size() == 2);
  CHECK(untrained[0].begin == 20);
  CHECK(untrained[0].end == 40);
  CHECK(untrained[1].begin == 60);
  CHECK(untrained[1].end == 90);
  CHECK(untrained_ranges({}, 50).size() == 1);
  CHECK(untrained_ranges({{0, 50}}, 50).empty());
}

TEST_CASE("the checkpoint writer's thread runs niced, and only it") {
  // Where trainers fill the cores, the writer must take what they leave idle; the thread that
  // created it keeps its priority.
  const auto niceness_of = [](const std::filesystem::path& task) {
    std::ifstream stat(task / "stat");
    const std::string text(std::istreambuf_iterator<char>(stat), {});
    std::istringstream fields(text.substr(text.rfind(')') + 2));
    std::string field;
    for (int i = 0; i < 17; ++i) fields >> field;  // state is field 3; nice is field 19
    return std::stoi(field);
  };
  const auto writer_niceness = [&]() -> std::optional<int> {
    for (const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
      std::ifstream comm(task.path() / "comm");
      std::string name;
      std::getline(comm, name);
      if (name == "checkpoints") return niceness_of(task.path());
    }
    return std::nullopt;
  };
  const int own_niceness = niceness_of("/proc/thread-self");
  REQUIRE(own_niceness < kBackgroundNiceness);  // else nothing here could tell the writer apart
  CheckpointWriter writer(CheckpointStore(fresh_directory("niced"), 3));
  std::optional<int> niceness;
  for (int attempt = 0; attempt < 500 && niceness != kBackgroundNiceness; ++attempt) {
    niceness = writer_niceness();
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  REQUIRE(niceness);
  CHECK(*niceness == kBackgroundNiceness);
  CHECK(niceness_of("/proc/thread-self") == own_niceness);
}

TEST_CASE("a replica is kept only whole: checked before it is written, then pruned like any checkpoint") {
  CheckpointStore active(fresh_directory("replica-active"), 3);
  const std::string written = active.write(12, {{"epoch", 3}}, binary_payload('r'));
  std::ifstream file(written, std::ios::binary);
  const std::string contents((std::istreambuf_iterator<char>(file)), {});

  CheckpointStore standby(fresh_directory("replica-standby"), 3);
  CHECK(standby.write_contents(contents) == 12);
  std::vector<std::string> problems;
  const auto held = standby.load_latest(problems);
  REQUIRE(held);
  CHECK(held->round == 12);
  CHECK(held->payload == binary_payload('r'));

  std::string damaged = contents;
  damaged[damaged.size() - 10] ^= 0x5a;
  CHECK_THROWS_WITH_AS(standby.write_contents(damaged), doctest::Contains("checksum mismatch"),
                       std::runtime_error);
  CHECK_THROWS_AS(standby.write_contents(contents.substr(0, 20)), std::runtime_error);
  CHECK(standby.load_latest(problems)->round == 12);  // the good one stands
}

TEST_CASE("the checkpoint writer names each file it wrote, for a coordinator pair's replica") {
  const std::string directory = fresh_directory("written");
  std::mutex mutex;
  std::vector<std::pair<std::uint64_t, std::string>> seen;
  {
    CheckpointWriter writer(CheckpointStore(directory), {}, std::chrono::milliseconds(0),
                            [&](std::uint64_t round, const std::string& path) {
                              std::lock_guard<std::mutex> lock(mutex);
                              seen.emplace_back(round, path);
                            });
    writer.submit(4, {{"epoch", 1}}, {});
    REQUIRE(writer.wait_idle(std::chrono::seconds(10)));
  }
  REQUIRE(seen.size() == 1);
  CHECK(seen[0].first == 4);
  CHECK(read_checkpoint(seen[0].second).round == 4);
}

TEST_CASE("the run's state round-trips through a checkpoint's JSON, and a malformed one is named") {
  RunState state;
  state.epoch = 2;
  state.round = 57;
  state.model_version = 55;
  state.trained = {{0, 128}, {256, 384}};
  state.epoch_samples = 256;
  state.samples_per_epoch = {6000};
  state.totals["trainer@a/cpu"] = TrainerTotals{6256, 12.5, 56, 1};
  state.loss_scale = 1024.0;
  state.failovers.push_back({40, 2, "2026-12-05T06:00:00Z", "the active was silent", 1.1, 2.0});
  state.measured_speeds = {{"trainer@a/cpu", 5100.0}, {"trainer@b/cpu", 2550.0}};
  const RunState back = run_state_from_json(nlohmann::json::parse(to_json(state).dump()));
  CHECK(back.round == 57);
  CHECK(back.model_version == 55);
  CHECK(back.trained.size() == 2);
  CHECK(back.totals.at("trainer@a/cpu").rounds_missed == 1);
  CHECK(back.failovers.at(0).after_round == 40);
  CHECK(back.measured_speeds == state.measured_speeds);
  CHECK(to_json(back) == to_json(state));
  nlohmann::json broken = to_json(state);
  broken.erase("trained");
  CHECK_THROWS_WITH_AS(run_state_from_json(broken),
                       doctest::Contains("run state in the checkpoint is malformed"), std::runtime_error);
}
