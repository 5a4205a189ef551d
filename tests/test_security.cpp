// The secure bus over real ZeroMQ sockets: a hub with CurveZMQ and its ZAP handler on tcp loopback,
// the coordinator's actors on inproc, and peers holding keys of each role (or none). Asserted: a key
// outside the authorized set gets nothing in and nothing out; a trainer key cannot use an inner
// actor's name, another key's name or a node its key is not for, nor send what its role may not;
// the same key on a new connection keeps its name; every refusal is counted by reason.
#include <doctest/doctest.h>
#include <sys/stat.h>

#include <unistd.h>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <memory>
#include <thread>
#include <vector>
#include <zmq_addon.hpp>

#include "actors/coordinator_pair.hpp"
#include "messages/codec.hpp"
#include "messages/event.hpp"
#include "messages/membership.hpp"
#include "messages/model.hpp"
#include "messages/pair.hpp"
#include "messages/round.hpp"
#include "messages/test_aid.hpp"
#include "runtime/bus.hpp"
#include "runtime/config.hpp"
#include "runtime/keys.hpp"

using namespace filo;

namespace {
constexpr Milliseconds kPatience{3000};
constexpr Milliseconds kQuiet{600};  // how long "nothing arrives" is watched

std::string fresh_directory(const std::string& name) {
  const std::string path =
      (std::filesystem::temp_directory_path() / ("filo-security-" + name + "-" + std::to_string(getpid())))
          .string();
  std::filesystem::remove_all(path);
  return path;
}

std::optional<Incoming> wait_for_message(BusClient& client, zmq::socket_t& socket,
                                         Milliseconds patience = kPatience) {
  const auto deadline = Clock::now() + patience;
  while (Clock::now() < deadline) {
    zmq::pollitem_t item{socket.handle(), 0, ZMQ_POLLIN, 0};
    zmq::poll(&item, 1, Milliseconds(20));
    if (auto incoming = client.receive(socket)) return incoming;
  }
  return std::nullopt;
}

/// A coordinator's hub with CURVE on tcp loopback, a fleet's keys, and the three inner actors.
struct SecureBus {
  std::string keys_dir = fresh_directory("keys");
  std::shared_ptr<const AuthorizedKeys> authorized;
  DropCounters drops;
  zmq::context_t context;
  std::unique_ptr<SocketFactory> sockets;
  std::unique_ptr<Hub> hub;
  std::unique_ptr<BusClient> registrar, scheduler, aggregator;

  explicit SecureBus(const std::vector<std::string>& extra_lines = {}, std::size_t max_peers = 1024) {
    write_fleet_keys(keys_dir);
    {
      std::ofstream file(authorized_keys_file(keys_dir), std::ios::app);
      for (const auto& line : extra_lines) file << line << "\n";
    }
    SecurityOptions security;
    security.keys_dir = keys_dir;
    authorized = authorized_keys_for(security);
    sockets = std::make_unique<SocketFactory>(context, SocketLimits{},
                                              curve_settings_for(security, PeerRole::kCoordinator));
    HubOptions options{"secure-hub-" + std::to_string(getpid()), "tcp://127.0.0.1:*", "tcp://127.0.0.1:*"};
    options.model_endpoint = "tcp://127.0.0.1:*";
    options.authorized_keys = authorized;
    options.drops = &drops;
    options.max_inbound_bytes = 1 << 20;
    options.max_peers = max_peers;
    hub = std::make_unique<Hub>(*sockets, options);
    const auto inner = [this](const char* name) {
      auto client = std::make_unique<BusClient>(*sockets, name);
      client->connect(hub->inproc_router_endpoint());
      return client;
    };
    registrar = inner(kRegistrarName);
    scheduler = inner(kSchedulerName);
    aggregator = inner(kAggregatorName);
  }
  ~SecureBus() { std::filesystem::remove_all(keys_dir); }

  std::uint64_t dropped(const std::string& reason) const {
    const auto counts = drops.snapshot();
    const auto found = counts.find(reason);
    return found == counts.end() ? 0 : found->second;
  }
};

/// A process outside the coordinator: its own context and key, the coordinator's public key.
struct Peer {
  zmq::context_t context;
  SocketFactory sockets;
  BusClient bus;
  Peer(const SecureBus& coordinator, const KeyPair& key, const std::string& name)
      : sockets(context, SocketLimits{},
                CurveSettings{true, key, read_public_key(coordinator_public_key_file(coordinator.keys_dir))}),
        bus(sockets, name) {
    bus.connect(coordinator.hub->router_endpoint());
  }
};

KeyPair role_key(const SecureBus& bus, PeerRole role) {
  return read_key_pair(role_key_file(bus.keys_dir, role));
}
}  // namespace

TEST_CASE("filo keys: a secret key file is 0600, never overwritten, and refused when others may read it") {
  const std::string dir = fresh_directory("new");
  const auto [secret, public_file] = write_key_pair(dir, "node-1");
  struct stat status {};
  REQUIRE(::stat(secret.c_str(), &status) == 0);
  CHECK((status.st_mode & 0777) == 0600);
  const KeyPair pair = read_key_pair(secret);
  CHECK(is_z85_key(pair.public_key));
  CHECK(read_public_key(public_file) == pair.public_key);
  CHECK_THROWS_WITH_AS(write_key_pair(dir, "node-1"), doctest::Contains("never overwrites"),
                       std::runtime_error);
  ::chmod(secret.c_str(), 0644);
  CHECK_THROWS_WITH_AS(read_key_pair(secret), doctest::Contains("others may read it"), std::runtime_error);
  std::filesystem::remove_all(dir);
}

TEST_CASE("authorized keys: a malformed line is refused with its file and line") {
  const std::string dir = fresh_directory("authorized");
  std::filesystem::create_directories(dir);
  const std::string path = dir + "/authorized_keys";
  const KeyPair pair = generate_key_pair();
  std::ofstream(path) << "# comment\ntrainer " << pair.public_key << " node-1\nadmin " << pair.public_key
                      << "\n";
  CHECK_THROWS_WITH_AS(AuthorizedKeys::load(path),
                       doctest::Contains("authorized_keys:3: unknown role \"admin\""), std::runtime_error);
  std::ofstream(path) << "monitor not-a-key\n";
  CHECK_THROWS_WITH_AS(AuthorizedKeys::load(path), doctest::Contains(":1: the second field"),
                       std::runtime_error);
  std::ofstream(path) << "trainer " << pair.public_key << " node-1\n";
  const auto keys = AuthorizedKeys::load(path);
  REQUIRE(keys.find(pair.public_key));
  CHECK(keys.find(pair.public_key)->node == "node-1");
  std::filesystem::remove_all(dir);
}

TEST_CASE("a coordinator with CURVE on and no keys configured refuses to start, saying how to make them") {
  SecurityOptions security;
  CHECK_THROWS_WITH_AS(authorized_keys_for(security),
                       doctest::Contains("security.authorized_keys is not set"), ConfigError);
  CHECK_THROWS_WITH_AS(curve_settings_for(security, PeerRole::kTrainer, "node-1"),
                       doctest::Contains("filo keys new"), ConfigError);
  security.curve = false;
  CHECK(authorized_keys_for(security) == nullptr);
  CHECK_FALSE(curve_settings_for(security, PeerRole::kTrainer).enabled);
}

TEST_CASE("an authorized trainer reaches the coordinator's actors under its name and hears back") {
  SecureBus bus;
  Peer trainer(bus, role_key(bus, PeerRole::kTrainer), trainer_name("node-1", "cpu"));
  REQUIRE(trainer.bus.send(kRegistrarName, msg::Heartbeat{7, {}, 0}));
  auto incoming = wait_for_message(*bus.registrar, bus.registrar->addressed());
  REQUIRE(incoming);
  CHECK(incoming->from == "trainer@node-1/cpu");
  REQUIRE(bus.registrar->send("trainer@node-1/cpu", msg::Heartbeat{8, {}, 0}));
  auto answer = wait_for_message(trainer.bus, trainer.bus.addressed());
  REQUIRE(answer);
  CHECK(answer->from == kRegistrarName);
}

TEST_CASE("a key outside the authorized set gets nothing in and nothing out") {
  SecureBus bus;
  Peer stranger(bus, generate_key_pair(), trainer_name("node-9", "cpu"));
  stranger.bus.subscribe(bus.hub->publish_endpoint(), {kEventTopic, kControlTopic, kModelTopic});
  Peer model_reader(bus, generate_key_pair(), trainer_name("node-8", "cpu"));
  model_reader.bus.subscribe(bus.hub->model_endpoint(), {kModelTopic, kControlTopic});
  for (int i = 0; i < 20; ++i) {
    stranger.bus.send(kRegistrarName, msg::Heartbeat{1, {}, 0});
    bus.aggregator->publish(kEventTopic, msg::SecurityNotice{"secret"});
    bus.aggregator->publish(kModelTopic, msg::ModelState{});
  }
  CHECK_FALSE(wait_for_message(*bus.registrar, bus.registrar->addressed(), kQuiet));
  CHECK_FALSE(wait_for_message(stranger.bus, stranger.bus.published(), kQuiet));
  CHECK_FALSE(wait_for_message(model_reader.bus, model_reader.bus.published(), kQuiet));
  CHECK(bus.dropped("zap: key not authorized") >= 1);
  // An authorized monitor on the same PUB does read the events: the silence above was the key's.
  Peer monitor(bus, role_key(bus, PeerRole::kMonitor), "monitor-1");
  monitor.bus.subscribe(bus.hub->publish_endpoint(), {kEventTopic});
  std::optional<Incoming> event;
  for (int attempt = 0; attempt < 60 && !event; ++attempt) {
    bus.aggregator->publish(kEventTopic, msg::SecurityNotice{"open"});
    event = wait_for_message(monitor.bus, monitor.bus.published(), Milliseconds(50));
  }
  CHECK(event);
}

TEST_CASE(
    "a trainer key cannot act as a coordinator actor, publish, or send what its role may not; only an "
    "operator readmits and fails back") {
  SecureBus bus;
  const KeyPair key = role_key(bus, PeerRole::kTrainer);
  Peer as_aggregator(bus, key, kAggregatorName);
  as_aggregator.bus.send(kSchedulerName, msg::RoundCombined{});
  Peer trainer(bus, key, trainer_name("node-1", "cpu"));
  trainer.bus.send(kSchedulerName, msg::RoundCombined{});  // only the aggregator's to send
  trainer.bus.send(std::string(kPublishPrefix) + kControlTopic, msg::RunFinished{"forged", 0.0});
  trainer.bus.send("trainer@node-2/cpu", msg::SetSlowdown{1e4});                  // only the test aid's
  trainer.bus.send(kSchedulerName, msg::Readmit{trainer_name("node-1", "cpu")});  // only an operator's
  trainer.bus.send(kSchedulerName, msg::Failback{"a trainer moving the run"});    // only an operator's
  trainer.bus.send("trainer@node-2/cpu", msg::HandedOver{1, "forged"});           // only the scheduler's
  CHECK_FALSE(wait_for_message(*bus.scheduler, bus.scheduler->addressed(), kQuiet));
  CHECK(bus.dropped("bus: claims a coordinator actor's name") == 1);
  CHECK(bus.dropped("bus: not permitted to its role") == 6);
  // A monitor only reads: whatever it sends is refused.
  Peer monitor(bus, role_key(bus, PeerRole::kMonitor), "monitor-1");
  monitor.bus.send(kRegistrarName, msg::Heartbeat{1, {}, 0});
  monitor.bus.send(kSchedulerName, msg::Readmit{trainer_name("node-1", "cpu")});
  monitor.bus.send(kSchedulerName, msg::Failback{"a monitor moving the run"});
  CHECK_FALSE(wait_for_message(*bus.registrar, bus.registrar->addressed(), kQuiet));
  CHECK(bus.dropped("bus: not permitted to its role") == 9);
  // An operator's key may readmit and fail back, and nothing else.
  Peer operator_peer(bus, role_key(bus, PeerRole::kOperator), "operator-1");
  operator_peer.bus.send(kRegistrarName, msg::Heartbeat{1, {}, 0});
  operator_peer.bus.send(kSchedulerName, msg::Readmit{trainer_name("node-1", "cpu")});
  const auto readmit = wait_for_message(*bus.scheduler, bus.scheduler->addressed());
  REQUIRE(readmit);
  CHECK(readmit->envelope.kind == MessageKind::kReadmit);
  operator_peer.bus.send(kSchedulerName, msg::Failback{"filo failback"});
  const auto failback = wait_for_message(*bus.scheduler, bus.scheduler->addressed());
  REQUIRE(failback);
  CHECK(failback->envelope.kind == MessageKind::kFailback);
  CHECK(bus.dropped("bus: not permitted to its role") == 10);
}

TEST_CASE("a node-bound key holds at most its node's names, so an honest node that joins later finds room") {
  const KeyPair member_key = generate_key_pair();
  constexpr std::size_t kMaxPeers = 40;  // what the member would fill without the per-key cap (32)
  SecureBus bus({"trainer " + member_key.public_key + " node-9"}, kMaxPeers);
  std::vector<std::unique_ptr<Peer>> claims;
  for (std::size_t i = 0; i < kMaxPeers; ++i) {
    // One connection per name, as the attack in issue 22 did.
    claims.push_back(
        std::make_unique<Peer>(bus, member_key, trainer_name("node-9", "cuda:" + std::to_string(i))));
    claims.back()->bus.send(kRegistrarName, msg::Heartbeat{1, {}, 0});
  }
  std::size_t reached = 0;
  while (reached < 32 && wait_for_message(*bus.registrar, bus.registrar->addressed())) ++reached;
  CHECK(reached == 32);
  CHECK_FALSE(wait_for_message(*bus.registrar, bus.registrar->addressed(), kQuiet));
  CHECK(bus.dropped("bus: too many names for its key") == kMaxPeers - 32);
  Peer honest(bus, role_key(bus, PeerRole::kTrainer), trainer_name("node-1", "cpu"));
  honest.bus.send(kRegistrarName, msg::Heartbeat{1, {}, 0});
  const auto heard = wait_for_message(*bus.registrar, bus.registrar->addressed());
  REQUIRE(heard);
  CHECK(heard->from == trainer_name("node-1", "cpu"));
  CHECK(bus.dropped("bus: too many peers") == 0);
}

TEST_CASE("a name is bound to the key that first used it; the same key on a new connection keeps it") {
  const KeyPair node_2_key = generate_key_pair();
  SecureBus bus({"trainer " + node_2_key.public_key + " node-2"});
  const std::string name = trainer_name("node-1", "cpu");
  {
    Peer first(bus, role_key(bus, PeerRole::kTrainer), name);
    first.bus.send(kRegistrarName, msg::Heartbeat{1, {}, 0});
    REQUIRE(wait_for_message(*bus.registrar, bus.registrar->addressed()));
  }
  // Another authorized key claiming that name: refused.
  Peer impostor(bus, node_2_key, name);
  impostor.bus.send(kRegistrarName, msg::Heartbeat{2, {}, 0});
  CHECK_FALSE(wait_for_message(*bus.registrar, bus.registrar->addressed(), kQuiet));
  CHECK(bus.dropped("bus: name held by another key") == 1);
  // node-2's key may only run as node-2.
  Peer elsewhere(bus, node_2_key, trainer_name("node-3", "cpu"));
  elsewhere.bus.send(kRegistrarName, msg::Heartbeat{3, {}, 0});
  CHECK_FALSE(wait_for_message(*bus.registrar, bus.registrar->addressed(), kQuiet));
  CHECK(bus.dropped("bus: name not allowed to this key") == 1);
  Peer own(bus, node_2_key, trainer_name("node-2", "cpu"));
  own.bus.send(kRegistrarName, msg::Heartbeat{4, {}, 0});
  REQUIRE(wait_for_message(*bus.registrar, bus.registrar->addressed()));
  // The first key again, on a new connection (a restarted node): it keeps its name, and answers
  // reach the new connection.
  Peer restarted(bus, role_key(bus, PeerRole::kTrainer), name);
  restarted.bus.send(kRegistrarName, msg::Heartbeat{5, {}, 0});
  auto incoming = wait_for_message(*bus.registrar, bus.registrar->addressed());
  REQUIRE(incoming);
  CHECK(incoming->from == name);
  bus.registrar->send(name, msg::Heartbeat{6, {}, 0});
  CHECK(wait_for_message(restarted.bus, restarted.bus.addressed()));
}

TEST_CASE("a connection keeps one name: an envelope claiming another is refused") {
  SecureBus bus;
  Peer trainer(bus, role_key(bus, PeerRole::kTrainer), trainer_name("node-1", "cpu"));
  trainer.bus.send(kRegistrarName, msg::Heartbeat{1, {}, 0});
  REQUIRE(wait_for_message(*bus.registrar, bus.registrar->addressed()));
  Envelope lie;
  lie.kind = MessageKind::kHeartbeat;
  lie.sender = trainer_name("node-5", "cpu");
  std::vector<zmq::message_t> frames;
  frames.emplace_back(std::string(kRegistrarName));
  frames.push_back(encode_frame(lie));
  frames.push_back(encode_frame(msg::Heartbeat{}));
  zmq::send_multipart(trainer.bus.addressed(), frames);
  CHECK_FALSE(wait_for_message(*bus.registrar, bus.registrar->addressed(), kQuiet));
  CHECK(bus.dropped("bus: claims another name than its connection's") == 1);
}

TEST_CASE("a connection of another protocol version is named by the hub's count, never by its routing id") {
  SecureBus bus;
  std::string named;
  bus.registrar->on_rejected_envelope([&](const std::string& peer, const std::string&) { named = peer; });
  Peer old_node(bus, role_key(bus, PeerRole::kTrainer), trainer_name("node-1", "cpu"));
  Envelope envelope;
  envelope.protocol_version = kProtocolVersion + 1;
  envelope.kind = MessageKind::kHardwareReport;
  envelope.sender = trainer_name("node-1", "cpu");
  std::vector<zmq::message_t> frames;
  frames.emplace_back(std::string(kRegistrarName));
  frames.push_back(encode_frame(envelope));
  frames.push_back(encode_frame(msg::Heartbeat{}));
  zmq::send_multipart(old_node.bus.addressed(), frames);
  const auto deadline = Clock::now() + kPatience;
  while (named.empty() && Clock::now() < deadline) {
    zmq::pollitem_t item{bus.registrar->addressed().handle(), 0, ZMQ_POLLIN, 0};
    zmq::poll(&item, 1, Milliseconds(20));
    (void)bus.registrar->receive(bus.registrar->addressed());
  }
  // The registrar answers it, and publishes its `rejected` news, under this name: a name spelled
  // from the routing id told a peer the id that libzmq's next generated ids follow.
  CHECK(named == "unadmitted-1");
}

TEST_CASE("a message larger than the run allows is refused before any actor sees it") {
  SecureBus bus;
  Peer trainer(bus, role_key(bus, PeerRole::kTrainer), trainer_name("node-1", "cpu"));
  std::vector<zmq::message_t> frames;
  frames.emplace_back(std::string(600 << 10, 'x'));
  frames.emplace_back(std::string(600 << 10, 'y'));  // each frame fits; the message does not
  trainer.bus.send(kAggregatorName, msg::SnapshotRequest{0}, {}, std::move(frames));
  CHECK_FALSE(wait_for_message(*bus.aggregator, bus.aggregator->addressed(), kQuiet));
  CHECK(bus.dropped("bus: message too large") == 1);
}

namespace {
std::int64_t resident_bytes() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6)) << 10;
  }
  return 0;
}
}  // namespace

TEST_CASE("one endless message of frames each under the limit is cut off at the budget, not assembled") {
  const KeyPair honest_key = generate_key_pair();
  SecureBus bus({"trainer " + honest_key.public_key + " node-2"});
  // A run's largest message is 1 MiB here, so a connection may hold 8 MiB.
  const std::int64_t budget = bus.hub->inbound_budget_bytes();
  REQUIRE(budget == std::int64_t{8} << 20);
  Peer attacker(bus, role_key(bus, PeerRole::kTrainer), trainer_name("node-1", "cpu"));
  Peer honest(bus, honest_key, trainer_name("node-2", "cpu"));
  // 400 frames of 600 KiB, 234 MiB in all, each frame a view of one buffer: the sender holds none of
  // it, and without the guard libzmq in this process would hold all of it before the hub saw any.
  static const std::string filler(600 << 10, 'x');
  constexpr int kFrames = 400;
  std::vector<zmq::message_t> frames;
  frames.emplace_back(std::string(kAggregatorName));
  Envelope envelope;
  envelope.kind = MessageKind::kContribution;
  envelope.sender = "trainer@node-1/cpu";
  frames.push_back(encode_frame(envelope));
  frames.push_back(encode_frame(msg::SnapshotRequest{0}));
  for (int i = 0; i < kFrames; ++i) {
    frames.emplace_back(
        const_cast<char*>(filler.data()), filler.size(), [](void*, void*) {}, nullptr);
  }
  const std::int64_t before = resident_bytes();
  std::atomic<std::int64_t> peak{before};
  std::atomic<bool> sampling{true};
  std::thread sampler([&] {
    while (sampling) {
      peak = std::max(peak.load(), resident_bytes());
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  });
  REQUIRE(zmq::send_multipart(attacker.bus.addressed(), frames));
  const auto deadline = Clock::now() + kPatience;
  while (bus.dropped("bus: connection over its memory budget") == 0 && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  std::this_thread::sleep_for(kQuiet);
  sampling = false;
  sampler.join();
  CHECK(bus.dropped("bus: connection over its memory budget") >= 1);
  CHECK_FALSE(wait_for_message(*bus.aggregator, bus.aggregator->addressed(), kQuiet));
  // The budget, plus what arrives between two looks and the allocator's slack; not the message.
  CHECK((peak - before) < budget + (std::int64_t{32} << 20));
  MESSAGE("resident memory grew by ", (peak - before) >> 20, " MiB during a ",
          (kFrames * filler.size()) >> 20, " MiB message");
  // Nobody else pays: an honest peer's messages still pass, and it is never cut.
  REQUIRE(honest.bus.send(kRegistrarName, msg::Heartbeat{7, {}, 0}));
  auto incoming = wait_for_message(*bus.registrar, bus.registrar->addressed());
  REQUIRE(incoming);
  CHECK(incoming->from == "trainer@node-2/cpu");
}

TEST_CASE("log lines escape control characters, so a name cannot forge a line") {
  CHECK(printable("trainer@x\n12:00:00.000 info  [registrar] all fine") ==
        "trainer@x\\x0a12:00:00.000 info  [registrar] all fine");
  CHECK(printable("\x1b[2J") == "\\x1b[2J");
}

namespace {
/// A subscriber to a coordinator pair's channel holding `key`: what a peer coordinator (the
/// coordinator's own key) or anyone else would hear there.
std::optional<msg::PairState> hear_pair_state(const SecureBus& bus, const KeyPair& key,
                                              const std::string& endpoint) {
  zmq::context_t context;
  zmq::socket_t subscriber(context, zmq::socket_type::sub);
  subscriber.set(zmq::sockopt::linger, 0);
  subscriber.set(zmq::sockopt::curve_serverkey, read_public_key(coordinator_public_key_file(bus.keys_dir)));
  subscriber.set(zmq::sockopt::curve_publickey, key.public_key);
  subscriber.set(zmq::sockopt::curve_secretkey, key.secret_key);
  subscriber.set(zmq::sockopt::subscribe, msg::kPairStateTopic);
  subscriber.connect(endpoint);
  const auto deadline = Clock::now() + Milliseconds(1500);
  while (Clock::now() < deadline) {
    zmq::pollitem_t item{subscriber.handle(), 0, ZMQ_POLLIN, 0};
    zmq::poll(&item, 1, Milliseconds(20));
    std::vector<zmq::message_t> frames;
    if (!zmq::recv_multipart(subscriber, std::back_inserter(frames), zmq::recv_flags::dontwait)) continue;
    if (frames.size() != 2) continue;
    auto state = decode_frame<msg::PairState>(frames[1], BodyLimits{});
    if (state) return state.value();
  }
  return std::nullopt;
}
}  // namespace

TEST_CASE("a coordinator pair's channel admits the coordinator's own key alone, not even an operator's") {
  SecureBus bus;
  PairOptions options;
  const int port = 41000 + static_cast<int>(getpid() % 4000);
  options.own_endpoint = "tcp://127.0.0.1:" + std::to_string(port);
  options.peer_endpoint = "tcp://127.0.0.1:" + std::to_string(port + 1);  // nobody there
  options.run_dir = fresh_directory("pair");
  options.heartbeat_interval = Milliseconds(50);
  PairLink link(*bus.sockets, options, "run-1", 3);
  const auto coordinator_key = read_key_pair(role_key_file(bus.keys_dir, PeerRole::kCoordinator));
  const auto state = hear_pair_state(bus, coordinator_key, options.own_endpoint);
  REQUIRE(state);
  CHECK(state->role == msg::PairRole::kActive);
  CHECK(state->run_id == "run-1");
  CHECK(state->incarnation == 3);
  for (PeerRole role : {PeerRole::kOperator, PeerRole::kMonitor, PeerRole::kTrainer}) {
    CAPTURE(role_name(role));
    CHECK_FALSE(hear_pair_state(bus, role_key(bus, role), options.own_endpoint));
  }
  CHECK(bus.dropped("zap: not the coordinator's key") >= 3);
}
