#include "messages/codec.hpp"

namespace filo {

std::string_view kind_name(MessageKind kind) {
  switch (kind) {
    case MessageKind::kHardwareReport:
      return "HardwareReport";
    case MessageKind::kAdmission:
      return "Admission";
    case MessageKind::kHeartbeat:
      return "Heartbeat";
    case MessageKind::kLeave:
      return "Leave";
    case MessageKind::kMembershipChange:
      return "MembershipChange";
    case MessageKind::kRoundPlan:
      return "RoundPlan";
    case MessageKind::kRoundOpened:
      return "RoundOpened";
    case MessageKind::kContribution:
      return "Contribution";
    case MessageKind::kContributionReceived:
      return "ContributionReceived";
    case MessageKind::kCombineRound:
      return "CombineRound";
    case MessageKind::kRoundCombined:
      return "RoundCombined";
    case MessageKind::kEvaluate:
      return "Evaluate";
    case MessageKind::kEvaluated:
      return "Evaluated";
    case MessageKind::kModelState:
      return "ModelState";
    case MessageKind::kSnapshotRequest:
      return "SnapshotRequest";
    case MessageKind::kRoundClosed:
      return "RoundClosed";
    case MessageKind::kRunFinished:
      return "RunFinished";
    case MessageKind::kCalibration:
      return "Calibration";
    case MessageKind::kSetSlowdown:
      return "SetSlowdown";
    case MessageKind::kEpochScored:
      return "EpochScored";
    case MessageKind::kMemberNews:
      return "MemberNews";
    case MessageKind::kFleetMembers:
      return "FleetMembers";
    case MessageKind::kRefusalCounts:
      return "RefusalCounts";
    case MessageKind::kCoordinatorResumed:
      return "CoordinatorResumed";
    case MessageKind::kLossScaleOverflow:
      return "LossScaleOverflow";
    case MessageKind::kRunEnded:
      return "RunEnded";
    case MessageKind::kSecurityNotice:
      return "SecurityNotice";
    case MessageKind::kTrainerFailed:
      return "TrainerFailed";
    case MessageKind::kReadmit:
      return "Readmit";
    case MessageKind::kModelUpdate:
      return "ModelUpdate";
    case MessageKind::kExchangeChosen:
      return "ExchangeChosen";
    case MessageKind::kPairStatus:
      return "PairStatus";
    case MessageKind::kFailback:
      return "Failback";
    case MessageKind::kHandedOver:
      return "HandedOver";
  }
  return "unknown";
}

std::optional<std::string> unpack_frame(const zmq::message_t& frame, const BodyLimits& limits,
                                        msgpack::object_handle& handle) {
  if (frame.size() > limits.max_bytes) {
    return "frame of " + std::to_string(frame.size()) + " bytes exceeds the limit of " +
           std::to_string(limits.max_bytes);
  }
  if (frame.size() == 0) return std::string("empty frame where a msgpack body was expected");
  const msgpack::unpack_limit unpack_limits(limits.max_array, limits.max_map, limits.max_string,
                                            /*bin=*/limits.max_bytes, /*ext=*/0, limits.max_depth);
  try {
    std::size_t offset = 0;
    handle = msgpack::unpack(frame.data<char>(), frame.size(), offset, nullptr, nullptr, unpack_limits);
    if (offset != frame.size()) {
      return "frame has " + std::to_string(frame.size() - offset) + " trailing bytes after its msgpack body";
    }
  } catch (const std::exception& e) {
    return std::string("malformed msgpack: ") + e.what();
  }
  return std::nullopt;
}

Decoded<Envelope> decode_envelope(const zmq::message_t& frame, const BodyLimits& limits) {
  msgpack::object_handle handle;
  if (auto error = unpack_frame(frame, limits, handle)) {
    return Decoded<Envelope>::failure("envelope: " + *error);
  }
  const msgpack::object& object = handle.get();
  if (object.type != msgpack::type::MAP) {
    return Decoded<Envelope>::failure("envelope is not a msgpack map");
  }
  // Read the version on its own first, so that a peer from another version gets a clear reason
  // even if the rest of its envelope differs.
  bool has_version = false;
  for (std::uint32_t i = 0; i < object.via.map.size; ++i) {
    const auto& entry = object.via.map.ptr[i];
    if (entry.key.type == msgpack::type::STR && entry.key.as<std::string>() == "protocol_version") {
      has_version = true;
      if (entry.val.type != msgpack::type::POSITIVE_INTEGER || entry.val.via.u64 != kProtocolVersion) {
        return Decoded<Envelope>::failure("protocol version " +
                                          (entry.val.type == msgpack::type::POSITIVE_INTEGER
                                               ? std::to_string(entry.val.via.u64)
                                               : std::string("(not a number)")) +
                                          " where this build speaks " + std::to_string(kProtocolVersion));
      }
    }
  }
  if (!has_version) return Decoded<Envelope>::failure("envelope carries no protocol_version");
  Envelope envelope;
  try {
    object.convert(envelope);
  } catch (const std::exception& e) {
    return Decoded<Envelope>::failure(std::string("envelope fields malformed: ") + e.what());
  }
  const auto kind = static_cast<std::uint8_t>(envelope.kind);
  if (kind == 0 || kind > kLastMessageKind) {
    return Decoded<Envelope>::failure("unknown message kind " + std::to_string(kind));
  }
  if (envelope.sender.empty()) return Decoded<Envelope>::failure("envelope names no sender");
  return Decoded<Envelope>::ok(std::move(envelope));
}

}  // namespace filo
