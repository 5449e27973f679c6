// Attention and kiln.PackedAttention on Kiln's own CPU kernel (tactic "kiln"): per query row, the
// scores against every key (one row of them, never the matrix), their softmax and the weighted sum
// of the values, float32 throughout; Q, K, V and the output read through strides
// (backends/attention_shape.h), so the 3-D form and the packed projection need no transposes.
// AVX-512 (four query rows at a time), AVX2 (with a vectorized exp) or portable code, chosen at
// run time; rows over the threads. A BF16 step on a CPU with AMX multiplies on its tiles, 16
// query rows at a time (the scores and softmax still float32).
#include "backends/cpu/attention.h"

#include <omp.h>

#include <cmath>
#include <cstring>
#if defined(__x86_64__)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif
#include <limits>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "backends/attention_shape.h"
#include "backends/cpu/bf16_rows.h"
#include "backends/cpu/onednn.h"  // float_or_native_bf16
#include "backends/cpu/scratch.h"
#include "backends/cpu/simd_math.h"
#include "core/cpu_isa.h"

namespace kiln::cpu {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// One head's view for one query row: where its Q row, K, V and output row are, and its mask row.
struct RowJob {
  const float* q;
  const uint16_t* q16;  // a BF16 step's query row as stored (bfloat16), else null
  const float* k;       // key j at k + j * k_seq
  const float* v;       // value j at v + j * v_seq
  float* o;
  const void* mask;  // element j at mask + j * mask_key (in mask_dtype), or null
  int64_t k_seq, v_seq, mask_key;
  int64_t kv_len, mask_len, head, v_head;
  int64_t causal_limit;  // keys after it are masked (kv_len - 1 when not causal)
  bool mask_bool;
  float scale;
};

// Kernels of one query row, and of four rows of one head (scores: four rows of the given stride).
using AttentionRows4 = void (*)(const RowJob*, float*, int64_t);
struct BF16Pairs;
// 16 rows of one head of a BF16 step: their queries (16 rows of `head` bfloat16), the head's keys
// and values, scratch for 16 rows of scores, numerators and outputs; output rows to out[0..15].
using AttentionRows16Amx = void (*)(const RowJob*, const uint16_t*, const BF16Pairs&, float*, uint16_t*, float*,
                                    uint16_t* const*);

// The score of key j before the softmax, -inf where it is masked.
inline float masked_score(const RowJob& r, int64_t j, float dot) {
  if (j > r.causal_limit || j >= r.mask_len) return kNegInf;
  float s = dot * r.scale;
  if (r.mask) {
    if (r.mask_bool) {
      if (!static_cast<const uint8_t*>(r.mask)[j * r.mask_key]) return kNegInf;
    } else {
      s += static_cast<const float*>(r.mask)[j * r.mask_key];
    }
  }
  return s;
}

void attention_row_generic(const RowJob& r, float* scores) {
  float m = kNegInf;
  for (int64_t j = 0; j < r.kv_len; ++j) {
    const float* kj = r.k + j * r.k_seq;
    float dot = 0;
    for (int64_t d = 0; d < r.head; ++d) dot += r.q[d] * kj[d];
    scores[j] = masked_score(r, j, dot);
    m = scores[j] > m ? scores[j] : m;
  }
  for (int64_t d = 0; d < r.v_head; ++d) r.o[d] = 0;
  if (m == kNegInf) return;  // no key to attend: a row of zeros, as the reference gives
  float sum = 0;
  for (int64_t j = 0; j < r.kv_len; ++j) {
    scores[j] = std::exp(scores[j] - m);
    sum += scores[j];
  }
  for (int64_t j = 0; j < r.kv_len; ++j) {
    const float p = scores[j] / sum;
    if (p == 0) continue;
    const float* vj = r.v + j * r.v_seq;
    for (int64_t d = 0; d < r.v_head; ++d) r.o[d] += p * vj[d];
  }
}

#if defined(__x86_64__)

// o = inv * sum_j scores[j] v_j for a V head of NV vectors, the accumulators in registers.
template <int NV>
__attribute__((target("avx2,fma"))) void weighted_sum_avx2(const RowJob& r, const float* scores, float inv) {
  __m256 acc[NV];
#pragma GCC unroll 16
  for (int t = 0; t < NV; ++t) acc[t] = _mm256_setzero_ps();
  for (int64_t j = 0; j < r.kv_len; ++j) {
    const __m256 p = _mm256_set1_ps(scores[j]);
    const float* vj = r.v + j * r.v_seq;
#pragma GCC unroll 16
    for (int t = 0; t < NV; ++t) acc[t] = _mm256_fmadd_ps(p, _mm256_loadu_ps(vj + 8 * t), acc[t]);
  }
  const __m256 vi = _mm256_set1_ps(inv);
#pragma GCC unroll 16
  for (int t = 0; t < NV; ++t) _mm256_storeu_ps(r.o + 8 * t, _mm256_mul_ps(acc[t], vi));
}

__attribute__((target("avx2,fma"))) void attention_row_avx2(const RowJob& r, float* scores) {
  const int64_t d8 = r.head / 8 * 8;
  float m = kNegInf;
  int64_t j0 = 0;
  if (d8 == r.head) {
    // Four keys at a time: four independent chains of FMAs (one chain waits on each FMA's
    // latency), their lane sums reduced together.
    for (; j0 + 4 <= r.kv_len; j0 += 4) {
      const float* k0 = r.k + j0 * r.k_seq;
      const float* k1 = k0 + r.k_seq;
      const float* k2 = k1 + r.k_seq;
      const float* k3 = k2 + r.k_seq;
      __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
      for (int64_t d = 0; d < d8; d += 8) {
        const __m256 q = _mm256_loadu_ps(r.q + d);
        a0 = _mm256_fmadd_ps(q, _mm256_loadu_ps(k0 + d), a0);
        a1 = _mm256_fmadd_ps(q, _mm256_loadu_ps(k1 + d), a1);
        a2 = _mm256_fmadd_ps(q, _mm256_loadu_ps(k2 + d), a2);
        a3 = _mm256_fmadd_ps(q, _mm256_loadu_ps(k3 + d), a3);
      }
      // hadd pairs the four up lane by lane; the two 128-bit halves then add to the four sums.
      const __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
      alignas(16) float dots[4];
      _mm_store_ps(dots, _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1)));
      for (int t = 0; t < 4; ++t) {
        scores[j0 + t] = masked_score(r, j0 + t, dots[t]);
        m = scores[j0 + t] > m ? scores[j0 + t] : m;
      }
    }
  }
  for (int64_t j = j0; j < r.kv_len; ++j) {
    const float* kj = r.k + j * r.k_seq;
    __m256 acc = _mm256_setzero_ps();
    int64_t d = 0;
    for (; d < d8; d += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(r.q + d), _mm256_loadu_ps(kj + d), acc);
    float dot = simd::hsum(acc);
    for (; d < r.head; ++d) dot += r.q[d] * kj[d];
    scores[j] = masked_score(r, j, dot);
    m = scores[j] > m ? scores[j] : m;
  }
  for (int64_t d = 0; d < r.v_head; ++d) r.o[d] = 0;
  if (m == kNegInf) return;
  const __m256 vm = _mm256_set1_ps(m);
  const int64_t j8 = r.kv_len / 8 * 8;
  __m256 vsum = _mm256_setzero_ps();
  int64_t j = 0;
  for (; j < j8; j += 8) {
    const __m256 e = simd::exp_neg(_mm256_sub_ps(_mm256_loadu_ps(scores + j), vm));
    _mm256_storeu_ps(scores + j, e);
    vsum = _mm256_add_ps(vsum, e);
  }
  float sum = simd::hsum(vsum);
  for (; j < r.kv_len; ++j) {
    scores[j] = std::exp(scores[j] - m);
    sum += scores[j];
  }
  const float inv = 1.0f / sum;
  const int64_t v8 = r.v_head / 8 * 8;
  // The output row in registers for the common head sizes (the accumulators' count a constant,
  // and their loops unrolled: GCC at -O2 leaves a loop over an array of vectors rolled, the array
  // in memory, each FMA waiting on a store and a load).
  if (v8 == r.v_head) {
    switch (r.v_head / 8) {
      case 2: weighted_sum_avx2<2>(r, scores, inv); return;
      case 4: weighted_sum_avx2<4>(r, scores, inv); return;
      case 8: weighted_sum_avx2<8>(r, scores, inv); return;
      case 16: weighted_sum_avx2<16>(r, scores, inv); return;
      default: break;
    }
  }
  for (j = 0; j < r.kv_len; ++j) {
    const float p = scores[j] * inv;
    if (p == 0) continue;
    const float* vj = r.v + j * r.v_seq;
    for (int64_t d = 0; d < r.v_head; ++d) r.o[d] += p * vj[d];
  }
}
// GCC 12.2's AVX-512 intrinsics pass an undefined vector to their masked builtins, which its
// uninitialized-use warnings report at each use (GCC bug 105593).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
// AVX-512 rows, for V heads of 16 to 256 (a multiple of 16). The keys come transposed (kT: key j
// of dim d at kT[d * k_seq + j], the rows padded to a multiple of 16 keys with zeros), so each
// query's scores for 16 keys are one vector: broadcast q[d] times 16 keys' dim d, summed over d,
// with no horizontal sums; the output row stays in registers over the keys.

// o = inv * sum_j scores[j] v_j, V heads of NV vectors: even and odd keys in two sets of
// accumulators (twice the chains in flight).
template <int NV>
__attribute__((target("avx512f,avx512dq,avx2,fma"))) void weighted_sum_avx512(const RowJob& r, const float* scores,
                                                                              float inv) {
  __m512 a0[NV], a1[NV];
#pragma GCC unroll 16
  for (int t = 0; t < NV; ++t) a0[t] = a1[t] = _mm512_setzero_ps();
  int64_t j = 0;
  for (; j + 2 <= r.kv_len; j += 2) {
    const __m512 p0 = _mm512_set1_ps(scores[j]), p1 = _mm512_set1_ps(scores[j + 1]);
    const float* v0 = r.v + j * r.v_seq;
    const float* v1 = v0 + r.v_seq;
#pragma GCC unroll 16
    for (int t = 0; t < NV; ++t) {
      a0[t] = _mm512_fmadd_ps(p0, _mm512_loadu_ps(v0 + 16 * t), a0[t]);
      a1[t] = _mm512_fmadd_ps(p1, _mm512_loadu_ps(v1 + 16 * t), a1[t]);
    }
  }
  if (j < r.kv_len) {
    const __m512 p0 = _mm512_set1_ps(scores[j]);
    const float* v0 = r.v + j * r.v_seq;
#pragma GCC unroll 16
    for (int t = 0; t < NV; ++t) a0[t] = _mm512_fmadd_ps(p0, _mm512_loadu_ps(v0 + 16 * t), a0[t]);
  }
  const __m512 vi = _mm512_set1_ps(inv);
#pragma GCC unroll 16
  for (int t = 0; t < NV; ++t) _mm512_storeu_ps(r.o + 16 * t, _mm512_mul_ps(_mm512_add_ps(a0[t], a1[t]), vi));
}

// The scores (scaled) of R query rows of one head (rows of `stride` floats) for keys j0 ..
// j0 + 16 NB: each key vector loaded once for the R rows, R x NB independent chains of FMAs.
template <int R, int NB>
__attribute__((target("avx512f,avx512dq,avx2,fma"))) inline void scores_rows_avx512(const RowJob* rows, int64_t j0,
                                                                                    float* scores, int64_t stride) {
  __m512 acc[R][NB];
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i) {
#pragma GCC unroll 16
    for (int b = 0; b < NB; ++b) acc[i][b] = _mm512_setzero_ps();
  }
  const RowJob& r0 = rows[0];
  for (int64_t d = 0; d < r0.head; ++d) {
    const float* kd = r0.k + d * r0.k_seq + j0;
    __m512 k[NB];
#pragma GCC unroll 16
    for (int b = 0; b < NB; ++b) k[b] = _mm512_loadu_ps(kd + 16 * b);
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) {
      const __m512 q = _mm512_set1_ps(rows[i].q[d]);
#pragma GCC unroll 16
      for (int b = 0; b < NB; ++b) acc[i][b] = _mm512_fmadd_ps(q, k[b], acc[i][b]);
    }
  }
  const __m512 scale = _mm512_set1_ps(r0.scale);
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i) {
#pragma GCC unroll 16
    for (int b = 0; b < NB; ++b) _mm512_storeu_ps(scores + i * stride + j0 + 16 * b, _mm512_mul_ps(acc[i][b], scale));
  }
}

// A row's scores (scaled) for all its keys.
__attribute__((target("avx512f,avx512dq,avx2,fma"))) void row_scores_avx512(const RowJob& r, float* scores) {
  const int64_t blocks = (r.kv_len + 15) / 16;
  int64_t b = 0;
  for (; b + 8 <= blocks; b += 8) scores_rows_avx512<1, 8>(&r, 16 * b, scores, 0);
  for (; b + 4 <= blocks; b += 4) scores_rows_avx512<1, 4>(&r, 16 * b, scores, 0);
  for (; b < blocks; ++b) scores_rows_avx512<1, 1>(&r, 16 * b, scores, 0);
}

// Masks, then the softmax's numerators in place; returns 1 / their sum, or 0 for a row with no
// key to attend (its scores then all 0).
__attribute__((target("avx512f,avx512dq,avx2,fma"))) float row_softmax_avx512(const RowJob& r, float* scores) {
  // Masks: an additive float mask read in order (BERT's key padding) added 16 keys at a time;
  // any other mask, a causal limit or a mask shorter than the keys key by key.
  const bool plain_mask = !r.mask || (!r.mask_bool && r.mask_key == 1 && r.mask_len >= r.kv_len);
  if (plain_mask && r.causal_limit >= r.kv_len - 1) {
    if (r.mask) {
      const float* mask = static_cast<const float*>(r.mask);
      int64_t j = 0;
      for (; j + 16 <= r.kv_len; j += 16) {
        _mm512_storeu_ps(scores + j, _mm512_add_ps(_mm512_loadu_ps(scores + j), _mm512_loadu_ps(mask + j)));
      }
      for (; j < r.kv_len; ++j) scores[j] += mask[j];
    }
  } else {
    for (int64_t j = 0; j < r.kv_len; ++j) {
      if (j > r.causal_limit || j >= r.mask_len) {
        scores[j] = kNegInf;
      } else if (r.mask && r.mask_bool) {
        if (!static_cast<const uint8_t*>(r.mask)[j * r.mask_key]) scores[j] = kNegInf;
      } else if (r.mask) {
        scores[j] += static_cast<const float*>(r.mask)[j * r.mask_key];
      }
    }
  }
  const int64_t j16 = r.kv_len / 16 * 16;
  const __mmask16 tail = static_cast<__mmask16>((1u << (r.kv_len - j16)) - 1);
  __m512 vm = _mm512_set1_ps(kNegInf);
  for (int64_t j = 0; j < j16; j += 16) vm = _mm512_max_ps(vm, _mm512_loadu_ps(scores + j));
  if (tail) vm = _mm512_mask_max_ps(vm, tail, vm, _mm512_maskz_loadu_ps(tail, scores + j16));
  const float m = _mm512_reduce_max_ps(vm);
  if (m == kNegInf) {  // no key to attend: a row of zeros, as the reference gives
    for (int64_t j = 0; j < r.kv_len; ++j) scores[j] = 0;
    return 0;
  }
  vm = _mm512_set1_ps(m);
  __m512 vsum = _mm512_setzero_ps();
  for (int64_t j = 0; j < j16; j += 16) {
    const __m512 e = simd::exp_neg16(_mm512_sub_ps(_mm512_loadu_ps(scores + j), vm));
    _mm512_storeu_ps(scores + j, e);
    vsum = _mm512_add_ps(vsum, e);
  }
  if (tail) {
    const __m512 e = simd::exp_neg16(_mm512_sub_ps(_mm512_maskz_loadu_ps(tail, scores + j16), vm));
    _mm512_mask_storeu_ps(scores + j16, tail, e);
    vsum = _mm512_mask_add_ps(vsum, tail, vsum, e);
  }
  return 1.0f / _mm512_reduce_add_ps(vsum);
}

__attribute__((target("avx512f,avx512dq,avx2,fma"))) void attention_row_avx512(const RowJob& r, float* scores) {
  row_scores_avx512(r, scores);
  const float inv = row_softmax_avx512(r, scores);
  switch (r.v_head / 16) {
    case 1: weighted_sum_avx512<1>(r, scores, inv); return;
    case 2: weighted_sum_avx512<2>(r, scores, inv); return;
    case 4: weighted_sum_avx512<4>(r, scores, inv); return;
    case 8: weighted_sum_avx512<8>(r, scores, inv); return;
    case 16: weighted_sum_avx512<16>(r, scores, inv); return;
    default: break;
  }
  for (int64_t d = 0; d < r.v_head; ++d) r.o[d] = 0;
  for (int64_t j = 0; j < r.kv_len; ++j) {
    const float p = scores[j] * inv;
    const float* vj = r.v + j * r.v_seq;
    for (int64_t d = 0; d < r.v_head; ++d) r.o[d] += p * vj[d];
  }
}

// Four query rows of one head at once (V heads of NV vectors, NV <= 4): each key and value vector
// is loaded once for the four, which halves the loads per multiply-add of a row at a time.
// `scores` holds four rows of `stride` floats.
template <int NV>
__attribute__((target("avx512f,avx512dq,avx2,fma"))) void attention_rows4_avx512(const RowJob* rows, float* scores,
                                                                                 int64_t stride) {
  const RowJob& r0 = rows[0];
  const int64_t blocks = (r0.kv_len + 15) / 16;
  int64_t b = 0;
  for (; b + 4 <= blocks; b += 4) scores_rows_avx512<4, 4>(rows, 16 * b, scores, stride);
  for (; b < blocks; ++b) scores_rows_avx512<4, 1>(rows, 16 * b, scores, stride);
  float inv[4];
#pragma GCC unroll 16
  for (int i = 0; i < 4; ++i) inv[i] = row_softmax_avx512(rows[i], scores + i * stride);
  __m512 acc[4][NV];
#pragma GCC unroll 16
  for (int i = 0; i < 4; ++i) {
#pragma GCC unroll 16
    for (int t = 0; t < NV; ++t) acc[i][t] = _mm512_setzero_ps();
  }
  for (int64_t j = 0; j < r0.kv_len; ++j) {
    const float* vj = r0.v + j * r0.v_seq;
    __m512 v[NV];
#pragma GCC unroll 16
    for (int t = 0; t < NV; ++t) v[t] = _mm512_loadu_ps(vj + 16 * t);
#pragma GCC unroll 16
    for (int i = 0; i < 4; ++i) {
      const __m512 p = _mm512_set1_ps(scores[i * stride + j]);
#pragma GCC unroll 16
      for (int t = 0; t < NV; ++t) acc[i][t] = _mm512_fmadd_ps(p, v[t], acc[i][t]);
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < 4; ++i) {
    const __m512 vi = _mm512_set1_ps(inv[i]);
#pragma GCC unroll 16
    for (int t = 0; t < NV; ++t) _mm512_storeu_ps(rows[i].o + 16 * t, _mm512_mul_ps(acc[i][t], vi));
  }
}

// A BF16 step on AMX (tile registers of 16 rows of 64 bytes; TDPBF16PS adds a 16 x 32 bfloat16
// tile times a 32 x 16 one into a 16 x 16 float32 tile), 16 query rows of one head at a time:
// their scores against 16 keys per tile, the softmax in float32 on AVX-512, its numerators rounded
// to bfloat16 and multiplied by the values 32 keys at a time into 16 x 16 output tiles (as a BF16
// flash attention does), scaled by 1 / their float32 sum. The head's keys and values come packed
// in the pairs TDPBF16PS reads as its second operand (pack_bf16_pairs).
struct BF16Pairs {
  const uint32_t* k;  // [head / 2][kv_pad]: dims 2d and 2d + 1 of key j at k[d * kv_pad + j]
  const uint32_t* v;  // [kv_pad / 2][v_head]: keys 2j and 2j + 1 of value dim e at v[j * v_head + e]
  int64_t kv_pad;     // keys rounded up to a multiple of 32, the padding zero
};

// Whether AMX's BF16 tiles may be used: the CPU has them and Linux grants the process their
// state (asked once).
bool amx_bf16_ready() {
  static const bool ready = [] {
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
    if (!(d & (1u << 22)) || !(d & (1u << 24))) return false;  // AMX-BF16, AMX-TILE
    constexpr long kReqXcompPerm = 0x1023, kXtileData = 18;
    return syscall(SYS_arch_prctl, kReqXcompPerm, kXtileData) == 0;
  }();
  return ready;
}

struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// Tiles: 0 scores (then the first output tile), 1 queries, 2 keys, 3 numerators, 4 values, 5 to 7
// the other output tiles.
template <int NV>
__attribute__((target("avx512f,avx512bw,avx512dq,avx512bf16,avx2,fma,amx-tile,amx-bf16"))) void attention_rows16_amx(
    const RowJob* rows, const uint16_t* q, const BF16Pairs& kv, float* scores, uint16_t* p, float* o,
    uint16_t* const* out) {
  TileConfig cfg;
  for (int t = 0; t < 8; ++t) {
    cfg.rows[t] = 16;
    cfg.colsb[t] = 64;
  }
  _tile_loadconfig(&cfg);
  const RowJob& r0 = rows[0];
  const int64_t kv_pad = kv.kv_pad, head = r0.head, v_head = r0.v_head;
  for (int64_t j = 0; j < kv_pad; j += 16) {
    _tile_zero(0);
    for (int64_t d = 0; d < head; d += 32) {
      _tile_loadd(1, q + d, head * 2);
      _tile_loadd(2, kv.k + d / 2 * kv_pad + j, kv_pad * 4);
      _tile_dpbf16ps(0, 1, 2);
    }
    _tile_stored(0, scores + j, kv_pad * 4);
  }
  float inv[16];
  const __m512 scale = _mm512_set1_ps(r0.scale);
  for (int i = 0; i < 16; ++i) {
    float* si = scores + i * kv_pad;
    for (int64_t j = 0; j < kv_pad; j += 16) _mm512_storeu_ps(si + j, _mm512_mul_ps(_mm512_loadu_ps(si + j), scale));
    inv[i] = row_softmax_avx512(rows[i], si);
    // The numerators in bfloat16, zero past the last key.
    uint16_t* pi = p + i * kv_pad;
    for (int64_t j = 0; j < kv_pad; j += 16) {
      const int64_t left = r0.kv_len - j;
      const __mmask16 m =
          left >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>(left > 0 ? (1u << left) - 1 : 0u);
      const __m256bh h = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, si + j));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(pi + j), (__m256i)h);
    }
  }
  _tile_zero(0);
  if constexpr (NV > 1) _tile_zero(5);
  if constexpr (NV > 2) _tile_zero(6);
  if constexpr (NV > 3) _tile_zero(7);
  for (int64_t j = 0; j < kv_pad; j += 32) {
    _tile_loadd(3, p + j, kv_pad * 2);
    const uint32_t* vj = kv.v + j / 2 * v_head;
    _tile_loadd(4, vj, v_head * 4);
    _tile_dpbf16ps(0, 3, 4);
    if constexpr (NV > 1) {
      _tile_loadd(4, vj + 16, v_head * 4);
      _tile_dpbf16ps(5, 3, 4);
    }
    if constexpr (NV > 2) {
      _tile_loadd(4, vj + 32, v_head * 4);
      _tile_dpbf16ps(6, 3, 4);
    }
    if constexpr (NV > 3) {
      _tile_loadd(4, vj + 48, v_head * 4);
      _tile_dpbf16ps(7, 3, 4);
    }
  }
  _tile_stored(0, o, v_head * 4);
  if constexpr (NV > 1) _tile_stored(5, o + 16, v_head * 4);
  if constexpr (NV > 2) _tile_stored(6, o + 32, v_head * 4);
  if constexpr (NV > 3) _tile_stored(7, o + 48, v_head * 4);
  _tile_release();
  for (int i = 0; i < 16; ++i) {
    const __m512 vi = _mm512_set1_ps(inv[i]);
    for (int t = 0; t < NV; ++t) {
      const __m256bh h = _mm512_cvtneps_pbh(_mm512_mul_ps(_mm512_loadu_ps(o + i * v_head + 16 * t), vi));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out[i] + 16 * t), (__m256i)h);
    }
  }
}

// The AMX kernel for V heads of `v_head`, or null.
AttentionRows16Amx pick_rows16_amx(int64_t v_head) {
  switch (v_head) {
    case 16: return attention_rows16_amx<1>;
    case 32: return attention_rows16_amx<2>;
    case 48: return attention_rows16_amx<3>;
    case 64: return attention_rows16_amx<4>;
    default: return nullptr;
  }
}

// One head's keys and values (bfloat16, key j at k + j * k_seq) packed as BF16Pairs holds them,
// zero past the last key.
__attribute__((target("avx512f,avx512bw,avx512dq,avx2,fma"))) void pack_bf16_pairs(const uint16_t* k, int64_t k_seq,
                                                                                   const uint16_t* v, int64_t v_seq,
                                                                                   int64_t kv_len, int64_t head,
                                                                                   int64_t v_head, int64_t kv_pad,
                                                                                   uint32_t* kp, uint32_t* vp) {
  for (int64_t j = 0; j < kv_pad; ++j) {
    const uint16_t* kj = k + j * k_seq;
    for (int64_t d = 0; d < head / 2; ++d) {
      uint32_t pair = 0;
      if (j < kv_len) std::memcpy(&pair, kj + 2 * d, sizeof pair);
      kp[d * kv_pad + j] = pair;
    }
  }
  // Element 2e of an output vector is dim e of the even key, 2e + 1 that of the odd key.
  alignas(64) static constexpr uint16_t kInterleave[32] = {0,  16, 1,  17, 2,  18, 3,  19, 4,  20, 5,
                                                           21, 6,  22, 7,  23, 8,  24, 9,  25, 10, 26,
                                                           11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
  const __m512i idx = _mm512_load_si512(kInterleave);
  for (int64_t j = 0; j < kv_pad; j += 2) {
    for (int64_t e = 0; e < v_head; e += 16) {
      const __m256i a =
          j < kv_len ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(v + j * v_seq + e)) : _mm256_setzero_si256();
      const __m256i b = j + 1 < kv_len ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(v + (j + 1) * v_seq + e))
                                       : _mm256_setzero_si256();
      const __m512i ab = _mm512_inserti64x4(_mm512_castsi256_si512(a), b, 1);
      _mm512_storeu_si512(vp + j / 2 * v_head + e, _mm512_permutexvar_epi16(idx, ab));
    }
  }
}

// The four-row kernel for V heads of `v_head`, or null.
AttentionRows4 pick_rows4(int64_t v_head) {
  switch (v_head) {
    case 16: return attention_rows4_avx512<1>;
    case 32: return attention_rows4_avx512<2>;
    case 64: return attention_rows4_avx512<4>;
    default: return nullptr;
  }
}
#pragma GCC diagnostic pop
#endif

using AttentionRow = void (*)(const RowJob&, float*);

// The AMX kernel for a BF16 step (Q heads of 32, 64, 96 or 128, V heads of 16 to 64, a multiple of
// 16), where the CPU has AMX BF16 and Kiln's instruction-set cap allows AVX-512; else null.
AttentionRows16Amx amx_rows16(int64_t head, int64_t v_head) {
#if defined(__x86_64__)
  if (head % 32 != 0 || head > 128 || cpu_isa() < CpuIsa::kAvx512 || !bf16_native() || !amx_bf16_ready()) {
    return nullptr;
  }
  return pick_rows16_amx(v_head);
#else
  (void)head;
  (void)v_head;
  return nullptr;
#endif
}

AttentionRows4 wide_rows4(int64_t v_head) {
#if defined(__x86_64__)
  return pick_rows4(v_head);
#else
  (void)v_head;
  return nullptr;
#endif
}

AttentionRow attention_row_wide() {
#if defined(__x86_64__)
  return attention_row_avx512;
#else
  return attention_row_generic;
#endif
}

AttentionRow pick_row() {
#if defined(__x86_64__)
  if (cpu_isa() >= CpuIsa::kAvx2) return attention_row_avx2;
#endif
  return attention_row_generic;
}

class CpuAttentionKernel : public StepKernel {
 public:
  explicit CpuAttentionKernel(const Node& n) : node_(n) {}

  Status prepare(std::span<const TensorView> in, std::span<const TensorView> out) override {
    (void)out;
    AttentionShape s;
    AttentionInputs w;
    KILN_RETURN_IF_ERROR(attention_shape(node_, in, &s, &w).status());
    const bool bf16 = in[w.q].storage.dtype == DataType::kBFloat16;
    reserve(s, bf16 ? amx_rows16(s.head, s.v_head) : nullptr);
    return {};
  }

  Status enqueue(std::span<const TensorView> in, std::span<TensorView> out, const KernelContext& ctx) override {
    (void)ctx;
    AttentionShape s;
    AttentionInputs w;
    KILN_ASSIGN_OR_RETURN(out[0].dims, attention_shape(node_, in, &s, &w));
    const int64_t total = shape_numel(out[0].dims);
    if (total == 0) return {};
    // Float32 operands, or a BF16 step's bfloat16 ones (each head's keys and values widened into
    // the thread's scratch, each query row and mask row too, each output row rounded back).
    const bool bf16 = in[w.q].storage.dtype == DataType::kBFloat16;
    if (in[w.k].storage.dtype != in[w.q].storage.dtype || in[w.v].storage.dtype != in[w.q].storage.dtype ||
        out[0].storage.dtype != in[w.q].storage.dtype) {
      return invalid("{}: Q, K, V and the output stored in different types", node_.describe());
    }
    const int64_t elem = bf16 ? 2 : 4;
    if (total * elem > out[0].capacity) {
      return runtime_error("{}: an output of {} bytes into a slot of {}", node_.describe(), total * elem,
                           out[0].capacity);
    }
    const bool masked = in.size() > w.mask && !in[w.mask].omitted;
    const bool mask_bf16 = masked && in[w.mask].storage.dtype == DataType::kBFloat16;
    if (masked && s.mask_dtype != DataType::kFloat && s.mask_dtype != DataType::kBool && !mask_bf16) {
      return invalid("{}: a mask of {} on the CPU kernel", node_.describe(), dtype_name(s.mask_dtype));
    }
    const char* q = static_cast<const char*>(in[w.q].data) + w.q_offset * elem;
    const char* k = static_cast<const char*>(in[w.k].data) + w.k_offset * elem;
    const char* v = static_cast<const char*>(in[w.v].data) + w.v_offset * elem;
    const uint8_t* mask = masked ? static_cast<const uint8_t*>(in[w.mask].data) : nullptr;
    const size_t mask_size = masked ? dtype_size(in[w.mask].storage.dtype) : 0;
    char* o = static_cast<char*>(out[0].data);
    const int64_t group = s.q_heads / s.kv_heads;
    const int64_t rows = s.batch * s.q_heads * s.q_len;
    // AVX-512 reads each head's keys transposed from the thread's scratch (see
    // attention_row_avx512), so it always copies them there.
    const bool wide = wide_rows(s);
    const AttentionRow row = wide ? attention_row_wide() : pick_row();
    const bool parallel = rows > 1 && rows * s.kv_len * (s.head + s.v_head) >= (1 << 15);
    const int64_t kv_pad = padded(s.kv_len);
    // V heads of 16, 32 or 64 on AVX-512: four query rows at a time.
    const AttentionRows4 rows4 = wide ? wide_rows4(s.v_head) : nullptr;
    // A BF16 step on AMX tiles, 16 query rows at a time: keys and values packed in pairs, no
    // widening.
    const AttentionRows16Amx amx = bf16 ? amx_rows16(s.head, s.v_head) : nullptr;
    const int64_t kv_pad32 = padded32(s.kv_len);
    reserve(s, amx);  // done at prepare: no allocation here
    const bool gather = !amx && (bf16 || keys_apart(s) || wide);
#pragma omp parallel if (parallel)
    {
      float* scores = scores_.get(omp_get_thread_num());
      // Keys and values far apart in memory (a packed or sequence-first projection) are copied
      // head by head into this thread's scratch: a head's rows then stay in cache across its
      // queries instead of being fetched again, one stride apart, for each query.
      float* kbuf = heads_.get(omp_get_thread_num());
      float* vbuf = kbuf + kv_pad * s.head;
      // BF16: the query rows, output rows and mask rows of up to four queries in float32, and a
      // key row being widened.
      const int64_t mask_row = std::max<int64_t>(s.mask_len, s.kv_len);
      float* qbufs = bf16 ? vbuf + s.kv_len * s.v_head : nullptr;
      float* obufs = bf16 ? qbufs + 4 * s.head : nullptr;
      float* mbufs = bf16 ? obufs + 4 * s.v_head : nullptr;
      float* kwide = bf16 ? mbufs + 4 * mask_row : nullptr;
      int64_t held = -1;  // the (batch, key head) in kbuf and vbuf
      // Row t's job (its head's keys and values copied to the scratch first where they are);
      // returns where its output row starts.
      // `x`: which of the four query slots a BF16 row widens into.
      auto fill = [&](int64_t t, RowJob& r, int64_t x) -> int64_t {
        float* qbuf = bf16 ? qbufs + x * s.head : nullptr;
        float* obuf = bf16 ? obufs + x * s.v_head : nullptr;
        float* mbuf = bf16 ? mbufs + x * mask_row : nullptr;
        const int64_t b = t / (s.q_heads * s.q_len), h = (t / s.q_len) % s.q_heads, i = t % s.q_len;
        const int64_t kh = h / group;
        const int64_t q_at = b * s.q.batch + h * s.q.head + i * s.q.seq;
        const int64_t k_at = b * s.k.batch + kh * s.k.head, v_at = b * s.v.batch + kh * s.v.head;
        const int64_t o_at = b * s.o.batch + h * s.o.head + i * s.o.seq;
        r.q16 = nullptr;
        if (bf16) {
          r.q16 = reinterpret_cast<const uint16_t*>(q) + q_at;
          if (!amx) widen_bf16(r.q16, qbuf, s.head);
          r.q = qbuf;
          r.o = obuf;
        } else {
          r.q = reinterpret_cast<const float*>(q) + q_at;
          r.o = reinterpret_cast<float*>(o) + o_at;
        }
        r.k = reinterpret_cast<const float*>(k) + k_at;
        r.v = reinterpret_cast<const float*>(v) + v_at;
        r.k_seq = s.k.seq;
        r.v_seq = s.v.seq;
        if (gather) {
          if (held != b * s.kv_heads + kh) {
            held = b * s.kv_heads + kh;
            if (wide) {
              // Keys transposed (dim d of key j at d * kv_pad + j), the padding keys zero.
              for (int64_t j = 0; j < kv_pad; ++j) {
                const float* kj = kwide;  // a BF16 key widened first
                if (j >= s.kv_len) {
                  for (int64_t d = 0; d < s.head; ++d) kbuf[d * kv_pad + j] = 0;
                  continue;
                }
                if (bf16) {
                  widen_bf16(reinterpret_cast<const uint16_t*>(k) + k_at + j * s.k.seq, kwide, s.head);
                  widen_bf16(reinterpret_cast<const uint16_t*>(v) + v_at + j * s.v.seq, vbuf + j * s.v_head, s.v_head);
                } else {
                  kj = r.k + j * s.k.seq;
                  std::memcpy(vbuf + j * s.v_head, r.v + j * s.v.seq, static_cast<size_t>(s.v_head) * sizeof(float));
                }
                for (int64_t d = 0; d < s.head; ++d) kbuf[d * kv_pad + j] = kj[d];
              }
            } else {
              for (int64_t j = 0; j < s.kv_len; ++j) {
                if (bf16) {
                  widen_bf16(reinterpret_cast<const uint16_t*>(k) + k_at + j * s.k.seq, kbuf + j * s.head, s.head);
                  widen_bf16(reinterpret_cast<const uint16_t*>(v) + v_at + j * s.v.seq, vbuf + j * s.v_head, s.v_head);
                  continue;
                }
                std::memcpy(kbuf + j * s.head, r.k + j * s.k.seq, static_cast<size_t>(s.head) * sizeof(float));
                std::memcpy(vbuf + j * s.v_head, r.v + j * s.v.seq, static_cast<size_t>(s.v_head) * sizeof(float));
              }
            }
          }
          r.k = kbuf;
          r.v = vbuf;
          r.k_seq = wide ? kv_pad : s.head;
          r.v_seq = s.v_head;
        }
        r.kv_len = s.kv_len;
        r.head = s.head;
        r.v_head = s.v_head;
        r.scale = s.scale;
        r.causal_limit = s.causal ? i : s.kv_len - 1;
        r.mask = nullptr;
        r.mask_len = s.kv_len;
        r.mask_key = s.mask_key;
        r.mask_bool = s.mask_dtype == DataType::kBool;
        if (mask) {
          r.mask = mask + (b * s.mask_batch + h * s.mask_head + i * s.mask_row) * static_cast<int64_t>(mask_size);
          r.mask_len = s.mask_len;
          if (mask_bf16) {  // an additive mask stored as bfloat16: its row widened
            widen_bf16_strided(static_cast<const uint16_t*>(r.mask), s.mask_key, mbuf, s.mask_len);
            r.mask = mbuf;
            r.mask_key = 1;
          }
        }
        return o_at;
      };
      if (amx) {
#if defined(__x86_64__)
        // 16 queries of a head at a time (a head's last ones with copies of its last row beside
        // them, their outputs dropped); the head's keys and values packed in pairs once per
        // thread and head.
        uint32_t* kp = pairs_.get(omp_get_thread_num());
        uint32_t* vp = kp + s.head / 2 * kv_pad32;
        uint16_t* pp = reinterpret_cast<uint16_t*>(vp + kv_pad32 / 2 * s.v_head);
        uint16_t* qt = pp + 16 * kv_pad32;
        float* ot = reinterpret_cast<float*>(qt + 16 * s.head);
        uint16_t* dropped = reinterpret_cast<uint16_t*>(ot + 16 * s.v_head);
        float* mrows = reinterpret_cast<float*>(dropped + 16 * s.v_head);
        const BF16Pairs kv{kp, vp, kv_pad32};
        const int64_t blocks = (s.q_len + 15) / 16;
#pragma omp for schedule(static)
        for (int64_t u = 0; u < s.batch * s.q_heads * blocks; ++u) {
          const int64_t bh = u / blocks, b = bh / s.q_heads, kh = bh % s.q_heads / group;
          if (held != b * s.kv_heads + kh) {
            held = b * s.kv_heads + kh;
            pack_bf16_pairs(reinterpret_cast<const uint16_t*>(k) + b * s.k.batch + kh * s.k.head, s.k.seq,
                            reinterpret_cast<const uint16_t*>(v) + b * s.v.batch + kh * s.v.head, s.v.seq, s.kv_len,
                            s.head, s.v_head, kv_pad32, kp, vp);
          }
          const int64_t first = bh * s.q_len + u % blocks * 16;
          const int64_t n = std::min<int64_t>(16, s.q_len - u % blocks * 16);
          RowJob jobs[16];
          uint16_t* outs[16];
          for (int64_t x = 0; x < 16; ++x) {
            if (x < n) {
              outs[x] = reinterpret_cast<uint16_t*>(o) + fill(first + x, jobs[x], 0);
              // A BF16 mask's row is widened into fill's one slot: each row keeps a copy.
              if (mask_bf16) {
                std::memcpy(mrows + x * mask_row, jobs[x].mask, static_cast<size_t>(s.mask_len) * sizeof(float));
                jobs[x].mask = mrows + x * mask_row;
              }
              std::memcpy(qt + x * s.head, jobs[x].q16, static_cast<size_t>(s.head) * sizeof(uint16_t));
            } else {
              jobs[x] = jobs[n - 1];
              outs[x] = dropped + x * s.v_head;
              std::memset(qt + x * s.head, 0, static_cast<size_t>(s.head) * sizeof(uint16_t));
            }
          }
          amx(jobs, qt, kv, scores, pp, ot, outs);
        }
#endif
      } else if (rows4) {
        // Four queries of a head at a time; a head's last one to three one by one.
        const int64_t blocks = (s.q_len + 3) / 4;
#pragma omp for schedule(static)
        for (int64_t u = 0; u < s.batch * s.q_heads * blocks; ++u) {
          const int64_t first = u / blocks * s.q_len + u % blocks * 4;
          const int64_t n = std::min<int64_t>(4, s.q_len - u % blocks * 4);
          RowJob jobs[4];
          int64_t o_at[4];
          for (int64_t x = 0; x < n; ++x) o_at[x] = fill(first + x, jobs[x], x);
          if (n == 4) {
            rows4(jobs, scores, kv_pad);
          } else {
            for (int64_t x = 0; x < n; ++x) row(jobs[x], scores);
          }
          for (int64_t x = 0; x < n && bf16; ++x) {
            round_to_bf16(obufs + x * s.v_head, reinterpret_cast<uint16_t*>(o) + o_at[x], s.v_head);
          }
        }
      } else {
#pragma omp for schedule(static)
        for (int64_t t = 0; t < rows; ++t) {
          RowJob r;
          const int64_t o_at = fill(t, r, 0);
          row(r, scores);
          if (bf16) round_to_bf16(obufs, reinterpret_cast<uint16_t*>(o) + o_at, s.v_head);
        }
      }
    }
    return {};
  }

 private:
  // Whether a head's keys (or values) lie farther apart than a row of their own: then each thread
  // copies the head it works on into heads_.
  static bool keys_apart(const AttentionShape& s) {
    return s.k.seq > s.head || s.v.seq > s.v_head;
  }
  // Keys rounded up to a multiple of 16 (AVX-512's transposed keys), and of 32 (AMX's pairs).
  static int64_t padded(int64_t kv_len) {
    return (kv_len + 15) / 16 * 16;
  }
  static int64_t padded32(int64_t kv_len) {
    return (kv_len + 31) / 32 * 32;
  }
  // Every thread's scratch for these shapes (the AMX kernel's too where `amx`).
  void reserve(const AttentionShape& s, AttentionRows16Amx amx) {
    scores_.reserve(amx ? 16 * padded32(s.kv_len) : 4 * padded(s.kv_len));
    heads_.reserve(head_scratch(s));
    if (amx) pairs_.reserve(pair_scratch(s));
  }
  // Whether rows run on AVX-512: V heads of 16 to 256 elements, a multiple of 16.
  static bool wide_rows(const AttentionShape& s) {
#if defined(__x86_64__)
    return cpu_isa() >= CpuIsa::kAvx512 && s.v_head % 16 == 0 && s.v_head <= 256;
#else
    (void)s;
    return false;
#endif
  }
  // Floats of heads_ per thread: a head's keys (padded) and values, and in BF16 four query,
  // output and mask rows and a key row beside them.
  static int64_t head_scratch(const AttentionShape& s) {
    return padded(s.kv_len) * s.head + s.kv_len * s.v_head +
           4 * (s.head + s.v_head + std::max<int64_t>(s.mask_len, s.kv_len)) + s.head;
  }
  // 32-bit words of pairs_ per thread (AMX): a head's keys and values packed in pairs (keys
  // rounded up to 32), 16 rows of bfloat16 numerators and queries, 16 float32 output rows, 16
  // dropped output rows, 16 widened mask rows.
  static int64_t pair_scratch(const AttentionShape& s) {
    const int64_t kv_pad = padded32(s.kv_len);
    return s.head / 2 * kv_pad + kv_pad / 2 * s.v_head + 8 * kv_pad + 8 * s.head + 16 * s.v_head + 8 * s.v_head +
           16 * std::max<int64_t>(s.mask_len, s.kv_len);
  }

  const Node& node_;
  ThreadScratch<float> scores_;    // four rows of scores per thread (16 on AMX)
  ThreadScratch<float> heads_;     // one head's keys and values per thread, where keys_apart
  ThreadScratch<uint32_t> pairs_;  // AMX: one head's keys and values in pairs, the tiles' rows
};

}  // namespace

// FP32, or a BF16 step's bfloat16 operands (computed in FP32, or their products on AMX tiles).
bool attention_supported(const Node& n, DataType precision, Layout layout) {
  if (!float_or_native_bf16(precision) || layout != Layout::kPlain) return false;
  int64_t head = 0, v_head = 0;
  if (!attention_form_supported(n, &head, &v_head)) return false;
  // Float32 operands; a float32 or boolean mask.
  const bool packed = n.domain == "kiln";
  const size_t operands = packed ? 1 : 3, mask = packed ? 1 : 3;
  for (size_t i = 0; i < operands; ++i) {
    if (n.inputs[i]->type.dtype != DataType::kFloat) return false;
  }
  if (n.inputs.size() > mask && n.inputs[mask]) {
    const DataType m = n.inputs[mask]->type.dtype;
    if (m != DataType::kFloat && m != DataType::kBool) return false;
  }
  return true;
}

std::unique_ptr<StepKernel> make_attention_kernel(const Step& step) {
  return std::make_unique<CpuAttentionKernel>(*step.node);
}

}  // namespace kiln::cpu
