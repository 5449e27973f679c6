// Attention on tensor cores (FP16/BF16 in, FP32 accumulation and softmax), for head sizes that
// are multiples of 16 up to 128 with V's head size equal to Q's: the FlashAttention-2 loop with
// WMMA tiles. A block holds 64 query rows of one (batch, head), 16 per warp; per tile of 64 keys
// each warp computes its 16 x 64 scores S = Q.K^T on tensor cores into shared memory, updates its
// rows' running maximum and sum in float32 (two lanes per row), writes P = exp(S - max) in the
// input type and accumulates O += P.V on tensor cores, O kept in shared memory in float32 and
// rescaled by exp(max_old - max_new) before each accumulation. Nothing of size seq x seq is
// materialized.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>

#include <cmath>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/kernels/attention.cuh"
#include "backends/cuda/kernels/attention.h"
#include "backends/cuda/kernels/float_cast.cuh"

namespace kiln::cuda {
namespace {

namespace wmma = nvcuda::wmma;

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kBlockRows = 16 * kWarps;  // query rows per block
constexpr int kBlockKeys = 64;           // keys per tile

// Shared memory of one block, in bytes, each region 128-byte aligned. Row pitches are padded
// (8 elements for the 16-bit tiles, 4 for float32) against bank conflicts and stay multiples of
// 32 bytes per 16 rows, as WMMA's loads and stores require.
template <int D>
struct TcLayout {
  static constexpr int kLdT = D + 8;           // Q, K, V tiles (input type)
  static constexpr int kLdS = kBlockKeys + 4;  // scores (float)
  static constexpr int kLdP = kBlockKeys + 8;  // probabilities (input type)
  static constexpr int kLdO = D + 4;           // output accumulator (float)
  static constexpr size_t align(size_t b) { return (b + 127) / 128 * 128; }
  static constexpr size_t kQ = 0;
  static constexpr size_t kK = kQ + align(size_t{kBlockRows} * kLdT * 2);
  static constexpr size_t kV = kK + align(size_t{kBlockKeys} * kLdT * 2);
  static constexpr size_t kS = kV + align(size_t{kBlockKeys} * kLdT * 2);
  static constexpr size_t kP = kS + align(size_t{kBlockRows} * kLdS * 4);
  static constexpr size_t kO = kP + align(size_t{kBlockRows} * kLdP * 2);
  static constexpr size_t kBytes = kO + align(size_t{kBlockRows} * kLdO * 4);
};

// Copies `rows` rows of D elements (row i at src + i * stride) into a tile with pitch ld, zeros
// past `valid` rows; 16-byte vectors where the rows allow.
template <typename T, int D>
__device__ __forceinline__ void load_tile(T* dst, int ld, const T* src, int64_t stride, int rows, int64_t valid,
                                          bool vec) {
  if (vec) {
    constexpr int kPer = 8;  // 16 bytes of a 16-bit type
    for (int i = threadIdx.x; i < rows * (D / kPer); i += kThreads) {
      const int r = i / (D / kPer), c = (i % (D / kPer)) * kPer;
      uint4 v = make_uint4(0, 0, 0, 0);
      if (r < valid) v = *reinterpret_cast<const uint4*>(src + r * stride + c);
      *reinterpret_cast<uint4*>(dst + r * ld + c) = v;
    }
  } else {
    for (int i = threadIdx.x; i < rows * D; i += kThreads) {
      const int r = i / D, c = i % D;
      dst[r * ld + c] = r < valid ? src[r * stride + c] : cast<T>(0.f);
    }
  }
}

template <typename T, typename M, int D>
__global__ void __launch_bounds__(kThreads)
    attention_tc(AttentionShape s, const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                 const M* __restrict__ mask, T* __restrict__ out, bool vec) {
  using L = TcLayout<D>;
  extern __shared__ __align__(128) unsigned char smem[];
  T* qs = reinterpret_cast<T*>(smem + L::kQ);
  T* ks = reinterpret_cast<T*>(smem + L::kK);
  T* vs = reinterpret_cast<T*>(smem + L::kV);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float* ss = reinterpret_cast<float*>(smem + L::kS) + warp * 16 * L::kLdS;
  T* ps = reinterpret_cast<T*>(smem + L::kP) + warp * 16 * L::kLdP;
  float* os = reinterpret_cast<float*>(smem + L::kO) + warp * 16 * L::kLdO;

  const HeadBlock w = head_block(s, blockIdx.x, kBlockRows);
  const int64_t row0 = w.row0, h = w.h, b = w.b, kh = w.kh;
  const T* kb = k + b * s.k.batch + kh * s.k.head;
  const T* vb = v + b * s.v.batch + kh * s.v.head;
  const M* mb = mask ? mask + b * s.mask_batch + h * s.mask_head : nullptr;

  load_tile<T, D>(qs, L::kLdT, q + b * s.q.batch + h * s.q.head + row0 * s.q.seq, s.q.seq, kBlockRows, s.q_len - row0,
                  vec);
  for (int i = lane; i < 16 * L::kLdO; i += 32) os[i] = 0.f;

  // Lanes 2r and 2r+1 own row r of the warp's 16: its statistics and half of its columns.
  const int r = lane / 2, half = lane % 2;
  const int64_t row = row0 + warp * 16 + r;
  float m = -INFINITY, l = 0.f;

  const int64_t kv_end = s.causal ? min(s.kv_len, row0 + kBlockRows) : s.kv_len;
  for (int64_t t0 = 0; t0 < kv_end; t0 += kBlockKeys) {
    __syncthreads();  // the previous tile is consumed
    load_tile<T, D>(ks, L::kLdT, kb + t0 * s.k.seq, s.k.seq, kBlockKeys, s.kv_len - t0, vec);
    load_tile<T, D>(vs, L::kLdT, vb + t0 * s.v.seq, s.v.seq, kBlockKeys, s.kv_len - t0, vec);
    __syncthreads();

    // S = Q.K^T for the warp's 16 rows and the tile's 64 keys.
#pragma unroll
    for (int n = 0; n < kBlockKeys / 16; ++n) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      wmma::fill_fragment(acc, 0.f);
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> bt;  // K^T: K's rows as columns
        wmma::load_matrix_sync(a, qs + warp * 16 * L::kLdT + kk * 16, L::kLdT);
        wmma::load_matrix_sync(bt, ks + n * 16 * L::kLdT + kk * 16, L::kLdT);
        wmma::mma_sync(acc, a, bt, acc);
      }
      wmma::store_matrix_sync(ss + n * 16, acc, L::kLdS, wmma::mem_row_major);
    }
    __syncwarp();

    // Online softmax over the row's half of the tile.
    float sc[kBlockKeys / 2];
    float tmax = -INFINITY;
#pragma unroll
    for (int j = 0; j < kBlockKeys / 2; ++j) {
      const int col = half * (kBlockKeys / 2) + j;
      const int64_t key = t0 + col;
      float x = ss[r * L::kLdS + col] * s.scale;
      bool allowed = key < s.kv_len && row < s.q_len && !(s.causal && key > row);
      if (allowed && mb) {
        if (key >= s.mask_len) {
          allowed = false;
        } else {
          bool ok = true;
          x += attention_mask_value(mb, row * s.mask_row + key * s.mask_key, &ok);
          allowed = ok;
        }
      }
      sc[j] = allowed ? x : -INFINITY;
      tmax = fmaxf(tmax, sc[j]);
    }
    tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, 1));
    const float m_new = fmaxf(m, tmax);
    const bool live = m_new != -INFINITY;
    const float corr = live ? __expf(m - m_new) : 1.f;
    float sum = 0.f;
#pragma unroll
    for (int j = 0; j < kBlockKeys / 2; ++j) {
      const float p = live ? __expf(sc[j] - m_new) : 0.f;
      sum += p;
      ps[r * L::kLdP + half * (kBlockKeys / 2) + j] = cast<T>(p);
    }
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    l = l * corr + sum;
    m = live ? m_new : m;
#pragma unroll
    for (int d = half * (D / 2); d < (half + 1) * (D / 2); ++d) os[r * L::kLdO + d] *= corr;
    __syncwarp();

    // O += P.V on the warp's 16 rows.
#pragma unroll
    for (int dn = 0; dn < D / 16; ++dn) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      wmma::load_matrix_sync(acc, os + dn * 16, L::kLdO, wmma::mem_row_major);
#pragma unroll
      for (int kk = 0; kk < kBlockKeys / 16; ++kk) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> bv;
        wmma::load_matrix_sync(a, ps + kk * 16, L::kLdP);
        wmma::load_matrix_sync(bv, vs + kk * 16 * L::kLdT + dn * 16, L::kLdT);
        wmma::mma_sync(acc, a, bv, acc);
      }
      wmma::store_matrix_sync(os + dn * 16, acc, L::kLdO, wmma::mem_row_major);
    }
    __syncwarp();
  }

  if (row < s.q_len) {
    const float inv = l > 0.f ? 1.f / l : 0.f;  // a row with no attendable key is zero
    T* orow = out + b * s.o.batch + h * s.o.head + row * s.o.seq;
#pragma unroll
    for (int d = half * (D / 2); d < (half + 1) * (D / 2); ++d) orow[d] = cast<T>(os[r * L::kLdO + d] * inv);
  }
}

template <typename T, typename M, int D>
Status run_tc(const AttentionShape& s, const void* q, const void* k, const void* v, const void* mask, void* out,
              cudaStream_t stream) {
  using L = TcLayout<D>;
  const int64_t tiles = (s.q_len + kBlockRows - 1) / kBlockRows;
  const int64_t blocks = tiles * s.q_heads * s.batch;
  if (blocks > 0x7fffffffLL) return invalid("attention of {} blocks is too large for one launch", blocks);
  auto kernel = attention_tc<T, M, D>;
  // More than the default 48 KiB of shared memory, allowed once per instance (not a stream
  // operation: safe while a graph is being recorded).
  static const cudaError_t opted =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(L::kBytes));
  KILN_CUDA_CHECK(opted);
  // 16-byte rows: every row start 16-byte aligned (the strides multiples of 8 elements).
  const bool vec = aligned16({q, k, v}) && s.q.seq % 8 == 0 && s.k.seq % 8 == 0 && s.v.seq % 8 == 0 &&
                   s.q.head % 8 == 0 && s.k.head % 8 == 0 && s.v.head % 8 == 0 && s.q.batch % 8 == 0 &&
                   s.k.batch % 8 == 0 && s.v.batch % 8 == 0;
  kernel<<<static_cast<unsigned>(blocks), kThreads, L::kBytes, stream>>>(
      s, static_cast<const T*>(q), static_cast<const T*>(k), static_cast<const T*>(v), static_cast<const M*>(mask),
      static_cast<T*>(out), vec);
  KILN_CUDA_CHECK_LAUNCH("attention (tensor cores)");
  return {};
}

template <typename T, typename M>
Status run_head(const AttentionShape& s, const void* q, const void* k, const void* v, const void* mask, void* out,
                cudaStream_t st) {
  switch (s.head) {
    case 32: return run_tc<T, M, 32>(s, q, k, v, mask, out, st);
    case 64: return run_tc<T, M, 64>(s, q, k, v, mask, out, st);
    case 80: return run_tc<T, M, 80>(s, q, k, v, mask, out, st);
    case 96: return run_tc<T, M, 96>(s, q, k, v, mask, out, st);
    case 128: return run_tc<T, M, 128>(s, q, k, v, mask, out, st);
    default: return invalid("no tensor-core attention for head size {}", s.head);
  }
}

// Masks come in the step's type (a float mask is stored in the precision of the step reading it)
// or as bool; any other runs on the kernel without tensor cores.
template <typename T>
Status run_masked(const AttentionShape& s, DataType dt, const void* q, const void* k, const void* v, const void* mask,
                  void* out, cudaStream_t st) {
  const DataType m = mask ? s.mask_dtype : DataType::kUndefined;
  if (m == DataType::kUndefined) return run_head<T, T>(s, q, k, v, nullptr, out, st);
  if (m == DataType::kBool) return run_head<T, bool>(s, q, k, v, mask, out, st);
  if (m == dt) return run_head<T, T>(s, q, k, v, mask, out, st);
  return launch_attention(s, dt, q, k, v, mask, out, st);
}

}  // namespace

bool attention_tc_supports(DataType dt, int64_t head, int64_t v_head) {
  return (dt == DataType::kFloat16 || dt == DataType::kBFloat16) && head == v_head &&
         (head == 32 || head == 64 || head == 80 || head == 96 || head == 128);
}

Status launch_attention_tc(const AttentionShape& s, DataType dt, const void* q, const void* k, const void* v,
                           const void* mask, void* out, void* stream) {
  if (!attention_tc_supports(dt, s.head, s.v_head)) {
    return invalid("no tensor-core attention for {} with head sizes {} and {}", dtype_name(dt), s.head, s.v_head);
  }
  if (s.q_heads <= 0 || s.kv_heads <= 0 || s.q_heads % s.kv_heads != 0) {
    return invalid("attention with {} query heads and {} key/value heads", s.q_heads, s.kv_heads);
  }
  if (s.batch == 0 || s.q_len == 0) return {};
  auto st = static_cast<cudaStream_t>(stream);
  if (dt == DataType::kFloat16) return run_masked<__half>(s, dt, q, k, v, mask, out, st);
  return run_masked<__nv_bfloat16>(s, dt, q, k, v, mask, out, st);
}

}  // namespace kiln::cuda
