#include "actors/registrar.hpp"

#include <algorithm>
#include <cstring>

namespace filo {
namespace {
/// How often the roll call of live trainers goes out: a dashboard's heartbeat ages stay current.
constexpr Milliseconds kRollCallInterval{1000};
/// Labels a trainer sends for the records (precision) are cut to this length.
constexpr std::size_t kMaxLabelLength = 16;
/// A live trainer's repeated report is answered with another admission only this long after the
/// last: until then the first is taken to be on its way.
constexpr Milliseconds kAdmissionRepeatAfter{10000};

/// Whether two reports say the same, to the byte: one process repeating itself within one
/// registration. A node that registers again counts up `registration`, a restarted node measures
/// its GEMM speed again, and a node that fingerprinted its data reports more.
bool same_report(const msg::HardwareReport& a, const msg::HardwareReport& b) {
  msgpack::sbuffer first;
  msgpack::sbuffer second;
  msgpack::pack(first, a);
  msgpack::pack(second, b);
  return first.size() == second.size() && std::memcmp(first.data(), second.data(), first.size()) == 0;
}
}  // namespace

std::optional<std::string> report_problem(const msg::HardwareReport& report, const std::string& sender,
                                          const AdmissionPolicy& policy) {
  constexpr std::int64_t kMebibyte = 1 << 20;
  if (report.node.empty()) return std::string("hardware report names no node");
  if (report.device.empty()) return std::string("hardware report names no device");
  if (report.hostname.empty()) return std::string("hardware report has no hostname");
  if (report.cpu_cores <= 0) return std::string("hardware report has no CPU core count");
  if (report.memory_available_bytes <= 0) return std::string("hardware report has no available memory");
  if (report.cpu_gemm_gflops <= 0) return std::string("hardware report has no CPU GEMM score");
  if (report.device.rfind("cuda", 0) == 0 && report.gpus.empty()) {
    return "device " + report.device + " requested but the report lists no GPU (" + report.gpu_status + ")";
  }
  const std::string expected = "trainer@" + report.node + "/" + report.device;
  if (sender != expected) return "sender " + sender + " does not match its report (" + expected + ")";
  if (report.memory_available_bytes < policy.min_memory_bytes) {
    return "available memory " + std::to_string(report.memory_available_bytes / kMebibyte) +
           " MiB is below the required " + std::to_string(policy.min_memory_bytes / kMebibyte) + " MiB";
  }
  if (policy.min_device_memory_bytes > 0 && report.device.rfind("cuda", 0) == 0) {
    std::int64_t device_memory = 0;
    for (const auto& gpu : report.gpus) device_memory = std::max(device_memory, gpu.total_memory_bytes);
    if (device_memory < policy.min_device_memory_bytes) {
      return "device memory " + std::to_string(device_memory / kMebibyte) + " MiB is below the required " +
             std::to_string(policy.min_device_memory_bytes / kMebibyte) + " MiB";
    }
  }
  for (const auto& precision : policy.required_precisions) {
    if (std::find(report.precisions.begin(), report.precisions.end(), precision) == report.precisions.end()) {
      return "device " + report.device + " does not compute in required precision " + precision;
    }
  }
  // The reason never says what the coordinator's fingerprint is: a stranger could register with it.
  if (!policy.dataset_fingerprint.empty() && report.dataset_fingerprint != policy.dataset_fingerprint) {
    if (report.dataset_fingerprint.empty()) {
      return "no copy of the run's training set found at the node's data.path" +
             (report.dataset_problem.empty() ? std::string() : " (" + report.dataset_problem + ")");
    }
    return "the node's copy of the training set differs from the coordinator's: check data.path";
  }
  return std::nullopt;
}

Registrar::Registrar(const SocketFactory& sockets, const std::string& hub_endpoint, RegistrarOptions options,
                     const StopFlag& stop, const TimeSource& time)
    : options_(std::move(options)), bus_(sockets, kRegistrarName), loop_(stop, time) {
  bus_.count_refusals_in(options_.drops);
  bus_.connect(hub_endpoint);
  bus_.on_rejected_envelope(
      [this](const std::string& peer, const std::string& reason) { reject(peer, reason); });
  loop_.on_readable(bus_.addressed(), [this] {
    while (auto incoming = bus_.receive(bus_.addressed())) dispatch(*this, *incoming, bus_);
  });
  loop_.every(options_.heartbeat_interval, [this] {
    reap(loop_.now());
    for (const auto& [trainer, record] : live_) bus_.send(record.heartbeat_from, msg::Heartbeat{});
  });
  loop_.every(kRollCallInterval, [this] { publish_members(); });
}

void Registrar::publish_members() {
  msg::FleetMembers members;
  const auto now = loop_.now();
  for (const auto& [trainer, record] : live_) {
    msg::MemberStatus status;
    status.trainer = trainer;
    status.host = record.report.hostname;
    status.device = record.report.device;
    status.precision = record.precision;
    status.heartbeat_age_seconds = seconds_between(record.last_heard, now);
    status.peak_memory_bytes = record.peak_memory_bytes;
    members.members.push_back(std::move(status));
  }
  members.text = std::to_string(members.members.size()) + " trainers live";
  bus_.publish(kEventTopic, members);
}

void Registrar::run() {
  loop_.run();
}

void Registrar::reject(const std::string& trainer, const std::string& reason) {
  msg::Admission admission;
  admission.admitted = false;
  admission.reason = reason;
  bus_.send(trainer, admission);
  // A peer that asks again and again is told each time but logged and announced once a while.
  if (!bus_.refuse(trainer, "admission: rejected", reason)) return;
  msg::MemberNews news;
  news.change = msg::MemberChange::kRejected;
  news.trainer = trainer;
  news.reason = reason;
  news.text = trainer + " rejected: " + reason;
  news.live_trainers = static_cast<std::uint32_t>(live_.size());
  bus_.publish(kEventTopic, news);
}

void Registrar::handle(const msg::HardwareReport& report, const Incoming& from) {
  const bool fingerprint_needed = !options_.policy.dataset_fingerprint.empty();
  if (fingerprint_needed && report.dataset_problem.empty() &&
      (report.dataset_fingerprint.empty() || report.dataset_format != options_.run.data_format)) {
    // The node cannot know the run's format before it asks: tell it, and let it report again.
    msg::Admission describe;
    describe.describe_data = true;
    describe.run = options_.run;
    describe.run.dataset_fingerprint.clear();
    describe.reason =
        "fingerprint the run's training set (" + options_.run.data_format + ") and report again";
    bus_.send(from.from, describe);
    return;
  }
  if (auto problem = report_problem(report, from.from, options_.policy)) {
    reject(from.from, *problem);
    return;
  }
  const auto previous = live_.find(from.from);
  if (previous != live_.end() && loop_.now() - previous->second.admitted_at < kAdmissionRepeatAfter &&
      same_report(previous->second.report, report)) {
    // A repeated report while its admission is still on its way: on a slow link the model archive
    // takes seconds, and answering each report sent meanwhile put copy after copy on that link (six
    // of 7.4 MB at 10 Mbit/s, half a minute before the first round could start).
    previous->second.last_heard = loop_.now();
    return;
  }
  msg::Admission admission;
  admission.admitted = true;
  admission.run = options_.run;
  admission.publish_endpoint = options_.publish_endpoint;
  admission.model_endpoint = options_.model_endpoint;
  admission.heartbeat_interval_ms = static_cast<std::int32_t>(options_.heartbeat_interval.count());
  admission.liveness = options_.liveness;
  std::vector<zmq::message_t> frames;
  if (options_.model_archive) {
    admission.model_archive.push_back(append_bytes_frames("model", options_.model_archive, frames));
  }
  bus_.send(from.from, admission, {}, std::move(frames));

  const bool already_live = previous != live_.end();
  live_[from.from] = TrainerRecord{
      report, loop_.now(), {}, 0, already_live ? previous->second.heartbeat_from : from.from, loop_.now()};
  if (already_live) return;  // a repeated report (lost admission reply): admit again, quietly
  const bool returning = !ever_admitted_.insert(from.from).second;
  std::ostringstream reason;
  reason << report.hostname << ", " << report.cpu_cores << " cores, "
         << report.memory_available_bytes / (1 << 20) << " MiB free, CPU GEMM "
         << static_cast<int>(report.cpu_gemm_gflops) << " GFLOP/s";
  for (const auto& gpu : report.gpus) reason << ", " << gpu.name;
  announce(from.from, returning ? msg::MembershipChangeKind::kRejoined : msg::MembershipChangeKind::kJoined,
           reason.str(), report.cpu_gemm_gflops, report.hostname);
}

void Registrar::handle(const msg::Heartbeat& heartbeat, const Incoming& from) {
  // A trainer's heartbeats come on a connection of their own (heartbeat_address); the answer goes
  // back the way they came.
  auto found = live_.find(trainer_of_heartbeat(from.from));
  if (found == live_.end()) {
    // A trainer we declared lost, or one of the run before a coordinator restart, is still
    // talking: make it register again. Not a rejection; no event.
    msg::Admission again;
    again.register_again = true;
    again.reason = "unknown to this registrar (declared lost, or the coordinator restarted)";
    bus_.send(from.from, again);
    return;
  }
  found->second.last_heard = loop_.now();
  found->second.heartbeat_from = from.from;
  found->second.precision = heartbeat.precision.substr(0, kMaxLabelLength);
  found->second.peak_memory_bytes = std::max<std::int64_t>(0, heartbeat.peak_memory_bytes);
}

void Registrar::handle(const msg::Leave& leave, const Incoming& from) {
  if (live_.erase(from.from) == 0) return;
  announce(from.from, msg::MembershipChangeKind::kLeft, leave.reason, 0.0, {});
}

void Registrar::reap(Clock::time_point now) {
  const auto timeout = options_.heartbeat_interval * options_.liveness;
  for (auto it = live_.begin(); it != live_.end();) {
    if (now - it->second.last_heard > timeout) {
      const std::string trainer = it->first;
      it = live_.erase(it);
      announce(trainer, msg::MembershipChangeKind::kLost,
               "no heartbeat for " + std::to_string(timeout.count()) + " ms", 0.0, {});
    } else {
      ++it;
    }
  }
}

void Registrar::announce(const std::string& trainer, msg::MembershipChangeKind change,
                         const std::string& reason, double cpu_gemm_gflops, const std::string& hostname) {
  static constexpr const char* kChangeNames[] = {"joined", "rejoined", "lost", "left"};
  const char* change_name = kChangeNames[static_cast<int>(change)];
  log(change == msg::MembershipChangeKind::kLost ? LogLevel::kWarn : LogLevel::kInfo, bus_.name(), trainer,
      " ", change_name, ": ", reason);
  msg::MembershipChange message{trainer, change, reason, cpu_gemm_gflops, hostname};
  if (!bus_.send(kSchedulerName, message)) {
    log(LogLevel::kError, bus_.name(), "the scheduler was not told that ", trainer, " ", change_name);
  }
  static constexpr msg::MemberChange kNews[] = {msg::MemberChange::kJoined, msg::MemberChange::kRejoined,
                                                msg::MemberChange::kLost, msg::MemberChange::kLeft};
  msg::MemberNews news;
  news.change = kNews[static_cast<int>(change)];
  news.trainer = trainer;
  news.reason = reason;
  news.hostname = hostname;
  news.text = trainer + " " + change_name + ": " + reason;
  news.live_trainers = static_cast<std::uint32_t>(live_.size());
  bus_.publish(kEventTopic, news);
  if (!options_.security_warning.empty() &&
      (change == msg::MembershipChangeKind::kJoined || change == msg::MembershipChangeKind::kRejoined)) {
    bus_.publish(kEventTopic, msg::SecurityNotice{options_.security_warning});
  }
}

}  // namespace filo
