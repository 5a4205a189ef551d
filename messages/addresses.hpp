#pragma once
// Who is who on the bus. Actors know each other only by these addresses, never by socket or by
// including another actor's header: the coordinator's actors by fixed names, trainers by a name
// made from their node and device, and the topics of the hub's publisher.
#include <string>

namespace filo {

constexpr const char* kRegistrarName = "registrar";
constexpr const char* kSchedulerName = "scheduler";
constexpr const char* kAggregatorName = "aggregator";

/// Published topics. Trainers read model and control; monitors read event and control.
constexpr const char* kModelTopic = "model";
constexpr const char* kEventTopic = "event";
constexpr const char* kControlTopic = "control";
/// A destination that starts with this is published on the hub's PUB under the rest as topic.
constexpr const char* kPublishPrefix = "pub:";

/// A snapshot of the model for one trainer travels on the model publisher (as broadcasts do),
/// under a topic of its own: never on the trainer's addressed connection, where a large message
/// over a slow link would hold up its plans and heartbeats. The '|' ends the name, so that one
/// trainer's topic is never a prefix of another's (cuda:1 and cuda:10).
inline std::string snapshot_topic(const std::string& trainer) {
  return "snapshot:" + trainer + "|";
}
constexpr const char* kSnapshotTopicPrefix = "snapshot:";

/// A trainer's heartbeats travel on a connection of their own under this name, so that a large
/// message on its main connection (a contribution over a slow link) never holds them up.
constexpr const char* kHeartbeatSuffix = "#heartbeat";
inline std::string heartbeat_address(const std::string& trainer) {
  return trainer + kHeartbeatSuffix;
}
/// The trainer whose heartbeat address `name` is, or `name` itself.
inline std::string trainer_of_heartbeat(const std::string& name) {
  const std::string suffix = kHeartbeatSuffix;
  if (name.size() > suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0)
    return name.substr(0, name.size() - suffix.size());
  return name;
}

/// "trainer@node-3/cuda:0": one trainer per device of a node.
inline std::string trainer_name(const std::string& node, const std::string& device) {
  return "trainer@" + node + "/" + device;
}

/// The node part of a trainer's name ("node-3" of "trainer@node-3/cpu"), or the name itself.
inline std::string node_of_trainer(const std::string& trainer) {
  const auto at = trainer.find('@');
  if (at == std::string::npos) return trainer;
  const auto slash = trainer.find('/', at);
  return trainer.substr(at + 1, slash == std::string::npos ? std::string::npos : slash - at - 1);
}

/// The device part of a trainer's name ("cpu" of "trainer@node-3/cpu"), or empty.
inline std::string device_of_trainer(const std::string& trainer) {
  const auto at = trainer.find('@');
  const auto slash = trainer.find('/', at == std::string::npos ? 0 : at);
  return slash == std::string::npos ? std::string() : trainer.substr(slash + 1);
}

}  // namespace filo
