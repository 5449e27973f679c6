#include "backends/cpu/bf16_rows.h"

#include <cstring>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "core/cpu_isa.h"
#include "core/dtype.h"

namespace kiln::cpu {
namespace {

void widen_generic(const uint16_t* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = bf16_to_float(x[i]);
}

void round_generic(const float* x, uint16_t* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = float_to_bf16(x[i]);
}

#if defined(__x86_64__)
__attribute__((target("avx512f,avx512bw"))) void widen_avx512(const uint16_t* x, float* y, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + i));
    _mm512_storeu_ps(y + i, _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)));
  }
  widen_generic(x + i, y + i, n - i);
}

__attribute__((target("avx512f,avx512bw"))) void round_avx512(const float* x, uint16_t* y, int64_t n) {
  int64_t i = 0;
  const __m512i one = _mm512_set1_epi32(1), half = _mm512_set1_epi32(0x7fff), quiet = _mm512_set1_epi32(0x40);
  const __m512i abs_mask = _mm512_set1_epi32(0x7fffffff), inf = _mm512_set1_epi32(0x7f800000);
  for (; i + 16 <= n; i += 16) {
    const __m512i u = _mm512_castps_si512(_mm512_loadu_ps(x + i));
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), one);
    __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(half, lsb)), 16);
    const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, abs_mask), inf);
    r = _mm512_mask_mov_epi32(r, nan, _mm512_or_si512(_mm512_srli_epi32(u, 16), quiet));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(y + i), _mm512_cvtepi32_epi16(r));
  }
  round_generic(x + i, y + i, n - i);
}
#endif

bool avx512() {
#if defined(__x86_64__)
  return cpu_isa() >= CpuIsa::kAvx512;
#else
  return false;
#endif
}

}  // namespace

void widen_bf16(const uint16_t* x, float* y, int64_t n) {
#if defined(__x86_64__)
  if (avx512()) return widen_avx512(x, y, n);
#endif
  widen_generic(x, y, n);
}

void round_to_bf16(const float* x, uint16_t* y, int64_t n) {
#if defined(__x86_64__)
  if (avx512()) return round_avx512(x, y, n);
#endif
  round_generic(x, y, n);
}

void widen_bf16_strided(const uint16_t* x, int64_t stride, float* y, int64_t n) {
  if (stride == 1) return widen_bf16(x, y, n);
  for (int64_t i = 0; i < n; ++i) y[i] = bf16_to_float(x[i * stride]);
}

}  // namespace kiln::cpu
