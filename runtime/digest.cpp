#include "runtime/digest.hpp"

#include <sodium.h>

#include <cstdio>
#include <cstring>
#include <stdexcept>

namespace filo {

std::string sha256_hex(std::string_view bytes) {
  if (sodium_init() < 0) throw std::runtime_error("libsodium could not be initialised");
  unsigned char digest[crypto_hash_sha256_BYTES];
  crypto_hash_sha256(digest, reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size());
  char hex[crypto_hash_sha256_BYTES * 2 + 1];
  sodium_bin2hex(hex, sizeof hex, digest, sizeof digest);
  return hex;
}

std::string fingerprint_hex(std::string_view text) {
  std::uint64_t hash = 14695981039346656037ull;
  for (unsigned char byte : text) {
    hash ^= byte;
    hash *= 1099511628211ull;
  }
  return fingerprint_number_hex(hash);
}

std::string fingerprint_number_hex(std::uint64_t fingerprint) {
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(fingerprint));
  return hex;
}

std::uint64_t fingerprint_words(const void* bytes, std::size_t size, std::uint64_t seed) {
  constexpr std::uint64_t kPrime = 1099511628211ull;
  const auto* data = static_cast<const unsigned char*>(bytes);
  // Four independent lanes: each word's multiply does not wait for the one before it.
  std::uint64_t lanes[4] = {seed ^ 14695981039346656037ull, seed ^ 0x9e3779b97f4a7c15ull,
                            seed ^ 0xc2b2ae3d27d4eb4full, seed ^ 0x165667b19e3779f9ull};
  std::size_t at = 0;
  for (; at + 32 <= size; at += 32) {
    for (int lane = 0; lane < 4; ++lane) {
      std::uint64_t word;
      std::memcpy(&word, data + at + 8 * lane, 8);
      lanes[lane] = (lanes[lane] ^ word) * kPrime;
    }
  }
  std::uint64_t hash = lanes[0];
  for (int lane = 1; lane < 4; ++lane) hash = (hash ^ (lanes[lane] + (hash << 6) + (hash >> 2))) * kPrime;
  for (; at < size; ++at) hash = (hash ^ data[at]) * kPrime;
  hash ^= static_cast<std::uint64_t>(size);
  // A final mix (splitmix64's): nearby inputs give unrelated fingerprints.
  hash = (hash ^ (hash >> 30)) * 0xbf58476d1ce4e5b9ull;
  hash = (hash ^ (hash >> 27)) * 0x94d049bb133111ebull;
  return hash ^ (hash >> 31);
}

}  // namespace filo
