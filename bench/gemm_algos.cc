// Times cuBLASLt's algorithms on the GEMMs of bert-base and vit_b_16 (FP16, FP32 accumulation,
// row-major as Kiln runs them, with the epilogue each one has in Kiln's engines: bias, bias and
// GELU, or bias and a residual read as C). For each GEMM it prints the time of the heuristic's
// first choice, of the best of the choices Kiln's builder times (the heuristic's first eight and
// the first two without a separate split-K reduction: kGemmAlgoChoices, kGemmInPlaceChoices), of the best of the
// heuristic's first 64, and of the best configuration found by a walk in two phases: every algorithm id's tiles, stages
// and split-K counts, then cluster shapes, custom options and swizzles on the eight fastest of those. It answers
// whether timing more cuBLASLt configurations at build would make Kiln's GEMMs faster.
//
//   g++ -O2 -std=c++17 -I/usr/local/cuda/include -o /tmp/gemm_algos bench/gemm_algos.cc
//       -L/usr/local/cuda/lib64 -lcublasLt -lcudart
//   /tmp/gemm_algos [--quick] [--only M]
//
// Each candidate runs in one CUDA graph of several launches, each launch reading its own copy of
// the weights (more copies than the L2 cache holds), so small products pay for their weights as
// they do in an engine; the figure is the median of five replays divided by the launches.
#include <cublasLt.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

namespace {

// The builder's GEMM tactics (src/backends/cuda/device_kernel.h).
constexpr int kKilnAlgoChoices = 8;
constexpr int kKilnInPlaceChoices = 2;

#define CHECK_CUDA(x)                                                                         \
  do {                                                                                        \
    cudaError_t e_ = (x);                                                                     \
    if (e_ != cudaSuccess) {                                                                  \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
      std::exit(1);                                                                           \
    }                                                                                         \
  } while (0)
#define CHECK_LT(x)                                                                                \
  do {                                                                                             \
    cublasStatus_t s_ = (x);                                                                       \
    if (s_ != CUBLAS_STATUS_SUCCESS) {                                                             \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cublasLtGetStatusString(s_)); \
      std::exit(1);                                                                                \
    }                                                                                              \
  } while (0)

enum class Epi { kBias, kBiasGelu, kBiasResidual };

struct Problem {
  const char* name;
  int64_t m, n, k;
  Epi epi;
};

constexpr size_t kWorkspace = 32 << 20;
constexpr size_t kFlushBytes = 160 << 20;  // weight copies beyond the H200's 50 MB of L2

struct Candidate {
  cublasLtMatmulAlgo_t algo;
  size_t workspace;
  std::string what;
};

std::string describe(const cublasLtMatmulAlgo_t& a) {
  int id = 0, tile = 0, stages = 0, split = 0, red = 0, swz = 0, cust = 0, cluster = 0;
  size_t w = 0;
  cublasLtMatmulAlgoConfigGetAttribute(&a, CUBLASLT_ALGO_CONFIG_ID, &id, sizeof id, &w);
  cublasLtMatmulAlgoConfigGetAttribute(&a, CUBLASLT_ALGO_CONFIG_TILE_ID, &tile, sizeof tile, &w);
  cublasLtMatmulAlgoConfigGetAttribute(&a, CUBLASLT_ALGO_CONFIG_STAGES_ID, &stages, sizeof stages, &w);
  cublasLtMatmulAlgoConfigGetAttribute(&a, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &split, sizeof split, &w);
  cublasLtMatmulAlgoConfigGetAttribute(&a, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, &red, sizeof red, &w);
  cublasLtMatmulAlgoConfigGetAttribute(&a, CUBLASLT_ALGO_CONFIG_CTA_SWIZZLING, &swz, sizeof swz, &w);
  cublasLtMatmulAlgoConfigGetAttribute(&a, CUBLASLT_ALGO_CONFIG_CUSTOM_OPTION, &cust, sizeof cust, &w);
  cublasLtMatmulAlgoConfigGetAttribute(&a, CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID, &cluster, sizeof cluster, &w);
  char buf[160];
  std::snprintf(buf, sizeof buf, "algo %d tile %d stages %d split %d red %d swz %d cust %d cluster %d", id, tile,
                stages, split, red, swz, cust, cluster);
  return buf;
}

class Bench {
 public:
  Bench(cublasLtHandle_t h, const Problem& p) : h_(h), p_(p) {
    const size_t wbytes = static_cast<size_t>(p.k * p.n) * 2;
    copies_ = static_cast<int>(std::max<size_t>(1, std::min<size_t>(64, kFlushBytes / wbytes)));
    if (p.m >= 4096) copies_ = 1;  // large products stream their activations from memory anyway
    launches_ = std::max(copies_, 8);
    CHECK_CUDA(cudaMalloc(&a_, static_cast<size_t>(p.m * p.k) * 2));
    CHECK_CUDA(cudaMalloc(&b_, wbytes * copies_));
    CHECK_CUDA(cudaMalloc(&c_, static_cast<size_t>(p.m * p.n) * 2));
    CHECK_CUDA(cudaMalloc(&d_, static_cast<size_t>(p.m * p.n) * 2));
    CHECK_CUDA(cudaMalloc(&bias_, static_cast<size_t>(p.n) * 2));
    CHECK_CUDA(cudaMalloc(&ws_, kWorkspace));
    fill(a_, p.m * p.k);
    fill(b_, p.k * p.n * copies_);
    fill(c_, p.m * p.n);
    fill(bias_, p.n);
    CHECK_CUDA(cudaStreamCreate(&stream_));
    CHECK_CUDA(cudaEventCreate(&start_));
    CHECK_CUDA(cudaEventCreate(&stop_));

    CHECK_LT(cublasLtMatmulDescCreate(&op_, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    cublasOperation_t n = CUBLAS_OP_N;
    CHECK_LT(cublasLtMatmulDescSetAttribute(op_, CUBLASLT_MATMUL_DESC_TRANSA, &n, sizeof n));
    CHECK_LT(cublasLtMatmulDescSetAttribute(op_, CUBLASLT_MATMUL_DESC_TRANSB, &n, sizeof n));
    cublasLtEpilogue_t epi = p.epi == Epi::kBiasGelu ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_BIAS;
    CHECK_LT(cublasLtMatmulDescSetAttribute(op_, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
    cudaDataType_t t = CUDA_R_16F;
    CHECK_LT(cublasLtMatmulDescSetAttribute(op_, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &t, sizeof t));
    CHECK_LT(cublasLtMatmulDescSetAttribute(op_, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias_, sizeof bias_));
    // Row-major D[m, n] = A[m, k] B[k, n] is column-major D^T = B^T A^T (as Kiln's GEMM runs it).
    CHECK_LT(cublasLtMatrixLayoutCreate(&la_, CUDA_R_16F, p.n, p.k, p.n));
    CHECK_LT(cublasLtMatrixLayoutCreate(&lb_, CUDA_R_16F, p.k, p.m, p.k));
    CHECK_LT(cublasLtMatrixLayoutCreate(&lc_, CUDA_R_16F, p.n, p.m, p.n));
    beta_ = p.epi == Epi::kBiasResidual ? 1.0f : 0.0f;
  }

  ~Bench() {
    cublasLtMatrixLayoutDestroy(la_);
    cublasLtMatrixLayoutDestroy(lb_);
    cublasLtMatrixLayoutDestroy(lc_);
    cublasLtMatmulDescDestroy(op_);
    cudaEventDestroy(start_);
    cudaEventDestroy(stop_);
    cudaStreamDestroy(stream_);
    for (void* p : {a_, b_, c_, d_, bias_, ws_}) cudaFree(p);
  }

  // The heuristic's first `count` choices, optionally only those without a separate reduction.
  std::vector<Candidate> heuristic(int count, bool in_place_only) {
    cublasLtMatmulPreference_t pref;
    CHECK_LT(cublasLtMatmulPreferenceCreate(&pref));
    uint64_t ws = kWorkspace;
    CHECK_LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
    if (in_place_only) {
      uint32_t schemes = CUBLASLT_REDUCTION_SCHEME_INPLACE;
      CHECK_LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &schemes,
                                                    sizeof schemes));
    }
    std::vector<cublasLtMatmulHeuristicResult_t> r(static_cast<size_t>(count));
    int found = 0;
    cublasLtMatmulAlgoGetHeuristic(h_, op_, la_, lb_, lc_, lc_, pref, count, r.data(), &found);
    cublasLtMatmulPreferenceDestroy(pref);
    std::vector<Candidate> out;
    for (int i = 0; i < found; ++i)
      out.push_back({r[static_cast<size_t>(i)].algo, r[static_cast<size_t>(i)].workspaceSize, ""});
    return out;
  }

  // The configurations cuBLASLt accepts for this product among each algorithm's tiles and stages
  // and the split-K counts in `splits` (default swizzle, custom option and cluster shape).
  std::vector<Candidate> walk(const std::vector<int>& splits) {
    std::vector<int> ids(256);
    int n_ids = 0;
    CHECK_LT(cublasLtMatmulAlgoGetIds(h_, CUBLAS_COMPUTE_32F, CUDA_R_32F, CUDA_R_16F, CUDA_R_16F, CUDA_R_16F,
                                      CUDA_R_16F, static_cast<int>(ids.size()), ids.data(), &n_ids));
    std::vector<Candidate> out;
    for (int i = 0; i < n_ids; ++i) {
      cublasLtMatmulAlgo_t algo;
      if (cublasLtMatmulAlgoInit(h_, CUBLAS_COMPUTE_32F, CUDA_R_32F, CUDA_R_16F, CUDA_R_16F, CUDA_R_16F, CUDA_R_16F,
                                 ids[static_cast<size_t>(i)], &algo) != CUBLAS_STATUS_SUCCESS)
        continue;
      const std::vector<int> tiles = cap_list(algo, CUBLASLT_ALGO_CAP_TILE_IDS, CUBLASLT_MATMUL_TILE_UNDEFINED);
      const std::vector<int> stages = cap_list(algo, CUBLASLT_ALGO_CAP_STAGES_IDS, CUBLASLT_MATMUL_STAGES_UNDEFINED);
      int split_ok = 0;
      uint32_t red_mask = 0;
      size_t w = 0;
      cublasLtMatmulAlgoCapGetAttribute(&algo, CUBLASLT_ALGO_CAP_SPLITK_SUPPORT, &split_ok, sizeof split_ok, &w);
      cublasLtMatmulAlgoCapGetAttribute(&algo, CUBLASLT_ALGO_CAP_REDUCTION_SCHEME_MASK, &red_mask, sizeof red_mask, &w);
      for (int tile : tiles) {
        for (int st : stages) {
          for (int split : splits) {
            if (split > 1 && !split_ok) continue;
            for (uint32_t red : {CUBLASLT_REDUCTION_SCHEME_NONE, CUBLASLT_REDUCTION_SCHEME_INPLACE,
                                 CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE}) {
              if ((split == 1) != (red == CUBLASLT_REDUCTION_SCHEME_NONE)) continue;
              if (split > 1 && !(red_mask & red)) continue;
              cublasLtMatmulAlgo_t a = algo;
              cublasLtMatmulAlgoConfigSetAttribute(&a, CUBLASLT_ALGO_CONFIG_TILE_ID, &tile, sizeof tile);
              cublasLtMatmulAlgoConfigSetAttribute(&a, CUBLASLT_ALGO_CONFIG_STAGES_ID, &st, sizeof st);
              cublasLtMatmulAlgoConfigSetAttribute(&a, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &split, sizeof split);
              cublasLtMatmulAlgoConfigSetAttribute(&a, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, &red, sizeof red);
              if (auto c = checked(a)) out.push_back(*c);
            }
          }
        }
      }
    }
    return out;
  }

  // `base` with each other swizzle, custom option and cluster shape cuBLASLt accepts.
  std::vector<Candidate> variants(const cublasLtMatmulAlgo_t& base) {
    std::vector<Candidate> out;
    int swz_ok = 0, cust_max = 0;
    size_t w = 0;
    cublasLtMatmulAlgoCapGetAttribute(&base, CUBLASLT_ALGO_CAP_CTA_SWIZZLING_SUPPORT, &swz_ok, sizeof swz_ok, &w);
    cublasLtMatmulAlgoCapGetAttribute(&base, CUBLASLT_ALGO_CAP_CUSTOM_OPTION_MAX, &cust_max, sizeof cust_max, &w);
    for (int cluster : {CUBLASLT_CLUSTER_SHAPE_AUTO, CUBLASLT_CLUSTER_SHAPE_1x1x1, CUBLASLT_CLUSTER_SHAPE_2x1x1,
                        CUBLASLT_CLUSTER_SHAPE_1x2x1, CUBLASLT_CLUSTER_SHAPE_4x1x1}) {
      for (int cust = 0; cust <= std::min(cust_max, 7); ++cust) {
        for (int swz = 0; swz <= (swz_ok ? 1 : 0); ++swz) {
          cublasLtMatmulAlgo_t a = base;
          cublasLtMatmulAlgoConfigSetAttribute(&a, CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID, &cluster, sizeof cluster);
          cublasLtMatmulAlgoConfigSetAttribute(&a, CUBLASLT_ALGO_CONFIG_CUSTOM_OPTION, &cust, sizeof cust);
          cublasLtMatmulAlgoConfigSetAttribute(&a, CUBLASLT_ALGO_CONFIG_CTA_SWIZZLING, &swz, sizeof swz);
          if (auto c = checked(a)) out.push_back(*c);
        }
      }
    }
    return out;
  }

  std::vector<int> cap_list(const cublasLtMatmulAlgo_t& algo, cublasLtMatmulAlgoCapAttributes_t cap, int fallback) {
    size_t w = 0;
    cublasLtMatmulAlgoCapGetAttribute(&algo, cap, nullptr, 0, &w);
    std::vector<int> v(w / sizeof(int));
    if (!v.empty()) cublasLtMatmulAlgoCapGetAttribute(&algo, cap, v.data(), v.size() * sizeof(int), &w);
    if (v.empty()) v.push_back(fallback);
    return v;
  }

  std::optional<Candidate> checked(const cublasLtMatmulAlgo_t& a) {
    cublasLtMatmulHeuristicResult_t r{};
    if (cublasLtMatmulAlgoCheck(h_, op_, la_, lb_, lc_, lc_, &a, &r) != CUBLAS_STATUS_SUCCESS) return std::nullopt;
    if (r.workspaceSize > kWorkspace) return std::nullopt;
    return Candidate{a, r.workspaceSize, ""};
  }

  // Microseconds a product takes with `c`; negative when it does not run.
  double time(const Candidate& c) {
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    const float alpha = 1.0f;
    const size_t wstride = static_cast<size_t>(p_.k * p_.n);
    // One launch outside capture: an algorithm that fails fails here.
    if (cublasLtMatmul(h_, op_, &alpha, b_, la_, a_, lb_, &beta_, c_, lc_, d_, lc_, &c.algo, ws_, c.workspace,
                       stream_) != CUBLAS_STATUS_SUCCESS) {
      cudaGetLastError();
      return -1;
    }
    if (cudaStreamSynchronize(stream_) != cudaSuccess) {
      cudaGetLastError();
      return -1;
    }
    CHECK_CUDA(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
    bool ok = true;
    for (int i = 0; i < launches_ && ok; ++i) {
      const __half* w = static_cast<const __half*>(b_) + wstride * static_cast<size_t>(i % copies_);
      ok = cublasLtMatmul(h_, op_, &alpha, w, la_, a_, lb_, &beta_, c_, lc_, d_, lc_, &c.algo, ws_, c.workspace,
                          stream_) == CUBLAS_STATUS_SUCCESS;
    }
    cudaError_t end = cudaStreamEndCapture(stream_, &graph);
    if (!ok || end != cudaSuccess) {
      if (end == cudaSuccess) cudaGraphDestroy(graph);
      cudaGetLastError();
      return -1;
    }
    CHECK_CUDA(cudaGraphInstantiate(&exec, graph, 0));
    for (int i = 0; i < 2; ++i) CHECK_CUDA(cudaGraphLaunch(exec, stream_));
    std::vector<float> ms;
    for (int r = 0; r < 5; ++r) {
      CHECK_CUDA(cudaEventRecord(start_, stream_));
      CHECK_CUDA(cudaGraphLaunch(exec, stream_));
      CHECK_CUDA(cudaEventRecord(stop_, stream_));
      CHECK_CUDA(cudaEventSynchronize(stop_));
      float t = 0;
      CHECK_CUDA(cudaEventElapsedTime(&t, start_, stop_));
      ms.push_back(t);
    }
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
    std::sort(ms.begin(), ms.end());
    return 1000.0 * ms[2] / launches_;
  }

  double flops() const { return 2.0 * p_.m * p_.n * p_.k; }

 private:
  void fill(void* p, int64_t count) {
    std::vector<__half> h(static_cast<size_t>(count));
    uint32_t s = 12345;
    for (auto& x : h) {
      s = s * 1664525u + 1013904223u;
      x = __float2half(static_cast<float>((s >> 9) & 0xffff) / 65536.0f - 0.5f);
    }
    CHECK_CUDA(cudaMemcpy(p, h.data(), h.size() * sizeof(__half), cudaMemcpyHostToDevice));
  }

  cublasLtHandle_t h_;
  Problem p_;
  int copies_ = 1, launches_ = 8;
  void *a_ = nullptr, *b_ = nullptr, *c_ = nullptr, *d_ = nullptr, *bias_ = nullptr, *ws_ = nullptr;
  float beta_ = 0;
  cudaStream_t stream_{};
  cudaEvent_t start_{}, stop_{};
  cublasLtMatmulDesc_t op_{};
  cublasLtMatrixLayout_t la_{}, lb_{}, lc_{};
};

struct Best {
  double us = 1e30;
  std::string what;
  int rank = -1;  // the heuristic's rank, where it came from its list
  void take(double t, const Candidate& c, int r = -1) {
    if (t > 0 && t < us) {
      us = t;
      what = describe(c.algo);
      rank = r;
    }
  }
};

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  int64_t only_m = -1;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--quick")) {
      quick = true;
    } else if (!std::strcmp(argv[i], "--only") && i + 1 < argc) {
      only_m = std::atoll(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: gemm_algos [--quick] [--only M]\n");
      return 2;
    }
  }
  cublasLtHandle_t h;
  CHECK_LT(cublasLtCreate(&h));
  // bert-base (hidden 768, FFN 3072) at seq 128, batch 1 and 128; vit_b_16 (seq 197) at batch 1
  // and 128: the merged Q/K/V projection, the output projection with its residual, the FFN up
  // projection with GELU and the down projection with its residual.
  std::vector<Problem> problems;
  for (int64_t m : {128L, 16384L, 197L, 25216L}) {
    if (only_m > 0 && m != only_m) continue;
    problems.push_back({"qkv", m, 2304, 768, Epi::kBias});
    problems.push_back({"out+res", m, 768, 768, Epi::kBiasResidual});
    problems.push_back({"up+gelu", m, 3072, 768, Epi::kBiasGelu});
    problems.push_back({"down+res", m, 768, 3072, Epi::kBiasResidual});
  }
  std::printf("%-9s %6s %5s %5s | %9s %9s %9s %9s | %5s | %s\n", "gemm", "m", "n", "k", "first", "kiln-set", "heur-64",
              "walked", "count", "best configuration");
  for (const Problem& p : problems) {
    Bench b(h, p);
    Best first, kiln_set, heur, walked;
    std::vector<Candidate> top = b.heuristic(64, false);
    for (size_t i = 0; i < top.size(); ++i) {
      const double t = b.time(top[i]);
      const int r = static_cast<int>(i);
      if (i == 0) first.take(t, top[i], r);
      if (i < kKilnAlgoChoices) kiln_set.take(t, top[i], r);
      heur.take(t, top[i], r);
    }
    for (const Candidate& c : b.heuristic(kKilnInPlaceChoices, true)) kiln_set.take(b.time(c), c);
    // The walk: every tile and stage count (and split-K at small m), then the fastest eight with
    // every swizzle, custom option and cluster shape.
    std::vector<int> splits = p.m >= 4096 ? std::vector<int>{1} : std::vector<int>{1, 2, 3, 4, 6, 8};
    if (quick) splits = {1};
    std::vector<std::pair<double, Candidate>> timed;
    int ran = 0;
    for (const Candidate& c : b.walk(splits)) {
      const double t = b.time(c);
      if (t <= 0) continue;
      ++ran;
      timed.push_back({t, c});
      walked.take(t, c);
    }
    std::sort(timed.begin(), timed.end(), [](const auto& x, const auto& y) { return x.first < y.first; });
    if (timed.size() > 8) timed.resize(8);
    for (const auto& [t, base] : timed) {
      for (const Candidate& c : b.variants(base.algo)) {
        const double tv = b.time(c);
        if (tv > 0) ++ran;
        walked.take(tv, c);
      }
    }
    if (heur.us < walked.us) walked = heur;  // the walk may miss what the heuristic tunes
    std::printf("%-9s %6ld %5ld %5ld | %7.2fus %7.2fus %7.2fus %7.2fus | %5d | %s\n", p.name, (long)p.m, (long)p.n,
                (long)p.k, first.us, kiln_set.us, heur.us, walked.us, ran, walked.what.c_str());
    std::printf("%-9s %6s %5s %5s | %6.0fTF %6.0fTF %6.0fTF %6.0fTF | %5zu | heuristic's best: rank %d of %zu\n", "",
                "", "", "", b.flops() / first.us * 1e-6, b.flops() / kiln_set.us * 1e-6, b.flops() / heur.us * 1e-6,
                b.flops() / walked.us * 1e-6, top.size(), heur.rank, top.size());
    std::fflush(stdout);
  }
  cublasLtDestroy(h);
  return 0;
}
