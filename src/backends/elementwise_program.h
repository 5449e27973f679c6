#pragma once
// Elementwise programs: a region of elementwise ops (a kiln.FusedElementwise body, or one op) as
// a short list of instructions over float registers, run by one kernel that reads each operand
// once, computes the region in float32 and writes the result once. Operands broadcast through
// per-dimension strides (0 along broadcast dims), in whatever order the output is stored in, so
// NHWC outputs with NCHW-broadcast operands are one pass too. The CUDA backend runs programs on
// the GPU (backends/cuda/kernels/program.h), the CPU backend on the CPU (cpu/elementwise.cc).
// This header needs nothing but the standard library and the dtypes, so device code includes it.
#include <cstdint>

#include "core/dtype.h"

namespace kiln {

class Node;

enum class ProgOp : uint8_t {
  kAdd,
  kSub,
  kMul,
  kDiv,
  kPow,
  kMax,
  kMin,
  kAbs,
  kNeg,
  kExp,
  kLog,
  kSqrt,
  kReciprocal,
  kSigmoid,
  kTanh,
  kErf,
  kRelu,
  kLeakyRelu,
  kClip,
  kFloor,
  kCeil,
  kRound,
  kSin,
  kCos,
  kSoftplus,
  kSoftsign,
  kElu,
  kSelu,
  kHardSigmoid,
  kHardSwish,
  kGeluErf,
  kGeluTanh,
  kSwish,
  kSign,
  kWhere,
  kEqual,
  kLess,
  kGreater,
  kLessOrEqual,
  kGreaterOrEqual,
  kAnd,
  kOr,
  kNot,
  kPRelu,
  kIsNaN,
  kIsInf  // p0, p1: detect negative, positive infinities
};

inline constexpr int kProgMaxInstr = 48;
inline constexpr int kProgMaxOperands = 12;
inline constexpr int kProgMaxRegs = 64;
inline constexpr int kProgMaxRank = 6;
inline constexpr uint8_t kProgNone = 255;  // an absent optional operand (Clip without min)

struct ProgInstr {
  ProgOp op;
  uint8_t dst, a, b, c;  // registers; operands are registers 0..n_operands-1
  float p0, p1;          // attributes (LeakyRelu alpha, Selu alpha/gamma, Clip bounds, ...)
};

struct Program {
  int n_instr = 0;
  int n_operands = 0;
  int result = 0;  // the register written to the output
  ProgInstr code[kProgMaxInstr];
};

// An operand's data and how to find element i of the output's iteration in it.
struct ProgOperand {
  const void* data = nullptr;
  bool is_bool = false;                // stored as one byte, 0 or 1; float operands are the output dtype
  int64_t strides[kProgMaxRank] = {};  // per iteration dim, in elements; 0 where broadcast
};

// Simplifies an iteration before launch: drops dims of size 1 and merges each pair of adjacent
// dims that every operand (with data) walks as one (its stride along the outer dim is its stride
// along the inner times the inner's size, broadcast dims included), so an NHWC tensor times a
// per-(N, C) scale iterates as [N, H*W, C]. Rewrites `dims` and the operands' strides in place
// and returns the new rank (at least 1).
int collapse_dims(int64_t* dims, int rank, ProgOperand* operands, int n_operands);

// The program of a kiln.FusedElementwise node (its body) or of one elementwise ONNX node; false
// when an op is not one a program runs (or the region is too long for one).
bool compile_program(const Node& n, Program* out);

}  // namespace kiln
