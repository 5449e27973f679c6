#pragma once
// Shared by the builder and plan tests: import a model made with model_builder.h, and seeded
// random inputs.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "model_builder.h"
#include "onnx/importer.h"

namespace kiln::testing {

inline Model import_model(const onnx::ModelProto& p) {
  auto m = import_onnx_bytes(p.SerializeAsString(), ".", "test");
  EXPECT_TRUE(m.ok()) << m.status().message();
  return std::move(m).value();
}

// Uniform in [-1, 1), the same for the same seed.
inline Tensor random_float(Dims dims, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1, 1);
  Tensor t(DataType::kFloat, std::move(dims));
  for (float& x : t.span<float>()) x = u(rng);
  return t;
}

// The relative L2 error of `got` against `want`: ||got - want|| / ||want||.
inline double rel_l2(const Tensor& got, const Tensor& want) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < want.numel(); ++i) {
    const double d = got.get_double(i) - want.get_double(i);
    num += d * d;
    den += want.get_double(i) * want.get_double(i);
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

}  // namespace kiln::testing
