#include "backends/cpu/activation.h"

#include <omp.h>

#include <algorithm>
#include <cmath>

#include "backends/cpu/simd_math.h"
#include "core/cpu_isa.h"

namespace kiln::cpu {
namespace {

constexpr float kInvSqrt2 = 0.70710678f;
constexpr float kSqrt2OverPi = 0.79788456f;

void gelu_generic(float* x, int64_t n, bool tanh_form) {
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    x[i] = tanh_form ? 0.5f * v * (1.0f + std::tanh(kSqrt2OverPi * (v + 0.044715f * v * v * v)))
                     : 0.5f * v * std::erfc(-v * kInvSqrt2);
  }
}

#if defined(__x86_64__)
__attribute__((target("avx2,fma"))) void gelu_avx2(float* x, int64_t n, bool tanh_form) {
  const int64_t n8 = n / 8 * 8;
  for (int64_t i = 0; i < n8; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    __m256 y;
    if (tanh_form) {
      // 0.5 x (1 + tanh(u)) = x / (1 + exp(-2u)).
      const __m256 v3 = _mm256_mul_ps(_mm256_mul_ps(v, v), v);
      const __m256 u = _mm256_mul_ps(_mm256_set1_ps(kSqrt2OverPi), _mm256_fmadd_ps(_mm256_set1_ps(0.044715f), v3, v));
      const __m256 e = simd::exp(_mm256_mul_ps(_mm256_set1_ps(-2.0f), u));
      y = _mm256_div_ps(v, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
    } else {
      // 1 + erf(z) is erfc(-z): erfc(|z|) for z < 0, 2 - erfc(|z|) otherwise.
      const __m256 z = _mm256_mul_ps(v, _mm256_set1_ps(kInvSqrt2));
      const __m256 e = simd::erfc_abs(z);
      const __m256 negative = _mm256_cmp_ps(z, _mm256_setzero_ps(), _CMP_LT_OQ);
      const __m256 one_plus_erf = _mm256_blendv_ps(_mm256_sub_ps(_mm256_set1_ps(2.0f), e), e, negative);
      y = _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), v), one_plus_erf);
    }
    _mm256_storeu_ps(x + i, y);
  }
  gelu_generic(x + n8, n - n8, tanh_form);
}
#endif

}  // namespace

bool gelu_activation(const Node& n, bool* tanh_form) {
  const Attribute* a = n.attr("activation");
  if (!a || a->s != "Gelu") return false;
  const Attribute* p = n.attr("activation_params");
  *tanh_form = p && !p->floats.empty() && p->floats[0] != 0.0f;
  return true;
}

void gelu_inplace(float* x, int64_t n, bool tanh_form) {
  auto run = gelu_generic;
#if defined(__x86_64__)
  if (cpu_isa() >= CpuIsa::kAvx2) run = gelu_avx2;
#endif
  constexpr int64_t kChunk = 1 << 14;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (chunks > 1)
  for (int64_t c = 0; c < chunks; ++c) run(x + c * kChunk, std::min(kChunk, n - c * kChunk), tanh_form);
}

}  // namespace kiln::cpu
