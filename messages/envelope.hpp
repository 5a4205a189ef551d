#pragma once
// The header frame every message opens with. It is decoded and checked before the body.
#include <cstdint>
#include <msgpack.hpp>
#include <string>
#include <string_view>

namespace filo {

/// Bumped whenever a message's meaning changes incompatibly. 4: RunSpec.mode "auto", whose rounds
/// say their mode (a trainer of version 3 would send gradients where parameter changes are meant).
constexpr std::uint16_t kProtocolVersion = 4;

enum class MessageKind : std::uint8_t {
  kHardwareReport = 1,
  kAdmission,
  kHeartbeat,
  kLeave,
  kMembershipChange,
  kRoundPlan,
  kRoundOpened,
  kContribution,
  kContributionReceived,
  kCombineRound,
  kRoundCombined,
  kEvaluate,
  kEvaluated,
  kModelState,
  kSnapshotRequest,
  kRoundClosed,
  kRunFinished,
  kCalibration,
  kSetSlowdown,
  kEpochScored,
  kMemberNews,
  kFleetMembers,
  kRefusalCounts,
  kCoordinatorResumed,
  kLossScaleOverflow,
  kRunEnded,
  kSecurityNotice,
  kTrainerFailed,
  kReadmit,
  kModelUpdate,
  kExchangeChosen,
  kPairStatus,
  kFailback,
  kHandedOver,
};
constexpr std::uint8_t kLastMessageKind = static_cast<std::uint8_t>(MessageKind::kHandedOver);

std::string_view kind_name(MessageKind kind);

struct Envelope {
  std::uint16_t protocol_version = kProtocolVersion;
  MessageKind kind = MessageKind::kHeartbeat;
  std::string sender;               // actor name, e.g. "trainer@node-3/cpu"
  std::uint64_t sequence = 0;       // per sender and socket, to detect loss and duplicates
  std::uint64_t round = 0;          // the round the message belongs to, where it does
  std::uint64_t model_version = 0;  // the model version it was computed on, where it was
  MSGPACK_DEFINE_MAP(protocol_version, kind, sender, sequence, round, model_version)
};

/// Round and model version stamped on an outgoing envelope.
struct Stamp {
  std::uint64_t round = 0;
  std::uint64_t model_version = 0;
};

}  // namespace filo

MSGPACK_ADD_ENUM(filo::MessageKind);
