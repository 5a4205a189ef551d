#include "runtime/keys.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace filo {
namespace {
constexpr std::size_t kZ85KeyLength = 40;
constexpr mode_t kSecretFileMode = 0600;

std::string trim(const std::string& text) {
  const auto first = text.find_first_not_of(" \t\r");
  if (first == std::string::npos) return {};
  const auto last = text.find_last_not_of(" \t\r");
  return text.substr(first, last - first + 1);
}

/// Creates `path` with `mode` and writes `text`; fails if it exists (O_EXCL), so that a key is never
/// overwritten and a secret is never readable by others, not even for an instant.
void write_new_file(const std::string& path, const std::string& text, mode_t mode) {
  const int descriptor = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (descriptor < 0) {
    if (errno == EEXIST)
      throw std::runtime_error(path + " exists; filo never overwrites a key (remove it first)");
    throw std::runtime_error("cannot create " + path + ": " + std::strerror(errno));
  }
  const ssize_t written = ::write(descriptor, text.data(), text.size());
  const bool synced = ::fsync(descriptor) == 0;
  ::close(descriptor);
  if (written != static_cast<ssize_t>(text.size()) || !synced) {
    throw std::runtime_error("cannot write " + path + ": " + std::strerror(errno));
  }
}

std::string read_text(const std::string& path) {
  std::ifstream file(path);
  if (!file) throw std::runtime_error("cannot read " + path);
  std::stringstream text;
  text << file.rdbuf();
  return text.str();
}

void read_authorized_file(const std::string& path, AuthorizedKeys& keys) {
  std::ifstream file(path);
  if (!file) throw std::runtime_error("cannot read authorized keys " + path);
  std::string line;
  for (int number = 1; std::getline(file, line); ++number) {
    // Only whole lines are comments: Z85 keys may contain '#'.
    if (trim(line).rfind('#', 0) == 0) continue;
    std::istringstream fields(line);
    std::string role_text, key, node, extra;
    if (!(fields >> role_text)) continue;
    const auto where = [&] { return path + ":" + std::to_string(number) + ": "; };
    const auto role = parse_role(role_text);
    if (!role) {
      throw std::runtime_error(where() + "unknown role \"" + role_text +
                               "\" (a line is ROLE KEY [NODE]; roles: trainer, monitor, test-aid, operator)");
    }
    if (!(fields >> key) || !is_z85_key(key)) {
      throw std::runtime_error(where() + "the second field must be a 40-character Z85 public key");
    }
    fields >> node;
    if (fields >> extra) throw std::runtime_error(where() + "more than ROLE KEY [NODE]");
    keys.add(AuthorizedKey{*role, key, node});
  }
}
}  // namespace

std::string role_name(PeerRole role) {
  switch (role) {
    case PeerRole::kTrainer:
      return "trainer";
    case PeerRole::kMonitor:
      return "monitor";
    case PeerRole::kTestAid:
      return "test-aid";
    case PeerRole::kOperator:
      return "operator";
    case PeerRole::kCoordinator:
      return "coordinator";
  }
  return "unknown";
}

std::optional<PeerRole> parse_role(const std::string& text) {
  if (text == "trainer") return PeerRole::kTrainer;
  if (text == "monitor") return PeerRole::kMonitor;
  if (text == "test-aid") return PeerRole::kTestAid;
  if (text == "operator") return PeerRole::kOperator;
  return std::nullopt;
}

AuthorizedKeys AuthorizedKeys::load(const std::string& path) {
  AuthorizedKeys keys;
  if (std::filesystem::is_directory(path)) {
    for (const auto& entry : std::filesystem::directory_iterator(path)) {
      if (entry.is_regular_file()) read_authorized_file(entry.path().string(), keys);
    }
  } else {
    read_authorized_file(path, keys);
  }
  return keys;
}

void AuthorizedKeys::add(AuthorizedKey key) {
  const std::string public_key = key.public_key;
  keys_[public_key] = std::move(key);
}

const AuthorizedKey* AuthorizedKeys::find(const std::string& public_key) const {
  const auto found = keys_.find(public_key);
  return found == keys_.end() ? nullptr : &found->second;
}

bool curve_available() {
  return zmq_has("curve") != 0;
}

bool is_z85_key(const std::string& text) {
  if (text.size() != kZ85KeyLength) return false;
  static const std::string kAlphabet =
      "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";
  return text.find_first_not_of(kAlphabet) == std::string::npos;
}

KeyPair generate_key_pair() {
  char public_key[kZ85KeyLength + 1] = {};
  char secret_key[kZ85KeyLength + 1] = {};
  if (zmq_curve_keypair(public_key, secret_key) != 0) {
    throw std::runtime_error("cannot make a CURVE key pair: this libzmq was built without CURVE");
  }
  return KeyPair{public_key, secret_key};
}

std::pair<std::string, std::string> write_key_pair(const std::string& directory, const std::string& name) {
  if (name.empty() || name.find('/') != std::string::npos ||
      name.find_first_of(" \t\r\n") != std::string::npos) {
    throw std::runtime_error("a key's name is a plain file name without '/' or spaces, not \"" + name + "\"");
  }
  std::filesystem::create_directories(directory.empty() ? "." : directory);
  const std::string base = (directory.empty() ? std::string(".") : directory) + "/" + name;
  const std::string secret_path = base + ".key";
  const std::string public_path = base + ".pub";
  if (std::filesystem::exists(public_path)) {
    throw std::runtime_error(public_path + " exists; filo never overwrites a key (remove it first)");
  }
  const KeyPair pair = generate_key_pair();
  write_new_file(secret_path,
                 "# filo key pair \"" + name +
                     "\": the secret key stays on its machine, mode 0600\npublic = " + pair.public_key +
                     "\nsecret = " + pair.secret_key + "\n",
                 kSecretFileMode);
  write_new_file(public_path, pair.public_key + " " + name + "\n", 0644);
  return {secret_path, public_path};
}

KeyPair read_key_pair(const std::string& path) {
  struct stat status {};
  if (::stat(path.c_str(), &status) != 0) {
    throw std::runtime_error("cannot read key pair " + path + ": " + std::strerror(errno) +
                             " (make one with: filo keys new NAME)");
  }
  if ((status.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
    throw std::runtime_error(path + " holds a secret key but others may read it; chmod 600 " + path);
  }
  KeyPair pair;
  std::istringstream lines(read_text(path));
  std::string line;
  while (std::getline(lines, line)) {
    const auto equals = line.find('=');
    if (line.empty() || line[0] == '#' || equals == std::string::npos) continue;
    const std::string field = trim(line.substr(0, equals));
    const std::string value = trim(line.substr(equals + 1));
    if (field == "public") pair.public_key = value;
    if (field == "secret") pair.secret_key = value;
  }
  if (!is_z85_key(pair.public_key) || !is_z85_key(pair.secret_key)) {
    throw std::runtime_error(path + " is not a filo key pair (\"public = KEY\" and \"secret = KEY\", Z85)");
  }
  return pair;
}

std::string read_public_key(const std::string& path_or_key) {
  if (is_z85_key(path_or_key) && !std::filesystem::exists(path_or_key)) return path_or_key;
  std::istringstream lines(read_text(path_or_key));
  std::string line;
  while (std::getline(lines, line)) {
    if (line.empty() || line[0] == '#') continue;
    if (line.rfind("public", 0) == 0 && line.find('=') != std::string::npos) {
      const std::string value = trim(line.substr(line.find('=') + 1));
      if (is_z85_key(value)) return value;
    }
    std::istringstream fields(line);
    std::string first;
    if (fields >> first && is_z85_key(first)) return first;
  }
  throw std::runtime_error(path_or_key + " holds no Z85 public key");
}

std::string coordinator_key_file(const std::string& keys_dir) {
  return keys_dir + "/coordinator.key";
}
std::string coordinator_public_key_file(const std::string& keys_dir) {
  return keys_dir + "/coordinator.pub";
}
std::string role_key_file(const std::string& keys_dir, PeerRole role) {
  return keys_dir + "/" + role_name(role) + ".key";
}
std::string authorized_keys_file(const std::string& keys_dir) {
  return keys_dir + "/authorized_keys";
}

std::string write_fleet_keys(const std::string& directory) {
  std::filesystem::create_directories(directory);
  std::filesystem::permissions(directory, std::filesystem::perms::owner_all);
  write_key_pair(directory, "coordinator");
  std::string lines = "# written by filo keys fleet: ROLE KEY [NODE]\n";
  for (const PeerRole role :
       {PeerRole::kTrainer, PeerRole::kMonitor, PeerRole::kTestAid, PeerRole::kOperator}) {
    const auto [secret, public_file] = write_key_pair(directory, role_name(role));
    lines += role_name(role) + " " + read_public_key(public_file) + "\n";
  }
  const std::string path = authorized_keys_file(directory);
  write_new_file(path, lines, 0644);
  return path;
}

}  // namespace filo
