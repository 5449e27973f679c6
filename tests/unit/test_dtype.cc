#include <cmath>
#include <cstring>

#include <gtest/gtest.h>

#include "core/dtype.h"

namespace kiln {
namespace {

TEST(DType, HalfKnownValues) {
  EXPECT_EQ(float_to_half(1.0f), 0x3c00);
  EXPECT_EQ(float_to_half(-2.0f), 0xc000);
  EXPECT_EQ(float_to_half(65504.0f), 0x7bff);
  EXPECT_EQ(float_to_half(65520.0f), 0x7c00);                      // rounds to infinity
  EXPECT_EQ(float_to_half(std::ldexp(1.0f, -24)), 0x0001);         // smallest subnormal
  EXPECT_EQ(float_to_half(std::ldexp(1.0f, -25)), 0x0000);         // tie rounds to even (zero)
  EXPECT_EQ(float_to_half(1.0f + std::ldexp(1.0f, -11)), 0x3c00);  // tie to even
  EXPECT_EQ(float_to_half(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);
  EXPECT_TRUE(std::isnan(half_to_float(float_to_half(NAN))));
}

TEST(DType, HalfRoundTripsEveryValue) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    float f = half_to_float(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    ASSERT_EQ(float_to_half(f), h) << "half bits " << h;
  }
}

TEST(DType, BFloat16) {
  EXPECT_EQ(float_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(bf16_to_float(0x4049), 3.140625f);
  // 1 + 2^-8 is halfway between 1 and the next bfloat16: ties to even (1.0).
  EXPECT_EQ(float_to_bf16(1.0f + std::ldexp(1.0f, -8)), 0x3f80);
  EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(NAN))));
}

TEST(DType, NamesAndSizes) {
  EXPECT_EQ(dtype_name(DataType::kFloat8E4M3FN), "float8e4m3fn");
  EXPECT_EQ(dtype_size(DataType::kInt4), 1u);
  EXPECT_EQ(dtype_file_bits(DataType::kInt4), 4);
  DataType t;
  ASSERT_TRUE(dtype_from_name("bfloat16", &t));
  EXPECT_EQ(t, DataType::kBFloat16);
  EXPECT_FALSE(dtype_from_name("float128", &t));
  EXPECT_TRUE(is_float(DataType::kFloat4E2M1));
  EXPECT_TRUE(is_signed_int(DataType::kInt2));
  EXPECT_FALSE(is_signed_int(DataType::kUInt2));
}

}  // namespace
}  // namespace kiln
