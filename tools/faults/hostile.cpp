#include "tools/faults/hostile.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <random>
#include <thread>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "messages/codec.hpp"
#include "messages/event.hpp"
#include "messages/membership.hpp"
#include "messages/model.hpp"
#include "messages/round.hpp"
#include "messages/test_aid.hpp"
#include "runtime/log.hpp"

namespace filo {
namespace {
constexpr int kRawConnections = 100;
constexpr int kFloodConnections = 300;
constexpr int kNeverReadingSubscribers = 20;
constexpr std::uint64_t kOversizedMessages = 200;
/// Endless messages: 1.8 GB each in frames under the per-frame limit, the size that raised an
/// unguarded coordinator's memory by 1.4 to 1.7 GiB.
constexpr int kEndlessMessages = 3;
constexpr std::size_t kEndlessMessageBytes = std::size_t{1800} << 20;
constexpr std::chrono::milliseconds kEndlessPause{1000};
constexpr std::chrono::milliseconds kSendTimeout{2000};
constexpr std::chrono::milliseconds kSettle{300};
constexpr std::chrono::milliseconds kLinger{3000};

/// A DEALER (or SUB) of the attacker's own, with a CURVE key or none.
zmq::socket_t make_socket(zmq::context_t& context, zmq::socket_type type, const HostileTarget& target,
                          const KeyPair* key) {
  zmq::socket_t socket(context, type);
  // Closing waits (up to this long) until what was queued has left: every message counts.
  socket.set(zmq::sockopt::linger, static_cast<int>(kLinger.count()));
  socket.set(zmq::sockopt::sndtimeo, static_cast<int>(kSendTimeout.count()));
  socket.set(zmq::sockopt::sndhwm, 1000);
  if (key) {
    socket.set(zmq::sockopt::curve_serverkey, target.coordinator_key);
    socket.set(zmq::sockopt::curve_publickey, key->public_key);
    socket.set(zmq::sockopt::curve_secretkey, key->secret_key);
  }
  return socket;
}

zmq::message_t envelope_frame(MessageKind kind, const std::string& sender,
                              std::uint16_t version = kProtocolVersion) {
  Envelope envelope;
  envelope.protocol_version = version;
  envelope.kind = kind;
  envelope.sender = sender;
  return encode_frame(envelope);
}

bool send(zmq::socket_t& socket, std::vector<zmq::message_t>& frames) {
  try {
    return zmq::send_multipart(socket, frames).has_value();
  } catch (const zmq::error_t&) {
    return false;
  }
}

template <typename Body>
bool send_message(zmq::socket_t& socket, const std::string& to, MessageKind kind, const std::string& sender,
                  const Body& body) {
  std::vector<zmq::message_t> frames;
  frames.emplace_back(to.data(), to.size());
  frames.push_back(envelope_frame(kind, sender));
  frames.push_back(encode_frame(body));
  return send(socket, frames);
}

std::string random_bytes(std::mt19937& random, std::size_t size) {
  std::string bytes(size, '\0');
  for (auto& byte : bytes) byte = static_cast<char>(random() & 0xff);
  return bytes;
}

/// Lets the connection's CURVE handshake finish before the clock of a class starts.
void settle() {
  std::this_thread::sleep_for(kSettle);
}

AttackClass unknown_key(const HostileTarget& target) {
  AttackClass attack{"a key outside the authorized set", 0, {{"zap: key not authorized", 1}}};
  zmq::context_t context;
  const KeyPair stranger = generate_key_pair();
  zmq::socket_t dealer = make_socket(context, zmq::socket_type::dealer, target, &stranger);
  dealer.set(zmq::sockopt::sndtimeo, 0);  // nothing ever gets through: do not wait on a full queue
  dealer.set(zmq::sockopt::linger, 0);
  dealer.connect(target.router);
  zmq::socket_t subscriber = make_socket(context, zmq::socket_type::sub, target, &stranger);
  subscriber.set(zmq::sockopt::subscribe, "");
  subscriber.connect(target.publish);
  for (std::uint64_t i = 0; i < kMessagesPerClass; ++i) {
    send_message(dealer, "aggregator", MessageKind::kHeartbeat, target.honest.front(), msg::Heartbeat{});
    ++attack.sent;
  }
  settle();
  return attack;
}

AttackClass raw_bytes(const HostileTarget& target) {
  AttackClass attack{"random bytes over raw tcp (no ZMTP)", 0, {}};
  std::mt19937 random(11);
  for (const std::string& endpoint : {target.router, target.publish}) {
    const auto colon = endpoint.rfind(':');
    const int port = std::stoi(endpoint.substr(colon + 1));
    for (int c = 0; c < kRawConnections / 2; ++c) {
      const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
      sockaddr_in address{};
      address.sin_family = AF_INET;
      address.sin_port = htons(static_cast<std::uint16_t>(port));
      address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0) {
        for (std::uint64_t i = 0; i < kMessagesPerClass / kRawConnections; ++i) {
          const std::string chunk = random_bytes(random, 1 + random() % 512);
          if (::send(fd, chunk.data(), chunk.size(), MSG_NOSIGNAL) <= 0) break;  // the peer hung up
          ++attack.sent;
        }
      }
      ::close(fd);
    }
  }
  // Whatever the engines made of them, they never reached an actor; they end as failed handshakes.
  attack.sent = std::max<std::uint64_t>(attack.sent, kMessagesPerClass);
  return attack;
}

/// Classes sent as the intruder: an authorized trainer key bound to node "intruder".
class Intruder {
 public:
  explicit Intruder(const HostileTarget& target)
      : target_(target), dealer_(make_socket(context_, zmq::socket_type::dealer, target, &target.intruder)) {
    dealer_.connect(target.router);
    settle();
  }

  AttackClass random_frames() {
    AttackClass attack{
        "random frames and frame counts", 0, {{"bus: malformed message", 1000}, {"bus: bad envelope", 1000}}};
    const std::vector<std::string> destinations{"registrar", "scheduler", "aggregator",
                                                target_.honest.front(), "pub:control"};
    for (std::uint64_t i = 0; i < kMessagesPerClass; ++i) {
      std::vector<zmq::message_t> frames;
      const std::size_t count = random_() % 6;
      for (std::size_t f = 0; f < count; ++f) {
        if (f == 0) {
          const auto& to = destinations[random_() % destinations.size()];
          frames.emplace_back(to.data(), to.size());
        } else {
          const std::string bytes = random_bytes(random_, random_() % 200);
          frames.emplace_back(bytes.data(), bytes.size());
        }
      }
      if (frames.empty()) frames.emplace_back();
      attack.sent += send(dealer_, frames) ? 1 : 0;
    }
    return attack;
  }

  AttackClass wrong_versions() {
    AttackClass attack{"wrong protocol versions", 0, {{"bus: bad envelope", kMessagesPerClass / 2}}};
    for (std::uint64_t i = 0; i < kMessagesPerClass; ++i) {
      std::vector<zmq::message_t> frames;
      frames.emplace_back(std::string("aggregator"));
      std::uint16_t version = static_cast<std::uint16_t>(random_());
      if (version == kProtocolVersion) ++version;
      frames.push_back(envelope_frame(MessageKind::kContribution, name_, version));
      frames.push_back(encode_frame(msg::Contribution{}));
      attack.sent += send(dealer_, frames) ? 1 : 0;
    }
    return attack;
  }

  AttackClass truncated_and_bombs() {
    // Bodies reach the actor that takes the kind, which must refuse them; the counts are the
    // actors' ("contribution: malformed body"...), so the expectation is on the total only.
    AttackClass attack{"truncated and bomb msgpack bodies", 0, {}};
    msg::HardwareReport report;
    report.node = "intruder";
    const zmq::message_t whole = encode_frame(report);
    const std::vector<std::string> bombs{
        std::string("\xdd\xff\xff\xff\xff", 5),          // an array of 4 G elements, none present
        std::string("\xdf\xff\xff\xff\xff", 5),          // a map of 4 G pairs
        std::string("\xdb\xff\xff\xff\xf0", 5) + "abc",  // a 4 GB string, 3 bytes present
        std::string(64, '\x91'),                         // arrays nested 64 deep
        std::string("\xc6\x7f\xff\xff\xff", 5),          // a 2 GB bin
    };
    for (std::uint64_t i = 0; i < kMessagesPerClass; ++i) {
      std::vector<zmq::message_t> frames;
      const bool to_aggregator = i % 2 == 0;
      const std::string to = to_aggregator ? "aggregator" : "registrar";
      frames.emplace_back(to.data(), to.size());
      frames.push_back(
          envelope_frame(to_aggregator ? MessageKind::kContribution : MessageKind::kHardwareReport, name_));
      if (i % 3 == 0) {
        frames.emplace_back(whole.data(), random_() % whole.size());  // truncated
      } else {
        const std::string& bomb = bombs[random_() % bombs.size()];
        frames.emplace_back(bomb.data(), bomb.size());
      }
      attack.sent += send(dealer_, frames) ? 1 : 0;
    }
    return attack;
  }

  AttackClass oversized() {
    AttackClass attack{"oversized messages", 0, {{"bus: message too large", kOversizedMessages / 2}}, 0};
    // Each frame fits the per-frame limit; the message as a whole does not.
    const std::size_t frame_bytes = static_cast<std::size_t>(target_.max_inbound_bytes) * 6 / 10;
    const std::string filler(frame_bytes, 'x');
    for (std::uint64_t i = 0; i < kOversizedMessages; ++i) {
      std::vector<zmq::message_t> frames;
      frames.emplace_back(std::string("aggregator"));
      frames.push_back(envelope_frame(MessageKind::kContribution, name_));
      frames.push_back(encode_frame(msg::Contribution{}));
      frames.emplace_back(filler.data(), filler.size());
      frames.emplace_back(filler.data(), filler.size());
      attack.sent += send(dealer_, frames) ? 1 : 0;
    }
    return attack;
  }

  AttackClass endless_messages() {
    AttackClass attack{"endless messages of frames under the limit",
                       0,
                       {{"bus: connection over its memory budget", kEndlessMessages}},
                       0};
    // A connection of its own, so that the cut takes none of the other classes' queued messages.
    zmq::socket_t dealer = make_socket(context_, zmq::socket_type::dealer, target_, &target_.intruder);
    dealer.connect(target_.router);
    settle();
    // Each frame is a view of one buffer: the attacker holds none of the 1.8 GB itself.
    const std::size_t frame_bytes = static_cast<std::size_t>(target_.max_inbound_bytes) * 6 / 10;
    endless_filler_.assign(frame_bytes, 'x');
    const std::string& filler = endless_filler_;
    for (int m = 0; m < kEndlessMessages; ++m) {
      std::vector<zmq::message_t> frames;
      frames.emplace_back(std::string("aggregator"));
      frames.push_back(envelope_frame(MessageKind::kContribution, name_));
      frames.push_back(encode_frame(msg::Contribution{}));
      for (std::size_t sent = 0; sent < kEndlessMessageBytes; sent += frame_bytes) {
        frames.emplace_back(
            const_cast<char*>(filler.data()), filler.size(), [](void*, void*) {}, nullptr);
      }
      attack.sent += send(dealer, frames) ? 1 : 0;
      // Cut off, the DEALER drops the rest of the message and connects again for the next.
      std::this_thread::sleep_for(kEndlessPause);
    }
    dealer.set(zmq::sockopt::linger, 0);
    return attack;
  }

  AttackClass spoofed_names() {
    AttackClass attack{"spoofed names (coordinator actors, honest trainers)",
                       0,
                       {{"bus: claims a coordinator actor's name", kMessagesPerClass / 2}}};
    // A fresh connection per claimed name, as an attacker would: one connection keeps one name.
    std::vector<std::string> claims{"registrar", "scheduler", "aggregator", "pub:control"};
    for (const auto& honest : target_.honest) claims.push_back(honest);
    std::vector<zmq::socket_t> sockets;
    for (std::size_t c = 0; c < claims.size(); ++c) {
      sockets.push_back(make_socket(context_, zmq::socket_type::dealer, target_, &target_.intruder));
      sockets.back().connect(target_.router);
    }
    settle();
    for (std::uint64_t i = 0; i < kMessagesPerClass; ++i) {
      const std::size_t c = i % claims.size();
      attack.sent +=
          send_message(sockets[c], "registrar", MessageKind::kLeave, claims[c], msg::Leave{"spoofed"}) ? 1
                                                                                                       : 0;
    }
    // Honest trainers' names are held by their keys.
    attack.expected["bus: name held by another key"] = kMessagesPerClass / 4;
    return attack;
  }

  AttackClass wrong_roles() {
    AttackClass attack{
        "control messages from the wrong role", 0, {{"bus: not permitted to its role", kMessagesPerClass}}};
    const std::string& honest = target_.honest.front();
    for (std::uint64_t i = 0; i < kMessagesPerClass; ++i) {
      bool sent = false;
      switch (i % 9) {
        case 0:
          sent = send_message(dealer_, honest, MessageKind::kRoundPlan, name_, msg::RoundPlan{});
          break;
        case 1:
          sent = send_message(dealer_, "pub:control", MessageKind::kRunFinished, name_,
                              msg::RunFinished{"forged", 0.5});
          break;
        case 2:
          sent = send_message(
              dealer_, "scheduler", MessageKind::kMembershipChange, name_,
              msg::MembershipChange{honest, msg::MembershipChangeKind::kLost, "forged", 0.0, ""});
          break;
        case 3:
          sent = send_message(dealer_, "aggregator", MessageKind::kCombineRound, name_, msg::CombineRound{});
          break;
        case 4:
          sent = send_message(dealer_, "scheduler", MessageKind::kRoundCombined, name_, msg::RoundCombined{});
          break;
        case 5:
          sent = send_message(dealer_, "pub:model", MessageKind::kModelState, name_, msg::ModelState{});
          break;
        case 6:
          sent = send_message(dealer_, honest, MessageKind::kSetSlowdown, name_, msg::SetSlowdown{1e4});
          break;
        case 7:
          sent = send_message(dealer_, honest, MessageKind::kAdmission, name_, msg::Admission{});
          break;
        default:
          sent = send_message(dealer_, "scheduler", MessageKind::kEvaluated, name_, msg::Evaluated{});
          break;
      }
      attack.sent += sent ? 1 : 0;
    }
    return attack;
  }

  AttackClass snapshot_amplification() {
    AttackClass attack{
        "snapshot request floods", 0, {{"bus: snapshot requests too frequent", kMessagesPerClass * 9 / 10}}};
    for (std::uint64_t i = 0; i < kMessagesPerClass; ++i) {
      attack.sent +=
          send_message(dealer_, "aggregator", MessageKind::kSnapshotRequest, name_, msg::SnapshotRequest{0})
              ? 1
              : 0;
    }
    return attack;
  }

  AttackClass bad_numbers() {
    // Well-formed contributions for rounds this name was never planned in, with numbers that must
    // never reach arithmetic: NaN and infinite times, 1e19 losses, more correct than samples.
    AttackClass attack{"contributions with hostile numbers", 0, {}};
    for (std::uint64_t i = 0; i < kMessagesPerClass; ++i) {
      msg::Contribution contribution;
      contribution.round = i % 50;
      contribution.samples = 1u << 30;
      contribution.correct = 1u << 31;
      contribution.loss_sum = i % 2 ? 1e19 : std::numeric_limits<double>::quiet_NaN();
      contribution.compute_seconds = i % 3 ? std::numeric_limits<double>::infinity() : -1.0;
      attack.sent +=
          send_message(dealer_, "aggregator", MessageKind::kContribution, name_, contribution) ? 1 : 0;
    }
    return attack;
  }

  AttackClass connection_flood() {
    AttackClass attack{"a flood of connections", 0, {}};
    for (int c = 0; c < kFloodConnections; ++c) {
      zmq::socket_t socket = make_socket(context_, zmq::socket_type::dealer, target_, &target_.intruder);
      socket.connect(target_.router);
      const std::string name = "trainer@intruder/flood-" + std::to_string(c);
      for (std::uint64_t i = 0; i < (kMessagesPerClass + kFloodConnections - 1) / kFloodConnections; ++i)
        attack.sent +=
            send_message(socket, "registrar", MessageKind::kHeartbeat, name, msg::Heartbeat{}) ? 1 : 0;
    }
    return attack;
  }

  AttackClass never_reading_subscribers() {
    AttackClass attack{"subscribers that never read", 0, {}, 0};
    for (int s = 0; s < kNeverReadingSubscribers; ++s) {
      subscribers_.push_back(make_socket(context_, zmq::socket_type::sub, target_, &target_.intruder));
      subscribers_.back().set(zmq::sockopt::rcvhwm, 1);
      subscribers_.back().set(zmq::sockopt::rcvbuf, 4096);
      subscribers_.back().set(zmq::sockopt::subscribe, "");
      subscribers_.back().connect(target_.publish);
      ++attack.sent;
    }
    return attack;
  }

 private:
  const HostileTarget& target_;
  std::string endless_filler_;  // viewed by the endless messages' frames: outlives the context
  zmq::context_t context_;
  zmq::socket_t dealer_;
  std::vector<zmq::socket_t> subscribers_;  // kept open, unread, until the attack ends
  std::string name_ = "trainer@intruder/cpu";
  std::mt19937 random_{5};
};
}  // namespace

std::vector<AttackClass> run_attacks(const HostileTarget& target) {
  std::vector<AttackClass> classes;
  classes.push_back(unknown_key(target));
  classes.push_back(raw_bytes(target));
  Intruder intruder(target);
  classes.push_back(intruder.never_reading_subscribers());  // unread for all the classes below
  classes.push_back(intruder.random_frames());
  classes.push_back(intruder.wrong_versions());
  classes.push_back(intruder.truncated_and_bombs());
  classes.push_back(intruder.oversized());
  classes.push_back(intruder.endless_messages());
  classes.push_back(intruder.spoofed_names());
  classes.push_back(intruder.wrong_roles());
  classes.push_back(intruder.snapshot_amplification());
  classes.push_back(intruder.bad_numbers());
  classes.push_back(intruder.connection_flood());
  std::this_thread::sleep_for(std::chrono::seconds(2));  // queued messages drain before the sockets close
  return classes;
}

}  // namespace filo
