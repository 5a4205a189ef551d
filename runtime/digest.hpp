#pragma once
// Digests of bytes: SHA-256 where a file must be exactly the one sent (libsodium, which libzmq's
// CURVE already depends on), and a short FNV-1a fingerprint where two peers only check they agree.
#include <string>
#include <string_view>

namespace filo {

/// Lowercase hex SHA-256 of `bytes`.
std::string sha256_hex(std::string_view bytes);
/// 16 hex digits of FNV-1a 64 of `text`: cheap, for comparing layouts, not for security.
std::string fingerprint_hex(std::string_view text);

}  // namespace filo
