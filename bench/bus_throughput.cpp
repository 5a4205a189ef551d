// Bus throughput: tensor messages of 4 KB to 256 MB over tcp loopback, through filo's messaging
// (DEALER -> hub ROUTER over tcp -> receiving actor, envelope + body + chunked tensor frames,
// decoded and materialised into a reused tensor) and through a plain TCP socket carrying the same
// bytes into a reused buffer, and through filo's messaging again with CurveZMQ (the default: every
// frame encrypted and authenticated, the hub checking each sender's key, name and role). All run
// in this process, one after the other for each size.
//
//   build/bus_throughput [--max-mb 256] [--seconds-per-size 2]
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

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
constexpr int kMaxMessages = 2000;

struct Measurement {
  double seconds = 0;
  std::size_t bytes = 0;
  double megabytes_per_second() const { return static_cast<double>(bytes) / kMebibyte / seconds; }
};

int messages_for(std::size_t size, double seconds_per_size) {
  // Aim at ~seconds_per_size at 1 GB/s, within bounds.
  const double wanted = seconds_per_size * 1e9 / static_cast<double>(size);
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
        if (i == 0) {
          if (!torch::equal(view, payload)) throw std::runtime_error("bench: received tensor differs");
          receiver.send(sender_name, msg::Heartbeat{});  // warm-up done: start the clock
          continue;
        }
        measurement.bytes += static_cast<std::size_t>(view.nbytes());
      }
      receiver.send(sender_name, msg::Heartbeat{});
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
  send_payload();
  wait_for(sender);  // the warm-up arrived
  const auto start = Clock::now();
  for (int i = 0; i < messages; ++i) {
    std::vector<zmq::message_t> frames;
    msg::Contribution contribution;
    contribution.samples = 1;
    contribution.gradients = append_tensor_frames({{"payload", payload}}, frames);
    sender.send(kAggregatorName, contribution, Stamp{}, std::move(frames));
  }
  wait_for(sender);  // the receiver's acknowledgement
  measurement.seconds = seconds_between(start, Clock::now());
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
        if (i == 0) {
          const char ready = 1;
          send_all(connection.fd, &ready, 1);
          continue;
        }
        measurement.bytes += announced;
      }
      const char ack = 1;
      send_all(connection.fd, &ack, 1);
    } catch (...) {
      receive_error = std::current_exception();
    }
  });
  Socket client(::socket(AF_INET, SOCK_STREAM, 0));
  check_call(::connect(client.fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0, "connect");
  const int one = 1;
  ::setsockopt(client.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  const std::uint64_t warm_up = size;
  send_all(client.fd, reinterpret_cast<const char*>(&warm_up), sizeof warm_up);
  send_all(client.fd, static_cast<const char*>(payload.data_ptr()), size);
  char ready = 0;
  receive_all(client.fd, &ready, 1);
  const auto start = Clock::now();
  for (int i = 0; i < messages; ++i) {
    const std::uint64_t announced = size;
    send_all(client.fd, reinterpret_cast<const char*>(&announced), sizeof announced);
    send_all(client.fd, static_cast<const char*>(payload.data_ptr()), size);
  }
  char ack = 0;
  receive_all(client.fd, &ack, 1);
  measurement.seconds = seconds_between(start, Clock::now());
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
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--max-mb")
      max_megabytes = std::stoul(argv[i + 1]);
    else if (flag == "--seconds-per-size")
      seconds_per_size = std::stod(argv[i + 1]);
    else {
      std::cerr << "usage: bus_throughput [--max-mb N] [--seconds-per-size S]\n";
      return 2;
    }
  }
  set_log_level(LogLevel::kWarn);
  keep_message_memory();
  std::cout << "bus throughput over tcp loopback: filo messaging (plain and CurveZMQ) vs a plain TCP socket, "
               "same bytes\n"
            << std::left << std::setw(10) << "size" << std::right << std::setw(10) << "messages"
            << std::setw(14) << "filo MB/s" << std::setw(14) << "curve MB/s" << std::setw(14) << "tcp MB/s"
            << std::setw(12) << "filo/tcp" << std::setw(14) << "curve/filo"
            << "\n";
  try {
    for (std::size_t size = 4 * kKibibyte; size <= max_megabytes * kMebibyte; size *= 4) {
      const int messages = messages_for(size, seconds_per_size);
      const Measurement filo = measure_filo(size, messages, false);
      const Measurement curve = measure_filo(size, messages, true);
      const Measurement tcp = measure_plain_tcp(size, messages);
      std::cout << std::left << std::setw(10) << size_name(size) << std::right << std::setw(10) << messages
                << std::fixed << std::setprecision(0) << std::setw(14) << filo.megabytes_per_second()
                << std::setw(14) << curve.megabytes_per_second() << std::setw(14)
                << tcp.megabytes_per_second() << std::setprecision(2) << std::setw(12)
                << filo.megabytes_per_second() / tcp.megabytes_per_second() << std::setw(14)
                << curve.megabytes_per_second() / filo.megabytes_per_second() << std::endl;
    }
  } catch (const std::exception& e) {
    std::cerr << "bus_throughput: " << e.what() << std::endl;
    return 1;
  }
  return 0;
}
