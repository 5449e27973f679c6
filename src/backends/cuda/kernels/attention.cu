#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/kernels/attention.cuh"
#include "backends/cuda/kernels/attention.h"
#include "backends/cuda/kernels/float_cast.cuh"

namespace kiln::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kRowsPerWarp = 4;
constexpr int kRows = kWarps * kRowsPerWarp;  // query rows per block
constexpr int kKeys = 32;                     // keys per tile: one per lane

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// One block: kRows query rows of one (batch, head); each warp owns kRowsPerWarp of them. Per tile
// of kKeys keys (K and V staged in shared memory as float32), lane j scores key j against a row,
// the warp updates the row's running maximum m, sum l and output accumulator (lane d owning
// output entries d, d + 32, ...), rescaling by exp(m_old - m_new). kVC = ceil(v_head / 32).
template <typename T, typename M, int kVC>
__global__ void __launch_bounds__(kThreads)
    attention_rows(AttentionShape s, const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                   const M* __restrict__ mask, T* __restrict__ out) {
  extern __shared__ float smem[];
  const int D = static_cast<int>(s.head), Dv = static_cast<int>(s.v_head);
  const int kstride = D + 1;         // odd: lanes reading their own key's row hit distinct banks
  float* ks = smem;                  // [kKeys][D + 1]
  float* vs = ks + kKeys * kstride;  // [kKeys][Dv]
  float* qs = vs + kKeys * Dv;       // [kRows][D], scaled

  const HeadBlock w = head_block(s, blockIdx.x, kRows);
  const int64_t row0 = w.row0, h = w.h, b = w.b, kh = w.kh;
  const T* qb = q + b * s.q.batch + h * s.q.head;
  const T* kb = k + b * s.k.batch + kh * s.k.head;
  const T* vb = v + b * s.v.batch + kh * s.v.head;
  const M* mb = mask ? mask + b * s.mask_batch + h * s.mask_head : nullptr;

  for (int i = threadIdx.x; i < kRows * D; i += kThreads) {
    const int r = i / D, d = i % D;
    const int64_t row = row0 + r;
    qs[i] = row < s.q_len ? f32(qb[row * s.q.seq + d]) * s.scale : 0.f;
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float m[kRowsPerWarp], l[kRowsPerWarp], acc[kRowsPerWarp][kVC];
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    m[r] = -INFINITY;
    l[r] = 0.f;
#pragma unroll
    for (int c = 0; c < kVC; ++c) acc[r][c] = 0.f;
  }
  // Under a causal mask no row of the block attends beyond its last row.
  const int64_t kv_end = s.causal ? min(s.kv_len, row0 + kRows) : s.kv_len;
  for (int64_t t0 = 0; t0 < kv_end; t0 += kKeys) {
    __syncthreads();  // the previous tile is consumed (and, the first time, qs is written)
    for (int i = threadIdx.x; i < kKeys * D; i += kThreads) {
      const int j = i / D, d = i % D;
      const int64_t key = t0 + j;
      ks[j * kstride + d] = key < s.kv_len ? f32(kb[key * s.k.seq + d]) : 0.f;
    }
    for (int i = threadIdx.x; i < kKeys * Dv; i += kThreads) {
      const int j = i / Dv, d = i % Dv;
      const int64_t key = t0 + j;
      vs[i] = key < s.kv_len ? f32(vb[key * s.v.seq + d]) : 0.f;
    }
    __syncthreads();
    const int64_t key = t0 + lane;
    const float* kr = ks + lane * kstride;
    // Every loop over the warp's rows is unrolled with no early exit, so that m, l and acc stay in
    // registers; rows past the end compute on zeros and are not stored.
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
      const int64_t row = row0 + warp * kRowsPerWarp + r;
      const float* qr = qs + (warp * kRowsPerWarp + r) * D;
      float sc = 0.f;
#pragma unroll 8
      for (int d = 0; d < D; ++d) sc += qr[d] * kr[d];
      bool allowed = key < s.kv_len && row < s.q_len && !(s.causal && key > row);
      if (allowed && mb) {
        if (key >= s.mask_len) {
          allowed = false;
        } else {
          bool ok = true;
          sc += attention_mask_value(mb, row * s.mask_row + key * s.mask_key, &ok);
          allowed = ok;
        }
      }
      if (!allowed) sc = -INFINITY;
      const float m_new = fmaxf(m[r], warp_max(sc));
      // Nothing attendable yet (uniform across the warp): the row's state stays as it is.
      const bool live = m_new != -INFINITY;
      const float p = live ? __expf(sc - m_new) : 0.f;
      const float corr = live ? __expf(m[r] - m_new) : 1.f;
      l[r] = l[r] * corr + warp_sum(p);
      m[r] = live ? m_new : m[r];
#pragma unroll
      for (int c = 0; c < kVC; ++c) acc[r][c] *= corr;
#pragma unroll 8
      for (int j = 0; j < kKeys; ++j) {
        const float pj = __shfl_sync(0xffffffffu, p, j);
#pragma unroll
        for (int c = 0; c < kVC; ++c) {
          const int d = lane + 32 * c;
          if (d < Dv) acc[r][c] += pj * vs[j * Dv + d];
        }
      }
    }
  }
  T* ob = out + b * s.o.batch + h * s.o.head;
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    const int64_t row = row0 + warp * kRowsPerWarp + r;
    if (row >= s.q_len) continue;
    const float inv = l[r] > 0.f ? 1.f / l[r] : 0.f;  // a row with no attendable key is zero
#pragma unroll
    for (int c = 0; c < kVC; ++c) {
      const int d = lane + 32 * c;
      if (d < Dv) ob[row * s.o.seq + d] = cast<T>(acc[r][c] * inv);
    }
  }
}

template <typename T, typename M>
Status run(const AttentionShape& s, const void* q, const void* k, const void* v, const void* mask, void* out,
           cudaStream_t stream) {
  const int64_t tiles = (s.q_len + kRows - 1) / kRows;
  const int64_t blocks = tiles * s.q_heads * s.batch;
  if (blocks > 0x7fffffffLL) return invalid("attention of {} blocks is too large for one launch", blocks);
  const size_t smem = static_cast<size_t>(kKeys * (s.head + 1) + kKeys * s.v_head + kRows * s.head) * sizeof(float);
  const auto* qt = static_cast<const T*>(q);
  const auto* kt = static_cast<const T*>(k);
  const auto* vt = static_cast<const T*>(v);
  const auto* mt = static_cast<const M*>(mask);
  auto* ot = static_cast<T*>(out);
  const dim3 grid(static_cast<unsigned>(blocks));
  switch ((s.v_head + 31) / 32) {
    case 1: attention_rows<T, M, 1><<<grid, kThreads, smem, stream>>>(s, qt, kt, vt, mt, ot); break;
    case 2: attention_rows<T, M, 2><<<grid, kThreads, smem, stream>>>(s, qt, kt, vt, mt, ot); break;
    case 3: attention_rows<T, M, 3><<<grid, kThreads, smem, stream>>>(s, qt, kt, vt, mt, ot); break;
    default: attention_rows<T, M, 4><<<grid, kThreads, smem, stream>>>(s, qt, kt, vt, mt, ot); break;
  }
  KILN_CUDA_CHECK_LAUNCH("attention");
  return {};
}

template <typename T>
Status run_masked(const AttentionShape& s, const void* q, const void* k, const void* v, const void* mask, void* out,
                  cudaStream_t stream) {
  switch (mask ? s.mask_dtype : DataType::kUndefined) {
    case DataType::kUndefined: return run<T, T>(s, q, k, v, nullptr, out, stream);
    case DataType::kBool: return run<T, bool>(s, q, k, v, mask, out, stream);
    case DataType::kFloat: return run<T, float>(s, q, k, v, mask, out, stream);
    case DataType::kFloat16: return run<T, __half>(s, q, k, v, mask, out, stream);
    case DataType::kBFloat16: return run<T, __nv_bfloat16>(s, q, k, v, mask, out, stream);
    default: return invalid("no CUDA attention mask of {}", dtype_name(s.mask_dtype));
  }
}

}  // namespace

Status launch_attention(const AttentionShape& s, DataType dt, const void* q, const void* k, const void* v,
                        const void* mask, void* out, void* stream) {
  if (s.head <= 0 || s.v_head <= 0 || s.head > kAttentionMaxHead || s.v_head > kAttentionMaxHead) {
    return invalid("attention head sizes {} and {}: the kernel holds 1 to {}", s.head, s.v_head, kAttentionMaxHead);
  }
  if (s.q_heads <= 0 || s.kv_heads <= 0 || s.q_heads % s.kv_heads != 0) {
    return invalid("attention with {} query heads and {} key/value heads", s.q_heads, s.kv_heads);
  }
  if (s.batch == 0 || s.q_len == 0) return {};
  auto st = static_cast<cudaStream_t>(stream);
  switch (dt) {
    case DataType::kFloat: return run_masked<float>(s, q, k, v, mask, out, st);
    case DataType::kFloat16: return run_masked<__half>(s, q, k, v, mask, out, st);
    case DataType::kBFloat16: return run_masked<__nv_bfloat16>(s, q, k, v, mask, out, st);
    default: return invalid("no CUDA attention for {}", dtype_name(dt));
  }
}

}  // namespace kiln::cuda
