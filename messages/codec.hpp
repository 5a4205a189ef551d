#pragma once
// msgpack bodies in and out of zmq frames. Decoding never throws: malformed input becomes a
// Decoded<T> holding the reason, which the receiving actor logs before dropping the message.
#include <cstdint>
#include <optional>
#include <string>
#include <zmq.hpp>

#include "messages/envelope.hpp"

namespace filo {

template <typename T>
class Decoded {
 public:
  static Decoded ok(T value) {
    Decoded decoded;
    decoded.value_ = std::move(value);
    return decoded;
  }
  static Decoded failure(std::string reason) {
    Decoded decoded;
    decoded.error_ = std::move(reason);
    return decoded;
  }
  explicit operator bool() const { return value_.has_value(); }
  T& value() { return *value_; }
  const T& value() const { return *value_; }
  const std::string& error() const { return error_; }

 private:
  std::optional<T> value_;
  std::string error_;
};

/// Limits on what one msgpack body may contain; a hostile length header cannot make the
/// decoder reserve more than these.
struct BodyLimits {
  std::uint32_t max_bytes = 16u << 20;
  std::size_t max_array = 1u << 20;
  std::size_t max_map = 1u << 12;
  std::size_t max_string = 1u << 20;
  std::size_t max_depth = 16;
};

/// Packs `value` into a frame without copying the packed bytes again.
template <typename T>
zmq::message_t encode_frame(const T& value) {
  msgpack::sbuffer buffer;
  msgpack::pack(buffer, value);
  const std::size_t size = buffer.size();
  // The frame takes the sbuffer's malloc'd storage; zmq frees it when the frame is sent.
  return zmq::message_t(buffer.release(), size, [](void* data, void*) { std::free(data); });
}

/// Unpacks a frame into a msgpack object, enforcing `limits`. Returns the reason on failure.
std::optional<std::string> unpack_frame(const zmq::message_t& frame, const BodyLimits& limits,
                                        msgpack::object_handle& handle);

template <typename T>
Decoded<T> decode_frame(const zmq::message_t& frame, const BodyLimits& limits) {
  msgpack::object_handle handle;
  if (auto error = unpack_frame(frame, limits, handle)) return Decoded<T>::failure(*error);
  try {
    T value;
    handle.get().convert(value);
    return Decoded<T>::ok(std::move(value));
  } catch (const std::exception& e) {
    return Decoded<T>::failure(std::string("body does not match its message type: ") + e.what());
  }
}

/// Decodes and checks an envelope: protocol version, a known kind, a sender name.
Decoded<Envelope> decode_envelope(const zmq::message_t& frame, const BodyLimits& limits);

}  // namespace filo
