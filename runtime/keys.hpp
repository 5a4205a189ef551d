#pragma once
// CurveZMQ keys and who holds them. A key pair file (`filo keys new NAME` writes NAME.key, mode
// 0600, and NAME.pub) belongs to one process; the coordinator's authorized keys say which public
// keys may connect at all and the role each grants, in the spirit of ssh's authorized_keys:
//
//   # ROLE    PUBLIC KEY (Z85, 40 characters)         NODE (optional: the only node it may run as)
//   trainer   rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7  node-1
//   monitor   Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID
//
// Lines starting with '#' are comments (Z85 keys may contain '#' themselves). A key directory
// (security.keys_dir) holds a whole fleet's files under conventional names, so that one setting serves the
// coordinator, every node and every monitor of a run on one file system (`filo local`, the tests, a SLURM
// job); `filo keys fleet DIR` writes one.
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace filo {

/// Z85 text of a Curve25519 key pair (40 characters each).
struct KeyPair {
  std::string public_key;
  std::string secret_key;
};

/// What a key may do on the bus; the table in messages/roles.hpp says which message to whom.
enum class PeerRole { kTrainer, kMonitor, kTestAid, kOperator, kCoordinator };

std::string role_name(PeerRole role);
/// "trainer", "monitor", "test-aid", "operator"; nothing for anything else (the coordinator's role is never
/// granted by a key file: it belongs to the actors inside the coordinator process).
std::optional<PeerRole> parse_role(const std::string& text);

struct AuthorizedKey {
  PeerRole role = PeerRole::kTrainer;
  std::string public_key;
  std::string node;  // empty: any node name not already bound to another key
};

class AuthorizedKeys {
 public:
  /// Reads a file, or every regular file of a directory, of "ROLE KEY [NODE]" lines ('#' starts a
  /// comment). Throws std::runtime_error naming the file and line of anything malformed.
  static AuthorizedKeys load(const std::string& path);

  void add(AuthorizedKey key);
  const AuthorizedKey* find(const std::string& public_key) const;
  std::size_t size() const { return keys_.size(); }

 private:
  std::map<std::string, AuthorizedKey> keys_;  // by public key
};

KeyPair generate_key_pair();
/// True where the libzmq in use was built with CURVE.
bool curve_available();
/// Whether `text` is a 40-character Z85 key.
bool is_z85_key(const std::string& text);

/// Writes DIRECTORY/NAME.key (both keys, mode 0600) and DIRECTORY/NAME.pub ("KEY NAME", the line to
/// append after a role in authorized_keys). Refuses to overwrite either. Returns the two paths.
std::pair<std::string, std::string> write_key_pair(const std::string& directory, const std::string& name);
/// Reads a .key file. Throws std::runtime_error naming the file when it is missing, unreadable by
/// the owner only, or malformed.
KeyPair read_key_pair(const std::string& path);
/// The public key in `path_or_key`: a .pub or .key file, or the Z85 text itself.
std::string read_public_key(const std::string& path_or_key);

/// The files `filo keys fleet DIR` writes: one key pair per role plus an authorized_keys granting
/// them. Returns the directory's authorized_keys path.
std::string write_fleet_keys(const std::string& directory);

/// Conventional names inside a key directory.
std::string coordinator_key_file(const std::string& keys_dir);          // coordinator.key
std::string coordinator_public_key_file(const std::string& keys_dir);   // coordinator.pub
std::string role_key_file(const std::string& keys_dir, PeerRole role);  // trainer.key, monitor.key...
std::string authorized_keys_file(const std::string& keys_dir);          // authorized_keys

}  // namespace filo
