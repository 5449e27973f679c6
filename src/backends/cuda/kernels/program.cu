#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <atomic>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/kernels/elementwise.h"
#include "backends/cuda/kernels/float_cast.cuh"
#include "backends/cuda/kernels/program.h"
#include "backends/cuda/kernels/program_source.h"

namespace kiln::cuda {
namespace {

__device__ __forceinline__ float sigmoid(float x) {
  return 1.f / (1.f + __expf(-x));
}

// One instruction on its operand values: a, b and c are registers in.a, in.b and in.c (b and c
// read as 0 where absent).
__device__ __forceinline__ float eval_op(ProgOp op, const ProgInstr& in, float a, float b, float c) {
  switch (op) {
    case ProgOp::kAdd: return a + b;
    case ProgOp::kSub: return a - b;
    case ProgOp::kMul: return a * b;
    case ProgOp::kDiv: return a / b;
    case ProgOp::kPow: return powf(a, b);
    case ProgOp::kMax: return fmaxf(a, b);
    case ProgOp::kMin: return fminf(a, b);
    case ProgOp::kAbs: return fabsf(a);
    case ProgOp::kNeg: return -a;
    case ProgOp::kExp: return expf(a);
    case ProgOp::kLog: return logf(a);
    case ProgOp::kSqrt: return sqrtf(a);
    case ProgOp::kReciprocal: return 1.f / a;
    case ProgOp::kSigmoid: return sigmoid(a);
    case ProgOp::kTanh: return tanhf(a);
    case ProgOp::kErf: return erff(a);
    case ProgOp::kRelu: return a > 0.f ? a : 0.f;
    case ProgOp::kLeakyRelu: return a >= 0.f ? a : a * in.p0;
    case ProgOp::kClip: {
      const float lo = in.b == kProgNone ? in.p0 : b;
      const float hi = in.c == kProgNone ? in.p1 : c;
      return fminf(fmaxf(a, lo), hi);
    }
    case ProgOp::kFloor: return floorf(a);
    case ProgOp::kCeil: return ceilf(a);
    case ProgOp::kRound: return rintf(a);
    case ProgOp::kSin: return sinf(a);
    case ProgOp::kCos: return cosf(a);
    case ProgOp::kSoftplus: return a > 20.f ? a : log1pf(expf(a));
    case ProgOp::kSoftsign: return a / (1.f + fabsf(a));
    case ProgOp::kElu: return a >= 0.f ? a : in.p0 * (expf(a) - 1.f);
    case ProgOp::kSelu: return in.p1 * (a > 0.f ? a : in.p0 * (expf(a) - 1.f));
    case ProgOp::kHardSigmoid: return fmaxf(0.f, fminf(1.f, in.p0 * a + in.p1));
    case ProgOp::kHardSwish: return a * fmaxf(0.f, fminf(1.f, a / 6.f + 0.5f));
    case ProgOp::kGeluErf: return 0.5f * a * (1.f + erff(a * 0.70710678118654752f));
    case ProgOp::kGeluTanh: return 0.5f * a * (1.f + tanhf(0.79788456080286536f * (a + 0.044715f * a * a * a)));
    case ProgOp::kSwish: return a * sigmoid(in.p0 * a);
    case ProgOp::kSign: return a > 0.f ? 1.f : (a < 0.f ? -1.f : 0.f);
    case ProgOp::kWhere: return a != 0.f ? b : c;
    case ProgOp::kEqual: return a == b ? 1.f : 0.f;
    case ProgOp::kLess: return a < b ? 1.f : 0.f;
    case ProgOp::kGreater: return a > b ? 1.f : 0.f;
    case ProgOp::kLessOrEqual: return a <= b ? 1.f : 0.f;
    case ProgOp::kGreaterOrEqual: return a >= b ? 1.f : 0.f;
    case ProgOp::kAnd: return (a != 0.f && b != 0.f) ? 1.f : 0.f;
    case ProgOp::kOr: return (a != 0.f || b != 0.f) ? 1.f : 0.f;
    case ProgOp::kNot: return a == 0.f ? 1.f : 0.f;
    case ProgOp::kPRelu: return a >= 0.f ? a : a * b;
    // By the bits: NaN and infinity tests must not depend on how the compiler treats them.
    case ProgOp::kIsNaN: return (__float_as_uint(a) & 0x7fffffffu) > 0x7f800000u ? 1.f : 0.f;
    case ProgOp::kIsInf:
      return (__float_as_uint(a) & 0x7fffffffu) == 0x7f800000u && (a < 0.f ? in.p0 != 0.f : in.p1 != 0.f) ? 1.f : 0.f;
  }
  return a;
}

// The same reading its operands from a register file in (local) memory.
__device__ __forceinline__ float eval(const ProgInstr& in, const float* r) {
  return eval_op(in.op, in, r[in.a], in.b == kProgNone ? 0.f : r[in.b], in.c == kProgNone ? 0.f : r[in.c]);
}

// One instruction over N values of each register (registers are rows of N floats): the op is
// dispatched once and its loop compiled for it, so the interpretation costs once per N elements.
// An absent operand reads register a (no op uses it then).
template <int N>
__device__ __forceinline__ void exec_rows(const ProgInstr& in, float (*r)[N]) {
  const float* a = r[in.a];
  const float* b = in.b == kProgNone ? a : r[in.b];
  const float* c = in.c == kProgNone ? a : r[in.c];
  float* d = r[in.dst];
  switch (in.op) {
#define KILN_PROG_ROWS(X)                                                                          \
  case ProgOp::X: {                                                                                \
    float t[N];                                                                                    \
    _Pragma("unroll") for (int j = 0; j < N; ++j) t[j] = eval_op(ProgOp::X, in, a[j], b[j], c[j]); \
    _Pragma("unroll") for (int j = 0; j < N; ++j) d[j] = t[j];                                     \
    return;                                                                                        \
  }
    KILN_PROG_ROWS(kAdd)
    KILN_PROG_ROWS(kSub)
    KILN_PROG_ROWS(kMul)
    KILN_PROG_ROWS(kDiv)
    KILN_PROG_ROWS(kPow)
    KILN_PROG_ROWS(kMax)
    KILN_PROG_ROWS(kMin)
    KILN_PROG_ROWS(kAbs)
    KILN_PROG_ROWS(kNeg)
    KILN_PROG_ROWS(kExp)
    KILN_PROG_ROWS(kLog)
    KILN_PROG_ROWS(kSqrt)
    KILN_PROG_ROWS(kReciprocal)
    KILN_PROG_ROWS(kSigmoid)
    KILN_PROG_ROWS(kTanh)
    KILN_PROG_ROWS(kErf)
    KILN_PROG_ROWS(kRelu)
    KILN_PROG_ROWS(kLeakyRelu)
    KILN_PROG_ROWS(kClip)
    KILN_PROG_ROWS(kFloor)
    KILN_PROG_ROWS(kCeil)
    KILN_PROG_ROWS(kRound)
    KILN_PROG_ROWS(kSin)
    KILN_PROG_ROWS(kCos)
    KILN_PROG_ROWS(kSoftplus)
    KILN_PROG_ROWS(kSoftsign)
    KILN_PROG_ROWS(kElu)
    KILN_PROG_ROWS(kSelu)
    KILN_PROG_ROWS(kHardSigmoid)
    KILN_PROG_ROWS(kHardSwish)
    KILN_PROG_ROWS(kGeluErf)
    KILN_PROG_ROWS(kGeluTanh)
    KILN_PROG_ROWS(kSwish)
    KILN_PROG_ROWS(kSign)
    KILN_PROG_ROWS(kWhere)
    KILN_PROG_ROWS(kEqual)
    KILN_PROG_ROWS(kLess)
    KILN_PROG_ROWS(kGreater)
    KILN_PROG_ROWS(kLessOrEqual)
    KILN_PROG_ROWS(kGreaterOrEqual)
    KILN_PROG_ROWS(kAnd)
    KILN_PROG_ROWS(kOr)
    KILN_PROG_ROWS(kNot)
    KILN_PROG_ROWS(kPRelu)
    KILN_PROG_ROWS(kIsNaN)
    KILN_PROG_ROWS(kIsInf)
#undef KILN_PROG_ROWS
  }
}

// How each operand is addressed: at i (same shape, contiguous), at 0 (one value), or by strides.
enum : uint8_t { kAtIndex = 0, kAtZero = 1, kStrided = 2 };

struct Launch {
  Program p;
  ProgOperand ops[kProgMaxOperands];
  uint8_t mode[kProgMaxOperands];
  int rank;
  int64_t dims[kProgMaxRank];
};

// Per operand, for the packed kernel: whether it runs along the inner dim (read as a pack) or is
// broadcast along it (one value per pack).
struct PackModes {
  bool along_inner[kProgMaxOperands];
};

// Where operand k of `l` holds element i of the iteration. I: the index type, 32-bit where every
// offset fits (integer division is far cheaper).
template <typename I>
__device__ __forceinline__ I operand_offset(const Launch& l, int k, I i) {
  if (l.mode[k] == kAtIndex) return i;
  I at = 0;
  if (l.mode[k] == kStrided) {
    I rest = i;
    for (int d = l.rank - 1; d >= 0; --d) {
      const I size = static_cast<I>(l.dims[d]);
      const I q = rest / size;
      at += (rest - q * size) * static_cast<I>(l.ops[k].strides[d]);
      rest = q;
    }
  }
  return at;
}

template <typename T, typename O, typename I>
__global__ void program_kernel(const __grid_constant__ Launch l, O* out, I n) {
  float r[kProgMaxRegs];
  for (I i = blockIdx.x * static_cast<I>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<I>(gridDim.x) * blockDim.x) {
    for (int k = 0; k < l.p.n_operands; ++k) {
      if (!l.ops[k].data) continue;  // an optional operand left out: no instruction reads it
      const I at = operand_offset(l, k, i);
      r[k] = l.ops[k].is_bool ? (static_cast<const uint8_t*>(l.ops[k].data)[at] ? 1.f : 0.f)
                              : f32(static_cast<const T*>(l.ops[k].data)[at]);
    }
    for (int j = 0; j < l.p.n_instr; ++j) r[l.p.code[j].dst] = eval(l.p.code[j], r);
    const float v = r[l.p.result];
    if constexpr (sizeof(O) == 1) {
      out[i] = v != 0.f ? 1 : 0;
    } else {
      out[i] = cast<O>(v);
    }
  }
}

// The same over packs of sixteen bytes of the output: each thread finds its operands' offsets once
// per pack, reads an operand that runs along the inner dim as one pack (`vec`) and one that is
// broadcast along it as one value, runs each instruction over the whole pack (exec_rows), and
// writes the pack at once. The inner dim is a multiple of a pack and every pack-read operand is
// aligned to one (checked at launch).
template <typename T>
__global__ void program_vec_kernel(const __grid_constant__ Launch l, const __grid_constant__ PackModes vec,
                                   Pack16<T>* out, uint32_t packs) {
  constexpr int N = Pack16<T>::kN;
  float r[kProgMaxRegs][N];
  for (uint32_t g = blockIdx.x * blockDim.x + threadIdx.x; g < packs; g += gridDim.x * blockDim.x) {
    const uint32_t i = g * N;
    for (int k = 0; k < l.p.n_operands; ++k) {
      if (!l.ops[k].data) continue;
      const T* p = static_cast<const T*>(l.ops[k].data) + operand_offset(l, k, i);
      if (vec.along_inner[k]) {
        const Pack16<T> q = *reinterpret_cast<const Pack16<T>*>(p);
#pragma unroll
        for (int j = 0; j < N; ++j) r[k][j] = f32(q.v[j]);
      } else {
        const float one = f32(*p);
#pragma unroll
        for (int j = 0; j < N; ++j) r[k][j] = one;
      }
    }
    for (int q = 0; q < l.p.n_instr; ++q) exec_rows<N>(l.p.code[q], r);
    Pack16<T> y;
#pragma unroll
    for (int j = 0; j < N; ++j) y.v[j] = cast<T>(r[l.p.result][j]);
    out[g] = y;
  }
}

constexpr int kThreads = 256;

// Whether `l` can run by packs of N elements (see program_vec_kernel), and then how each operand
// is read (`vec`).
bool pack_modes(const Launch& l, bool out_bool, const void* out, bool small, int N, PackModes* vec) {
  const int inner = l.rank - 1;
  if (out_bool || !small || l.dims[inner] % N != 0 || !aligned16({out})) return false;
  *vec = PackModes{};
  for (int k = 0; k < l.p.n_operands; ++k) {
    const ProgOperand& op = l.ops[k];
    if (!op.data) continue;
    if (op.is_bool) return false;
    if (op.strides[inner] == 0) continue;  // one value for the whole pack
    if (op.strides[inner] != 1 || !aligned16({op.data})) return false;
    for (int d = 0; d < inner; ++d) {
      if (op.strides[d] % N != 0) return false;
    }
    vec->along_inner[k] = true;
  }
  return true;
}

int64_t pack_blocks(int64_t packs) {
  const int64_t blocks = (packs + kThreads - 1) / kThreads;
  return blocks > 65535 * 32 ? 65535 * 32 : blocks;
}

// Runs `l` by packs when it can (see program_vec_kernel); false when it cannot.
template <typename T>
bool launch_packed(const Launch& l, bool out_bool, void* out, int64_t n, bool small, cudaStream_t s) {
  constexpr int N = Pack16<T>::kN;
  PackModes vec;
  if (!pack_modes(l, out_bool, out, small, N, &vec)) return false;
  const int64_t packs = n / N;
  program_vec_kernel<T><<<static_cast<unsigned>(pack_blocks(packs)), kThreads, 0, s>>>(
      l, vec, static_cast<Pack16<T>*>(out), static_cast<uint32_t>(packs));
  return true;
}

template <typename T, typename I>
void launch_indexed(const Launch& l, bool out_bool, void* out, int64_t n, cudaStream_t s) {
  int64_t blocks = (n + kThreads - 1) / kThreads;
  if (blocks > 65535 * 32) blocks = 65535 * 32;
  if (out_bool) {
    program_kernel<T, uint8_t, I>
        <<<static_cast<unsigned>(blocks), kThreads, 0, s>>>(l, static_cast<uint8_t*>(out), static_cast<I>(n));
  } else {
    program_kernel<T, T, I>
        <<<static_cast<unsigned>(blocks), kThreads, 0, s>>>(l, static_cast<T*>(out), static_cast<I>(n));
  }
}

template <typename T>
Status launch_typed(const Launch& l, bool out_bool, void* out, int64_t n, bool small, cudaStream_t s) {
  if (launch_packed<T>(l, out_bool, out, n, small, s)) {
    KILN_CUDA_CHECK_LAUNCH("the elementwise program kernel");
    return {};
  }
  if (small) {
    launch_indexed<T, uint32_t>(l, out_bool, out, n, s);
  } else {
    launch_indexed<T, int64_t>(l, out_bool, out, n, s);
  }
  KILN_CUDA_CHECK_LAUNCH("the elementwise program kernel");
  return {};
}

}  // namespace

namespace {

// The launch of `p` over `dims` with its dims collapsed and each operand's addressing mode, the
// number of elements (`n`, 0 when there is nothing to do) and whether 32-bit offsets reach every
// element (`small`).
Status make_launch(const Program& p, const ProgOperand* operands, const int64_t* dims, int rank, Launch* launch,
                   int64_t* count, bool* fits32) {
  *count = 0;
  if (rank > kProgMaxRank) return invalid("elementwise programs take at most {} dims, not {}", kProgMaxRank, rank);
  if (p.n_operands > kProgMaxOperands || p.n_instr > kProgMaxInstr) {
    return invalid("an elementwise program of {} operands and {} instructions is too long", p.n_operands, p.n_instr);
  }
  Launch& l = *launch;
  l.p = p;
  for (int k = 0; k < p.n_operands; ++k) l.ops[k] = operands[k];
  for (int d = 0; d < rank; ++d) {
    if (dims[d] == 0) return {};  // n stays 0
    l.dims[d] = dims[d];
  }
  rank = collapse_dims(l.dims, rank, l.ops, p.n_operands);
  dims = l.dims;
  l.rank = rank;
  int64_t n = 1;
  int64_t contiguous[kProgMaxRank];
  for (int d = rank - 1; d >= 0; --d) {
    contiguous[d] = n;
    n *= dims[d];
  }
  // 32-bit indexing when every element index and every operand offset fits.
  bool small = n < (int64_t{1} << 31);
  for (int k = 0; small && k < p.n_operands; ++k) {
    int64_t span = 0;
    for (int d = 0; d < rank; ++d) {
      small = small && l.ops[k].strides[d] >= 0;
      span += (dims[d] - 1) * l.ops[k].strides[d];
    }
    small = small && span < (int64_t{1} << 31);
  }
  for (int k = 0; k < p.n_operands; ++k) {
    const ProgOperand* op = &l.ops[k];
    bool at_index = true, at_zero = true;
    for (int d = 0; d < rank; ++d) {
      if (dims[d] == 1) continue;  // any stride reads the same element
      at_index = at_index && op->strides[d] == contiguous[d];
      at_zero = at_zero && op->strides[d] == 0;
    }
    l.mode[k] = at_index ? kAtIndex : at_zero ? kAtZero : kStrided;
  }
  *count = n;
  *fits32 = small;
  return {};
}

std::atomic<int64_t> compiled_launches{0};

// Runs `l` on the interpreting kernels.
Status interpret(const Launch& l, DataType dt, bool out_bool, void* out, int64_t n, bool small, cudaStream_t s) {
  switch (dt) {
    case DataType::kFloat: return launch_typed<float>(l, out_bool, out, n, small, s);
    case DataType::kFloat16: return launch_typed<__half>(l, out_bool, out, n, small, s);
    case DataType::kBFloat16: return launch_typed<__nv_bfloat16>(l, out_bool, out, n, small, s);
    default: return invalid("no CUDA elementwise program for {}", dtype_name(dt));
  }
}

}  // namespace

Status launch_program(const Program& p, DataType dt, bool out_bool, const ProgOperand* operands, void* out,
                      const int64_t* dims, int rank, void* stream) {
  Launch l;
  int64_t n = 0;
  bool small = false;
  KILN_RETURN_IF_ERROR(make_launch(p, operands, dims, rank, &l, &n, &small));
  if (n == 0) return {};
  return interpret(l, dt, out_bool, out, n, small, static_cast<cudaStream_t>(stream));
}

Status launch_compiled_program(const void* kernel, const Program& p, DataType dt, bool out_bool,
                               const ProgOperand* operands, void* out, const int64_t* dims, int rank, void* stream) {
  Launch l;
  int64_t n = 0;
  bool small = false;
  KILN_RETURN_IF_ERROR(make_launch(p, operands, dims, rank, &l, &n, &small));
  if (n == 0) return {};
  auto s = static_cast<cudaStream_t>(stream);
  const int N = dt == DataType::kFloat ? 4 : 8;  // elements in 16 bytes
  PackModes vec;
  if (!kernel || !elementwise_dtype(dt) || !pack_modes(l, out_bool, out, small, N, &vec)) {
    return interpret(l, dt, out_bool, out, n, small, s);
  }
  ProgArgs a{};
  for (int k = 0; k < p.n_operands; ++k) {
    a.data[k] = l.ops[k].data;
    for (int d = 0; d < l.rank; ++d) a.strides[k][d] = l.ops[k].strides[d];
    a.mode[k] = l.mode[k];
    a.along_inner[k] = vec.along_inner[k] ? 1 : 0;
  }
  for (int d = 0; d < l.rank; ++d) a.dims[d] = l.dims[d];
  a.rank = l.rank;
  unsigned packs = static_cast<unsigned>(n / N);
  void* args[] = {&a, &out, &packs};
  KILN_CUDA_CHECK(
      cudaLaunchKernel(kernel, dim3(static_cast<unsigned>(pack_blocks(packs))), dim3(kThreads), args, 0, s));
  compiled_launches.fetch_add(1, std::memory_order_relaxed);
  return {};
}

int64_t compiled_program_launches() {
  return compiled_launches.load(std::memory_order_relaxed);
}

}  // namespace kiln::cuda
