#pragma once
// Vectorized float math for Kiln's own CPU kernels (AVX2 with FMA; a softmax's exp on AVX-512
// too): exp and erfc, each a few ulps from the libm result over the range the kernels use, and a
// horizontal sum. Functions carry the target attribute, so callers compiled for any instruction
// set may call them behind a cpu_isa() check.
#if defined(__x86_64__)
#include <immintrin.h>

namespace kiln::cpu::simd {

// exp(x), x clamped to [-87.3, 88.7]: x = n ln2 + r with |r| <= ln2 / 2, e^r by its degree-6
// Taylor polynomial (relative error below 2e-7 there), 2^n through the exponent bits.
__attribute__((target("avx2,fma"), always_inline)) inline __m256 exp(__m256 x) {
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.7f));
  const __m256 n =
      _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  // r = x - n ln2, ln2 split in two for precision.
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.0f / 720);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  const __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
}

// exp(x) for x <= 0, and exactly 0 below -87 (a softmax's masked scores, -inf included).
__attribute__((target("avx2,fma"), always_inline)) inline __m256 exp_neg(__m256 x) {
  const __m256 under = _mm256_cmp_ps(x, _mm256_set1_ps(-87.0f), _CMP_LT_OQ);
  return _mm256_andnot_ps(under, exp(x));
}

// erfc(|x|) by Abramowitz and Stegun 7.1.26 (absolute error below 1.5e-7): t = 1 / (1 + p|x|),
// erfc = t (a1 + t (a2 + t (a3 + t (a4 + t a5)))) exp(-x^2).
__attribute__((target("avx2,fma"), always_inline)) inline __m256 erfc_abs(__m256 x) {
  const __m256 ax = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), x);
  const __m256 t =
      _mm256_div_ps(_mm256_set1_ps(1.0f), _mm256_fmadd_ps(_mm256_set1_ps(0.3275911f), ax, _mm256_set1_ps(1.0f)));
  __m256 p = _mm256_set1_ps(1.061405429f);
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-1.453152027f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(1.421413741f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-0.284496736f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(0.254829592f));
  return _mm256_mul_ps(_mm256_mul_ps(p, t), exp_neg(_mm256_mul_ps(_mm256_sub_ps(_mm256_setzero_ps(), ax), ax)));
}

// erf(x) with a relative error below 1e-6: its Taylor series to x^9 where |x| < 0.5 (1 - erfc
// there loses the small values' digits), sign(x) (1 - erfc(|x|)) elsewhere.
__attribute__((target("avx2,fma"), always_inline)) inline __m256 erf(__m256 x) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  const __m256 far = _mm256_or_ps(_mm256_and_ps(sign, x), _mm256_sub_ps(_mm256_set1_ps(1.0f), erfc_abs(x)));
  const __m256 x2 = _mm256_mul_ps(x, x);
  __m256 p = _mm256_set1_ps(1.0f / 216);
  p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(-1.0f / 42));
  p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(1.0f / 10));
  p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(-1.0f / 3));
  p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(1.0f));
  const __m256 near = _mm256_mul_ps(_mm256_mul_ps(p, x), _mm256_set1_ps(1.12837916709551257f));  // 2 / sqrt(pi)
  const __m256 small = _mm256_cmp_ps(x2, _mm256_set1_ps(0.25f), _CMP_LT_OQ);
  return _mm256_blendv_ps(far, near, small);
}

// tanh(x) with a relative error below 1e-6: its Taylor series to x^7 where |x| < 0.2, else
// 1 - 2 / (1 + e^(2x)) (which loses the small values' digits).
__attribute__((target("avx2,fma"), always_inline)) inline __m256 tanh(__m256 x) {
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 far =
      _mm256_sub_ps(one, _mm256_div_ps(_mm256_set1_ps(2.0f), _mm256_add_ps(one, exp(_mm256_add_ps(x, x)))));
  const __m256 x2 = _mm256_mul_ps(x, x);
  __m256 p = _mm256_set1_ps(-17.0f / 315);
  p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(2.0f / 15));
  p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(-1.0f / 3));
  p = _mm256_fmadd_ps(p, x2, one);
  const __m256 small = _mm256_cmp_ps(x2, _mm256_set1_ps(0.04f), _CMP_LT_OQ);
  return _mm256_blendv_ps(far, _mm256_mul_ps(p, x), small);
}

// exp(x) for x <= 0 on 16 lanes (AVX-512), the same steps as exp_neg and so the same results bit
// for bit: 2^n applied by VSCALEFPS, exact for the normal powers the clamp leaves.
__attribute__((target("avx512f,avx2,fma"), always_inline)) inline __m512 exp_neg16(__m512 x) {
  const __mmask16 keep = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.0f), _CMP_NLT_UQ);
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.3f)), _mm512_set1_ps(88.7f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.0f / 720);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_maskz_scalef_ps(keep, p, n);
}

// The sum of the eight lanes.
__attribute__((target("avx2,fma"), always_inline)) inline float hsum(__m256 v) {
  const __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
  __m128 s = _mm_add_ps(lo, hi);
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

}  // namespace kiln::cpu::simd
#endif
