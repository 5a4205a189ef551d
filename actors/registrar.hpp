#pragma once
// The registrar admits trainers after a complete hardware report, tracks their heartbeats and
// announces joins and losses to the scheduler and the event stream.
#include <map>
#include <memory>
#include <set>
#include <string>
#include <variant>

#include "messages/event.hpp"
#include "messages/membership.hpp"
#include "runtime/actor_loop.hpp"
#include "runtime/bus.hpp"

namespace filo {

/// What a node must have to be admitted; zero or empty values admit everyone.
struct AdmissionPolicy {
  std::int64_t min_memory_bytes = 0;             /// available host memory
  std::int64_t min_device_memory_bytes = 0;      /// total memory of the trainer's GPU (cuda devices)
  std::vector<std::string> required_precisions;  /// e.g. {"bf16"}
  std::string dataset_fingerprint;               /// the coordinator's; a node's must equal it
};

struct RegistrarOptions {
  msg::RunSpec run;                                  /// what admitted trainers are told to train
  std::shared_ptr<const std::string> model_archive;  /// sent with every admission (TorchScript bytes)
  std::string publish_endpoint;                      /// where monitors subscribe for events and control
  std::string model_endpoint;                        /// where trainers subscribe for models and control
  Milliseconds heartbeat_interval{250};
  int liveness = 4;  /// missed intervals before a trainer is lost
  AdmissionPolicy policy;
  /// Non-empty when the bus runs without CURVE: published with every join, so that whoever
  /// watches the run sees that anyone on the network could have joined it.
  std::string security_warning;
  DropCounters* drops = nullptr;  /// refusals counted here by reason; may be null
};

class Registrar final {
 public:
  using Inbox = std::variant<msg::HardwareReport, msg::Heartbeat, msg::Leave>;

  Registrar(const SocketFactory& sockets, const std::string& hub_endpoint, RegistrarOptions options,
            const StopFlag& stop, const TimeSource& time = steady_time());
  /// Runs the actor loop on the calling thread until stop.
  void run();

  void handle(const msg::HardwareReport& report, const Incoming& from);
  void handle(const msg::Heartbeat& heartbeat, const Incoming& from);
  void handle(const msg::Leave& leave, const Incoming& from);
  /// Declares lost every trainer silent for longer than heartbeat_interval x liveness.
  void reap(Clock::time_point now);

 private:
  struct TrainerRecord {
    msg::HardwareReport report;
    Clock::time_point last_heard;
    std::string precision;  // from its last heartbeat
    std::int64_t peak_memory_bytes = 0;
    std::string heartbeat_from;     // where its heartbeats come from, and so where ours go
    Clock::time_point admitted_at;  // when its last admission (with the model archive) went out
  };
  void reject(const std::string& trainer, const std::string& reason);
  void announce(const std::string& trainer, msg::MembershipChangeKind change, const std::string& reason,
                double cpu_gemm_gflops, const std::string& hostname);
  /// The roll call: every live trainer with its heartbeat's age, on the event stream.
  void publish_members();

  RegistrarOptions options_;
  BusClient bus_;
  ActorLoop loop_;
  std::map<std::string, TrainerRecord> live_;
  std::set<std::string> ever_admitted_;
};

/// Why `report` is incomplete, invalid or short of `policy`, or nothing when it can be admitted.
std::optional<std::string> report_problem(const msg::HardwareReport& report, const std::string& sender,
                                          const AdmissionPolicy& policy);

}  // namespace filo
