// Attention on tensor cores (FP16/BF16 in, FP32 accumulation and softmax), for head sizes that
// are multiples of 16 up to 128 with V's head size equal to Q's: the FlashAttention-2 loop on
// mma.sync (m16n8k16) with everything per row in registers. A block holds 64 query rows of one
// (batch, head), 16 per warp. Tiles of 64 keys and values stream through shared memory, two
// buffers deep (cp.async: the next tile loads while this one is computed). Per tile each warp
// computes its 16 x 64 scores S = Q.K^T into registers, updates its rows' running maximum and
// sum in float32 (a row's 64 scores spread over the 4 lanes of a quad), turns the scores into
// P = exp(S - max) in the input type in place (the accumulator's layout is the next product's A
// operand's) and accumulates O += P.V, rescaled by exp(max_old - max_new) first. Nothing of size
// seq x seq is materialized, and only Q, K, V and the output cross global memory.
//
// The per-score work is what bounds this kernel at short sequences (bert-base at 128 keys does
// 128 mma a warp), so it is kept small: scores live in the base-2 domain (one multiply-add for
// scale, mask and log2(e); exp is one ex2), a mask that is the same for every query row is staged
// once per key tile in shared memory, bounds and causal tests run only in the tiles that cross
// them, and the mask's form is a template parameter.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <cstdint>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/kernels/attention.cuh"
#include "backends/cuda/kernels/attention.h"
#include "backends/cuda/kernels/float_cast.cuh"

namespace kiln::cuda {
namespace {

constexpr int kBlockKeys = 64;  // keys per tile

// A block of W warps holds 16 * W query rows: 4 warps where there are enough blocks to fill the
// GPU, 1 where there are not (a batch of one: bert-base's 12 heads of 128 rows are 24 blocks of 4
// warps on 132 SMs, 96 of one).
template <int W>
struct TcBlock {
  static constexpr int kThreads = 32 * W;
  static constexpr int kRows = 16 * W;
};

// Shared memory of one block: the Q tile and two buffers of K and V tiles, each row padded by 8
// elements (16 bytes), so that the 8 rows an ldmatrix reads fall in different banks.
template <int D, int W>
struct TcLayout {
  static constexpr int kLd = D + 8;
  static constexpr int kQTile = TcBlock<W>::kRows * kLd;
  static constexpr int kKvTile = kBlockKeys * kLd;
  static constexpr size_t kTileBytes = (size_t{kQTile} + size_t{4} * kKvTile) * 2;  // Q, K[2], V[2]
  // Then two buffers of a key tile's mask as float additive values (a key-padding mask).
  static constexpr size_t kBytes = kTileBytes + 2 * kBlockKeys * sizeof(float);
};

// The mma operands of one type: T as pairs packed in 32 bits.
template <typename T>
__device__ __forceinline__ uint32_t pack2(float lo, float hi);
template <>
__device__ __forceinline__ uint32_t pack2<__half>(float lo, float hi) {
  const __half2 v = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}
template <>
__device__ __forceinline__ uint32_t pack2<__nv_bfloat16>(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

// d += a.b for a 16x16 A (row-major), a 16x8 B (column-major), float accumulators.
template <typename T>
__device__ __forceinline__ void mma16816(float* d, const uint32_t* a, uint32_t b0, uint32_t b1);
template <>
__device__ __forceinline__ void mma16816<__half>(float* d, const uint32_t* a, uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
template <>
__device__ __forceinline__ void mma16816<__nv_bfloat16>(float* d, const uint32_t* a, uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
// Four 8x8 matrices of 16-bit elements; lane i gives the address of row i % 8 of matrix i / 8.
__device__ __forceinline__ void ldmatrix_x4(uint32_t* r, const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t* r, const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}
// 16 bytes from global to shared memory, asynchronously; zeros where `valid` is false.
__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::);
}
__device__ __forceinline__ void cp_async_wait_all() {
  asm volatile("cp.async.wait_group 0;\n" ::);
}

// Starts copying ROWS rows of D elements (row i at src + i * stride) into a tile with pitch D + 8,
// zeros past `valid` rows, with THREADS threads: 16-byte asynchronous copies where the rows allow
// (`vec`), else element by element (finished on return).
template <typename T, int D, int ROWS, int THREADS>
__device__ __forceinline__ void load_tile(T* dst, const T* src, int64_t stride, int64_t valid, bool vec) {
  constexpr int kLd = D + 8;
  if (vec) {
    constexpr int kChunks = D / 8;  // 16 bytes each
#pragma unroll
    for (int i = threadIdx.x; i < ROWS * kChunks; i += THREADS) {
      const int r = i / kChunks, c = (i % kChunks) * 8;
      const bool in = r < valid;
      cp_async16(dst + r * kLd + c, in ? src + r * stride + c : src, in);
    }
  } else {
    for (int i = threadIdx.x; i < ROWS * D; i += THREADS) {
      const int r = i / D, c = i % D;
      dst[r * kLd + c] = r < valid ? src[r * stride + c] : cast<T>(0.f);
    }
  }
}

// How a kernel instance reads the mask: none; one value per key, the same for every query row
// (BERT's [B, 1, 1, S] key padding, mask_row 0), staged per key tile in shared memory by the
// block; or per element (masks that vary by row).
enum class MaskMode { kNone, kKeys, kElements };

constexpr float kLog2e = 1.4426950408889634f;

// 2^x in one instruction (2^-inf = 0).
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

template <typename T, typename M, int D, int W, MaskMode MODE>
__global__ void __launch_bounds__(TcBlock<W>::kThreads, W == 4 && D <= 64 ? 4 : 1)
    attention_tc(AttentionShape s, const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                 const M* __restrict__ mask, T* __restrict__ out, bool vec) {
  using L = TcLayout<D, W>;
  constexpr int kLd = L::kLd;
  constexpr int kRows = TcBlock<W>::kRows, kThreads = TcBlock<W>::kThreads;
  extern __shared__ __align__(128) unsigned char smem[];
  // Q, then the two buffers' K and V tiles: buffer i's K at tile 1 + 2i, its V at 2 + 2i; then
  // the two buffers of a key tile's mask (kKeys).
  T* qs = reinterpret_cast<T*>(smem);
  auto k_tile = [&](int i) { return qs + L::kQTile + 2 * i * L::kKvTile; };
  auto v_tile = [&](int i) { return qs + L::kQTile + (2 * i + 1) * L::kKvTile; };
  float* ms = reinterpret_cast<float*>(smem + L::kTileBytes);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;

  const HeadBlock w = head_block(s, blockIdx.x, kRows);
  const int64_t row0 = w.row0, h = w.h, b = w.b, kh = w.kh;
  const T* kb = k + b * s.k.batch + kh * s.k.head;
  const T* vb = v + b * s.v.batch + kh * s.v.head;
  const M* mb = MODE != MaskMode::kNone ? mask + b * s.mask_batch + h * s.mask_head : nullptr;
  const int64_t kv_end = s.causal ? min(s.kv_len, row0 + kRows) : s.kv_len;
  // Scores are kept in the base-2 domain: x = S * scale * log2(e) + mask * log2(e), p = 2^(x - max).
  const float scale2 = s.scale * kLog2e;

  // kKeys: each thread reads its keys of the next tile into `mv` with the tile's K/V loads and
  // stores them into the tile's buffer at the top of the next iteration (-inf where masked: past
  // the keys, past a short mask, or false).
  constexpr int kMaskPer = (kBlockKeys + kThreads - 1) / kThreads;
  float mv[kMaskPer];
  auto load_mask = [&](int64_t t0) {
#pragma unroll
    for (int j = 0; j < kMaskPer; ++j) {
      const int c = threadIdx.x + j * kThreads;
      const int64_t key = t0 + c;
      if (c < kBlockKeys) {
        bool ok = key < s.kv_len && key < s.mask_len;
        float x = 0.f;
        if (ok) x = attention_mask_value(mb, key * s.mask_key, &ok);
        mv[j] = ok ? x * kLog2e : -INFINITY;
      }
    }
  };
  if (MODE == MaskMode::kKeys) load_mask(0);

  load_tile<T, D, kRows, kThreads>(qs, q + b * s.q.batch + h * s.q.head + row0 * s.q.seq, s.q.seq, s.q_len - row0, vec);
  if (kv_end > 0) {
    load_tile<T, D, kBlockKeys, kThreads>(k_tile(0), kb, s.k.seq, s.kv_len, vec);
    load_tile<T, D, kBlockKeys, kThreads>(v_tile(0), vb, s.v.seq, s.kv_len, vec);
  }
  cp_async_commit();

  // This lane's rows of the warp's 16 (and 8 below), and its pair of columns in each 8.
  const int quad_row = lane / 4, quad_col = (lane % 4) * 2;
  const int64_t warp_row0 = row0 + warp * 16;
  const int64_t rows[2] = {warp_row0 + quad_row, warp_row0 + quad_row + 8};
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
  float o[D / 8][4];
#pragma unroll
  for (int j = 0; j < D / 8; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.f;
  uint32_t qa[D / 16][4];  // the warp's 16 query rows as A operands, loaded with the first tile

  const int tiles = static_cast<int>((kv_end + kBlockKeys - 1) / kBlockKeys);
  for (int t = 0; t < tiles; ++t) {
    const int buf = t % 2;
    if (MODE == MaskMode::kKeys) {  // buffer buf was last read in tile t - 2, before the barrier of tile t - 1
#pragma unroll
      for (int j = 0; j < kMaskPer; ++j) {
        const int c = threadIdx.x + j * kThreads;
        if (c < kBlockKeys) ms[buf * kBlockKeys + c] = mv[j];
      }
    }
    cp_async_wait_all();
    __syncthreads();  // tile t is in; every warp is done with tile t - 1's buffer
    if (t + 1 < tiles) {
      const int64_t t1 = static_cast<int64_t>(t + 1) * kBlockKeys;
      load_tile<T, D, kBlockKeys, kThreads>(k_tile(buf ^ 1), kb + t1 * s.k.seq, s.k.seq, s.kv_len - t1, vec);
      load_tile<T, D, kBlockKeys, kThreads>(v_tile(buf ^ 1), vb + t1 * s.v.seq, s.v.seq, s.kv_len - t1, vec);
      if (MODE == MaskMode::kKeys) load_mask(t1);
    }
    cp_async_commit();
    if (t == 0) {
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        ldmatrix_x4(qa[kk], qs + (warp * 16 + lane % 16) * kLd + kk * 16 + (lane / 16) * 8);
      }
    }
    const T* kt = k_tile(buf);
    const T* vt = v_tile(buf);
    const float* mt = ms + buf * kBlockKeys;
    const int64_t t0 = static_cast<int64_t>(t) * kBlockKeys;

    // S = Q.K^T: 8 column blocks of 8 keys; one ldmatrix gives two blocks' B operands.
    float sc[kBlockKeys / 8][4];
#pragma unroll
    for (int n = 0; n < kBlockKeys / 8; ++n) sc[n][0] = sc[n][1] = sc[n][2] = sc[n][3] = 0.f;
#pragma unroll
    for (int n = 0; n < kBlockKeys / 8; n += 2) {
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        uint32_t bk[4];
        ldmatrix_x4(bk, kt + (n * 8 + lane % 8 + (lane / 16) * 8) * kLd + kk * 16 + ((lane / 8) % 2) * 8);
        mma16816<T>(sc[n], qa[kk], bk[0], bk[1]);
        mma16816<T>(sc[n + 1], qa[kk], bk[2], bk[3]);
      }
    }

    // Scale and mask. Keys past the end and above the causal diagonal are masked one by one only
    // in the tiles that have them (a warp-uniform test); elsewhere a score is one multiply-add.
    // Rows past q_len are computed from zero rows of Q and never stored.
    const bool edge = t0 + kBlockKeys > s.kv_len || (s.causal && t0 + kBlockKeys - 1 > warp_row0);
#pragma unroll
    for (int n = 0; n < kBlockKeys / 8; ++n) {
      const int c = n * 8 + quad_col;  // this lane's first key of the block, from t0
      float2 km = {0.f, 0.f};
      if (MODE == MaskMode::kKeys) km = *reinterpret_cast<const float2*>(mt + c);
#pragma unroll
      for (int i = 0; i < 2; ++i) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          float x = sc[n][2 * i + e] * scale2 + (e == 0 ? km.x : km.y);
          if (MODE == MaskMode::kElements) {
            const int64_t key = t0 + c + e;
            bool ok = key < s.mask_len;
            // Rows past q_len have no mask row (they are computed and never stored).
            if (ok && key < s.kv_len && rows[i] < s.q_len)
              x += kLog2e * attention_mask_value(mb, rows[i] * s.mask_row + key * s.mask_key, &ok);
            x = ok ? x : -INFINITY;
          }
          if (edge) {
            const int64_t key = t0 + c + e;
            if (key >= s.kv_len || (s.causal && key > rows[i])) x = -INFINITY;
          }
          sc[n][2 * i + e] = x;
        }
      }
    }

    // The online softmax, per row (i = 0: rows[0], values 0 and 1; i = 1: rows[1], values 2 and 3).
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      float tmax = -INFINITY;
#pragma unroll
      for (int n = 0; n < kBlockKeys / 8; ++n) tmax = fmaxf(tmax, fmaxf(sc[n][2 * i], sc[n][2 * i + 1]));
      tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, 1));
      tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, 2));
      const float m_new = fmaxf(m[i], tmax);
      const bool live = m_new != -INFINITY;
      const float m_use = live ? m_new : 0.f;      // all -inf so far: every p is 0
      const float corr = fast_exp2(m[i] - m_use);  // 0 from -inf, 1 where the maximum stays
      float sum = 0.f;
#pragma unroll
      for (int n = 0; n < kBlockKeys / 8; ++n) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const float p = fast_exp2(sc[n][2 * i + e] - m_use);
          sc[n][2 * i + e] = p;
          sum += p;
        }
      }
      l[i] = l[i] * corr + sum;  // this lane's part of the row's sum (the quad's summed at the end)
      m[i] = m_new;
#pragma unroll
      for (int j = 0; j < D / 8; ++j) {
        o[j][2 * i] *= corr;
        o[j][2 * i + 1] *= corr;
      }
    }

    // O += P.V: P's 16 x 64 as 4 A operands of 16 keys (two column blocks of S each); V's rows
    // transposed by ldmatrix into B operands, two blocks of 8 output columns per load.
#pragma unroll
    for (int kk = 0; kk < kBlockKeys / 16; ++kk) {
      uint32_t pa[4];
      pa[0] = pack2<T>(sc[2 * kk][0], sc[2 * kk][1]);
      pa[1] = pack2<T>(sc[2 * kk][2], sc[2 * kk][3]);
      pa[2] = pack2<T>(sc[2 * kk + 1][0], sc[2 * kk + 1][1]);
      pa[3] = pack2<T>(sc[2 * kk + 1][2], sc[2 * kk + 1][3]);
#pragma unroll
      for (int j = 0; j < D / 8; j += 2) {
        uint32_t bv[4];
        ldmatrix_x4_trans(bv, vt + (kk * 16 + lane % 8 + ((lane / 8) % 2) * 8) * kLd + j * 8 + (lane / 16) * 8);
        mma16816<T>(o[j], pa, bv[0], bv[1]);
        mma16816<T>(o[j + 1], pa, bv[2], bv[3]);
      }
    }
  }

  // The rows' sums over their quads; a row with no attendable key is zero.
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    l[i] += __shfl_xor_sync(0xffffffffu, l[i], 1);
    l[i] += __shfl_xor_sync(0xffffffffu, l[i], 2);
    const int64_t row = rows[i];
    if (row >= s.q_len) continue;
    const float inv = l[i] > 0.f ? 1.f / l[i] : 0.f;
    T* orow = out + b * s.o.batch + h * s.o.head + row * s.o.seq;
#pragma unroll
    for (int j = 0; j < D / 8; ++j) {
      const int col = j * 8 + quad_col;
      if (vec) {
        *reinterpret_cast<uint32_t*>(orow + col) = pack2<T>(o[j][2 * i] * inv, o[j][2 * i + 1] * inv);
      } else {
        orow[col] = cast<T>(o[j][2 * i] * inv);
        orow[col + 1] = cast<T>(o[j][2 * i + 1] * inv);
      }
    }
  }
}

template <typename T, typename M, int D, int W, MaskMode MODE>
Status run_tc(const AttentionShape& s, const void* q, const void* k, const void* v, const void* mask, void* out,
              cudaStream_t stream) {
  using L = TcLayout<D, W>;
  const int64_t tiles = (s.q_len + TcBlock<W>::kRows - 1) / TcBlock<W>::kRows;
  const int64_t blocks = tiles * s.q_heads * s.batch;
  if (blocks > 0x7fffffffLL) return invalid("attention of {} blocks is too large for one launch", blocks);
  auto kernel = attention_tc<T, M, D, W, MODE>;
  // More than the default 48 KiB of shared memory, allowed once per instance (not a stream
  // operation: safe while a graph is being recorded).
  static const cudaError_t opted =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(L::kBytes));
  KILN_CUDA_CHECK(opted);
  // 16-byte rows: every row start 16-byte aligned (the strides multiples of 8 elements).
  // (The output is written in pairs of elements: 4-byte aligned where `vec` holds.)
  const bool vec = aligned16({q, k, v}) && reinterpret_cast<uintptr_t>(out) % 4 == 0 && s.q.seq % 8 == 0 &&
                   s.k.seq % 8 == 0 && s.v.seq % 8 == 0 && s.q.head % 8 == 0 && s.k.head % 8 == 0 &&
                   s.v.head % 8 == 0 && s.q.batch % 8 == 0 && s.k.batch % 8 == 0 && s.v.batch % 8 == 0 &&
                   s.o.seq % 2 == 0 && s.o.head % 2 == 0 && s.o.batch % 2 == 0;
  kernel<<<static_cast<unsigned>(blocks), TcBlock<W>::kThreads, L::kBytes, stream>>>(
      s, static_cast<const T*>(q), static_cast<const T*>(k), static_cast<const T*>(v), static_cast<const M*>(mask),
      static_cast<T*>(out), vec);
  KILN_CUDA_CHECK_LAUNCH("attention (tensor cores)");
  return {};
}

template <typename T, typename M, int D, MaskMode MODE>
Status run_tc(const AttentionShape& s, const void* q, const void* k, const void* v, const void* mask, void* out,
              cudaStream_t stream) {
  int device = 0, sms = 0;
  KILN_CUDA_CHECK(cudaGetDevice(&device));
  KILN_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  if (attention_tc_warps(s, sms) == 4) return run_tc<T, M, D, 4, MODE>(s, q, k, v, mask, out, stream);
  return run_tc<T, M, D, 1, MODE>(s, q, k, v, mask, out, stream);
}

template <typename T, typename M, MaskMode MODE>
Status run_head(const AttentionShape& s, const void* q, const void* k, const void* v, const void* mask, void* out,
                cudaStream_t st) {
  switch (s.head) {
    case 32: return run_tc<T, M, 32, MODE>(s, q, k, v, mask, out, st);
    case 64: return run_tc<T, M, 64, MODE>(s, q, k, v, mask, out, st);
    case 80: return run_tc<T, M, 80, MODE>(s, q, k, v, mask, out, st);
    case 96: return run_tc<T, M, 96, MODE>(s, q, k, v, mask, out, st);
    case 128: return run_tc<T, M, 128, MODE>(s, q, k, v, mask, out, st);
    default: return invalid("no tensor-core attention for head size {}", s.head);
  }
}

// Masks come in the step's type (a float mask is stored in the precision of the step reading it)
// or as bool; any other runs on the kernel without tensor cores.
template <typename T>
Status run_masked(const AttentionShape& s, DataType dt, const void* q, const void* k, const void* v, const void* mask,
                  void* out, cudaStream_t st) {
  const DataType m = mask ? s.mask_dtype : DataType::kUndefined;
  if (m == DataType::kUndefined) return run_head<T, T, MaskMode::kNone>(s, q, k, v, nullptr, out, st);
  const bool keys = s.mask_row == 0;  // the same for every query row
  if (m == DataType::kBool) {
    if (keys) return run_head<T, bool, MaskMode::kKeys>(s, q, k, v, mask, out, st);
    return run_head<T, bool, MaskMode::kElements>(s, q, k, v, mask, out, st);
  }
  if (m == dt) {
    if (keys) return run_head<T, T, MaskMode::kKeys>(s, q, k, v, mask, out, st);
    return run_head<T, T, MaskMode::kElements>(s, q, k, v, mask, out, st);
  }
  return launch_attention(s, dt, q, k, v, mask, out, st);
}

}  // namespace

int attention_tc_warps(const AttentionShape& s, int sms) {
  const int64_t blocks4 = (s.q_len + 63) / 64 * s.q_heads * s.batch;
  return blocks4 >= 2 * static_cast<int64_t>(sms) ? 4 : 1;
}

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
