#pragma once
// Who may send what to whom. The hub looks every message from outside the coordinator process up
// in this one table before forwarding it; anything not listed is dropped with a counted reason,
// before any actor's handler runs. The coordinator's own actors (over inproc) may send anything.
#include <array>
#include <string>

#include "messages/addresses.hpp"
#include "messages/envelope.hpp"
#include "runtime/keys.hpp"

namespace filo {

/// The kinds of destination a message can have on the bus.
enum class Destination { kRegistrar, kScheduler, kAggregator, kTrainer, kPublication, kOther };

inline Destination destination_of(const std::string& to) {
  if (to == kRegistrarName) return Destination::kRegistrar;
  if (to == kSchedulerName) return Destination::kScheduler;
  if (to == kAggregatorName) return Destination::kAggregator;
  if (to.rfind(kPublishPrefix, 0) == 0) return Destination::kPublication;
  if (to.rfind("trainer@", 0) == 0) return Destination::kTrainer;
  return Destination::kOther;
}

struct Permission {
  PeerRole role;
  MessageKind kind;
  Destination to;
};

/// Everything a peer outside the coordinator process may send. Monitors only read (they subscribe
/// to the event stream), so they appear nowhere here.
constexpr std::array<Permission, 10> kPermissions{{
    {PeerRole::kTrainer, MessageKind::kHardwareReport, Destination::kRegistrar},
    {PeerRole::kTrainer, MessageKind::kHeartbeat, Destination::kRegistrar},
    {PeerRole::kTrainer, MessageKind::kLeave, Destination::kRegistrar},
    {PeerRole::kTrainer, MessageKind::kCalibration, Destination::kScheduler},
    {PeerRole::kTrainer, MessageKind::kTrainerFailed, Destination::kScheduler},
    {PeerRole::kTrainer, MessageKind::kContribution, Destination::kAggregator},
    {PeerRole::kTrainer, MessageKind::kSnapshotRequest, Destination::kAggregator},
    // `filo slowdown`, the fault suite's aid: makes a trainer behave slower, nothing else.
    {PeerRole::kTestAid, MessageKind::kSetSlowdown, Destination::kTrainer},
    // `filo readmit`: an operator lets a trainer excluded for lying back into the plans.
    {PeerRole::kOperator, MessageKind::kReadmit, Destination::kScheduler},
    // `filo failback`: an operator moves a coordinator pair's run back to its other coordinator.
    {PeerRole::kOperator, MessageKind::kFailback, Destination::kScheduler},
}};

inline bool may_send(PeerRole role, MessageKind kind, Destination to) {
  if (role == PeerRole::kCoordinator) return true;
  for (const auto& permission : kPermissions) {
    if (permission.role == role && permission.kind == kind && permission.to == to) return true;
  }
  return false;
}

/// Names that belong to the coordinator's own actors: no peer from outside may use them.
inline bool is_internal_name(const std::string& name) {
  return name == kRegistrarName || name == kSchedulerName || name == kAggregatorName || name == "hub" ||
         name.rfind(kPublishPrefix, 0) == 0;
}

}  // namespace filo
