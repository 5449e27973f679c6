#include "backends/cuda/kernels/program_source.h"

#include <cstring>
#include <set>

#include <fmt/format.h>

#include "core/hash.h"

namespace kiln::cuda {
namespace {

// A float as an exact expression (its bits), whatever its value.
std::string literal(float v) {
  uint32_t bits = 0;
  std::memcpy(&bits, &v, sizeof bits);
  return fmt::format("__int_as_float(0x{:08x})", bits);
}

std::string reg(uint8_t r) {
  return "r" + std::to_string(r);
}

// The expression of one instruction over registers; false for an op the generator lacks.
bool expression(const ProgInstr& in, std::string* out) {
  const std::string a = reg(in.a);
  const std::string b = in.b == kProgNone ? "0.f" : reg(in.b);
  const std::string c = in.c == kProgNone ? "0.f" : reg(in.c);
  const std::string p0 = literal(in.p0), p1 = literal(in.p1);
  std::string e;
  switch (in.op) {
    case ProgOp::kAdd: e = a + " + " + b; break;
    case ProgOp::kSub: e = a + " - " + b; break;
    case ProgOp::kMul: e = a + " * " + b; break;
    case ProgOp::kDiv: e = a + " / " + b; break;
    case ProgOp::kPow: e = "powf(" + a + ", " + b + ")"; break;
    case ProgOp::kMax: e = "fmaxf(" + a + ", " + b + ")"; break;
    case ProgOp::kMin: e = "fminf(" + a + ", " + b + ")"; break;
    case ProgOp::kAbs: e = "fabsf(" + a + ")"; break;
    case ProgOp::kNeg: e = "-" + a; break;
    case ProgOp::kExp: e = "expf(" + a + ")"; break;
    case ProgOp::kLog: e = "logf(" + a + ")"; break;
    case ProgOp::kSqrt: e = "sqrtf(" + a + ")"; break;
    case ProgOp::kReciprocal: e = "1.f / " + a; break;
    case ProgOp::kSigmoid: e = "sigm(" + a + ")"; break;
    case ProgOp::kTanh: e = "tanhf(" + a + ")"; break;
    case ProgOp::kErf: e = "erff(" + a + ")"; break;
    case ProgOp::kRelu: e = a + " > 0.f ? " + a + " : 0.f"; break;
    case ProgOp::kLeakyRelu: e = a + " >= 0.f ? " + a + " : " + a + " * " + p0; break;
    case ProgOp::kClip:
      e = "fminf(fmaxf(" + a + ", " + (in.b == kProgNone ? p0 : b) + "), " + (in.c == kProgNone ? p1 : c) + ")";
      break;
    case ProgOp::kFloor: e = "floorf(" + a + ")"; break;
    case ProgOp::kCeil: e = "ceilf(" + a + ")"; break;
    case ProgOp::kRound: e = "rintf(" + a + ")"; break;
    case ProgOp::kSin: e = "sinf(" + a + ")"; break;
    case ProgOp::kCos: e = "cosf(" + a + ")"; break;
    case ProgOp::kSoftplus: e = a + " > 20.f ? " + a + " : log1pf(expf(" + a + "))"; break;
    case ProgOp::kSoftsign: e = a + " / (1.f + fabsf(" + a + "))"; break;
    case ProgOp::kElu: e = a + " >= 0.f ? " + a + " : " + p0 + " * (expf(" + a + ") - 1.f)"; break;
    case ProgOp::kSelu: e = p1 + " * (" + a + " > 0.f ? " + a + " : " + p0 + " * (expf(" + a + ") - 1.f))"; break;
    case ProgOp::kHardSigmoid: e = "fmaxf(0.f, fminf(1.f, " + p0 + " * " + a + " + " + p1 + "))"; break;
    case ProgOp::kHardSwish: e = a + " * fmaxf(0.f, fminf(1.f, " + a + " / 6.f + 0.5f))"; break;
    case ProgOp::kGeluErf: e = "0.5f * " + a + " * (1.f + erff(" + a + " * 0.70710678118654752f))"; break;
    case ProgOp::kGeluTanh:
      e = "0.5f * " + a + " * (1.f + tanhf(0.79788456080286536f * (" + a + " + 0.044715f * " + a + " * " + a + " * " +
          a + ")))";
      break;
    case ProgOp::kSwish: e = a + " * sigm(" + p0 + " * " + a + ")"; break;
    case ProgOp::kSign: e = a + " > 0.f ? 1.f : (" + a + " < 0.f ? -1.f : 0.f)"; break;
    case ProgOp::kWhere: e = a + " != 0.f ? " + b + " : " + c; break;
    case ProgOp::kEqual: e = a + " == " + b + " ? 1.f : 0.f"; break;
    case ProgOp::kLess: e = a + " < " + b + " ? 1.f : 0.f"; break;
    case ProgOp::kGreater: e = a + " > " + b + " ? 1.f : 0.f"; break;
    case ProgOp::kLessOrEqual: e = a + " <= " + b + " ? 1.f : 0.f"; break;
    case ProgOp::kGreaterOrEqual: e = a + " >= " + b + " ? 1.f : 0.f"; break;
    case ProgOp::kAnd: e = "(" + a + " != 0.f && " + b + " != 0.f) ? 1.f : 0.f"; break;
    case ProgOp::kOr: e = "(" + a + " != 0.f || " + b + " != 0.f) ? 1.f : 0.f"; break;
    case ProgOp::kNot: e = a + " == 0.f ? 1.f : 0.f"; break;
    case ProgOp::kPRelu: e = a + " >= 0.f ? " + a + " : " + a + " * " + b; break;
    case ProgOp::kIsNaN: e = "(__float_as_uint(" + a + ") & 0x7fffffffu) > 0x7f800000u ? 1.f : 0.f"; break;
    case ProgOp::kIsInf:
      e = "(__float_as_uint(" + a + ") & 0x7fffffffu) == 0x7f800000u && (" + a + " < 0.f ? " + p0 + " != 0.f : " + p1 +
          " != 0.f) ? 1.f : 0.f";
      break;
    default: return false;
  }
  *out = "(" + e + ")";
  return true;
}

// The element types and their conversions to and from float, without CUDA's headers (NVRTC then
// needs no include path): float16 and bfloat16 are 16-bit words converted by PTX.
constexpr const char* kPrelude = R"(struct F32 {
  typedef float T;
  static __device__ __forceinline__ float to_f(T x) { return x; }
  static __device__ __forceinline__ T from_f(float x) { return x; }
};
struct F16 {
  typedef unsigned short T;
  static __device__ __forceinline__ float to_f(T x) { float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(x)); return f; }
  static __device__ __forceinline__ T from_f(float x) { T r; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(r) : "f"(x)); return r; }
};
struct BF16 {
  typedef unsigned short T;
  static __device__ __forceinline__ float to_f(T x) { return __uint_as_float(((unsigned)x) << 16); }
  static __device__ __forceinline__ T from_f(float x) { T r; asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r) : "f"(x)); return r; }
};
template <class E> struct __align__(16) Pack { typename E::T v[16 / sizeof(typename E::T)]; };
__device__ __forceinline__ float sigm(float x) { return 1.f / (1.f + __expf(-x)); }
// Operand k's values for the pack starting at element i of the iteration: a pack where it runs
// along the inner dim, else its one value repeated; zeros for an operand left out.
template <class E, int N>
__device__ __forceinline__ void load(const ProgArgs& a, int k, unsigned i, float (&v)[N]) {
  if (!a.data[k]) {
#pragma unroll
    for (int j = 0; j < N; ++j) v[j] = 0.f;
    return;
  }
  unsigned at = 0;
  if (a.mode[k] == 0) {
    at = i;
  } else if (a.mode[k] == 2) {
    unsigned rest = i;
    for (int d = a.rank - 1; d >= 0; --d) {
      const unsigned size = (unsigned)a.dims[d];
      const unsigned q = rest / size;
      at += (rest - q * size) * (unsigned)a.strides[k][d];
      rest = q;
    }
  }
  const typename E::T* p = (const typename E::T*)a.data[k] + at;
  if (a.along_inner[k]) {
    const Pack<E> q = *(const Pack<E>*)p;
#pragma unroll
    for (int j = 0; j < N; ++j) v[j] = E::to_f(q.v[j]);
  } else {
    const float one = E::to_f(*p);
#pragma unroll
    for (int j = 0; j < N; ++j) v[j] = one;
  }
}
)";

const char* element_struct(DataType dt) {
  switch (dt) {
    case DataType::kFloat: return "F32";
    case DataType::kFloat16: return "F16";
    case DataType::kBFloat16: return "BF16";
    default: return nullptr;
  }
}

// The kernel body of `e` after its name: straight-line code over float registers per element of
// a pack.
Result<std::string> kernel_body(const ProgramEntry& e) {
  const Program& p = e.program;
  const char* element = element_struct(e.dtype);
  if (!element) return invalid("no generated elementwise kernel for {}", dtype_name(e.dtype));
  if (p.n_operands > kProgMaxOperands || p.n_instr > kProgMaxInstr) {
    return invalid("an elementwise program of {} operands and {} instructions is too long", p.n_operands, p.n_instr);
  }
  int regs = p.n_operands;
  auto use = [&](uint8_t r) {
    if (r != kProgNone && r + 1 > regs) regs = r + 1;
  };
  std::string code;
  for (int q = 0; q < p.n_instr; ++q) {
    const ProgInstr& in = p.code[q];
    std::string x;
    if (!expression(in, &x)) return invalid("no generated code for elementwise op {}", static_cast<int>(in.op));
    for (uint8_t r : {in.dst, in.a, in.b, in.c}) use(r);
    code += fmt::format("      {} = {};\n", reg(in.dst), x);
  }
  use(static_cast<uint8_t>(p.result));
  std::string s = fmt::format(
      "(const __grid_constant__ ProgArgs a, Pack<{0}>* out, unsigned packs) {{\n"
      "  typedef {0} E;\n"
      "  constexpr int N = 16 / sizeof(E::T);\n",
      element);
  s += "  for (unsigned g = blockIdx.x * blockDim.x + threadIdx.x; g < packs; g += gridDim.x * blockDim.x) {\n";
  for (int k = 0; k < p.n_operands; ++k) {
    s += fmt::format("    float x{0}[N];\n    load<E, N>(a, {0}, g * N, x{0});\n", k);
  }
  s += "    Pack<E> y;\n#pragma unroll\n    for (int j = 0; j < N; ++j) {\n";
  for (int r = 0; r < regs; ++r) {
    s +=
        r < p.n_operands ? fmt::format("      float r{0} = x{0}[j];\n", r) : fmt::format("      float r{} = 0.f;\n", r);
  }
  s += code;
  s += fmt::format("      y.v[j] = E::from_f(r{});\n    }}\n    out[g] = y;\n  }}\n}}\n", p.result);
  return s;
}

std::string name_of(const std::string& body) {
  return fmt::format("kiln_prog_{:016x}", Hasher().str(body).value());
}

}  // namespace

Result<std::string> program_kernel_name(const ProgramEntry& e) {
  KILN_ASSIGN_OR_RETURN(std::string body, kernel_body(e));
  return name_of(body);
}

Result<std::string> program_module_source(const std::vector<ProgramEntry>& entries) {
  std::string s = fmt::format(
      "struct ProgArgs {{\n"
      "  const void* data[{0}];\n"
      "  long long strides[{0}][{1}];\n"
      "  long long dims[{1}];\n"
      "  unsigned char mode[{0}];\n"
      "  unsigned char along_inner[{0}];\n"
      "  int rank;\n"
      "}};\n",
      kProgMaxOperands, kProgMaxRank);
  s += kPrelude;
  std::set<std::string> names;
  for (const ProgramEntry& e : entries) {
    KILN_ASSIGN_OR_RETURN(std::string body, kernel_body(e));
    const std::string name = name_of(body);
    if (!names.insert(name).second) continue;
    s += "extern \"C\" __global__ void " + name + body;
  }
  return s;
}

}  // namespace kiln::cuda
