// MatMul, Gemm, kiln.FusedMatMul and kiln.FusedGemm on cuBLASLt. ONNX's batched MatMul maps to
// one GEMM when B is a matrix (A's batch folds into its rows) and to a strided batched GEMM when
// the batch dims of A and B agree or one of them has none; a bias vector goes to the epilogue, a
// residual (or Gemm's full C) to the accumulator, Relu and tanh-GELU (erf-GELU too, in FP16 and
// BF16) to the epilogue, and any other activation to one pass over the output.
#include <map>

#include "backends/cuda/device_kernel.h"
#include "backends/cuda/kernels/activation.h"
#include "backends/cuda/kernels/elementwise.h"
#include "backends/cuda/kernels/gemm.h"
#include "ops/fused.h"

namespace kiln::cuda {
namespace {

bool is_op(const Node& n, const char* domain, const char* op) {
  return n.domain == domain && n.op_type == op;
}
bool is_matmul(const Node& n) {
  return is_op(n, "", "MatMul") || is_op(n, kKilnDomain, "FusedMatMul");
}
bool is_gemm(const Node& n) {
  return is_op(n, "", "Gemm") || is_op(n, kKilnDomain, "FusedGemm");
}

int64_t rank_of(const Value* v) {
  return v && v->type.kind == TypeInfo::Kind::kTensor && v->type.shape.rank_known ? v->type.shape.rank() : -1;
}

// Batch dims equal for every shape: the same known sizes or symbols.
bool same_batch(const Shape& a, const Shape& b) {
  if (a.rank() != b.rank()) return false;
  for (size_t i = 0; i + 2 < a.dims.size(); ++i) {
    const Dim &x = a.dims[i], &y = b.dims[i];
    if (x.known() || y.known() ? x.value != y.value : x.symbol.empty() || x.symbol != y.symbol) return false;
  }
  return true;
}

float float_attr(const Node& n, const char* key, float def) {
  const Attribute* a = n.attr(key);
  return a ? a->f : def;
}
int64_t int_attr(const Node& n, const char* key, int64_t def) {
  const Attribute* a = n.attr(key);
  return a ? a->i : def;
}

ActivationSpec activation(const Node& n) {
  ActivationSpec a;
  const Attribute* name = n.attr("activation");
  const Attribute* params = n.attr("activation_params");
  activation_of(name ? name->s : "", params ? params->floats : std::vector<float>{}, &a);
  return a;
}

class GemmKernel : public DeviceKernel {
 public:
  GemmKernel(const Node& n, DataType dt, bool tf32, GemmTactic tactic)
      : node_(n), dtype_(dt), tf32_(tf32), tactic_(tactic) {
    act_ = activation(n);
    gemm_ = is_gemm(n);
    if (gemm_) {
      alpha_ = float_attr(n, "alpha", 1.0f);
      beta_ = float_attr(n, "beta", 1.0f);
      trans_a_ = int_attr(n, "transA", 0) != 0;
      trans_b_ = int_attr(n, "transB", 0) != 0;
    }
  }

  Status prepare(std::span<const TensorView> in, std::span<const TensorView> out) override {
    return runner_for(in, out).status();
  }

  Status enqueue(std::span<const TensorView> in, std::span<TensorView> out, const KernelContext& ctx) override {
    KILN_ASSIGN_OR_RETURN(Prepared * p, runner_for(in, out));
    out[0].dims = p->out_dims;
    const void* c = nullptr;
    const void* bias = nullptr;
    float beta = 0.0f;
    if (p->c_input >= 0) {
      c = input_data(in[static_cast<size_t>(p->c_input)], static_cast<size_t>(p->c_input));
      beta = p->c_beta;
    }
    if (p->bias_input >= 0)
      bias = input_data(in[static_cast<size_t>(p->bias_input)], static_cast<size_t>(p->bias_input));
    KILN_RETURN_IF_ERROR(p->runner->run(input_data(in[0], 0), input_data(in[1], 1), c, out[0].data, bias, alpha_, beta,
                                        ctx.workspace, ctx.workspace_bytes, ctx.stream));
    if (p->post_activation) {
      KILN_RETURN_IF_ERROR(
          launch_activation(act_, dtype_, out[0].data, out[0].data, shape_numel(p->out_dims), ctx.stream));
    }
    return {};
  }

 private:
  struct Prepared {
    std::unique_ptr<GemmRunner> runner;
    Dims out_dims;
    int c_input = -1;  // input read as the accumulator (residual, or Gemm's full C)
    float c_beta = 0;
    int bias_input = -1;  // input added per column in the epilogue
    bool post_activation = false;
  };

  Result<Prepared*> runner_for(std::span<const TensorView> in, std::span<const TensorView> out) {
    std::string key;
    for (const TensorView& v : in) key += v.omitted ? "-;" : shape_to_string(v.dims) + ";";
    if (auto it = cache_.find(key); it != cache_.end()) return it->second.get();
    auto p = std::make_unique<Prepared>();
    GemmShape s;
    GemmConfig cfg;
    cfg.dtype = dtype_;
    cfg.tf32 = tf32_;
    cfg.workspace_limit = kGemmWorkspace;
    cfg.algo_rank = tactic_.rank;
    cfg.in_place_reduction = tactic_.in_place_reduction;
    const Dims& a = in[0].dims;
    const Dims& b = in[1].dims;
    if (a.size() < 2 || b.size() < 2) return invalid("the CUDA GEMM needs operands of rank 2 or more");
    auto has = [&](size_t i) { return i < in.size() && !in[i].omitted; };
    if (gemm_) {
      s.trans_a = trans_a_;
      s.trans_b = trans_b_;
      s.m = trans_a_ ? a[1] : a[0];
      s.k = trans_a_ ? a[0] : a[1];
      s.n = trans_b_ ? b[0] : b[1];
      p->out_dims = {s.m, s.n};
      if (has(2)) {
        // C is a bias vector ([n] or [1, n]: scaled by beta when uploaded) or the full [m, n].
        const Dims& c = in[2].dims;
        if (shape_numel(c) == s.n && (c.size() == 1 || c[0] == 1)) {
          p->bias_input = 2;
        } else if (c == p->out_dims) {
          p->c_input = 2;
          p->c_beta = beta_;
        } else {
          return invalid("Gemm's C of shape {} is neither a bias nor the full output", shape_to_string(c));
        }
      }
    } else {
      s.m = a[a.size() - 2];
      s.k = a.back();
      s.n = b.back();
      Dims batch_a(a.begin(), a.end() - 2), batch_b(b.begin(), b.end() - 2);
      if (b.size() == 2) {
        // B is a matrix: A's batch dims fold into its rows.
        for (int64_t d : batch_a) s.m *= d;
        p->out_dims = batch_a;
      } else if (batch_a == batch_b || a.size() == 2) {
        s.batch = shape_numel(batch_b);
        s.stride_a = a.size() == 2 ? 0 : s.m * s.k;
        s.stride_b = s.k * s.n;
        s.stride_c = s.m * s.n;
        p->out_dims = batch_b;
      } else {
        return invalid("the CUDA GEMM cannot broadcast batch dims {} against {}", shape_to_string(a),
                       shape_to_string(b));
      }
      p->out_dims.push_back(a[a.size() - 2]);
      p->out_dims.push_back(s.n);
      if (has(2)) p->bias_input = 2;
    }
    if (has(3)) {
      if (p->c_input >= 0) return invalid("a residual together with Gemm's full C is not fused on CUDA");
      p->c_input = 3;
      p->c_beta = 1.0f;
    }
    if (s.batch == 1) s.stride_c = 0;
    cfg.bias = p->bias_input >= 0;
    cfg.accumulate = p->c_input >= 0;
    // Relu and GELU run in cuBLASLt's epilogue, after bias and accumulator, as ONNX orders them;
    // any other activation is one pass over the output.
    p->post_activation = set_gemm_epilogue(act_, dtype_, &cfg);
    KILN_ASSIGN_OR_RETURN(p->runner, GemmRunner::create(s, cfg));
    Prepared* raw = p.get();
    cache_.emplace(std::move(key), std::move(p));
    (void)out;
    return raw;
  }

  const Node& node_;
  DataType dtype_;
  bool tf32_;
  GemmTactic tactic_;
  bool gemm_ = false;
  bool trans_a_ = false, trans_b_ = false;
  float alpha_ = 1.0f, beta_ = 1.0f;
  ActivationSpec act_;
  std::map<std::string, std::unique_ptr<Prepared>> cache_;  // per input shapes
};

}  // namespace

bool gemm_supports(const Node& n, DataType precision) {
  if (!is_matmul(n) && !is_gemm(n)) return false;
  if (!elementwise_dtype(precision) || n.inputs.size() < 2 || !n.inputs[0] || !n.inputs[1]) return false;
  for (const Value* v : n.inputs) {
    if (v && v->type.kind == TypeInfo::Kind::kTensor && !elementwise_dtype(v->type.dtype)) return false;
  }
  ActivationSpec act;
  if (!activation_of(n.attr("activation") ? n.attr("activation")->s : "",
                     n.attr("activation_params") ? n.attr("activation_params")->floats : std::vector<float>{}, &act)) {
    return false;
  }
  const int64_t ra = rank_of(n.inputs[0]), rb = rank_of(n.inputs[1]);
  if (is_gemm(n)) {
    if (ra != 2 || rb != 2) return false;
    const Value* c = n.inputs.size() > 2 ? n.inputs[2] : nullptr;
    const bool full_c = c && rank_of(c) == 2 && !(c->type.shape.dims[0] == Dim::of(1));
    // C is a bias ([n] or [1, n]) or the whole output [m, n]; other broadcasts ([1], [m, 1]) are
    // the reference kernel's.
    if (c) {
      const Value* y = n.outputs.empty() ? nullptr : n.outputs[0];
      if (!y || rank_of(y) != 2) return false;
      const std::vector<Dim>& cd = c->type.shape.dims;
      const std::vector<Dim>& yd = y->type.shape.dims;
      const bool bias = (cd.size() == 1 || (cd.size() == 2 && cd[0] == Dim::of(1))) && cd.back() == yd[1];
      if (!bias && !(full_c && cd[0] == yd[0] && cd[1] == yd[1])) return false;
    }
    // A bias C is added in the epilogue as beta * C: scaled once, so it must be a constant. A
    // full C goes to the accumulator, where beta applies as it is.
    if (c && !full_c && float_attr(n, "beta", 1.0f) != 1.0f && !c->initializer) return false;
    // A full C together with a residual needs two accumulators.
    return !(full_c && n.inputs.size() > 3 && n.inputs[3]);
  }
  if (ra < 2 || rb < 2) return false;
  return rb == 2 || ra == 2 || same_batch(n.inputs[0]->type.shape, n.inputs[1]->type.shape);
}

std::vector<std::string> gemm_tactics() {
  std::vector<std::string> t = {"cuda"};
  for (int k = 1; k < kGemmAlgoChoices; ++k) t.push_back(std::string(kGemmAlgoTactic) + ":" + std::to_string(k));
  for (int k = 0; k < kGemmInPlaceChoices; ++k) {
    t.push_back(std::string(kGemmInPlaceTactic) + ":" + std::to_string(k));
  }
  return t;
}

std::optional<GemmTactic> parse_gemm_tactic(const std::string& tactic) {
  if (tactic == "cuda") return GemmTactic{};
  GemmTactic t;
  std::string prefix = std::string(kGemmAlgoTactic) + ":";
  if (tactic.rfind(prefix, 0) != 0) {
    prefix = std::string(kGemmInPlaceTactic) + ":";
    if (tactic.rfind(prefix, 0) != 0) return std::nullopt;
    t.in_place_reduction = true;
  }
  if (tactic.size() == prefix.size()) return std::nullopt;
  for (size_t i = prefix.size(); i < tactic.size(); ++i) {
    if (tactic[i] < '0' || tactic[i] > '9' || t.rank > 1000) return std::nullopt;
    t.rank = t.rank * 10 + (tactic[i] - '0');
  }
  return t;
}

Result<std::unique_ptr<DeviceKernel>> make_gemm_kernel(const Plan& plan, const Step& step, bool tf32,
                                                       WeightCache& weights) {
  const Node& n = *step.node;
  const std::optional<GemmTactic> tactic = parse_gemm_tactic(step.tactic);
  if (!tactic) return invalid("step {}: {} is not a GEMM tactic", step.name, step.tactic);
  auto k = std::make_unique<GemmKernel>(n, step.precision, tf32, *tactic);
  std::vector<const void*> w(step.inputs.size(), nullptr);
  const float beta = is_gemm(n) ? float_attr(n, "beta", 1.0f) : 1.0f;
  for (size_t i = 0; i < step.inputs.size(); ++i) {
    if (step.inputs[i] < 0) continue;
    const Slot& s = plan.slots[static_cast<size_t>(step.inputs[i])];
    if (s.kind != SlotKind::kWeight) continue;
    // Gemm's C, when it is a bias, is added as beta * C in the epilogue: scaled once here.
    const bool bias_c = is_gemm(n) && i == 2 &&
                        shape_numel(plan.weights[static_cast<size_t>(s.weight)]->dims()) ==
                            plan.weights[static_cast<size_t>(s.weight)]->dims().back();
    KILN_ASSIGN_OR_RETURN(
        w[i], weights.get(plan.weights[static_cast<size_t>(s.weight)], step.precision, bias_c ? beta : 1.0f));
  }
  k->set_weights(std::move(w));
  return std::unique_ptr<DeviceKernel>(std::move(k));
}

}  // namespace kiln::cuda
