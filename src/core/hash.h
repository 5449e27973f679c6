#pragma once
// A 64-bit hash fed piece by piece, word by word (a multiply-xorshift mix per 8 bytes): fast
// enough to read a model's weights at memory speed, stable across runs and machines of one byte
// order. For keys and names derived from content (cached value ranges, generated kernels), not
// for security.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

namespace kiln {

class Hasher {
 public:
  Hasher& bytes(const void* p, size_t n) {
    const auto* b = static_cast<const uint8_t*>(p);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
      uint64_t w;
      std::memcpy(&w, b + i, 8);
      mix(w);
    }
    uint64_t tail = 0;
    for (size_t k = 0; i + k < n; ++k) tail |= static_cast<uint64_t>(b[i + k]) << (8 * k);
    mix(tail ^ (static_cast<uint64_t>(n) << 56));
    return *this;
  }
  Hasher& str(const std::string& s) { return bytes(s.data(), s.size()); }
  Hasher& num(int64_t v) { return bytes(&v, sizeof v); }
  uint64_t value() const { return h_; }

 private:
  void mix(uint64_t w) {
    h_ ^= w + 0x9e3779b97f4a7c15ull + (h_ << 6) + (h_ >> 2);
    h_ *= 0xff51afd7ed558ccdull;
    h_ ^= h_ >> 33;
  }
  uint64_t h_ = 0xcbf29ce484222325ull;
};

}  // namespace kiln
