#pragma once
// Matrix products through cuBLASLt, row-major as ONNX lays tensors out:
//   D[b] = epilogue(alpha * op(A[b]) x op(B[b]) + beta * C[b] + bias)
// with float32 (TF32 tensor cores unless strict), float16 or bfloat16 operands and float32
// accumulation; the epilogue adds a bias per column and applies Relu or tanh-GELU where asked.
// This header needs no CUDA.
#include <cstdint>
#include <memory>

#include "backends/cuda/kernels/activation.h"
#include "core/dtype.h"
#include "core/status.h"

namespace kiln::cuda {

struct GemmShape {
  int64_t batch = 1, m = 0, n = 0, k = 0;
  bool trans_a = false, trans_b = false;             // A is [k, m] / B is [n, k] in memory
  int64_t stride_a = 0, stride_b = 0, stride_c = 0;  // elements between batches; 0 broadcasts
};

enum class GemmEpilogue { kNone, kRelu, kGeluTanh };

struct GemmConfig {
  DataType dtype = DataType::kFloat;
  bool tf32 = true;         // float32 through TF32 tensor cores
  bool bias = false;        // a bias of n elements (dtype) added per column
  bool accumulate = false;  // C is read (beta != 0)
  GemmEpilogue epilogue = GemmEpilogue::kNone;
  int64_t workspace_limit = 32 << 20;
  // The algorithm the heuristic ranks `algo_rank`-th (0: its first); its first when it offers
  // fewer.
  int algo_rank = 0;
  // Only algorithms that launch no separate split-K reduction kernel (ranked among themselves).
  bool in_place_reduction = false;
};

// Puts `act` into cfg's epilogue where cuBLASLt has it: Relu, tanh-GELU, and erf-GELU in FP16 and
// BF16 (cuBLASLt's GELU is the tanh form; the two differ by at most 4.7e-4, at x = 2.70 where
// GELU is 2.69 and an FP16 step is 2e-3, below the rounding of the stored result; FP32 keeps the
// exact erf form as a pass). Returns whether `act` is left for a pass over the output.
bool set_gemm_epilogue(const ActivationSpec& act, DataType dt, GemmConfig* cfg);

// A shared cuBLASLt handle (created once per process and device).
Result<void*> cublaslt_handle();

// One GEMM of fixed shape and configuration: the descriptors and the algorithm cuBLASLt's
// heuristic ranks config.algo_rank-th, made once per shape.
class GemmRunner {
 public:
  static Result<std::unique_ptr<GemmRunner>> create(const GemmShape& shape, const GemmConfig& config);
  virtual ~GemmRunner() = default;
  virtual Status run(const void* a, const void* b, const void* c, void* d, const void* bias, float alpha, float beta,
                     void* workspace, int64_t workspace_bytes, void* stream) = 0;
  // Workspace bytes the chosen algorithm needs.
  virtual int64_t workspace() const = 0;
};

}  // namespace kiln::cuda
