#pragma once
// Messages that exist to test and benchmark filo, not to train: they let a script change a
// running cluster the way real hardware would change under it.
#include "messages/envelope.hpp"

namespace filo::msg {

// anyone → trainer (TEST AID): from its next micro-batch on, behave `factor` times slower than
// this machine is, like `filo node --slowdown`. The scheduler sees it only through measurement.
struct SetSlowdown {
  static constexpr MessageKind kKind = MessageKind::kSetSlowdown;
  double factor = 1.0;
  MSGPACK_DEFINE_MAP(factor)
};

}  // namespace filo::msg
