// Times cuDNN's scaled dot-product attention plans on the attention steps of bert-base and
// vit_b_16 as Kiln runs them (FP16, FP32 softmax; Q, K and V read in place from the merged
// projection's [batch, seq, 3 * 768] output, the output written as [batch, seq, 768]; BERT's
// key-padding mask as an additive FP16 bias of [batch, 1, 1, seq], or no mask). For each shape it
// prints every plan of cuDNN's heuristics (modes A, B and fallback) for each of the frontend's
// implementations (unified and composite), then walks each engine's knobs (tile sizes and the
// like) where the heuristics do not, so it answers whether an engine configuration other than
// the heuristic's first choice, which Kiln's "cudnn-sdpa" tactic takes, runs faster.
//
//   g++ -O2 -std=c++17 -I/usr/local/cuda/include -I<cudnn-frontend include> -o /tmp/sdpa_plans
//       bench/sdpa_plans.cc -L/usr/local/cuda/lib64 -lcudnn -lcudart
//   /tmp/sdpa_plans [--only NAME] [--walk-seconds S]
//
// Each candidate runs in one CUDA graph of several launches, each launch on its own copy of Q, K,
// V and the output where one copy would stay in the L2 cache; the figure is the median of five
// replays divided by the launches.
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>
#include <cudnn.h>
#include <cudnn_frontend.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

namespace fe = cudnn_frontend;

namespace {

#define CHECK_CUDA(x)                                                                         \
  do {                                                                                        \
    cudaError_t e_ = (x);                                                                     \
    if (e_ != cudaSuccess) {                                                                  \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
      std::exit(1);                                                                           \
    }                                                                                         \
  } while (0)

constexpr int64_t kWorkspace = 256 << 20;
constexpr size_t kFlushBytes = size_t{160} << 20;  // more than the L2 cache holds, twice over

struct Problem {
  const char* name;
  int64_t batch, seq, heads, head;
  bool bias;
};

const char* impl_name(fe::AttentionImplementation_t i) {
  return i == fe::AttentionImplementation_t::UNIFIED ? "unified" : "composite";
}

const char* knob_name(fe::KnobType_t t) {
  static const char* names[] = {"NOT_SET",    "SWIZZLE",     "TILE_SIZE",  "EDGE",        "MULTIPLY",     "SPLIT_K_BUF",
                                "TILEK",      "STAGES",      "REDUCTION",  "SPLIT_K_SLC", "IDX_MODE",     "SPECFILT",
                                "KERNEL_CFG", "WORKSPACE",   "TILE_CGA_M", "TILE_CGA_N",  "BLOCK_SIZE",   "OCCUPANCY",
                                "ARRAY_SIZE", "SPLIT_COLS",  "TILE_ROWS",  "TILE_COLS",   "LOAD_SIZE",    "CTA_COUNT",
                                "STREAM_K",   "SPLIT_P_SLC", "TILE_M",     "TILE_N",      "WARP_SPEC_CFG"};
  const size_t k = static_cast<size_t>(t);
  return k < sizeof(names) / sizeof(names[0]) ? names[k] : "?";
}

// One attention graph over the problem's buffers, not yet given engines.
struct Graph {
  std::shared_ptr<fe::graph::Graph> g;
  std::shared_ptr<fe::graph::Tensor_attributes> q, k, v, bias, o;
};

class Bench {
 public:
  Bench(cudnnHandle_t h, const Problem& p) : h_(h), p_(p) {
    const int64_t rows = p.batch * p.seq, width = p.heads * p.head;
    qkv_elems_ = rows * 3 * width;
    o_elems_ = rows * width;
    bias_elems_ = p.bias ? p.batch * p.seq : 0;
    const size_t bytes = (qkv_elems_ + o_elems_ + bias_elems_) * sizeof(__half);
    copies_ = static_cast<int>(std::max<size_t>(1, std::min<size_t>(32, kFlushBytes / bytes)));
    std::vector<__half> host(static_cast<size_t>(qkv_elems_));
    uint32_t state = 12345;
    for (auto& x : host) {
      state = state * 1664525u + 1013904223u;
      x = __float2half(static_cast<float>(state >> 8) / static_cast<float>(1u << 24) * 2.0f - 1.0f);
    }
    std::vector<__half> zeros(static_cast<size_t>(std::max<int64_t>(bias_elems_, 1)), __float2half(0.0f));
    for (int c = 0; c < copies_; ++c) {
      void *qkv = nullptr, *o = nullptr, *b = nullptr;
      CHECK_CUDA(cudaMalloc(&qkv, qkv_elems_ * sizeof(__half)));
      CHECK_CUDA(cudaMemcpy(qkv, host.data(), qkv_elems_ * sizeof(__half), cudaMemcpyHostToDevice));
      CHECK_CUDA(cudaMalloc(&o, o_elems_ * sizeof(__half)));
      if (p.bias) {
        CHECK_CUDA(cudaMalloc(&b, bias_elems_ * sizeof(__half)));
        CHECK_CUDA(cudaMemcpy(b, zeros.data(), bias_elems_ * sizeof(__half), cudaMemcpyHostToDevice));
      }
      qkv_.push_back(qkv);
      o_.push_back(o);
      bias_.push_back(b);
    }
    CHECK_CUDA(cudaMalloc(&workspace_, kWorkspace));
    CHECK_CUDA(cudaStreamCreate(&stream_));
    cudnnSetStream(h_, stream_);
  }
  ~Bench() {
    for (int c = 0; c < copies_; ++c) {
      cudaFree(qkv_[c]);
      cudaFree(o_[c]);
      if (bias_[c]) cudaFree(bias_[c]);
    }
    cudaFree(workspace_);
    cudaStreamDestroy(stream_);
  }

  int copies() const { return copies_; }

  // A graph of the problem with its operation graph built ("" on success, else why not).
  std::string make(fe::AttentionImplementation_t impl, Graph* out) {
    const int64_t b = p_.batch, s = p_.seq, h = p_.heads, d = p_.head, w = h * d;
    auto g = std::make_shared<fe::graph::Graph>();
    g->set_io_data_type(fe::DataType_t::HALF)
        .set_intermediate_data_type(fe::DataType_t::FLOAT)
        .set_compute_data_type(fe::DataType_t::FLOAT);
    auto view = [&](const char* name, int64_t row) {
      return g->tensor(
          fe::graph::Tensor_attributes().set_name(name).set_dim({b, h, s, d}).set_stride({s * row, d, row, 1}));
    };
    out->q = view("Q", 3 * w);
    out->k = view("K", 3 * w);
    out->v = view("V", 3 * w);
    auto options = fe::graph::SDPA_attributes()
                       .set_name("attention")
                       .set_generate_stats(false)
                       .set_attn_scale(1.0f / std::sqrt(static_cast<float>(d)))
                       .set_implementation(impl);
    if (p_.bias) {
      out->bias = g->tensor(fe::graph::Tensor_attributes()
                                .set_name("bias")
                                .set_dim({b, 1, s, s})
                                .set_stride({s, s, 0, 1})
                                .set_data_type(fe::DataType_t::HALF));
      options.set_bias(out->bias);
    }
    auto [o, stats] = g->sdpa(out->q, out->k, out->v, options);
    (void)stats;
    o->set_output(true).set_dim({b, h, s, d}).set_stride({s * w, d, w, 1});
    out->o = o;
    auto e = g->validate();
    if (e.is_bad()) return "validate: " + e.get_message();
    e = g->build_operation_graph(h_);
    if (e.is_bad()) return "operation graph: " + e.get_message();
    out->g = std::move(g);
    return "";
  }

  // Microseconds a launch of plan `index` of `gr` (built) takes; negative where it fails.
  double time(Graph& gr, int64_t index) {
    int64_t ws = 0;
    if (gr.g->get_workspace_size_plan_at_index(index, ws).is_bad() || ws > kWorkspace) return -1;
    auto pack_for = [&](int c) {
      std::unordered_map<std::shared_ptr<fe::graph::Tensor_attributes>, void*> pack;
      auto* base = static_cast<__half*>(qkv_[c]);
      pack[gr.q] = base;
      pack[gr.k] = base + p_.heads * p_.head;
      pack[gr.v] = base + 2 * p_.heads * p_.head;
      pack[gr.o] = o_[c];
      if (gr.bias) pack[gr.bias] = bias_[c];
      return pack;
    };
    for (int c = 0; c < copies_; ++c) {
      auto pack = pack_for(c);
      if (gr.g->execute_plan_at_index(h_, pack, workspace_, index).is_bad()) return -1;
    }
    if (cudaStreamSynchronize(stream_) != cudaSuccess) return -1;
    const int launches = std::max(copies_, 8);
    cudaGraph_t graph = nullptr;
    CHECK_CUDA(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
    bool ok = true;
    for (int i = 0; i < launches && ok; ++i) {
      auto pack = pack_for(i % copies_);
      ok = gr.g->execute_plan_at_index(h_, pack, workspace_, index).is_good();
    }
    CHECK_CUDA(cudaStreamEndCapture(stream_, &graph));
    if (!ok) {
      cudaGraphDestroy(graph);
      return -1;
    }
    cudaGraphExec_t exec = nullptr;
    CHECK_CUDA(cudaGraphInstantiate(&exec, graph, 0));
    cudaEvent_t a, z;
    CHECK_CUDA(cudaEventCreate(&a));
    CHECK_CUDA(cudaEventCreate(&z));
    CHECK_CUDA(cudaGraphLaunch(exec, stream_));
    std::vector<float> ms;
    for (int r = 0; r < 5; ++r) {
      CHECK_CUDA(cudaEventRecord(a, stream_));
      CHECK_CUDA(cudaGraphLaunch(exec, stream_));
      CHECK_CUDA(cudaEventRecord(z, stream_));
      CHECK_CUDA(cudaEventSynchronize(z));
      float t = 0;
      CHECK_CUDA(cudaEventElapsedTime(&t, a, z));
      ms.push_back(t);
    }
    cudaEventDestroy(a);
    cudaEventDestroy(z);
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
    std::sort(ms.begin(), ms.end());
    return ms[2] * 1000.0 / launches;
  }

  // Q, K, V and output bytes of one launch: the memory floor's numerator.
  double bytes() const { return static_cast<double>(qkv_elems_ + o_elems_ + bias_elems_) * 2.0; }

 private:
  cudnnHandle_t h_;
  Problem p_;
  int64_t qkv_elems_ = 0, o_elems_ = 0, bias_elems_ = 0;
  int copies_ = 1;
  std::vector<void*> qkv_, o_, bias_;
  void* workspace_ = nullptr;
  cudaStream_t stream_ = nullptr;
};

std::string knobs_text(const std::unordered_map<fe::KnobType_t, int64_t>& k) {
  std::string s;
  for (const auto& [t, v] : k) s += std::string(s.empty() ? "" : " ") + knob_name(t) + "=" + std::to_string(v);
  return s;
}

// Every combination of the knobs' values, at most `cap` of them (the first values of each knob
// first).
std::vector<std::unordered_map<fe::KnobType_t, int64_t>> knob_grid(const std::vector<fe::Knob>& knobs, size_t cap) {
  std::vector<std::unordered_map<fe::KnobType_t, int64_t>> grid = {{}};
  for (const fe::Knob& k : knobs) {
    std::vector<int64_t> values;
    const int64_t step = std::max<int64_t>(1, k.stride);
    for (int64_t v = k.minValue; v <= k.maxValue && values.size() < 16; v += step) values.push_back(v);
    if (values.empty()) continue;
    std::vector<std::unordered_map<fe::KnobType_t, int64_t>> next;
    for (const auto& g : grid)
      for (int64_t v : values) {
        if (next.size() >= cap) break;
        auto c = g;
        c[k.type] = v;
        next.push_back(std::move(c));
      }
    grid = std::move(next);
  }
  return grid;
}

}  // namespace

int main(int argc, char** argv) {
  std::string only;
  double walk_seconds = 60;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--only") && i + 1 < argc) {
      only = argv[++i];
    } else if (!std::strcmp(argv[i], "--walk-seconds") && i + 1 < argc) {
      walk_seconds = std::atof(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: %s [--only NAME] [--walk-seconds S]\n", argv[0]);
      return 2;
    }
  }
  cudnnHandle_t h = nullptr;
  if (cudnnCreate(&h) != CUDNN_STATUS_SUCCESS) {
    std::fprintf(stderr, "cudnnCreate failed\n");
    return 1;
  }
  std::printf("cuDNN %zu, frontend %d.%d.%d\n", cudnnGetVersion(), CUDNN_FRONTEND_MAJOR_VERSION,
              CUDNN_FRONTEND_MINOR_VERSION, CUDNN_FRONTEND_PATCH_VERSION);
  const std::vector<Problem> problems = {
      {"bert128-bias", 128, 128, 12, 64, true}, {"bert128", 128, 128, 12, 64, false},
      {"vit128", 128, 197, 12, 64, false},      {"bert1-bias", 1, 128, 12, 64, true},
      {"vit1", 1, 197, 12, 64, false},
  };
  for (const Problem& p : problems) {
    if (!only.empty() && only != p.name) continue;
    Bench b(h, p);
    std::printf("\n== %s: batch %ld, seq %ld, %ld heads of %ld, %s; %d copies; floor %.1f us at 4.8 TB/s\n", p.name,
                (long)p.batch, (long)p.seq, (long)p.heads, (long)p.head, p.bias ? "additive FP16 bias" : "no mask",
                b.copies(), b.bytes() / 4.8e6);
    double first = -1, best = -1;
    std::string best_what;
    auto take = [&](double us, const std::string& what) {
      if (us > 0 && (best < 0 || us < best)) {
        best = us;
        best_what = what;
      }
    };
    for (auto impl : {fe::AttentionImplementation_t::UNIFIED, fe::AttentionImplementation_t::COMPOSITE}) {
      Graph gr;
      std::string why = b.make(impl, &gr);
      if (!why.empty()) {
        std::printf("  %-9s not built: %s\n", impl_name(impl), why.c_str());
        continue;
      }
      auto e = gr.g->create_execution_plans({fe::HeurMode_t::A, fe::HeurMode_t::B, fe::HeurMode_t::FALLBACK});
      if (e.is_good()) e = gr.g->check_support();
      if (e.is_bad()) {
        std::printf("  %-9s heuristics: %s\n", impl_name(impl), e.get_message().c_str());
      } else {
        const int64_t n = gr.g->get_execution_plan_count();
        for (int64_t i = 0; i < n; ++i) {
          std::string name;
          if (gr.g->build_plan_at_index(i).is_bad()) continue;
          if (gr.g->get_plan_name_at_index(i, name).is_bad()) name = "?";
          const double us = b.time(gr, i);
          if (first < 0 && us > 0 && impl == fe::AttentionImplementation_t::UNIFIED) first = us;
          std::printf("  %-9s heuristic plan %2ld  %9.2f us  %s\n", impl_name(impl), (long)i, us, name.c_str());
          take(us, std::string(impl_name(impl)) + " " + name);
        }
      }
      // The walk: each engine of the operation graph with each combination of its knobs.
      int64_t engines = 0;
      if (gr.g->get_engine_count(engines).is_bad()) continue;
      const auto start = std::chrono::steady_clock::now();
      int tried = 0, ran = 0;
      for (int64_t eng = 0; eng < engines; ++eng) {
        std::vector<fe::Knob> knobs;
        if (gr.g->get_knobs_for_engine(eng, knobs).is_bad()) continue;
        for (const auto& combo : knob_grid(knobs, 256)) {
          if (std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() > walk_seconds) break;
          Graph w;
          if (!b.make(impl, &w).empty()) break;
          ++tried;
          if (w.g->create_execution_plan(eng, combo).is_bad() || w.g->check_support().is_bad() ||
              w.g->build_plan_at_index(0).is_bad())
            continue;
          const double us = b.time(w, 0);
          if (us <= 0) continue;
          ++ran;
          std::string name;
          if (w.g->get_plan_name_at_index(0, name).is_bad()) name = "?";
          const std::string what =
              std::string(impl_name(impl)) + " engine " + std::to_string(eng) + " " + knobs_text(combo) + " " + name;
          std::printf("  %-9s walk engine %2ld  %9.2f us  %s\n", impl_name(impl), (long)eng, us,
                      knobs_text(combo).c_str());
          take(us, what);
        }
      }
      std::printf("  %-9s walk: %ld engines, %d configurations tried, %d ran\n", impl_name(impl), (long)engines, tried,
                  ran);
    }
    std::printf("  -> heuristic first %.2f us, best %.2f us (%s)\n", first, best, best_what.c_str());
  }
  cudnnDestroy(h);
  return 0;
}
