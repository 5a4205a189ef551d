#pragma once
// Digests of bytes: SHA-256 where a file must be exactly the one sent (libsodium, which libzmq's
// CURVE already depends on), and a short FNV-1a fingerprint where two peers only check they agree.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace filo {

/// Lowercase hex SHA-256 of `bytes`.
std::string sha256_hex(std::string_view bytes);
/// 16 hex digits of FNV-1a 64 of `text`: cheap, for comparing layouts, not for security.
std::string fingerprint_hex(std::string_view text);
/// A 64-bit fingerprint of `bytes`, continuing from `seed`: four FNV-style lanes over 8-byte
/// words, so that a model of megabytes hashes in about a millisecond. For replicas checking that
/// they hold the same bits, not for security.
std::uint64_t fingerprint_words(const void* bytes, std::size_t size, std::uint64_t seed);
/// `fingerprint` as 16 hex digits.
std::string fingerprint_number_hex(std::uint64_t fingerprint);

}  // namespace filo
