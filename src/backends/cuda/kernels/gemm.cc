#include "backends/cuda/kernels/gemm.h"

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <mutex>
#include <vector>

namespace kiln::cuda {
namespace {

#define KILN_CUBLAS_CHECK(call)                                                                    \
  do {                                                                                             \
    cublasStatus_t kiln_st_ = (call);                                                              \
    if (kiln_st_ != CUBLAS_STATUS_SUCCESS) {                                                       \
      return ::kiln::runtime_error("{} failed: {} ({})", #call, cublasLtGetStatusString(kiln_st_), \
                                   cublasLtGetStatusName(kiln_st_));                               \
    }                                                                                              \
  } while (0)

cudaDataType_t cuda_type(DataType dt) {
  switch (dt) {
    case DataType::kFloat16: return CUDA_R_16F;
    case DataType::kBFloat16: return CUDA_R_16BF;
    default: return CUDA_R_32F;
  }
}

class LtGemm : public GemmRunner {
 public:
  ~LtGemm() override {
    if (pref_) cublasLtMatmulPreferenceDestroy(pref_);
    for (auto* l : {a_, b_, c_}) {
      if (l) cublasLtMatrixLayoutDestroy(l);
    }
    if (op_) cublasLtMatmulDescDestroy(op_);
  }

  Status init(const GemmShape& s, const GemmConfig& cfg) {
    KILN_ASSIGN_OR_RETURN(void* h, cublaslt_handle());
    handle_ = static_cast<cublasLtHandle_t>(h);
    const cudaDataType_t t = cuda_type(cfg.dtype);
    const cublasComputeType_t compute =
        cfg.dtype == DataType::kFloat && cfg.tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    KILN_CUBLAS_CHECK(cublasLtMatmulDescCreate(&op_, compute, CUDA_R_32F));
    // Row-major D = A x B is column-major D^T = B^T x A^T: cuBLASLt's "A" is our B and its "B"
    // is our A, and the column-major matrices have our dims swapped.
    cublasOperation_t ta = s.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasOperation_t tb = s.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    KILN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op_, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    KILN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op_, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_DEFAULT;
    if (cfg.epilogue == GemmEpilogue::kRelu)
      epi = cfg.bias ? CUBLASLT_EPILOGUE_RELU_BIAS : CUBLASLT_EPILOGUE_RELU;
    else if (cfg.epilogue == GemmEpilogue::kGeluTanh)
      epi = cfg.bias ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_GELU;
    else if (cfg.bias)
      epi = CUBLASLT_EPILOGUE_BIAS;
    KILN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op_, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
    if (cfg.bias) {
      KILN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op_, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &t, sizeof t));
    }
    // Our B: [k, n] row-major is column-major n x k (ld n); transposed, [n, k] is k x n (ld k).
    const uint64_t b_rows = s.trans_b ? s.k : s.n, b_cols = s.trans_b ? s.n : s.k;
    const uint64_t a_rows = s.trans_a ? s.m : s.k, a_cols = s.trans_a ? s.k : s.m;
    KILN_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&a_, t, b_rows, b_cols, static_cast<int64_t>(b_rows)));
    KILN_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&b_, t, a_rows, a_cols, static_cast<int64_t>(a_rows)));
    KILN_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&c_, t, s.n, s.m, s.n));
    if (s.batch > 1) {
      const int32_t count = static_cast<int32_t>(s.batch);
      const int64_t sa = s.stride_b, sb = s.stride_a, sc = s.stride_c;
      for (auto [layout, stride] : {std::pair{a_, sa}, std::pair{b_, sb}, std::pair{c_, sc}}) {
        KILN_CUBLAS_CHECK(
            cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof count));
        KILN_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride,
                                                           sizeof stride));
      }
    }
    KILN_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref_));
    const uint64_t ws = static_cast<uint64_t>(cfg.workspace_limit);
    KILN_CUBLAS_CHECK(
        cublasLtMatmulPreferenceSetAttribute(pref_, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
    if (cfg.in_place_reduction) {
      const uint32_t schemes = CUBLASLT_REDUCTION_SCHEME_INPLACE;  // and no split (scheme NONE)
      KILN_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref_, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK,
                                                             &schemes, sizeof schemes));
    }
    std::vector<cublasLtMatmulHeuristicResult_t> results(static_cast<size_t>(std::max(cfg.algo_rank, 0) + 1));
    int found = 0;
    KILN_CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(handle_, op_, a_, b_, c_, c_, pref_,
                                                     static_cast<int>(results.size()), results.data(), &found));
    if (found == 0) {
      return runtime_error("cuBLASLt has no algorithm for a {} GEMM of {}x{}x{} (batch {})", dtype_name(cfg.dtype), s.m,
                           s.n, s.k, s.batch);
    }
    const cublasLtMatmulHeuristicResult_t& result = results[cfg.algo_rank < found ? cfg.algo_rank : 0];
    algo_ = result.algo;
    workspace_ = static_cast<int64_t>(result.workspaceSize);
    return {};
  }

  Status run(const void* a, const void* b, const void* c, void* d, const void* bias, float alpha, float beta,
             void* workspace, int64_t workspace_bytes, void* stream) override {
    if (bias) {
      KILN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op_, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
    }
    if (workspace_bytes < workspace_) {
      return runtime_error("the GEMM needs {} bytes of workspace, {} given", workspace_, workspace_bytes);
    }
    // Our B is cuBLASLt's A and our A its B (see init).
    KILN_CUBLAS_CHECK(cublasLtMatmul(handle_, op_, &alpha, b, a_, a, b_, &beta, c ? c : d, c_, d, c_, &algo_, workspace,
                                     static_cast<size_t>(workspace_), static_cast<cudaStream_t>(stream)));
    return {};
  }

  int64_t workspace() const override { return workspace_; }

 private:
  cublasLtHandle_t handle_ = nullptr;
  cublasLtMatmulDesc_t op_ = nullptr;
  cublasLtMatrixLayout_t a_ = nullptr, b_ = nullptr, c_ = nullptr;
  cublasLtMatmulPreference_t pref_ = nullptr;
  cublasLtMatmulAlgo_t algo_{};
  int64_t workspace_ = 0;
};

}  // namespace

Result<void*> cublaslt_handle() {
  static std::mutex mu;
  static cublasLtHandle_t handle = nullptr;
  std::lock_guard<std::mutex> lock(mu);
  if (!handle) KILN_CUBLAS_CHECK(cublasLtCreate(&handle));
  return static_cast<void*>(handle);
}

Result<std::unique_ptr<GemmRunner>> GemmRunner::create(const GemmShape& shape, const GemmConfig& config) {
  auto g = std::make_unique<LtGemm>();
  KILN_RETURN_IF_ERROR(g->init(shape, config));
  return std::unique_ptr<GemmRunner>(std::move(g));
}

bool set_gemm_epilogue(const ActivationSpec& act, DataType dt, GemmConfig* cfg) {
  if (act.kind == Activation::kRelu) {
    cfg->epilogue = GemmEpilogue::kRelu;
  } else if (act.kind == Activation::kGeluTanh || (act.kind == Activation::kGeluErf && dt != DataType::kFloat)) {
    cfg->epilogue = GemmEpilogue::kGeluTanh;
  } else {
    cfg->epilogue = GemmEpilogue::kNone;
    return act.kind != Activation::kNone;
  }
  return false;
}

}  // namespace kiln::cuda
