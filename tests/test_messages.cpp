// Every message type survives encoding; malformed frames become errors, never crashes.
#include <doctest/doctest.h>

#include <random>

#include "messages/codec.hpp"
#include "messages/event.hpp"
#include "messages/membership.hpp"
#include "messages/model.hpp"
#include "messages/round.hpp"
#include "messages/tensor_frames.hpp"
#include "messages/test_aid.hpp"

using namespace filo;

namespace {
std::string bytes_of(const zmq::message_t& frame) {
  return std::string(frame.data<char>(), frame.size());
}

template <typename Message>
void check_round_trip(const Message& original) {
  const zmq::message_t frame = encode_frame(original);
  auto decoded = decode_frame<Message>(frame, BodyLimits{});
  REQUIRE_MESSAGE(decoded, decoded.error());
  // Equal encodings of the decoded value and the original mean every field came back.
  CHECK(bytes_of(encode_frame(decoded.value())) == bytes_of(frame));
}

zmq::message_t envelope_frame(std::uint16_t version) {
  Envelope envelope;
  envelope.protocol_version = version;
  envelope.kind = MessageKind::kHeartbeat;
  envelope.sender = "trainer@node-1/cpu";
  return encode_frame(envelope);
}
/// One event of every family, every field set.
std::vector<msg::AnyEvent> sample_events() {
  msg::RoundClosed round;
  round.text = "round 3";
  round.round = 3;
  round.epoch = 1;
  round.model_version = 3;
  round.seconds = 0.05;
  round.samples = 128;
  round.loss = 0.5;
  round.closed_because = "every live trainer answered";
  round.epoch_samples_done = 384;
  round.epoch_samples_total = 6000;
  round.epochs = 2;
  msg::TrainerInRound part;
  part.name = "trainer@a/cpu";
  part.planned = 64;
  part.delivered = true;
  part.samples = 64;
  part.ranges = {{0, 32}, {64, 96}};
  part.precision = "bf16";
  round.trainers = {part};
  msg::EpochScored epoch{"epoch 1", 1,    2,  47, "test_accuracy", 0.88, {{"test_accuracy", 0.88}},
                         0.4,       6000, 9.5};
  msg::MemberNews news{
      "trainer@a/cpu lost", msg::MemberChange::kLost, "trainer@a/cpu", "no heartbeat", "", 4, 1};
  msg::FleetMembers members{"1 live", {{"trainer@b/cpu", "vm", "cpu", "fp32", 0.25, 1 << 20}}};
  msg::RefusalCounts counts{"3 refused", {{"bus: not permitted to its role", 3}}, 3};
  msg::CoordinatorResumed resumed{"resumed", 26, 1, 2, 25};
  msg::LossScaleOverflow overflow{"overflow", 7, 1, 32768.0};
  msg::RunEnded ended{"done", 94, "test_accuracy", 0.89, 47.2, "runs/latest"};
  msg::SecurityNotice notice{"security.curve = false"};
  msg::ExchangeChosen chosen{"round 7 on: local-sgd", 7, "local-sgd", "topk-q8", 4, 2.1, 0.05, "slow links"};
  msg::PairStatus pair{"coordinator pair: a active",
                       "tcp://a:5555",
                       "tcp://b:5555",
                       "passive",
                       0.1,
                       120,
                       119,
                       119,
                       352000.0,
                       0.3,
                       2,
                       1,
                       "",
                       true};
  return {round, epoch, news, members, counts, resumed, overflow, ended, notice, chosen, pair};
}
}  // namespace

TEST_CASE("every message type round-trips through msgpack") {
  msg::HardwareReport report;
  report.node = "node-1";
  report.device = "cuda:0";
  report.hostname = "h";
  report.cpu_cores = 16;
  report.memory_available_bytes = 1 << 30;
  report.cpu_gemm_gflops = 104.5;
  msg::GpuInfo gpu;
  gpu.name = "NVIDIA H100";
  gpu.uuid = "GPU-1234";
  gpu.compute_capability_major = 9;
  gpu.total_memory_bytes = 80ll << 30;
  gpu.free_memory_bytes = 79ll << 30;
  report.gpus.push_back(gpu);
  report.gpus.back().gemm_tflops = {{"bf16", 712.5}, {"fp64", 51.0}};
  report.gpus.back().host_to_device_gbps = 51.2;
  report.priority = 2;
  check_round_trip(report);
  msg::Admission admission;
  admission.admitted = true;
  admission.run.run_id = "run-1";
  admission.run.model = "cnn";
  admission.run.dataset = "fashion-mnist";
  admission.run.train_samples = 60000;
  admission.run.seed = 7;
  admission.run.mode = "local-sgd";
  admission.run.optimizer = "adam";
  admission.run.learning_rate = 1e-3;
  admission.publish_endpoint = "tcp://10.0.0.1:5556";
  admission.heartbeat_interval_ms = 250;
  admission.liveness = 4;
  check_round_trip(admission);
  check_round_trip(msg::Heartbeat{42, "bf16", 1 << 20});
  check_round_trip(msg::Leave{"shutting down"});
  check_round_trip(
      msg::MembershipChange{"trainer@n/cpu", msg::MembershipChangeKind::kLost, "silent", 1.5, "host-1"});
  msg::RoundPlan plan;
  plan.round = 3;
  plan.epoch = 1;
  plan.model_version = 2;
  plan.ranges = {{0, 10}, {50, 60}};
  plan.micro_batch = 8;
  plan.accumulation_steps = 3;
  plan.deadline_seconds = 2.5;
  check_round_trip(plan);
  check_round_trip(msg::RoundOpened{3, 1, 2, 4, {{"a", 10}, {"b", 20}}, "local-sgd", true});
  msg::Contribution contribution;
  contribution.round = 3;
  contribution.samples = 20;
  contribution.loss_sum = 12.5;
  contribution.gradients = {{"0.weight", WireDType::kFloat32, {10, 784}, 1}};
  contribution.buffers = {{"1.num_batches_tracked", WireDType::kInt64, {}, 1}};
  check_round_trip(contribution);
  check_round_trip(msg::ContributionReceived{3, "a", false, "bad tensors", 20, 12.5, 7, 0.5, 0.01, 0.001,
                                             true, "bf16", 1 << 20});
  check_round_trip(msg::CombineRound{3, 1, {"a", "b"}, 4, true, "{\"round\":3}"});
  check_round_trip(msg::RoundCombined{3, 4, 0.001, 0.002, 0.003, "", 1024, true, {{"trainer@a/cpu", -0.25}}});
  check_round_trip(msg::Evaluate{1, 4, true});
  check_round_trip(msg::Evaluated{1, 4, {{"test_accuracy", 0.88}}, {"runs/x/model.pt"}, ""});
  msg::ModelState state;
  state.model_version = 9;
  state.parameters = {{"0.weight", WireDType::kFloat32, {3, 3}, 1}};
  check_round_trip(state);
  check_round_trip(msg::SnapshotRequest{4});
  for (const auto& event : sample_events()) {
    std::visit([](const auto& typed) { check_round_trip(typed); }, event);
  }
  check_round_trip(msg::TrainerFailed{3, "CUDA out of memory", true});
  check_round_trip(msg::RunFinished{"done", 0.9});
  check_round_trip(msg::Calibration{812.5, 64, 256, "cuda:0", "bf16"});
  check_round_trip(msg::SetSlowdown{4.0});
}

TEST_CASE("a valid envelope decodes and malformed ones are rejected with a reason") {
  const BodyLimits limits;
  CHECK(decode_envelope(envelope_frame(kProtocolVersion), limits));

  SUBCASE("wrong protocol version") {
    auto decoded = decode_envelope(envelope_frame(kProtocolVersion + 1), limits);
    REQUIRE_FALSE(decoded);
    CHECK(decoded.error().find("protocol version") != std::string::npos);
  }
  SUBCASE("truncated") {
    const auto whole = envelope_frame(kProtocolVersion);
    for (std::size_t cut = 1; cut < whole.size(); ++cut) {
      zmq::message_t truncated(whole.data(), cut);
      CHECK_FALSE(decode_envelope(truncated, limits));
    }
  }
  SUBCASE("oversized") {
    BodyLimits small;
    small.max_bytes = 8;
    auto decoded = decode_envelope(envelope_frame(kProtocolVersion), small);
    REQUIRE_FALSE(decoded);
    CHECK(decoded.error().find("exceeds") != std::string::npos);
  }
  SUBCASE("a hostile array32 header does not make the decoder reserve gigabytes") {
    const unsigned char hostile[] = {0xdd, 0xff, 0xff, 0xff, 0xff};
    zmq::message_t frame(hostile, sizeof hostile);
    CHECK_FALSE(decode_envelope(frame, limits));
    CHECK_FALSE(decode_frame<msg::RoundPlan>(frame, limits));
  }
  SUBCASE("unknown kind and missing sender") {
    Envelope envelope;
    envelope.sender = "x";
    envelope.kind = static_cast<MessageKind>(200);
    CHECK_FALSE(decode_envelope(encode_frame(envelope), limits));
    envelope.kind = MessageKind::kHeartbeat;
    envelope.sender.clear();
    CHECK_FALSE(decode_envelope(encode_frame(envelope), limits));
  }
  SUBCASE("no protocol version at all") {
    std::map<std::string, std::string> not_an_envelope{{"sender", "x"}};
    CHECK_FALSE(decode_envelope(encode_frame(not_an_envelope), limits));
  }
  SUBCASE("random bytes and damaged messages decode or fail with a reason, never anything else") {
    std::mt19937 random(12345);
    std::size_t rejected = 0;
    std::size_t tried = 0;
    const auto check_clean = [&](const zmq::message_t& frame) {
      const auto envelope = decode_envelope(frame, limits);
      const auto contribution = decode_frame<msg::Contribution>(frame, limits);
      const auto report = decode_frame<msg::HardwareReport>(frame, limits);
      // Each outcome is a value or a failure that says why.
      CHECK((envelope || !envelope.error().empty()));
      CHECK((contribution || !contribution.error().empty()));
      CHECK((report || !report.error().empty()));
      ++tried;
      rejected += envelope ? 0 : 1;
    };
    for (int trial = 0; trial < 2000; ++trial) {
      std::vector<unsigned char> bytes(1 + random() % 64);
      for (auto& byte : bytes) byte = static_cast<unsigned char>(random());
      check_clean(zmq::message_t(bytes.data(), bytes.size()));
    }
    // Valid messages with bytes flipped or cut short: the inputs most likely to get deep.
    msg::Contribution contribution;
    contribution.round = 7;
    contribution.samples = 42;
    contribution.gradients = {{"0.weight", WireDType::kFloat32, {10, 784}, 8}};
    for (const zmq::message_t& valid : {envelope_frame(kProtocolVersion), encode_frame(contribution)}) {
      const std::string bytes(valid.data<char>(), valid.size());
      for (int trial = 0; trial < 2000; ++trial) {
        std::string damaged = bytes;
        if (trial % 2 == 0) {
          damaged[random() % damaged.size()] = static_cast<char>(random());
        } else {
          damaged.resize(random() % damaged.size());
          if (damaged.empty()) damaged = "\xc1";  // never-used msgpack byte
        }
        check_clean(zmq::message_t(damaged.data(), damaged.size()));
      }
    }
    CHECK(tried == 6000);
    // Random bytes are almost never an envelope: the decoder must have said no to nearly all.
    CHECK(rejected > 5000);
  }
}

TEST_CASE("a body of the wrong shape is an error value") {
  const auto frame = encode_frame(std::string("not a map"));
  auto decoded = decode_frame<msg::RoundPlan>(frame, BodyLimits{});
  REQUIRE_FALSE(decoded);
  CHECK(decoded.error().find("does not match") != std::string::npos);
}

TEST_CASE("tensors travel as frames and come back equal and chunked when large") {
  const auto small = torch::randn({3, 4});
  const auto counter = torch::tensor(7, torch::kInt64);
  const auto large = torch::randn({700'000});  // 2.8 MB: three chunks
  std::vector<zmq::message_t> frames;
  const auto metas = append_tensor_frames({{"small", small}, {"counter", counter}, {"large", large}}, frames);
  REQUIRE(metas.size() == 3);
  CHECK(metas[2].frames == 3);
  // Sending did not copy: the first frame points into the tensor.
  CHECK(frames[0].data() == small.data_ptr());
  auto list = std::make_shared<std::vector<zmq::message_t>>(std::move(frames));
  auto received = read_tensor_frames(metas, list, 0);
  REQUIRE_MESSAGE(received, received.error());
  CHECK(torch::equal(received.value()[0].to_tensor(), small));
  CHECK(received.value()[1].to_tensor().item<std::int64_t>() == 7);
  CHECK(torch::equal(received.value()[2].to_tensor(), large));
  auto reused = torch::empty({700'000});
  received.value()[2].copy_into(reused);
  CHECK(torch::equal(reused, large));
}

TEST_CASE("tensor frames that disagree with their description are rejected") {
  std::vector<zmq::message_t> frames;
  auto metas = append_tensor_frames({{"w", torch::ones({4, 4})}}, frames);
  auto list = std::make_shared<std::vector<zmq::message_t>>(std::move(frames));
  SUBCASE("wrong shape for the bytes") {
    metas[0].shape = {4, 5};
    auto result = read_tensor_frames(metas, list, 0);
    REQUIRE_FALSE(result);
    CHECK(result.error().find("bytes") != std::string::npos);
  }
  SUBCASE("more frames announced than sent") {
    metas[0].frames = 2;
    CHECK_FALSE(read_tensor_frames(metas, list, 0));
  }
  SUBCASE("frames left over") {
    list->emplace_back(16);
    CHECK_FALSE(read_tensor_frames(metas, list, 0));
  }
  SUBCASE("unknown dtype") {
    metas[0].dtype = static_cast<WireDType>(99);
    CHECK_FALSE(read_tensor_frames(metas, list, 0));
  }
  SUBCASE("negative or overflowing dimensions") {
    metas[0].shape = {-4, -4};
    CHECK_FALSE(read_tensor_frames(metas, list, 0));
    metas[0].shape = {1ll << 40, 1ll << 40};
    CHECK_FALSE(read_tensor_frames(metas, list, 0));
  }
}

TEST_CASE("every event family round-trips through its JSON line, and an unknown type is refused") {
  for (const auto& event : sample_events()) {
    const nlohmann::json line = msg::event_json(event, 1.5e9);
    INFO(line.dump());
    CHECK(line.at("type") == msg::event_type(event));
    CHECK(line.at("time") == 1.5e9);
    const msg::AnyEvent back = msg::event_from_json(line);
    CHECK(back.index() == event.index());
    CHECK(msg::event_json(back, 1.5e9) == line);
  }
  CHECK_THROWS_AS(msg::event_from_json(nlohmann::json{{"type", "no-such-event"}}), std::invalid_argument);
  // rounds.jsonl keeps the event less its text, with ranges as [begin, end] pairs.
  const auto round = std::get<msg::RoundClosed>(sample_events().front());
  const nlohmann::json record = msg::round_record_json(round);
  CHECK_FALSE(record.contains("text"));
  CHECK(record.at("trainers").at(0).at("ranges") == nlohmann::json::array({{0, 32}, {64, 96}}));
  CHECK(msg::round_record_json(msg::round_from_record(record)) == record);
}
