#include "runtime/config.hpp"

#include "runtime/cpu_affinity.hpp"

#include <toml++/toml.h>
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <set>
#include <sstream>

namespace filo {
namespace {

class Reader {
 public:
  Reader(const toml::table& root, std::string source) : root_(root), source_(std::move(source)) {}

  template <typename T>
  void read(const std::string& section, const std::string& key, T& field) {
    known_.insert(section + "." + key);
    const auto node = root_[section][key];
    if (!node) return;
    std::optional<T> value;
    if constexpr (std::is_same_v<T, std::string>) {
      value = node.value<std::string>();
      // "--slowdowns 4" or "--name 7" arrive as numbers; a string key takes their text.
      if (!value && node.is_integer()) value = std::to_string(*node.value<std::int64_t>());
      if (!value && node.is_floating_point()) {
        std::ostringstream text;
        text << *node.value<double>();
        value = text.str();
      }
    } else if constexpr (std::is_same_v<T, bool>) {
      if (node.is_boolean()) value = node.value<bool>();
    } else if constexpr (std::is_floating_point_v<T>) {
      value = node.value<double>();
    } else {
      if (node.is_integer()) value = node.value<T>();
    }
    if (!value) {
      throw ConfigError(source_ + ": " + section + "." + key + " must be " + kind_name<T>());
    }
    field = *value;
  }

  /// An integer, or the string "auto" (then `field` keeps its default as a first guess).
  void read_or_auto(const std::string& section, const std::string& key, std::int64_t& field, bool& is_auto) {
    const auto node = root_[section][key];
    if (node && node.is_string() && *node.value<std::string>() == "auto") {
      known_.insert(section + "." + key);
      is_auto = true;
      return;
    }
    if (node && !node.is_integer()) {
      throw ConfigError(source_ + ": " + section + "." + key + " must be an integer or \"auto\"");
    }
    read(section, key, field);
  }

  bool has(const std::string& section, const std::string& key) const {
    return static_cast<bool>(root_[section][key]);
  }

  /// Rejects keys that nothing read: a typo must not be silently ignored.
  void reject_unknown() const {
    for (const auto& [section_name, section] : root_) {
      const std::string section_key(section_name.str());
      if (!section.is_table()) {
        throw ConfigError(source_ + ": '" + section_key + "' must be a section ([" + section_key + "])");
      }
      for (const auto& [key, value] : *section.as_table()) {
        const std::string full = section_key + "." + std::string(key.str());
        if (!known_.count(full)) throw ConfigError(source_ + ": unknown configuration key '" + full + "'");
      }
    }
  }

 private:
  template <typename T>
  static std::string kind_name() {
    if constexpr (std::is_same_v<T, std::string>)
      return "a string";
    else if constexpr (std::is_same_v<T, bool>)
      return "true or false";
    else if constexpr (std::is_floating_point_v<T>)
      return "a number";
    else
      return "an integer";
  }

  const toml::table& root_;
  std::string source_;
  std::set<std::string> known_;
};

void apply_override(toml::table& root, const std::string& assignment) {
  const auto equals = assignment.find('=');
  const auto dot = assignment.find('.');
  if (equals == std::string::npos || dot == std::string::npos || dot > equals) {
    throw ConfigError("override '" + assignment + "' must look like section.key=value");
  }
  const std::string section = assignment.substr(0, dot);
  const std::string key = assignment.substr(dot + 1, equals - dot - 1);
  const std::string text = assignment.substr(equals + 1);
  toml::table parsed;
  try {
    parsed = toml::parse("value = " + text);
  } catch (const toml::parse_error&) {
    parsed.insert_or_assign("value", text);  // a bare word is a string
  }
  if (!root.contains(section)) root.insert(section, toml::table{});
  auto* table = root[section].as_table();
  if (table == nullptr) throw ConfigError("override '" + assignment + "': " + section + " is not a section");
  table->insert_or_assign(key, *parsed.get("value"));
}

void check(bool condition, const std::string& what) {
  if (!condition) throw ConfigError("invalid configuration: " + what);
}

}  // namespace

Config load_config(const std::string& path, const std::vector<std::string>& overrides) {
  toml::table root;
  const std::string source = path.empty() ? std::string("command line") : path;
  if (!path.empty()) {
    try {
      root = toml::parse_file(path);
    } catch (const toml::parse_error& e) {
      std::ostringstream where;
      where << e.source().begin;
      throw ConfigError("cannot read configuration " + path + ": " + std::string(e.description()) + " (" +
                        where.str() + ")");
    }
  }
  for (const auto& assignment : overrides) apply_override(root, assignment);

  Config config;
  Reader reader(root, source);
  reader.read("data", "format", config.data.format);
  reader.read("data", "dataset", config.data.dataset);
  reader.read("data", "path", config.data.path);
  reader.read("data", "train_limit", config.data.train_limit);
  reader.read("data", "test_limit", config.data.test_limit);
  reader.read("data", "image_size", config.data.image_size);
  reader.read("data", "context", config.data.context);
  reader.read("data", "augment", config.data.augment);
  std::string mean, std;  // comma lists, like the other list-valued keys
  reader.read("data", "mean", mean);
  reader.read("data", "std", std);
  config.data.mean = parse_numbers(mean, "data.mean");
  config.data.std = parse_numbers(std, "data.std");
  reader.read("model", "name", config.model.name);
  reader.read("model", "path", config.model.path);
  reader.read("model", "task", config.model.task);
  reader.read("model", "layers", config.model.layers);
  reader.read("model", "heads", config.model.heads);
  reader.read("model", "width", config.model.width);
  reader.read("model", "dropout", config.model.dropout);
  reader.read("optimizer", "mode", config.optimizer.mode);
  reader.read("optimizer", "name", config.optimizer.name);
  reader.read("optimizer", "learning_rate", config.optimizer.learning_rate);
  reader.read("optimizer", "momentum", config.optimizer.momentum);
  reader.read("optimizer", "weight_decay", config.optimizer.weight_decay);
  reader.read("optimizer", "outer", config.optimizer.outer);
  reader.read("optimizer", "outer_learning_rate", config.optimizer.outer_learning_rate);
  reader.read("optimizer", "outer_momentum", config.optimizer.outer_momentum);
  reader.read_or_auto("optimizer", "sync_steps", config.optimizer.sync_steps,
                      config.optimizer.sync_steps_auto);
  reader.read("optimizer", "communication_fraction", config.optimizer.communication_fraction);
  // In auto mode, local-sgd rounds compress unless the configuration says how.
  if (config.optimizer.mode == "auto" && !reader.has("optimizer", "compression"))
    config.optimizer.compression = "topk-q8";
  reader.read("optimizer", "compression", config.optimizer.compression);
  reader.read("optimizer", "compression_fraction", config.optimizer.compression_fraction);
  reader.read("optimizer", "compression_chunk", config.optimizer.compression_chunk);
  reader.read("optimizer", "overlap", config.optimizer.overlap);
  reader.read("schedule", "epochs", config.schedule.epochs);
  reader.read("schedule", "round_samples", config.schedule.round_samples);
  reader.read("schedule", "micro_batch", config.schedule.micro_batch);
  reader.read("schedule", "min_trainers", config.schedule.min_trainers);
  reader.read("schedule", "start_grace_seconds", config.schedule.start_grace_seconds);
  reader.read("schedule", "deadline_min_seconds", config.schedule.deadline_min_seconds);
  reader.read("schedule", "deadline_factor", config.schedule.deadline_factor);
  reader.read("schedule", "split", config.schedule.split);
  reader.read("schedule", "max_transfer_ratio", config.schedule.max_transfer_ratio);
  reader.read("schedule", "max_missed_rounds", config.schedule.max_missed_rounds);
  std::int64_t seed = static_cast<std::int64_t>(config.schedule.seed);
  reader.read("schedule", "seed", seed);
  config.schedule.seed = static_cast<std::uint64_t>(seed);
  reader.read("robust", "bound", config.robust.bound);
  reader.read("robust", "norm_factor", config.robust.norm_factor);
  reader.read("robust", "max_refusals", config.robust.max_refusals);
  reader.read("robust", "refusal_window", config.robust.refusal_window);
  reader.read("robust", "combine", config.robust.combine);
  reader.read("robust", "trim", config.robust.trim);
  reader.read("robust", "min_direction", config.robust.min_direction);
  reader.read("robust", "direction_window", config.robust.direction_window);
  reader.read("ha", "peer", config.ha.peer);
  reader.read("ha", "standby", config.ha.standby);
  reader.read("train", "precision", config.train.precision);
  reader.read("train", "loss_scale", config.train.loss_scale);
  reader.read("train", "loss_scale_growth_interval", config.train.loss_scale_growth_interval);
  reader.read("bus", "listen", config.bus.listen);
  reader.read("bus", "publish", config.bus.publish);
  reader.read("bus", "model_publish", config.bus.model_publish);
  reader.read("bus", "coordinator", config.bus.coordinator);
  reader.read("bus", "heartbeat_interval_ms", config.bus.heartbeat_interval_ms);
  reader.read("bus", "liveness", config.bus.liveness);
  reader.read("bus", "connect_timeout_seconds", config.bus.connect_timeout_seconds);
  std::int64_t hwm = config.bus.socket_limits.high_water_mark;
  reader.read("bus", "high_water_mark", hwm);
  config.bus.socket_limits.high_water_mark = static_cast<int>(hwm);
  reader.read("bus", "max_message_bytes", config.bus.socket_limits.max_message_bytes);
  reader.read("node", "name", config.node.name);
  reader.read("node", "device", config.node.device);
  reader.read("node", "threads", config.node.threads);
  reader.read("node", "cpus", config.node.cpus);
  reader.read("node", "priority", config.node.priority);
  reader.read("node", "max_micro_batch", config.node.max_micro_batch);
  reader.read("node", "slowdown", config.node.slowdown);
  reader.read("node", "fail_at_round", config.node.fail_at_round);
  reader.read("node", "lie", config.node.lie);
  reader.read("run", "run_dir", config.run.run_dir);
  reader.read("run", "threads", config.run.threads);
  reader.read("run", "cpus", config.run.cpus);
  reader.read("run", "device", config.run.device);
  reader.read("run", "checkpoint_every", config.run.checkpoint_every);
  reader.read("run", "resume", config.run.resume);
  reader.read("admission", "min_memory_mb", config.admission.min_memory_mb);
  reader.read("admission", "min_device_memory_mb", config.admission.min_device_memory_mb);
  reader.read("admission", "required_precisions", config.admission.required_precisions);
  reader.read("admission", "check_dataset", config.admission.check_dataset);
  reader.read("local", "nodes", config.local.nodes);
  reader.read("local", "slowdowns", config.local.slowdowns);
  reader.read("local", "node_cpus", config.local.node_cpus);
  reader.read("local", "devices", config.local.devices);
  reader.read("security", "curve", config.security.curve);
  reader.read("security", "keys_dir", config.security.keys_dir);
  reader.read("security", "key", config.security.key);
  reader.read("security", "coordinator_key", config.security.coordinator_key);
  reader.read("security", "authorized_keys", config.security.authorized_keys);
  reader.read("security", "max_peers", config.security.max_peers);
  reader.read("security", "max_names_per_key", config.security.max_names_per_key);
  reader.reject_unknown();

  check(config.data.train_limit >= 0, "data.train_limit must be >= 0");
  check(config.data.test_limit >= 0, "data.test_limit must be >= 0");
  const std::string& format = config.data.format;
  check(format == "idx" || format == "numpy" || format == "image_folder" || format == "tokens",
        "data.format must be \"idx\", \"numpy\", \"image_folder\" or \"tokens\", not \"" + format + "\"");
  check(config.data.image_size > 0 || format != "image_folder",
        "data.image_size must be > 0 with data.format = \"image_folder\"");
  check(config.data.image_size >= 0, "data.image_size must be >= 0");
  check(config.data.context > 0 || format != "tokens",
        "data.context must be > 0 with data.format = \"tokens\"");
  check(config.data.context >= 0, "data.context must be >= 0");
  check(config.data.mean.size() == config.data.std.size(), "data.mean and data.std must have as many values");
  for (const double deviation : config.data.std) check(deviation > 0, "data.std values must be > 0");
  check(config.optimizer.name == "sgd" || config.optimizer.name == "adam",
        "optimizer.name must be \"sgd\" or \"adam\", not \"" + config.optimizer.name + "\"");
  check(config.optimizer.learning_rate > 0, "optimizer.learning_rate must be > 0");
  check(config.optimizer.mode == "gradient" || config.optimizer.mode == "local-sgd" ||
            config.optimizer.mode == "auto",
        "optimizer.mode must be \"gradient\", \"local-sgd\" or \"auto\", not \"" + config.optimizer.mode +
            "\"");
  check(config.optimizer.communication_fraction > 0 && config.optimizer.communication_fraction <= 1,
        "optimizer.communication_fraction must be in (0, 1]");
  check(!config.optimizer.sync_steps_auto || config.optimizer.mode != "gradient",
        "optimizer.sync_steps = \"auto\" sets local-sgd's sync interval: set optimizer.mode = \"local-sgd\" "
        "or \"auto\" too");
  check(config.optimizer.outer == "average" || config.optimizer.outer == "nesterov",
        "optimizer.outer must be \"average\" or \"nesterov\", not \"" + config.optimizer.outer + "\"");
  check(config.optimizer.outer_learning_rate > 0, "optimizer.outer_learning_rate must be > 0");
  check(config.optimizer.outer_momentum >= 0 && config.optimizer.outer_momentum < 1,
        "optimizer.outer_momentum must be in [0, 1)");
  check(config.optimizer.sync_steps >= 1, "optimizer.sync_steps must be >= 1");
  check(!config.optimizer.overlap || config.optimizer.mode == "local-sgd",
        "optimizer.overlap hides local-sgd's exchange behind its next local steps: set optimizer.mode = "
        "\"local-sgd\" too, or overlap = false");
  check(config.optimizer.compression == "none" || config.optimizer.compression == "topk" ||
            config.optimizer.compression == "topk-q8",
        "optimizer.compression must be \"none\", \"topk\" or \"topk-q8\", not \"" +
            config.optimizer.compression + "\"");
  check(config.optimizer.compression == "none" || config.optimizer.mode != "gradient",
        "optimizer.compression compresses local-sgd's parameter changes: set optimizer.mode = \"local-sgd\" "
        "or \"auto\" "
        "too, or compression = \"none\"");
  check(config.optimizer.compression_fraction > 0 && config.optimizer.compression_fraction <= 1,
        "optimizer.compression_fraction must be in (0, 1]");
  check(config.optimizer.compression_chunk >= 16 &&
            config.optimizer.compression_chunk <= (std::int64_t{1} << 24),
        "optimizer.compression_chunk must be between 16 and 16777216");
  check(config.model.task == "classification" || config.model.task == "language_model",
        "model.task must be \"classification\" or \"language_model\", not \"" + config.model.task + "\"");
  check(config.model.layers >= 1 && config.model.heads >= 1 && config.model.width >= 1,
        "model.layers, model.heads and model.width must be >= 1");
  check(config.model.dropout >= 0 && config.model.dropout < 1, "model.dropout must be in [0, 1)");
  check(config.train.precision == "fp32" || config.train.precision == "bf16" ||
            config.train.precision == "fp16" || config.train.precision == "auto",
        "train.precision must be \"fp32\", \"bf16\", \"fp16\" or \"auto\", not \"" + config.train.precision +
            "\"");
  check(config.train.loss_scale >= 1 && std::isfinite(config.train.loss_scale),
        "train.loss_scale must be >= 1");
  check(config.train.loss_scale_growth_interval >= 1, "train.loss_scale_growth_interval must be >= 1");
  check(config.schedule.epochs >= 1, "schedule.epochs must be >= 1");
  check(config.schedule.round_samples >= 1, "schedule.round_samples must be >= 1");
  check(config.schedule.micro_batch >= 1, "schedule.micro_batch must be >= 1");
  check(config.schedule.min_trainers >= 1, "schedule.min_trainers must be >= 1");
  check(config.schedule.deadline_min_seconds > 0, "schedule.deadline_min_seconds must be > 0");
  check(config.security.max_peers >= 1, "security.max_peers must be >= 1");
  check(config.security.max_names_per_key >= 2,
        "security.max_names_per_key must be >= 2 (a trainer and its heartbeat)");
  check(config.bus.heartbeat_interval_ms >= 10, "bus.heartbeat_interval_ms must be >= 10");
  check(config.bus.liveness >= 1, "bus.liveness must be >= 1");
  check(!coordinator_endpoints(config.bus).empty(), "bus.coordinator names no endpoint");
  check(!config.ha.standby || !config.ha.peer.empty(),
        "ha.standby needs ha.peer: the coordinator this one stands by for (--standby-for tcp://HOST:PORT)");
  if (!config.ha.peer.empty()) {
    peer_pair_endpoint_for(config.ha);  // throws, naming ha.peer, where it is no tcp://HOST:PORT
    check(config.ha.peer != config.bus.listen, "ha.peer is this coordinator's own bus.listen");
    check(config.run.resume, "ha.peer needs run.resume = true: taking over is resuming from the replica");
    check(config.run.checkpoint_every >= 1,
          "ha.peer needs run.checkpoint_every >= 1: the standby holds the run's state as of the active's "
          "last checkpoint");
  }
  check(config.bus.socket_limits.high_water_mark >= 1, "bus.high_water_mark must be >= 1");
  check(config.bus.socket_limits.max_message_bytes >= 1 << 20,
        "bus.max_message_bytes must be at least 1 MiB");
  check(config.node.threads >= 1, "node.threads must be >= 1");
  check(config.run.threads >= 1, "run.threads must be >= 1");
  check(config.run.checkpoint_every >= 0, "run.checkpoint_every must be >= 0");
  check(config.node.device == "cpu" || config.node.device.rfind("cuda", 0) == 0,
        "node.device must be \"cpu\" or \"cuda:N\", not \"" + config.node.device + "\"");
  check(config.run.device == "cpu" || config.run.device.rfind("cuda", 0) == 0,
        "run.device must be \"cpu\" or \"cuda:N\", not \"" + config.run.device + "\"");
  for (const auto& device : split_list(config.local.devices)) {
    check(device == "cpu" || device.rfind("cuda", 0) == 0,
          "local.devices must list \"cpu\" or \"cuda:N\" per node, not \"" + device + "\"");
  }
  check(config.local.nodes >= 0, "local.nodes must be >= 1 (or 0: one per CPU, at most 3)");
  check(config.schedule.split == "proportional" || config.schedule.split == "equal",
        "schedule.split must be \"proportional\" or \"equal\", not \"" + config.schedule.split + "\"");
  for (const auto& precision : split_list(config.admission.required_precisions)) {
    check(precision == "fp16" || precision == "bf16" || precision == "tf32" || precision == "fp32" ||
              precision == "fp64",
          "admission.required_precisions: unknown precision \"" + precision +
              "\" (known: fp16, bf16, tf32, fp32, fp64)");
  }
  check(config.admission.min_memory_mb >= 0 && config.admission.min_device_memory_mb >= 0,
        "admission memory minimums must be >= 0");
  check(config.schedule.max_transfer_ratio >= 0, "schedule.max_transfer_ratio must be >= 0");
  check(config.schedule.max_missed_rounds >= 0, "schedule.max_missed_rounds must be >= 0");
  check(config.robust.bound == "refuse" || config.robust.bound == "off",
        "robust.bound must be \"refuse\" or \"off\", not \"" + config.robust.bound + "\"");
  check(config.robust.norm_factor > 1.0, "robust.norm_factor must be > 1");
  check(config.robust.max_refusals >= 0, "robust.max_refusals must be >= 0");
  check(config.robust.refusal_window >= 1, "robust.refusal_window must be >= 1");
  check(config.robust.combine == "mean" || config.robust.combine == "trimmed" ||
            config.robust.combine == "centered-clip",
        "robust.combine must be \"mean\", \"trimmed\" or \"centered-clip\", not \"" + config.robust.combine +
            "\"");
  check(config.robust.trim >= 0.0 && config.robust.trim < 0.5, "robust.trim must be in [0, 0.5)");
  check(config.robust.combine != "trimmed" || config.optimizer.compression == "none",
        "robust.combine = \"trimmed\" trims each coordinate, and compressed changes are zero in most of "
        "them (the trimmed mean would be zero too): use \"centered-clip\", or optimizer.compression = "
        "\"none\"" +
            std::string(config.optimizer.mode == "auto" ? " (auto mode compresses by default)" : ""));
  check(config.robust.min_direction >= -1.0 && config.robust.min_direction <= 1.0,
        "robust.min_direction must be in [-1, 1]");
  check(config.robust.direction_window >= 1, "robust.direction_window must be >= 1");
  check(config.node.fail_at_round >= 0, "node.fail_at_round must be >= 0");
  check(config.node.slowdown >= 1.0, "node.slowdown must be >= 1");
  check(config.node.max_micro_batch >= 0, "node.max_micro_batch must be >= 0");
  for (double factor : parse_slowdowns(config.local.slowdowns)) {
    check(factor >= 1.0, "local.slowdowns must hold factors >= 1, like \"1,2,4\"");
  }
  check(!config.run.run_dir.empty(), "run.run_dir must not be empty");
  parse_cpu_list(config.node.cpus, "node.cpus");
  parse_cpu_list(config.run.cpus, "run.cpus");
  for (const auto& cpus : split_node_cpus(config.local.node_cpus)) parse_cpu_list(cpus, "local.node_cpus");
  return config;
}

std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> items;
  std::stringstream list(text);
  for (std::string item; std::getline(list, item, ',');) {
    const auto first = item.find_first_not_of(' ');
    if (first == std::string::npos) continue;
    items.push_back(item.substr(first, item.find_last_not_of(' ') - first + 1));
  }
  return items;
}

std::vector<std::string> split_node_cpus(const std::string& text) {
  std::vector<std::string> lists;
  std::stringstream all(text);
  for (std::string list; std::getline(all, list, '/');) lists.push_back(list);
  return lists;
}

std::int64_t local_node_count(const LocalOptions& local, int usable_cpus) {
  if (local.nodes > 0) return local.nodes;
  const std::size_t listed =
      std::max({parse_slowdowns(local.slowdowns).size(), split_node_cpus(local.node_cpus).size(),
                split_list(local.devices).size()});
  if (listed > 0) return static_cast<std::int64_t>(listed);
  return std::clamp<std::int64_t>(usable_cpus, 1, kDefaultLocalNodes);
}

std::vector<double> parse_slowdowns(const std::string& text) {
  std::vector<double> factors;
  std::stringstream list(text);
  for (std::string item; std::getline(list, item, ',');) {
    try {
      std::size_t used = 0;
      factors.push_back(std::stod(item, &used));
      if (used != item.size() && item.find_first_not_of(' ', used) != std::string::npos)
        throw std::invalid_argument(item);
    } catch (const std::exception&) {
      throw ConfigError("local.slowdowns: '" + item + "' is not a number (expected e.g. \"1,2,4\")");
    }
  }
  return factors;
}

std::vector<double> parse_numbers(const std::string& text, const std::string& key) {
  std::vector<double> numbers;
  for (const auto& item : split_list(text)) {
    try {
      std::size_t used = 0;
      numbers.push_back(std::stod(item, &used));
      if (used != item.size()) throw std::invalid_argument(item);
    } catch (const std::exception&) {
      throw ConfigError(key + ": '" + item + "' is not a number (expected e.g. \"0.4914,0.4822,0.4465\")");
    }
  }
  return numbers;
}

CurveSettings curve_settings_for(const SecurityOptions& security, PeerRole role,
                                 const std::string& node_name) {
  CurveSettings settings;
  if (!security.curve) return settings;
  if (!curve_available()) {
    throw ConfigError(
        "security.curve is on but this libzmq was built without CURVE; install Debian's libzmq5");
  }
  settings.enabled = true;
  const std::string& dir = security.keys_dir;
  std::string key_file = security.key;
  if (key_file.empty() && !dir.empty()) {
    if (role == PeerRole::kCoordinator) {
      key_file = coordinator_key_file(dir);
    } else if (role == PeerRole::kTrainer && !node_name.empty() &&
               std::filesystem::exists(dir + "/" + node_name + ".key")) {
      key_file = dir + "/" + node_name + ".key";
    } else {
      key_file = role_key_file(dir, role);
    }
  }
  const std::string how =
      "; make keys with `filo keys new NAME` (or `filo keys fleet DIR` and security.keys_dir=DIR), "
      "or set security.curve=false on a network you trust";
  if (key_file.empty()) throw ConfigError("security.curve is on but security.key is not set" + how);
  try {
    settings.own = read_key_pair(key_file);
  } catch (const std::runtime_error& e) {
    throw ConfigError(std::string("security.key: ") + e.what());
  }
  if (role != PeerRole::kCoordinator) {
    std::string server = security.coordinator_key;
    if (server.empty() && !dir.empty()) server = coordinator_public_key_file(dir);
    if (server.empty())
      throw ConfigError("security.curve is on but security.coordinator_key is not set" + how);
    try {
      settings.server_public_key = read_public_key(server);
    } catch (const std::runtime_error& e) {
      throw ConfigError(std::string("security.coordinator_key: ") + e.what());
    }
  }
  return settings;
}

std::shared_ptr<const AuthorizedKeys> authorized_keys_for(const SecurityOptions& security) {
  if (!security.curve) return nullptr;
  std::string path = security.authorized_keys;
  if (path.empty() && !security.keys_dir.empty()) path = authorized_keys_file(security.keys_dir);
  if (path.empty()) {
    throw ConfigError(
        "security.curve is on but security.authorized_keys is not set: list the nodes' and monitors' "
        "public keys there, one \"ROLE KEY [NODE]\" per line (see README, Security)");
  }
  try {
    auto keys = std::make_shared<AuthorizedKeys>(AuthorizedKeys::load(path));
    if (keys->size() == 0) throw std::runtime_error(path + " lists no key: no node could ever connect");
    return keys;
  } catch (const std::runtime_error& e) {
    throw ConfigError(std::string("security.authorized_keys: ") + e.what());
  }
}

namespace {
/// `endpoint` (named `what` in errors) with its port moved by `offset` ('*' stays '*').
std::string port_plus(const std::string& endpoint, const std::string& what, int offset) {
  const auto colon = endpoint.rfind(':');
  check(colon != std::string::npos && endpoint.rfind("tcp://", 0) == 0,
        what + " must be tcp://HOST:PORT, not \"" + endpoint + "\"");
  const std::string port = endpoint.substr(colon + 1);
  if (port == "*") return endpoint;
  try {
    return endpoint.substr(0, colon + 1) + std::to_string(std::stoi(port) + offset);
  } catch (const std::exception&) {
    throw ConfigError(what + " has no numeric port: \"" + endpoint + "\"");
  }
}
std::string listen_port_plus(const BusOptions& bus, int offset) {
  return port_plus(bus.listen, "bus.listen", offset);
}
constexpr int kPairPortOffset = 3;
}  // namespace

std::string pair_endpoint_for(const BusOptions& bus) {
  return listen_port_plus(bus, kPairPortOffset);
}

std::string peer_pair_endpoint_for(const HaOptions& ha) {
  return port_plus(ha.peer, "ha.peer", kPairPortOffset);
}

std::vector<std::string> coordinator_endpoints(const BusOptions& bus) {
  return split_endpoints(bus.coordinator);
}

std::vector<std::string> split_endpoints(const std::string& list) {
  std::vector<std::string> endpoints;
  std::string rest = list;
  while (!rest.empty()) {
    const auto comma = rest.find(',');
    std::string endpoint = rest.substr(0, comma);
    rest = comma == std::string::npos ? std::string() : rest.substr(comma + 1);
    endpoint.erase(0, endpoint.find_first_not_of(' '));
    endpoint.erase(endpoint.find_last_not_of(' ') + 1);
    if (!endpoint.empty()) endpoints.push_back(endpoint);
  }
  return endpoints;
}

std::string publish_endpoint_for(const BusOptions& bus) {
  return bus.publish.empty() ? listen_port_plus(bus, 1) : bus.publish;
}

std::string model_endpoint_for(const BusOptions& bus) {
  return bus.model_publish.empty() ? listen_port_plus(bus, 2) : bus.model_publish;
}

}  // namespace filo
