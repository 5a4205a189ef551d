// Configuration: defaults, files, overrides, and clear errors for what is wrong.
#include <doctest/doctest.h>

#include <cstdio>
#include <fstream>

#include <stdlib.h>
#include <unistd.h>

#include "runtime/config.hpp"
#include "runtime/cpu_affinity.hpp"

using namespace filo;

namespace {
std::string write_temporary(const std::string& text) {
  char path[] = "/tmp/filo-config-XXXXXX";
  const int fd = mkstemp(path);
  REQUIRE(fd >= 0);
  close(fd);
  std::ofstream(path) << text;
  return path;
}

std::string error_of(const std::string& path, const std::vector<std::string>& overrides) {
  try {
    load_config(path, overrides);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST_CASE("defaults then file values then command-line overrides") {
  const Config defaults = load_config("", {});
  CHECK(defaults.schedule.epochs == 3);
  CHECK(defaults.local.nodes == 0);  // local_node_count decides
  const auto path =
      write_temporary("[schedule]\nepochs = 5 # comment\nround_samples = 64\n[optimizer]\nname = \"sgd\"\n");
  const Config config =
      load_config(path, {"schedule.epochs=7", "node.name=gpu-box", "optimizer.learning_rate=0.1"});
  CHECK(config.schedule.epochs == 7);
  CHECK(config.schedule.round_samples == 64);
  CHECK(config.optimizer.name == "sgd");
  CHECK(config.optimizer.learning_rate == doctest::Approx(0.1));
  CHECK(config.node.name == "gpu-box");
  std::remove(path.c_str());
}

TEST_CASE("mistakes are named: unknown keys and wrong types and bad values and unreadable files") {
  CHECK(error_of("", {"schedule.epocs=3"}).find("unknown configuration key 'schedule.epocs'") !=
        std::string::npos);
  CHECK(error_of("", {"schedule.epochs=\"three\""}).find("schedule.epochs must be an integer") !=
        std::string::npos);
  CHECK(error_of("", {"schedule.epochs=0"}).find("schedule.epochs must be >= 1") != std::string::npos);
  CHECK(error_of("", {"optimizer.name=rmsprop"}).find("optimizer.name") != std::string::npos);
  CHECK(error_of("", {"epochs=3"}).find("section.key=value") != std::string::npos);
  const auto broken = write_temporary("[schedule\nepochs = 1\n");
  CHECK(error_of(broken, {}).find("cannot read configuration " + broken) != std::string::npos);
  std::remove(broken.c_str());
}

TEST_CASE("the publish endpoint follows the listen port unless set") {
  BusOptions bus;
  bus.listen = "tcp://0.0.0.0:7000";
  CHECK(publish_endpoint_for(bus) == "tcp://0.0.0.0:7001");
  bus.listen = "tcp://127.0.0.1:*";
  CHECK(publish_endpoint_for(bus) == "tcp://127.0.0.1:*");
  bus.publish = "tcp://127.0.0.1:9000";
  CHECK(publish_endpoint_for(bus) == "tcp://127.0.0.1:9000");
}

TEST_CASE("a string key given a number on the command line takes its text") {
  const Config config = load_config("", {"local.slowdowns=4", "node.name=7"});
  CHECK(config.local.slowdowns == "4");
  CHECK(config.node.name == "7");
  CHECK(parse_slowdowns(config.local.slowdowns) == std::vector<double>{4.0});
}

TEST_CASE("CPU lists pin nodes; bad ones are refused naming the key and the item") {
  CHECK(parse_cpu_list("0-3,8", "node.cpus") == std::vector<int>{0, 1, 2, 3, 8});
  CHECK(parse_cpu_list("", "node.cpus").empty());
  CHECK(split_node_cpus("0/1,2/1") == std::vector<std::string>{"0", "1,2", "1"});
  CHECK(error_of("", {"node.cpus=3-1"}).find("node.cpus: range '3-1' runs backwards") != std::string::npos);
  CHECK(error_of("", {"local.node_cpus=0/x"}).find("local.node_cpus: 'x' is not a CPU number") !=
        std::string::npos);
  // An empty list pins nothing.
  CHECK_NOTHROW(pin_to_cpus(0, {}));
}

TEST_CASE("filo local starts one node per CPU up to 3, or as many as its per-node lists name") {
  LocalOptions local;
  CHECK(local_node_count(local, 2) == 2);  // never more single-threaded trainers than cores
  CHECK(local_node_count(local, 1) == 1);
  CHECK(local_node_count(local, 16) == kDefaultLocalNodes);
  local.slowdowns = "1,2,4";
  CHECK(local_node_count(local, 2) == 3);
  local.devices = "cuda:0,cpu,cpu,cpu";
  CHECK(local_node_count(local, 2) == 4);
  local.nodes = 5;
  CHECK(local_node_count(local, 2) == 5);
  CHECK(usable_cpus() >= 1);
  CHECK(error_of("", {"local.nodes=-1"}).find("local.nodes must be >= 1") != std::string::npos);
}

TEST_CASE("auto mode and an automatic sync interval are read, with compression on unless said otherwise") {
  const Config chosen = load_config("", {"optimizer.mode=auto", "optimizer.sync_steps=auto"});
  CHECK(chosen.optimizer.mode == "auto");
  CHECK(chosen.optimizer.sync_steps_auto);
  CHECK(chosen.optimizer.sync_steps == 8);  // the first guess
  CHECK(chosen.optimizer.compression == "topk-q8");
  CHECK(chosen.optimizer.communication_fraction == doctest::Approx(0.1));
  const Config dense = load_config("", {"optimizer.mode=auto", "optimizer.compression=none"});
  CHECK(dense.optimizer.compression == "none");
  CHECK_FALSE(dense.optimizer.sync_steps_auto);
  CHECK(load_config("", {}).optimizer.compression == "none");
  CHECK(error_of("", {"optimizer.mode=fastest"}).find("\"gradient\", \"local-sgd\" or \"auto\"") !=
        std::string::npos);
  CHECK(error_of("", {"optimizer.sync_steps=auto"}).find("optimizer.sync_steps = \"auto\"") !=
        std::string::npos);
  CHECK(error_of("", {"optimizer.mode=local-sgd", "optimizer.sync_steps=often"})
            .find("optimizer.sync_steps must be an integer or \"auto\"") != std::string::npos);
  CHECK(error_of("", {"optimizer.mode=auto", "optimizer.communication_fraction=0"})
            .find("optimizer.communication_fraction must be in (0, 1]") != std::string::npos);
}

TEST_CASE("overlap is read for local-sgd and refused, with the reason, for any other mode") {
  CHECK_FALSE(load_config("", {}).optimizer.overlap);
  CHECK(load_config("", {"optimizer.mode=local-sgd", "optimizer.overlap=true"}).optimizer.overlap);
  for (const std::string mode : {"gradient", "auto"}) {
    CAPTURE(mode);
    CHECK(error_of("", {"optimizer.mode=" + mode, "optimizer.overlap=true"})
              .find("optimizer.overlap hides local-sgd's exchange") != std::string::npos);
  }
  CHECK(
      error_of("", {"optimizer.mode=local-sgd", "optimizer.overlap=yes"}).find("optimizer.overlap must be") !=
      std::string::npos);
}

TEST_CASE(
    "robust combining is read and checked, and trimming compressed changes is refused with the reason") {
  const Config defaults = load_config("", {});
  CHECK(defaults.robust.combine == "centered-clip");
  CHECK(defaults.robust.min_direction == 0.01);
  CHECK(defaults.robust.direction_window == 64);
  const Config clipped = load_config("", {"robust.combine=mean", "robust.min_direction=-0.1"});
  CHECK(clipped.robust.combine == "mean");
  CHECK(clipped.robust.min_direction == -0.1);
  CHECK(error_of("", {"robust.combine=median"}).find("robust.combine must be \"mean\", \"trimmed\"") !=
        std::string::npos);
  CHECK(error_of("", {"robust.trim=0.5"}).find("robust.trim must be in [0, 0.5)") != std::string::npos);
  CHECK(error_of("", {"robust.min_direction=2"}).find("robust.min_direction must be in [-1, 1]") !=
        std::string::npos);
  CHECK(error_of("", {"robust.combine=trimmed", "optimizer.mode=auto"})
            .find("use \"centered-clip\", or optimizer.compression = \"none\" (auto mode compresses") !=
        std::string::npos);
  CHECK(load_config("", {"robust.combine=trimmed", "optimizer.mode=auto", "optimizer.compression=none"})
            .robust.combine == "trimmed");
}

TEST_CASE(
    "a coordinator pair: its peer, the standby flag and the nodes' endpoint list are read and checked") {
  const Config standby =
      load_config("", {"ha.peer=tcp://10.0.0.1:5555", "ha.standby=true", "bus.listen=tcp://0.0.0.0:6000"});
  CHECK(standby.ha.standby);
  CHECK(pair_endpoint_for(standby.bus) == "tcp://0.0.0.0:6003");
  CHECK(peer_pair_endpoint_for(standby.ha) == "tcp://10.0.0.1:5558");
  const Config node = load_config("", {"bus.coordinator=tcp://a:5555, tcp://b:5555"});
  CHECK(coordinator_endpoints(node.bus) == std::vector<std::string>{"tcp://a:5555", "tcp://b:5555"});
  CHECK_THROWS_WITH_AS(load_config("", {"ha.standby=true"}), doctest::Contains("ha.standby needs ha.peer"),
                       ConfigError);
  CHECK_THROWS_WITH_AS(load_config("", {"ha.peer=b:5555"}),
                       doctest::Contains("ha.peer must be tcp://HOST:PORT"), ConfigError);
  CHECK_THROWS_WITH_AS(load_config("", {"ha.peer=tcp://b:5555", "run.checkpoint_every=0"}),
                       doctest::Contains("run.checkpoint_every >= 1"), ConfigError);
  CHECK_THROWS_WITH_AS(load_config("", {"ha.peer=tcp://127.0.0.1:5555"}), doctest::Contains("own bus.listen"),
                       ConfigError);
  CHECK_THROWS_WITH_AS(load_config("", {"bus.coordinator= , "}),
                       doctest::Contains("bus.coordinator names no"), ConfigError);
}
