// The bus over real ZeroMQ sockets (inproc): addressed delivery by name, publication, tensor
// frames, and the registrar answering complete and incomplete reports.
#include <doctest/doctest.h>

#include "actors/monitor.hpp"
#include "actors/registrar.hpp"
#include "messages/event.hpp"
#include "messages/membership.hpp"
#include "messages/round.hpp"
#include "runtime/bus.hpp"
#include "runtime/scoped_thread.hpp"

using namespace filo;

namespace {
constexpr Milliseconds kPatience{3000};

std::optional<Incoming> wait_for_message(BusClient& client, zmq::socket_t& socket) {
  const auto deadline = Clock::now() + kPatience;
  while (Clock::now() < deadline) {
    zmq::pollitem_t item{socket.handle(), 0, ZMQ_POLLIN, 0};
    zmq::poll(&item, 1, Milliseconds(50));
    if (auto incoming = client.receive(socket)) return incoming;
  }
  return std::nullopt;
}

msg::HardwareReport complete_report(const std::string& node) {
  msg::HardwareReport report;
  report.node = node;
  report.device = "cpu";
  report.hostname = "test-host";
  report.cpu_cores = 2;
  report.memory_available_bytes = 1 << 30;
  report.cpu_gemm_gflops = 10;
  return report;
}

struct Bus {
  zmq::context_t context;
  SocketFactory sockets{context, SocketLimits{}};
  Hub hub{sockets, HubOptions{"test-hub", "", ""}};
};
}  // namespace

TEST_CASE("an addressed message reaches the named actor with its tensors unchanged") {
  Bus bus;
  BusClient alice(bus.sockets, "alice");
  BusClient bob(bus.sockets, "bob");
  alice.connect(bus.hub.inproc_router_endpoint());
  bob.connect(bus.hub.inproc_router_endpoint());
  // Bob must be known to the hub before anyone can address him.
  bob.send("alice", msg::Heartbeat{1, {}, 0});
  REQUIRE(wait_for_message(alice, alice.addressed()));

  const auto gradient = torch::randn({5, 7});
  std::vector<zmq::message_t> frames;
  msg::Contribution contribution;
  contribution.round = 4;
  contribution.samples = 5;
  contribution.gradients = append_tensor_frames({{"w", gradient}}, frames);
  REQUIRE(alice.send("bob", contribution, Stamp{4, 3}, std::move(frames)));
  auto incoming = wait_for_message(bob, bob.addressed());
  REQUIRE(incoming);
  CHECK(incoming->from == "alice");
  CHECK(incoming->envelope.kind == MessageKind::kContribution);
  CHECK(incoming->envelope.round == 4);
  CHECK(incoming->envelope.model_version == 3);
  auto body = decode_frame<msg::Contribution>(incoming->body, BodyLimits{});
  REQUIRE(body);
  auto tensors = read_tensor_frames(body.value().gradients, incoming->tensor_frames, 0);
  REQUIRE(tensors);
  CHECK(torch::equal(tensors.value()[0].to_tensor(), gradient));
}

TEST_CASE("a message whose envelope claims another sender is dropped") {
  Bus bus;
  BusClient bob(bus.sockets, "bob");
  bob.connect(bus.hub.inproc_router_endpoint());
  bob.send("nobody", msg::Heartbeat{});  // registers bob's identity with the hub; dropped there
  zmq::socket_t impostor = bus.sockets.make(zmq::socket_type::dealer, "mallory");
  impostor.connect(bus.hub.inproc_router_endpoint());
  Envelope lie;
  lie.kind = MessageKind::kHeartbeat;
  lie.sender = "registrar";
  std::vector<zmq::message_t> frames;
  frames.emplace_back(std::string("bob"));
  frames.push_back(encode_frame(lie));
  frames.push_back(encode_frame(msg::Heartbeat{}));
  zmq::send_multipart(impostor, frames);
  CHECK_FALSE(wait_for_message(bob, bob.addressed()));
}

TEST_CASE("publications reach subscribers of their topic") {
  Bus bus;
  BusClient publisher(bus.sockets, "aggregator");
  publisher.connect(bus.hub.inproc_router_endpoint());
  BusClient watcher(bus.sockets, "monitor");
  watcher.subscribe(bus.hub.inproc_publish_endpoint(), {kEventTopic});
  // PUB/SUB joins asynchronously: publish until the first event arrives.
  std::optional<Incoming> incoming;
  for (int attempt = 0; attempt < 50 && !incoming; ++attempt) {
    msg::RoundClosed round;
    round.text = "round 1";
    round.round = 1;
    publisher.publish(kEventTopic, round);
    zmq::pollitem_t item{watcher.published().handle(), 0, ZMQ_POLLIN, 0};
    zmq::poll(&item, 1, Milliseconds(50));
    incoming = watcher.receive(watcher.published());
  }
  REQUIRE(incoming);
  CHECK(incoming->from == kEventTopic);
  auto event = msg::decode_event(incoming->envelope.kind, incoming->body, BodyLimits{});
  REQUIRE(event);
  CHECK(msg::event_text(event.value()) == "round 1");
}

TEST_CASE("the registrar admits a complete report and rejects an incomplete one with the reason") {
  Bus bus;
  StopFlag stop;
  msg::RunSpec run;
  run.run_id = "run-1";
  run.model = "mlp";
  run.dataset = "fashion-mnist";
  run.train_samples = 100;
  run.seed = 1;
  RegistrarOptions options;
  options.run = run;
  options.publish_endpoint = "inproc://test-hub-pub";
  options.model_endpoint = "inproc://test-hub-models";
  options.heartbeat_interval = Milliseconds(100);
  options.liveness = 3;
  Registrar registrar(bus.sockets, bus.hub.inproc_router_endpoint(), options, stop);
  ScopedThread registrar_thread([&] { registrar.run(); });

  BusClient good(bus.sockets, "trainer@good/cpu");
  good.connect(bus.hub.inproc_router_endpoint());
  good.send(kRegistrarName, complete_report("good"));
  auto answer = wait_for_message(good, good.addressed());
  REQUIRE(answer);
  auto admission = decode_frame<msg::Admission>(answer->body, BodyLimits{});
  REQUIRE(admission);
  CHECK(admission.value().admitted);
  CHECK(admission.value().run.run_id == "run-1");

  BusClient incomplete(bus.sockets, "trainer@bad/cpu");
  incomplete.connect(bus.hub.inproc_router_endpoint());
  auto report = complete_report("bad");
  report.cpu_cores = 0;
  incomplete.send(kRegistrarName, report);
  answer = wait_for_message(incomplete, incomplete.addressed());
  REQUIRE(answer);
  admission = decode_frame<msg::Admission>(answer->body, BodyLimits{});
  REQUIRE(admission);
  CHECK_FALSE(admission.value().admitted);
  CHECK(admission.value().reason.find("CPU core count") != std::string::npos);

  SUBCASE("a peer speaking another protocol version is told so") {
    zmq::socket_t old_peer = bus.sockets.make(zmq::socket_type::dealer, "trainer@old/cpu");
    old_peer.connect(bus.hub.inproc_router_endpoint());
    Envelope envelope;
    envelope.protocol_version = kProtocolVersion + 1;
    envelope.kind = MessageKind::kHardwareReport;
    envelope.sender = "trainer@old/cpu";
    std::vector<zmq::message_t> frames;
    frames.emplace_back(std::string(kRegistrarName));
    frames.push_back(encode_frame(envelope));
    frames.push_back(encode_frame(complete_report("old")));
    zmq::send_multipart(old_peer, frames);
    BusClient reader(bus.sockets, "reader");  // only for its receive(); the socket is old_peer's
    const auto deadline = Clock::now() + kPatience;
    std::vector<zmq::message_t> reply;
    while (Clock::now() < deadline && reply.empty()) {
      zmq::pollitem_t item{old_peer.handle(), 0, ZMQ_POLLIN, 0};
      zmq::poll(&item, 1, Milliseconds(50));
      (void)zmq::recv_multipart(old_peer, std::back_inserter(reply), zmq::recv_flags::dontwait);
    }
    REQUIRE(reply.size() >= 3);
    auto rejection = decode_frame<msg::Admission>(reply[2], BodyLimits{});
    REQUIRE(rejection);
    CHECK_FALSE(rejection.value().admitted);
    CHECK(rejection.value().reason.find("protocol version") != std::string::npos);
  }
  stop.request_stop();
}

TEST_CASE("a wildcard bind address becomes the address the peer used") {
  CHECK(reachable_endpoint("tcp://0.0.0.0:5556", "tcp://10.1.2.3:5555") == "tcp://10.1.2.3:5556");
  CHECK(reachable_endpoint("tcp://*:5556", "tcp://coordinator:5555") == "tcp://coordinator:5556");
  CHECK(reachable_endpoint("tcp://192.168.1.4:5556", "tcp://10.1.2.3:5555") == "tcp://192.168.1.4:5556");
  CHECK(reachable_endpoint("inproc://hub-pub", "inproc://hub") == "inproc://hub-pub");
}

namespace {
/// The next Admission `client` receives within `patience` (heartbeats skipped), if any.
std::optional<msg::Admission> next_admission(BusClient& client, Milliseconds patience) {
  const auto deadline = Clock::now() + patience;
  while (Clock::now() < deadline) {
    zmq::pollitem_t item{client.addressed().handle(), 0, ZMQ_POLLIN, 0};
    zmq::poll(&item, 1, Milliseconds(20));
    while (auto incoming = client.receive(client.addressed())) {
      if (incoming->envelope.kind != MessageKind::kAdmission) continue;
      auto admission = decode_frame<msg::Admission>(incoming->body, BodyLimits{});
      if (admission) return admission.value();
    }
  }
  return std::nullopt;
}
}  // namespace

TEST_CASE("a report repeated while its admission may be on its way gets no second model archive") {
  // Over a slow link an admission carrying the model takes seconds, and a trainer repeats its
  // report meanwhile: one archive per registration, and a new registration is admitted at once.
  Bus bus;
  StopFlag stop;
  RegistrarOptions options;
  options.run.run_id = "run-1";
  options.run.model = "mlp";
  options.run.dataset = "fashion-mnist";
  options.run.train_samples = 100;
  options.model_archive = std::make_shared<const std::string>(std::string(4096, 'm'));
  options.heartbeat_interval = Milliseconds(100);
  options.liveness = 30;
  Registrar registrar(bus.sockets, bus.hub.inproc_router_endpoint(), options, stop);
  ScopedThread registrar_thread([&] { registrar.run(); });

  BusClient trainer(bus.sockets, "trainer@slow/cpu");
  trainer.connect(bus.hub.inproc_router_endpoint());
  msg::HardwareReport report = complete_report("slow");
  report.registration = 1;
  trainer.send(kRegistrarName, report);
  const auto first = next_admission(trainer, kPatience);
  REQUIRE(first);
  CHECK(first->admitted);
  CHECK(first->model_archive.size() == 1);
  trainer.send(kRegistrarName, report);  // the same report again: its admission is taken to be on its way
  CHECK_FALSE(next_admission(trainer, Milliseconds(600)));
  report.registration = 2;  // registering again (it lost the coordinator): admitted afresh
  trainer.send(kRegistrarName, report);
  const auto again = next_admission(trainer, kPatience);
  REQUIRE(again);
  CHECK(again->admitted);
  CHECK(again->model_archive.size() == 1);
  stop.request_stop();
}

TEST_CASE("a subscriber given a coordinator pair's two publishers hears whichever publishes") {
  // Two hubs stand for a pair's coordinators: the first publishes, then the second (as after a
  // failover); one subscription to both hears each, as filo monitor and the dashboard do.
  zmq::context_t context;
  SocketFactory sockets{context, SocketLimits{}};
  Hub first{sockets, HubOptions{"pair-hub-a", "", ""}};
  Hub second{sockets, HubOptions{"pair-hub-b", "", ""}};
  BusClient watcher(sockets, "monitor");
  watcher.subscribe(first.inproc_publish_endpoint() + "," + second.inproc_publish_endpoint(), {kEventTopic});
  CHECK(events_endpoint_of("tcp://a:5555,tcp://b:6000") == "tcp://a:5556,tcp://b:6001");
  for (Hub* hub : {&first, &second}) {
    BusClient scheduler(sockets, kSchedulerName);
    scheduler.connect(hub->inproc_router_endpoint());
    const std::string text = hub == &first ? "round of the first" : "round of the second";
    bool heard = false;  // a repeat of the first hub's may still be queued: wait for this one's
    for (int attempt = 0; attempt < 50 && !heard; ++attempt) {
      msg::RoundClosed round;
      round.text = text;
      scheduler.publish(kEventTopic, round);
      zmq::pollitem_t item{watcher.published().handle(), 0, ZMQ_POLLIN, 0};
      zmq::poll(&item, 1, Milliseconds(50));
      while (auto incoming = watcher.receive(watcher.published())) {
        auto event = msg::decode_event(incoming->envelope.kind, incoming->body, BodyLimits{});
        heard = heard || (event && msg::event_text(event.value()) == text);
      }
    }
    CHECK(heard);
  }
}
