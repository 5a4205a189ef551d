#include "messages/event.hpp"

#include <stdexcept>

namespace filo::msg {

// Sample ranges are [begin, end] pairs on disk, as rounds.jsonl has always written them.
void to_json(nlohmann::json& json, const SampleRange& range) {
  json = nlohmann::json::array({range.begin, range.end});
}
void from_json(const nlohmann::json& json, SampleRange& range) {
  range.begin = json.at(0).get<std::uint64_t>();
  range.end = json.at(1).get<std::uint64_t>();
}

NLOHMANN_JSON_SERIALIZE_ENUM(MemberChange, {{MemberChange::kJoined, "joined"},
                                            {MemberChange::kRejoined, "rejoined"},
                                            {MemberChange::kLost, "lost"},
                                            {MemberChange::kLeft, "left"},
                                            {MemberChange::kRejected, "rejected"},
                                            {MemberChange::kLeftOut, "left_out"},
                                            {MemberChange::kPlannedAgain, "planned_again"},
                                            {MemberChange::kFailed, "failed"},
                                            {MemberChange::kTakenOut, "taken_out"},
                                            {MemberChange::kExcluded, "excluded"},
                                            {MemberChange::kReadmitted, "readmitted"}})

NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(TrainerInRound, name, planned, delivered, samples,
                                                compute_seconds, model_wait_seconds, staging_seconds,
                                                samples_per_second, arrival_seconds, idle_seconds, ranges,
                                                missed_reason, benchmark_gflops, device, precision,
                                                peak_memory_bytes, tensor_bytes, norm_per_sample)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(RoundClosed, text, round, epoch, model_version, seconds,
                                                closed_seconds, samples, loss, idle_fraction, closed_because,
                                                deadline_seconds, loss_scale, epoch_samples_done,
                                                epoch_samples_total, epochs, trainers, exchange)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(EpochScored, text, epoch, epochs, round, metric, value,
                                                metrics, train_loss, samples, training_seconds)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(MemberNews, text, change, trainer, reason, hostname, round,
                                                live_trainers)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(MemberStatus, trainer, host, device, precision,
                                                heartbeat_age_seconds, peak_memory_bytes)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(FleetMembers, text, members)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(RefusalCounts, text, by_reason, total)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(CoordinatorResumed, text, round, epoch, coordinator_start,
                                                resumed_after_round)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(LossScaleOverflow, text, round, epoch, loss_scale)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(RunEnded, text, rounds, metric, value, wall_seconds, run_dir)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(SecurityNotice, text)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(ExchangeChosen, text, round, mode, compression, sync_steps,
                                                gradient_fraction, local_fraction, reason)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(PairStatus, text, active, peer, peer_state,
                                                peer_silent_seconds, round, peer_round, replicas,
                                                replica_bytes, replica_milliseconds, coordinator_start,
                                                failovers, handover, changed)

namespace {
/// The stable names of the families that are not MemberNews, in AnyEvent's order.
const char* family_name(const AnyEvent& event) {
  return std::visit(
      [](const auto& typed) -> const char* {
        using T = std::decay_t<decltype(typed)>;
        if constexpr (std::is_same_v<T, RoundClosed>) return "round";
        if constexpr (std::is_same_v<T, EpochScored>) return "epoch";
        if constexpr (std::is_same_v<T, MemberNews>) return member_change_name(typed.change);
        if constexpr (std::is_same_v<T, FleetMembers>) return "members";
        if constexpr (std::is_same_v<T, RefusalCounts>) return "dropped";
        if constexpr (std::is_same_v<T, CoordinatorResumed>) return "resumed";
        if constexpr (std::is_same_v<T, LossScaleOverflow>) return "overflow";
        if constexpr (std::is_same_v<T, RunEnded>) return "finished";
        if constexpr (std::is_same_v<T, SecurityNotice>) return "insecure";
        if constexpr (std::is_same_v<T, ExchangeChosen>) return "exchange";
        if constexpr (std::is_same_v<T, PairStatus>) return "pair";
      },
      event);
}

template <typename Event>
AnyEvent read_as(const nlohmann::json& line) {
  return line.get<Event>();
}

template <typename Event>
bool decode_if(MessageKind kind, const zmq::message_t& body, const BodyLimits& limits,
               std::optional<Decoded<AnyEvent>>& out) {
  if (kind != Event::kKind) return false;
  auto decoded = decode_frame<Event>(body, limits);
  out = decoded ? Decoded<AnyEvent>::ok(AnyEvent(std::move(decoded.value())))
                : Decoded<AnyEvent>::failure(decoded.error());
  return true;
}

template <typename... Events>
std::optional<Decoded<AnyEvent>> decode_any(MessageKind kind, const zmq::message_t& body,
                                            const BodyLimits& limits, std::variant<Events...>*) {
  std::optional<Decoded<AnyEvent>> out;
  (decode_if<Events>(kind, body, limits, out) || ...);
  return out;
}

template <typename... Events>
bool kind_of_any(MessageKind kind, std::variant<Events...>*) {
  return ((kind == Events::kKind) || ...);
}
}  // namespace

const char* member_change_name(MemberChange change) {
  switch (change) {
    case MemberChange::kJoined:
      return "joined";
    case MemberChange::kRejoined:
      return "rejoined";
    case MemberChange::kLost:
      return "lost";
    case MemberChange::kLeft:
      return "left";
    case MemberChange::kRejected:
      return "rejected";
    case MemberChange::kLeftOut:
      return "left_out";
    case MemberChange::kPlannedAgain:
      return "planned_again";
    case MemberChange::kFailed:
      return "failed";
    case MemberChange::kTakenOut:
      return "taken_out";
    case MemberChange::kExcluded:
      return "excluded";
    case MemberChange::kReadmitted:
      return "readmitted";
  }
  return "joined";
}

std::string event_type(const AnyEvent& event) {
  return family_name(event);
}

const std::string& event_text(const AnyEvent& event) {
  return std::visit([](const auto& typed) -> const std::string& { return typed.text; }, event);
}

std::string event_trainer(const AnyEvent& event) {
  const auto* news = std::get_if<MemberNews>(&event);
  return news ? news->trainer : std::string();
}

bool is_event_kind(MessageKind kind) {
  return kind_of_any(kind, static_cast<AnyEvent*>(nullptr));
}

Decoded<AnyEvent> decode_event(MessageKind kind, const zmq::message_t& body, const BodyLimits& limits) {
  auto decoded = decode_any(kind, body, limits, static_cast<AnyEvent*>(nullptr));
  if (!decoded) return Decoded<AnyEvent>::failure("not an event: " + std::string(kind_name(kind)));
  return std::move(*decoded);
}

nlohmann::json event_json(const AnyEvent& event, double unix_time) {
  nlohmann::json line = std::visit([](const auto& typed) { return nlohmann::json(typed); }, event);
  line["type"] = event_type(event);
  line["time"] = unix_time;
  return line;
}

AnyEvent event_from_json(const nlohmann::json& line) {
  const std::string type = line.value("type", std::string());
  if (type == "round") return read_as<RoundClosed>(line);
  if (type == "epoch") return read_as<EpochScored>(line);
  if (type == "members") return read_as<FleetMembers>(line);
  if (type == "dropped") return read_as<RefusalCounts>(line);
  if (type == "resumed") return read_as<CoordinatorResumed>(line);
  if (type == "overflow") return read_as<LossScaleOverflow>(line);
  if (type == "finished") return read_as<RunEnded>(line);
  if (type == "insecure") return read_as<SecurityNotice>(line);
  if (type == "exchange") return read_as<ExchangeChosen>(line);
  if (type == "pair") return read_as<PairStatus>(line);
  MemberNews news = line.get<MemberNews>();
  if (member_change_name(news.change) != type)
    throw std::invalid_argument("unknown event type '" + type + "'");
  return news;
}

nlohmann::json round_record_json(const RoundClosed& round) {
  nlohmann::json line = round;
  line.erase("text");
  return line;
}

RoundClosed round_from_record(const nlohmann::json& line) {
  return line.get<RoundClosed>();
}

}  // namespace filo::msg
