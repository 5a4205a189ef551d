#pragma once
// Pinning a process to CPUs: a node beside its GPU's NUMA-local cores, or one trainer per core
// when several nodes share one machine (bench/cluster_balance --pin).
#include <sys/types.h>
#include <string>
#include <vector>

namespace filo {

/// "0-3,8" -> {0, 1, 2, 3, 8}; empty text -> no CPUs (no pinning). Throws ConfigError naming
/// `key` and the item that is wrong.
std::vector<int> parse_cpu_list(const std::string& text, const std::string& key);

/// Restricts `pid` (0: every thread of this process) to `cpus`; nothing when `cpus` is empty. Throws
/// std::system_error naming the CPUs when the kernel refuses (a CPU this machine lacks).
void pin_to_cpus(pid_t pid, const std::vector<int>& cpus);

/// How many CPUs this process may run on (its affinity mask; at least 1).
int usable_cpus();

}  // namespace filo
