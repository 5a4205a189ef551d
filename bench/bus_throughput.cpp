// Bus throughput: tensor messages of 4 KB to 256 MB over tcp loopback, through filo's messaging
// (DEALER -> hub ROUTER over tcp -> receiving actor, envelope + body + chunked tensor frames,
// decoded and materialised into a reused tensor) and through a plain TCP socket carrying the same
// bytes into a reused buffer, and through filo's messaging again with CurveZMQ (the default: every
// frame encrypted and authenticated, the hub checking each sender's key, name and role). Between
// them, filo's messages sent straight from a DEALER to a ROUTER (no hub): what filo/direct lacks of
// 1 is the hub's hop. All run in this process, one after the other for each size, in batches of
// kBatch messages acknowledged by the receiver.
//
//   build/bus_throughput [--max-mb 256] [--seconds-per-size 2] [--repeats 3]
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <iomanip>
#include <iostream>
#include <thread>

#include "messages/membership.hpp"
#include "messages/round.hpp"
#include "runtime/bus.hpp"
#include "runtime/clock.hpp"
#include "runtime/memory.hpp"
#include "runtime/scoped_thread.hpp"

using namespace filo;

namespace {
constexpr std::size_t kKibibyte = 1024;
constexpr std::size_t kMebibyte = 1024 * 1024;
constexpr int kMinMessages = 3;
constexpr int kMaxMessages = 200000;
/// Messages between the receiver's acknowledgements: under the bus's high-water mark (1000), so
/// that no queue on the way overflows, and enough that one round trip per batch is noise. Every
/// path pays the same acknowledgements.
constexpr int kBatch = 500;

struct Measurement {
  double seconds = 0;
  std::size_t bytes = 0;
  double megabytes_per_second() const { return static_cast<double>(bytes) / kMebibyte / seconds; }
};

/// Whether the receiver acknowledges after message `i` of `messages` (0 is the warm-up).
bool acknowledged_after(int i, int messages) {
  return i == 0 || i % kBatch == 0 || i == messages;
}

/// The sender's side of every path: the warm-up, its acknowledgement, then `messages` timed ones,
/// waiting for the acknowledgement that ends each batch. Returns the seconds after the warm-up.
template <typename Send, typename AwaitAcknowledgement>
double send_timed(int messages, Send send, AwaitAcknowledgement await_acknowledgement) {
  send();
  await_acknowledgement();
  const auto start = Clock::now();
  for (int i = 1; i <= messages; ++i) {
    send();
    if (acknowledged_after(i, messages)) await_acknowledgement();
  }
  return seconds_between(start, Clock::now());
}

int messages_for(std::size_t size, double seconds_per_size) {
  // Aim at ~seconds_per_size at 1 GB/s (small messages go slower: at 250 MB/s at 4 KB), within
  // bounds.
  const double wanted = seconds_per_size * std::min(1e9, 2.5e8 * static_cast<double>(size) / 4096.0) /
                        static_cast<double>(size);
  return static_cast<int>(std::clamp(wanted, double{kMinMessages}, double{kMaxMessages}));
}

Measurement measure_filo(std::size_t size, int messages, bool curve) {
  // Two contexts, as in a real cluster: the sender is a trainer process, the hub and the
  // receiver live in the coordinator process; each has its own zmq I/O thread.
  zmq::context_t coordinator_context;
  zmq::context_t trainer_context;
  SocketLimits limits;
  limits.max_message_bytes = static_cast<std::int64_t>(size) * 2 + kMebibyte;
  CurveSettings coordinator_curve, trainer_curve;
  auto authorized = std::make_shared<AuthorizedKeys>();
  if (curve) {
    coordinator_curve = CurveSettings{true, generate_key_pair(), ""};
    trainer_curve = CurveSettings{true, generate_key_pair(), coordinator_curve.own.public_key};
    authorized->add(AuthorizedKey{PeerRole::kTrainer, trainer_curve.own.public_key, ""});
  }
  SocketFactory coordinator_sockets(coordinator_context, limits, coordinator_curve);
  SocketFactory trainer_sockets(trainer_context, limits, trainer_curve);
  HubOptions hub_options("bench-hub", "tcp://127.0.0.1:*", "");
  if (curve) hub_options.authorized_keys = authorized;
  hub_options.max_inbound_bytes = limits.max_message_bytes;
  Hub hub(coordinator_sockets, hub_options);
  // The receiver plays the aggregator and the sender a trainer: the hub forwards only what a
  // trainer's role may send, so the bench goes the way a contribution does.
  BusClient receiver(coordinator_sockets, kAggregatorName);
  receiver.connect(hub.inproc_router_endpoint());
  const std::string sender_name = trainer_name("bench", "cpu");
  BusClient sender(trainer_sockets, sender_name);
  sender.connect(hub.router_endpoint());
  const auto ping = [&] { sender.send(kAggregatorName, msg::Contribution{}); };

  const auto payload = torch::arange(static_cast<std::int64_t>(size / sizeof(float)), torch::kFloat32);
  // Handshake: the hub must know both names before messages can be routed.
  const auto wait_for = [](BusClient& client) {
    zmq::pollitem_t item{client.addressed().handle(), 0, ZMQ_POLLIN, 0};
    for (int attempt = 0; attempt < 200; ++attempt) {
      zmq::poll(&item, 1, Milliseconds(50));
      if (auto incoming = client.receive(client.addressed())) return incoming;
    }
    throw std::runtime_error("bench: no message within 10 s");
  };
  // Connections register with the hub asynchronously: ping until the receiver hears the sender.
  for (int attempt = 0;; ++attempt) {
    if (attempt == 100) throw std::runtime_error("bench: sender never reached the receiver");
    ping();
    zmq::pollitem_t item{receiver.addressed().handle(), 0, ZMQ_POLLIN, 0};
    zmq::poll(&item, 1, Milliseconds(100));
    if (receiver.receive(receiver.addressed())) break;
  }
  while (receiver.receive(receiver.addressed())) {
  }  // late pings

  Measurement measurement;
  std::exception_ptr receive_error;
  ScopedThread receiving([&] {
    try {
      torch::Tensor reused = torch::empty_like(payload);
      for (int i = 0; i <= messages; ++i) {  // message 0 is the untimed warm-up
        auto incoming = wait_for(receiver);
        auto body = decode_frame<msg::Contribution>(incoming->body, receiver.limits());
        if (!body) throw std::runtime_error(body.error());
        auto tensors = read_tensor_frames(body.value().gradients, incoming->tensor_frames, 0);
        if (!tensors) throw std::runtime_error(tensors.error());
        const ReceivedTensor& tensor = tensors.value()[0];
        torch::Tensor view =
            tensor.meta().frames == 1 ? tensor.to_tensor() : (tensor.copy_into(reused), reused);
        if (i == 0 && !torch::equal(view, payload))
          throw std::runtime_error("bench: received tensor differs");
        if (i > 0) measurement.bytes += static_cast<std::size_t>(view.nbytes());
        if (acknowledged_after(i, messages)) receiver.send(sender_name, msg::Heartbeat{});
      }
    } catch (...) {
      receive_error = std::current_exception();
    }
  });
  const auto send_payload = [&] {
    std::vector<zmq::message_t> frames;
    msg::Contribution contribution;
    contribution.samples = 1;
    contribution.gradients = append_tensor_frames({{"payload", payload}}, frames);
    sender.send(kAggregatorName, contribution, Stamp{}, std::move(frames));
  };
  measurement.seconds = send_timed(messages, send_payload, [&] { wait_for(sender); });
  receiving.join();
  if (receive_error) std::rethrow_exception(receive_error);
  return measurement;
}

/// filo's messages without the hub: the same frames (envelope, msgpack body, tensor frames) from a
/// DEALER in one context straight to a ROUTER in another over tcp, decoded and materialised the
/// same way. Its difference from measure_filo is the hub's hop: one more thread that receives each
/// message, checks its sender and forwards it over inproc. With `encoded` false, the payload's
/// bytes alone go as one frame and are copied into a reused buffer: ZeroMQ's own cost over TCP.
Measurement measure_direct(std::size_t size, int messages, bool encoded) {
  zmq::context_t coordinator_context;
  zmq::context_t trainer_context;
  SocketLimits limits;
  limits.max_message_bytes = static_cast<std::int64_t>(size) * 2 + kMebibyte;
  SocketFactory coordinator_sockets(coordinator_context, limits, CurveSettings{});
  SocketFactory trainer_sockets(trainer_context, limits, CurveSettings{});
  zmq::socket_t router = coordinator_sockets.make(zmq::socket_type::router);
  router.bind("tcp://127.0.0.1:*");
  const std::string endpoint = router.get(zmq::sockopt::last_endpoint);
  const std::string sender_name = trainer_name("bench", "cpu");
  zmq::socket_t dealer = trainer_sockets.make(zmq::socket_type::dealer, sender_name);
  dealer.connect(endpoint);
  BodyLimits body_limits;
  body_limits.max_bytes = static_cast<std::uint32_t>(limits.max_message_bytes);

  const auto payload = torch::arange(static_cast<std::int64_t>(size / sizeof(float)), torch::kFloat32);
  std::uint64_t sequence = 0;
  const auto send_payload = [&] {
    if (!encoded) {
      std::vector<zmq::message_t> frames;
      frames.emplace_back(std::string(kAggregatorName));
      // Zero-copy, as filo's tensor frames are: the payload outlives every send.
      frames.emplace_back(
          payload.data_ptr(), size, [](void*, void*) {}, nullptr);
      if (!zmq::send_multipart(dealer, frames))
        throw std::runtime_error("bench: the DEALER did not take a message");
      return;
    }
    std::vector<zmq::message_t> tensor_frames;
    msg::Contribution contribution;
    contribution.samples = 1;
    contribution.gradients = append_tensor_frames({{"payload", payload}}, tensor_frames);
    Envelope envelope;
    envelope.kind = msg::Contribution::kKind;
    envelope.sender = sender_name;
    envelope.sequence = ++sequence;
    std::vector<zmq::message_t> frames;
    frames.emplace_back(std::string(kAggregatorName));
    frames.push_back(encode_frame(envelope));
    frames.push_back(encode_frame(contribution));
    for (auto& frame : tensor_frames) frames.push_back(std::move(frame));
    if (!zmq::send_multipart(dealer, frames))
      throw std::runtime_error("bench: the DEALER did not take a message");
  };
  const auto receive = [](zmq::socket_t& socket) {
    std::vector<zmq::message_t> frames;
    zmq::pollitem_t item{socket.handle(), 0, ZMQ_POLLIN, 0};
    for (int attempt = 0; attempt < 200 && frames.empty(); ++attempt) {
      zmq::poll(&item, 1, Milliseconds(50));
      (void)zmq::recv_multipart(socket, std::back_inserter(frames), zmq::recv_flags::dontwait);
    }
    if (frames.empty()) throw std::runtime_error("bench: no message within 10 s");
    return frames;
  };

  Measurement measurement;
  std::exception_ptr receive_error;
  ScopedThread receiving([&] {
    try {
      torch::Tensor reused = torch::empty_like(payload);
      const auto acknowledge = [&](zmq::message_t& routing_id) {
        std::vector<zmq::message_t> ack;
        ack.push_back(std::move(routing_id));
        ack.emplace_back(std::string("ack"));
        zmq::send_multipart(router, ack);
      };
      for (int i = 0; i <= messages; ++i) {  // message 0 is the untimed warm-up
        std::vector<zmq::message_t> frames = receive(router);
        if (!encoded) {
          if (frames.size() != 3 || frames[2].size() != size)
            throw std::runtime_error("bench: a message differs");
          std::memcpy(reused.data_ptr(), frames[2].data(), size);
          if (i > 0) measurement.bytes += size;
          if (acknowledged_after(i, messages)) acknowledge(frames[0]);
          continue;
        }
        if (frames.size() < 5) throw std::runtime_error("bench: a message lacks its frames");
        auto envelope = decode_envelope(frames[2], body_limits);
        if (!envelope) throw std::runtime_error(envelope.error());
        auto body = decode_frame<msg::Contribution>(frames[3], body_limits);
        if (!body) throw std::runtime_error(body.error());
        auto tensor_frames = std::make_shared<std::vector<zmq::message_t>>();
        for (std::size_t f = 4; f < frames.size(); ++f) tensor_frames->push_back(std::move(frames[f]));
        auto tensors = read_tensor_frames(body.value().gradients, tensor_frames, 0);
        if (!tensors) throw std::runtime_error(tensors.error());
        const ReceivedTensor& tensor = tensors.value()[0];
        torch::Tensor view =
            tensor.meta().frames == 1 ? tensor.to_tensor() : (tensor.copy_into(reused), reused);
        if (i == 0 && !torch::equal(view, payload))
          throw std::runtime_error("bench: received tensor differs");
        if (i > 0) measurement.bytes += static_cast<std::size_t>(view.nbytes());
        if (acknowledged_after(i, messages)) acknowledge(frames[0]);
      }
    } catch (...) {
      receive_error = std::current_exception();
    }
  });
  measurement.seconds = send_timed(messages, send_payload, [&] { receive(dealer); });
  receiving.join();
  if (receive_error) std::rethrow_exception(receive_error);
  return measurement;
}

void check_call(bool ok, const char* what) {
  if (!ok) throw std::runtime_error(std::string("bench: ") + what + ": " + std::strerror(errno));
}

void send_all(int fd, const char* data, std::size_t length) {
  while (length > 0) {
    const ssize_t n = ::send(fd, data, length, 0);
    check_call(n > 0, "send");
    data += n;
    length -= static_cast<std::size_t>(n);
  }
}

void receive_all(int fd, char* data, std::size_t length) {
  while (length > 0) {
    const ssize_t n = ::recv(fd, data, length, 0);
    check_call(n > 0, "recv");
    data += n;
    length -= static_cast<std::size_t>(n);
  }
}

// A file descriptor that closes itself.
struct Socket {
  int fd = -1;
  explicit Socket(int descriptor) : fd(descriptor) { check_call(fd >= 0, "socket"); }
  ~Socket() {
    if (fd >= 0) ::close(fd);
  }
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;
};

Measurement measure_plain_tcp(std::size_t size, int messages) {
  Socket listener(::socket(AF_INET, SOCK_STREAM, 0));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  check_call(::bind(listener.fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0, "bind");
  check_call(::listen(listener.fd, 1) == 0, "listen");
  socklen_t length = sizeof address;
  check_call(::getsockname(listener.fd, reinterpret_cast<sockaddr*>(&address), &length) == 0, "getsockname");

  const auto payload = torch::arange(static_cast<std::int64_t>(size / sizeof(float)), torch::kFloat32);
  Measurement measurement;
  std::exception_ptr receive_error;
  ScopedThread receiving([&] {
    try {
      Socket connection(::accept(listener.fd, nullptr, nullptr));
      std::vector<char> reused(size);        // the same courtesy filo's receiver gets: a reused buffer
      for (int i = 0; i <= messages; ++i) {  // message 0 is the untimed warm-up
        std::uint64_t announced = 0;
        receive_all(connection.fd, reinterpret_cast<char*>(&announced), sizeof announced);
        receive_all(connection.fd, reused.data(), announced);
        if (i > 0) measurement.bytes += announced;
        if (acknowledged_after(i, messages)) {
          const char ack = 1;
          send_all(connection.fd, &ack, 1);
        }
      }
    } catch (...) {
      receive_error = std::current_exception();
    }
  });
  Socket client(::socket(AF_INET, SOCK_STREAM, 0));
  check_call(::connect(client.fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0, "connect");
  const int one = 1;
  ::setsockopt(client.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  const std::uint64_t announced = size;
  measurement.seconds = send_timed(
      messages,
      [&] {
        send_all(client.fd, reinterpret_cast<const char*>(&announced), sizeof announced);
        send_all(client.fd, static_cast<const char*>(payload.data_ptr()), size);
      },
      [&] {
        char ack = 0;
        receive_all(client.fd, &ack, 1);
      });
  receiving.join();
  if (receive_error) std::rethrow_exception(receive_error);
  return measurement;
}

std::string size_name(std::size_t size) {
  return size >= kMebibyte ? std::to_string(size / kMebibyte) + " MB"
                           : std::to_string(size / kKibibyte) + " KB";
}

}  // namespace

int main(int argc, char** argv) {
  std::size_t max_megabytes = 256;
  double seconds_per_size = 2.0;
  int repeats = 3;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--max-mb")
      max_megabytes = std::stoul(argv[i + 1]);
    else if (flag == "--seconds-per-size")
      seconds_per_size = std::stod(argv[i + 1]);
    else if (flag == "--repeats")
      repeats = std::max(1, std::stoi(argv[i + 1]));
    else {
      std::cerr << "usage: bus_throughput [--max-mb N] [--seconds-per-size S] [--repeats R]\n";
      return 2;
    }
  }
  set_log_level(LogLevel::kWarn);
  keep_message_memory();
  std::cout
      << "bus throughput over tcp loopback, same bytes: a plain TCP socket; the bytes alone from a ZeroMQ "
         "DEALER to a ROUTER (zmq); filo's messages sent the same way (direct); through the hub, as every "
         "message goes (filo); and the same with CurveZMQ (curve). Each figure is the median of "
      << repeats << " runs, the paths taking turns\n"
      << std::left << std::setw(10) << "size" << std::right << std::setw(10) << "messages" << std::setw(10)
      << "tcp MB/s" << std::setw(10) << "zmq MB/s" << std::setw(12) << "direct MB/s" << std::setw(11)
      << "filo MB/s" << std::setw(12) << "curve MB/s" << std::setw(9) << "zmq/tcp" << std::setw(12)
      << "direct/zmq" << std::setw(13) << "filo/direct" << std::setw(10) << "filo/tcp" << std::setw(12)
      << "curve/filo"
      << "\n";
  try {
    for (std::size_t size = 4 * kKibibyte; size <= max_megabytes * kMebibyte; size *= 4) {
      const int messages = messages_for(size, seconds_per_size);
      // The machine's noise moves each figure by up to 2x between runs; taking turns and the median
      // keep one slow moment from deciding a ratio.
      std::vector<std::vector<double>> rates(5);
      for (int repeat = 0; repeat < repeats; ++repeat) {
        rates[0].push_back(measure_plain_tcp(size, messages).megabytes_per_second());
        rates[1].push_back(measure_direct(size, messages, false).megabytes_per_second());
        rates[2].push_back(measure_direct(size, messages, true).megabytes_per_second());
        rates[3].push_back(measure_filo(size, messages, false).megabytes_per_second());
        rates[4].push_back(measure_filo(size, messages, true).megabytes_per_second());
      }
      const auto median = [](std::vector<double> values) {
        std::sort(values.begin(), values.end());
        return values[values.size() / 2];
      };
      const double tcp_rate = median(rates[0]);
      const double zmq_rate = median(rates[1]);
      const double direct_rate = median(rates[2]);
      const double filo_rate = median(rates[3]);
      const double curve_rate = median(rates[4]);
      std::cout << std::left << std::setw(10) << size_name(size) << std::right << std::setw(10) << messages
                << std::fixed << std::setprecision(0) << std::setw(10) << tcp_rate << std::setw(10)
                << zmq_rate << std::setw(12) << direct_rate << std::setw(11) << filo_rate << std::setw(12)
                << curve_rate << std::setprecision(2) << std::setw(9) << zmq_rate / tcp_rate << std::setw(12)
                << direct_rate / zmq_rate << std::setw(13) << filo_rate / direct_rate << std::setw(10)
                << filo_rate / tcp_rate << std::setw(12) << curve_rate / filo_rate << std::endl;
    }
  } catch (const std::exception& e) {
    std::cerr << "bus_throughput: " << e.what() << std::endl;
    return 1;
  }
  return 0;
}
