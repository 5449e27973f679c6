#include "engine/engine_format.h"

#include <bit>
#include <cstring>

namespace kiln::engine_format {

static_assert(std::endian::native == std::endian::little, "engine files are little-endian; so is this reader");

namespace {

constexpr uint64_t kP1 = 0x9E3779B185EBCA87ull;
constexpr uint64_t kP2 = 0xC2B2AE3D27D4EB4Full;
constexpr uint64_t kP3 = 0x165667B19E3779F9ull;
constexpr uint64_t kP4 = 0x85EBCA77C2B2AE63ull;
constexpr uint64_t kP5 = 0x27D4EB2F165667C5ull;

uint64_t round(uint64_t acc, uint64_t input) {
  acc += input * kP2;
  acc = std::rotl(acc, 31);
  return acc * kP1;
}
uint64_t merge(uint64_t acc, uint64_t lane) {
  acc ^= round(0, lane);
  return acc * kP1 + kP4;
}

}  // namespace

uint64_t hash64(std::span<const uint8_t> bytes) {
  const uint8_t* p = bytes.data();
  const size_t n = bytes.size();
  const uint8_t* end = p + n;
  uint64_t h;
  if (n >= 32) {
    // Four independent lanes over 32-byte stripes keep the multiplier pipelines busy.
    uint64_t v1 = kP1 + kP2, v2 = kP2, v3 = 0, v4 = 0 - kP1;
    const uint8_t* limit = end - 32;
    do {
      v1 = round(v1, load64(p));
      v2 = round(v2, load64(p + 8));
      v3 = round(v3, load64(p + 16));
      v4 = round(v4, load64(p + 24));
      p += 32;
    } while (p <= limit);
    h = std::rotl(v1, 1) + std::rotl(v2, 7) + std::rotl(v3, 12) + std::rotl(v4, 18);
    h = merge(h, v1);
    h = merge(h, v2);
    h = merge(h, v3);
    h = merge(h, v4);
  } else {
    h = kP5;
  }
  h += static_cast<uint64_t>(n);
  for (; p + 8 <= end; p += 8) {
    h ^= round(0, load64(p));
    h = std::rotl(h, 27) * kP1 + kP4;
  }
  if (p + 4 <= end) {
    h ^= static_cast<uint64_t>(load32(p)) * kP1;
    h = std::rotl(h, 23) * kP2 + kP3;
    p += 4;
  }
  for (; p < end; ++p) {
    h ^= *p * kP5;
    h = std::rotl(h, 11) * kP1;
  }
  h ^= h >> 33;
  h *= kP2;
  h ^= h >> 29;
  h *= kP3;
  h ^= h >> 32;
  return h;
}

bool reseal(std::span<uint8_t> image) {
  if (image.size() < kHeaderSize) return false;
  uint64_t body = hash64(image.subspan(kHeaderSize));
  std::memcpy(image.data() + kBodyChecksumOffset, &body, 8);
  uint64_t header = hash64(image.first(kHeaderChecksumOffset));
  std::memcpy(image.data() + kHeaderChecksumOffset, &header, 8);
  return true;
}

}  // namespace kiln::engine_format
