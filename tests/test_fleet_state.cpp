// What monitors make of the event stream: trainer states, speeds and shares, Prometheus text,
// the terminal table, the report of a run directory, and the dashboard serving it over HTTP.
#include <doctest/doctest.h>

#include <unistd.h>
#include <filesystem>
#include <fstream>
#include <thread>

#include "actors/dashboard.hpp"
#include "actors/fleet_state.hpp"
#include "actors/run_report.hpp"
#include "runtime/http_client.hpp"
#include "runtime/scoped_thread.hpp"

using namespace filo;
using nlohmann::json;

namespace {
constexpr const char* kFast = "trainer@node-1/cpu";
constexpr const char* kSlow = "trainer@node-2/cuda:0";

// These tests feed FleetState hand-made events; tests/test_dashboard.cpp is their partner, in which
// a real `filo local` run produces every family and a real browser shows what FleetState made of them.

msg::MemberNews membership(msg::MemberChange change, const std::string& trainer, const std::string& reason) {
  msg::MemberNews news;
  news.change = change;
  news.trainer = trainer;
  news.reason = reason;
  news.text = trainer + " " + msg::member_change_name(change) + ": " + reason;
  return news;
}

/// A round as the scheduler publishes it: `slow_delivered` false makes node-2 miss it.
msg::RoundClosed round_event(std::uint64_t round, bool slow_delivered = true) {
  msg::RoundClosed event;
  event.round = round;
  event.epoch = 1;
  event.loss = 1.0 / static_cast<double>(round);
  event.samples = slow_delivered ? 128 : 96;
  event.seconds = 0.5;
  event.idle_fraction = 0.1;
  event.epoch_samples_done = 128 * round;
  event.epoch_samples_total = 6000;
  event.epochs = 2;
  msg::TrainerInRound fast;
  fast.name = kFast;
  fast.planned = 96;
  fast.delivered = true;
  fast.samples = 96;
  fast.samples_per_second = 300;
  fast.compute_seconds = 0.32;
  fast.arrival_seconds = 0.3;
  fast.idle_seconds = 0.2;
  msg::TrainerInRound slow;
  slow.name = kSlow;
  slow.planned = 32;
  slow.device = "cuda:0";
  if (slow_delivered) {
    slow.delivered = true;
    slow.samples = 32;
    slow.samples_per_second = 100;
    slow.compute_seconds = 0.32;
    slow.arrival_seconds = 0.5;
  } else {
    slow.missed_reason = "no contribution by the close (deadline passed)";
  }
  event.trainers = {fast, slow};
  return event;
}

std::string get(int port, const std::string& path) {
  const auto reply = http_get("127.0.0.1", port, path);
  REQUIRE_MESSAGE(reply.has_value(), "no answer from the dashboard for ", path);
  return reply->body;
}
}  // namespace

TEST_CASE(
    "a monitor keeps each trainer's speed and share and idle time and its delivered and missed rounds") {
  FleetState fleet;
  fleet.apply(membership(msg::MemberChange::kJoined, kFast, "vm, 2 cores"), 0.0);
  fleet.apply(membership(msg::MemberChange::kJoined, kSlow, "vm, 2 cores"), 0.0);
  fleet.apply(round_event(1), 1.0);
  fleet.apply(round_event(2, false), 2.0);
  const TrainerView& fast = fleet.trainers().at(kFast);
  const TrainerView& slow = fleet.trainers().at(kSlow);
  CHECK(fast.machine == "node-1");
  CHECK(slow.device == "cuda:0");
  CHECK(fast.share == doctest::Approx(0.75));
  CHECK(fast.samples_per_second == 300);
  CHECK(fast.idle_seconds_total == doctest::Approx(0.4));
  CHECK(*fast.arrival_seconds == doctest::Approx(0.3));
  CHECK(fast.rounds_delivered == 2);
  CHECK(slow.rounds_delivered == 1);
  CHECK(slow.rounds_missed == 1);
  CHECK(slow.samples == 32);
  CHECK(fast.recent_samples_per_second == doctest::Approx(300));
  CHECK(slow.recent_samples_per_second == doctest::Approx(100));  // the missed round does not count
  CHECK(fleet.run().round == 2);
  CHECK(fleet.run().samples == 224);
  CHECK(fleet.events().back().type == "missed");
  CHECK(fleet.timeline().back().trainers.size() == 2);

  // A round without node-2 in its plan leaves it no share.
  msg::RoundClosed without_slow = round_event(3);
  without_slow.trainers.pop_back();
  fleet.apply(without_slow, 3.0);
  CHECK(fleet.trainers().at(kSlow).share == 0.0);
  CHECK(fleet.trainers().at(kFast).share == doctest::Approx(1.0));
}

TEST_CASE("auto mode's choices reach the event list and the run's card, and the state the page reads") {
  // Partner: faults-auto-links, in which the real scheduler publishes these events in a real run.
  FleetState fleet;
  msg::ExchangeChosen chosen;
  chosen.round = 7;
  chosen.mode = "local-sgd";
  chosen.compression = "topk-q8";
  chosen.sync_steps = 4;
  chosen.reason = "moving the whole model takes 2.1x a gradient round's compute on trainer@node-1/cpu";
  chosen.text = "round 7 on: local-sgd, topk-q8, 4 local steps: " + chosen.reason;
  fleet.apply(chosen, 5.0);
  CHECK(fleet.events().back().type == "exchange");
  CHECK(fleet.events().back().round == 7);
  CHECK(fleet.events().back().text == chosen.text);
  msg::RoundClosed round = round_event(7);
  round.exchange = "local-sgd, topk-q8, 4 steps";
  fleet.apply(round, 6.0);
  CHECK(fleet.run().exchange == "local-sgd, topk-q8, 4 steps");
  const json state = fleet.to_json(6.0);
  CHECK(state.at("run").at("exchange") == "local-sgd, topk-q8, 4 steps");
  // A round that names no exchange (an older scheduler) leaves the card as it was.
  fleet.apply(round_event(8), 7.0);
  CHECK(fleet.run().exchange == "local-sgd, topk-q8, 4 steps");
}

TEST_CASE(
    "a coordinator pair's state reaches the run's card, /metrics and the table; the event list only when it "
    "changed") {
  // Partner: faults-stop-active, in which the real schedulers of both coordinators publish these
  // events in a real run (the standby's naming the primary passive, then the primary's after
  // `filo failback`).
  FleetState fleet;
  msg::PairStatus pair;
  pair.active = "tcp://a:5555";
  pair.peer = "tcp://b:5555";
  pair.peer_state = "passive";
  pair.round = 120;
  pair.peer_round = 119;
  pair.replicas = 119;
  pair.replica_milliseconds = 0.3;
  pair.changed = true;
  pair.text = "coordinator pair: tcp://a:5555 active at round 120; its peer tcp://b:5555 passive";
  fleet.apply(pair, 1.0);
  CHECK(fleet.events().back().type == "pair");
  const std::size_t events = fleet.events().size();
  pair.changed = false;  // the second-by-second one
  pair.round = 121;
  fleet.apply(pair, 2.0);
  CHECK(fleet.events().size() == events);
  const json state = fleet.to_json(2.0);
  CHECK(state.at("run").at("pair").at("peer_state") == "passive");
  CHECK(state.at("run").at("pair").at("round") == 121);
  std::string text = fleet.prometheus_text(2.0);
  CHECK(text.find("filo_pair_peer_up{active=\"tcp://a:5555\",peer=\"tcp://b:5555\"} 1\n") !=
        std::string::npos);
  CHECK(text.find("filo_pair_peer_behind_rounds 2\n") != std::string::npos);
  CHECK(text.find("filo_pair_failovers_total 0\n") != std::string::npos);
  CHECK(fleet.table_text(2.0).find(pair.text) != std::string::npos);
  // The standby lost: the gauge says so, and the change is listed.
  pair.peer_state = "silent";
  pair.changed = true;
  pair.failovers = 1;
  fleet.apply(pair, 3.0);
  CHECK(fleet.events().size() == events + 1);
  text = fleet.prometheus_text(3.0);
  CHECK(text.find("filo_pair_peer_up{active=\"tcp://a:5555\",peer=\"tcp://b:5555\"} 0\n") !=
        std::string::npos);
  CHECK(text.find("filo_pair_failovers_total 1\n") != std::string::npos);
}

TEST_CASE("a trainer's state follows membership events until the registrar's roll call says otherwise") {
  FleetState fleet;
  fleet.apply(membership(msg::MemberChange::kJoined, kFast, "vm"), 0.0);
  fleet.apply(membership(msg::MemberChange::kLost, kFast, "no heartbeat for 1000 ms"), 1.0);
  CHECK(fleet.trainers().at(kFast).state == TrainerState::kLost);
  CHECK(fleet.trainers().at(kFast).reason == "no heartbeat for 1000 ms");
  fleet.apply(membership(msg::MemberChange::kRejoined, kFast, "vm"), 2.0);
  CHECK(fleet.trainers().at(kFast).state == TrainerState::kTraining);
  CHECK(fleet.trainers().at(kFast).rejoins == 1);
  fleet.apply(membership(msg::MemberChange::kRejected, kSlow, "dataset fingerprint differs"), 3.0);
  CHECK(fleet.trainers().at(kSlow).state == TrainerState::kRejected);
  CHECK(fleet.trainers().at(kSlow).reason == "dataset fingerprint differs");
  fleet.apply(membership(msg::MemberChange::kLeftOut, kFast, "transfer 0.4 of compute"), 4.0);
  CHECK(fleet.trainers().at(kFast).state == TrainerState::kLeftOut);
  CHECK(fleet.trainers().at(kFast).reason == "transfer 0.4 of compute");
  fleet.apply(membership(msg::MemberChange::kPlannedAgain, kFast, "its link passes the transfer rule"), 4.5);
  CHECK(fleet.trainers().at(kFast).state == TrainerState::kTraining);
  fleet.apply(membership(msg::MemberChange::kTakenOut, kFast, "missed 3 rounds in a row"), 4.6);
  CHECK(fleet.trainers().at(kFast).state == TrainerState::kTakenOut);
  fleet.apply(membership(msg::MemberChange::kPlannedAgain, kFast, "it delivered a probe"), 4.7);

  msg::FleetMembers members;
  members.members = {{kFast, "box-1", "cpu", "bf16", 0.25, 1 << 20}};
  fleet.apply(members, 5.0);
  const TrainerView& fast = fleet.trainers().at(kFast);
  CHECK(fast.state == TrainerState::kTraining);
  CHECK(fast.host == "box-1");
  CHECK(fast.precision == "bf16");
  CHECK(*fleet.heartbeat_age(fast, 6.0) == doctest::Approx(1.25));  // it ages between roll calls
  CHECK(*fast.peak_memory_bytes == doctest::Approx(1 << 20));
  CHECK_FALSE(fleet.heartbeat_age(fleet.trainers().at(kSlow), 6.0).has_value());

  // A trainer that failed keeps its failure as the reason when its node then leaves.
  fleet.apply(membership(msg::MemberChange::kFailed, kFast, "CUDA out of memory"), 7.0);
  fleet.apply(membership(msg::MemberChange::kLeft, kFast, "its computation failed"), 7.1);
  CHECK(fleet.trainers().at(kFast).state == TrainerState::kFailed);
  CHECK(fleet.trainers().at(kFast).reason == "CUDA out of memory");
  CHECK_FALSE(fleet.heartbeat_age(fleet.trainers().at(kFast), 8.0).has_value());
}

TEST_CASE("the Prometheus text has a HELP and TYPE before every family and its counters end in _total") {
  FleetState fleet;
  fleet.apply(round_event(1), 1.0);
  fleet.apply(round_event(2, false), 2.0);
  fleet.apply(msg::RefusalCounts{"3 refused", {{"malformed", 3}}, 3}, 2.0);
  const std::string text = fleet.prometheus_text(3.0);
  CHECK(text.find("filo_run_round 2\n") != std::string::npos);
  CHECK(text.find(
            "filo_trainer_rounds_missed_total{trainer=\"trainer@node-2/cuda:0\",machine=\"node-2\"} 1\n") !=
        std::string::npos);
  CHECK(
      text.find("filo_trainer_samples_per_second{trainer=\"trainer@node-1/cpu\",machine=\"node-1\"} 300\n") !=
      std::string::npos);
  CHECK(text.find("filo_messages_dropped_total{reason=\"malformed\"} 3\n") != std::string::npos);
  std::istringstream lines(text);
  std::string typed;
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("# TYPE ", 0) == 0) {
      typed = line.substr(7, line.find(' ', 7) - 7);
      if (line.substr(line.rfind(' ') + 1) == "counter") CHECK(typed.size() > 6);
      if (line.substr(line.rfind(' ') + 1) == "counter") CHECK(typed.substr(typed.size() - 6) == "_total");
    } else if (line[0] != '#') {
      CHECK_MESSAGE(line.rfind(typed, 0) == 0, line, " follows the TYPE of ", typed);
    }
  }
}

TEST_CASE("the terminal table has a row per trainer with its state and speed") {
  FleetState fleet;
  fleet.apply(round_event(1), 1.0);
  fleet.apply(membership(msg::MemberChange::kLost, kSlow, "no heartbeat for 1000 ms"), 1.5);
  const std::string table = fleet.table_text(2.0);
  std::istringstream lines(table);
  std::vector<std::string> rows;
  for (std::string line; std::getline(lines, line);) rows.push_back(line);
  REQUIRE(rows.size() == 4);  // run line, header, two trainers
  CHECK(rows[2].find(kFast) == 0);
  CHECK(rows[2].find(" 300 ") != std::string::npos);
  CHECK(rows[3].find("lost") != std::string::npos);
  CHECK(rows[3].find("no heartbeat") != std::string::npos);
}

TEST_CASE("a run directory's report is one HTML file with the rounds and the losses and the rejoins") {
  const std::string dir = "/tmp/filo-test-report-" + std::to_string(getpid());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  {
    std::ofstream rounds(dir + "/rounds.jsonl");
    for (int round = 1; round <= 3; ++round) {
      json trainers = json::array();
      trainers.push_back({{"name", kFast},
                          {"planned", 96},
                          {"samples", 96},
                          {"samples_per_second", 300.0},
                          {"idle_seconds", 0.1},
                          {"arrival_seconds", 0.3},
                          {"compute_seconds", 0.32},
                          {"delivered", true}});
      trainers.push_back({{"name", kSlow},
                          {"planned", 32},
                          {"samples", round == 2 ? 0 : 32},
                          {"samples_per_second", round == 2 ? 0.0 : 100.0},
                          {"idle_seconds", 0.0},
                          {"arrival_seconds", 0.4},
                          {"compute_seconds", 0.32},
                          {"delivered", round != 2}});
      rounds << json{{"round", round},       {"epoch", 1},
                     {"seconds", 0.4},       {"closed_seconds", 0.5 * round},
                     {"samples", 128},       {"loss", 2.0 / round},
                     {"idle_fraction", 0.1}, {"trainers", trainers}}
                    .dump()
             << "\n";
    }
    std::ofstream events(dir + "/events.jsonl");
    events
        << msg::event_json(round_event(1), 0).dump() << "\n"
        << msg::event_json(membership(msg::MemberChange::kLost, kSlow, "no heartbeat for 1000 ms"), 0).dump()
        << "\n"
        << msg::event_json(round_event(2, false), 0).dump() << "\n"
        << msg::event_json(membership(msg::MemberChange::kRejoined, kSlow, "vm</script><script>alert(1)"), 0)
               .dump()
        << "\n";
    std::ofstream(dir + "/summary.json") << json{
        {"final_test_accuracy", 0.81},
        {"test_accuracy_per_epoch", {0.81}},
        {"epochs", 1},
        {"rounds", 3},
        {"train_samples", 384},
        {"wall_seconds", 4.5}}.dump();
  }
  const json state = run_state_from_directory(dir);
  CHECK(state.at("mode") == "report");
  CHECK(state.at("run").at("round") == 3);
  CHECK(state.at("run").at("finished") == true);
  CHECK(state.at("accuracy").size() == 1);
  std::map<std::string, json> trainers;
  for (const auto& trainer : state.at("trainers")) trainers[trainer.at("name")] = trainer;
  CHECK(trainers.at(kSlow).at("rounds_missed") == 1);
  CHECK(trainers.at(kSlow).at("rejoins") == 1);
  std::vector<std::string> types;
  for (const auto& event : state.at("events")) types.push_back(event.at("type"));
  CHECK(std::find(types.begin(), types.end(), "lost") != types.end());
  CHECK(std::find(types.begin(), types.end(), "rejoined") != types.end());
  CHECK(std::find(types.begin(), types.end(), "missed") != types.end());

  const std::string html = report_html(state);
  CHECK(html.find("window.FILO_STATE = ") != std::string::npos);
  CHECK(html.find("function render(") != std::string::npos);  // the script is inlined...
  CHECK(html.find("<style>") != std::string::npos);           // ...and so is the style
  CHECK(html.find("src=\"") == std::string::npos);            // nothing is loaded from elsewhere
  CHECK(html.find("href=\"") == std::string::npos);
  CHECK(html.find("</script><script>alert") == std::string::npos);  // event text cannot end the script
  std::filesystem::remove_all(dir);
}

TEST_CASE("the dashboard serves the page and the fleet's state and /metrics from the events it hears") {
  zmq::context_t context;
  SocketFactory sockets(context, SocketLimits{});
  Hub hub(sockets, HubOptions{"dashboard-test-hub", {}, {}});
  StopFlag stop;
  DashboardOptions options;
  options.events_endpoint = hub.inproc_publish_endpoint();
  options.web_address = "127.0.0.1:0";
  options.snapshot_interval = Milliseconds(20);
  Dashboard dashboard(sockets, options, stop);
  const int port = std::stoi(dashboard.url().substr(dashboard.url().rfind(':') + 1));
  ScopedThread thread([&dashboard] { dashboard.run(); });

  BusClient aggregator(sockets, "aggregator");
  aggregator.connect(hub.inproc_router_endpoint());
  // A subscription takes effect a moment after it is made: publish until the dashboard has it.
  json state;
  const auto deadline = Clock::now() + Milliseconds(5000);
  for (std::uint64_t round = 1; Clock::now() < deadline; ++round) {
    aggregator.publish(kEventTopic, round_event(round));
    std::this_thread::sleep_for(Milliseconds(30));
    state = json::parse(get(port, "/api/state"));
    if (state.at("trainers").size() == 2) break;
  }
  stop.request_stop();
  REQUIRE(state.at("trainers").size() == 2);
  CHECK(state.at("mode") == "live");
  CHECK(state.at("trainers").at(0).at("samples_per_second") == 300);
  CHECK(get(port, "/metrics").find("filo_trainer_samples_per_second{trainer=\"trainer@node-1/cpu\"") !=
        std::string::npos);
  CHECK(get(port, "/").find("<script src=\"dashboard.js\">") != std::string::npos);
  CHECK(get(port, "/dashboard.js").find("function render(") != std::string::npos);
  CHECK(get(port, "/nothing-here").find("no such page") != std::string::npos);
}
