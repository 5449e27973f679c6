// Conv and kiln.FusedConv on cuDNN's graph API (cudnn-frontend): 2-D convolutions in NHWC with the
// filter in KRSC, the bias, the residual and the activation in the same cuDNN graph where cuDNN
// has the pointwise mode, the rest as one pass over the output. One graph per input shape, built
// when the shape is first prepared, running the engine configuration the tactic names: the
// heuristics' first supported one, or the one they rank K-th (the builder times several). A
// pointwise convolution (1x1, stride 1, no padding, one group) is also one GEMM over the NHWC
// pixels, the "gemm" tactic, through cuBLASLt with bias, residual and Relu/GELU in its epilogue.
#include <cudnn.h>
#include <cudnn_frontend.h>

#include <algorithm>
#include <functional>
#include <map>
#include <mutex>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/cudnn_frontend_util.h"
#include "backends/cuda/device_kernel.h"
#include "backends/cuda/kernel_family.h"
#include "backends/cuda/kernels/activation.h"
#include "backends/cuda/kernels/elementwise.h"
#include "backends/cuda/kernels/gemm.h"
#include "backends/cuda/kernels/reformat.h"
#include "ops/fused.h"

namespace fe = cudnn_frontend;

namespace kiln::cuda {
namespace {

#define KILN_CUDNN_CHECK(call)                                                                                         \
  do {                                                                                                                 \
    cudnnStatus_t kiln_st_ = (call);                                                                                   \
    if (kiln_st_ != CUDNN_STATUS_SUCCESS) return runtime_error("{} failed: {}", #call, cudnnGetErrorString(kiln_st_)); \
  } while (0)

bool is_conv(const Node& n) {
  return (n.domain.empty() && n.op_type == "Conv") || (n.domain == kKilnDomain && n.op_type == "FusedConv");
}

// NHWC strides of an [N, C, H, W] tensor.
std::vector<int64_t> nhwc_strides(const std::vector<int64_t>& d) {
  return {d[1] * d[2] * d[3], 1, d[3] * d[1], d[1]};
}

// One handle for building graphs (under a lock) and one per stream for running them.
struct Handles {
  std::mutex mu;
  cudnnHandle_t build = nullptr;
  std::map<void*, cudnnHandle_t> by_stream;
  // At exit, before the CUDA runtime's own teardown (it was set up before the first handle).
  ~Handles() {
    if (build) cudnnDestroy(build);
    for (auto& [stream, h] : by_stream) cudnnDestroy(h);
  }
};
Handles& handles() {
  static Handles h;
  return h;
}

Result<cudnnHandle_t> handle_for_stream(void* stream) {
  Handles& h = handles();
  std::lock_guard<std::mutex> lock(h.mu);
  if (auto it = h.by_stream.find(stream); it != h.by_stream.end()) return it->second;
  cudnnHandle_t handle = nullptr;
  KILN_CUDNN_CHECK(cudnnCreate(&handle));
  KILN_CUDNN_CHECK(cudnnSetStream(handle, static_cast<cudaStream_t>(stream)));
  h.by_stream[stream] = handle;
  return handle;
}

}  // namespace

int64_t padded_channels(int64_t c) {
  return (c + kConvPadChannels - 1) / kConvPadChannels * kConvPadChannels;
}

int64_t padded_input_bytes(const Dims& x, DataType dt) {
  // Rounded up to 256 bytes, so that what follows it in the workspace stays aligned.
  const int64_t bytes = x[0] * x[2] * x[3] * padded_channels(x[1]) * static_cast<int64_t>(dtype_size(dt));
  return (bytes + 255) / 256 * 256;
}

namespace {

class ConvKernel : public DeviceKernel {
 public:
  ConvKernel(const Node& n, DataType dt, bool tf32, ConvTactic tactic)
      : node_(n), dtype_(dt), tf32_(tf32), fuse_(tactic.fused), pad_(tactic.pad_channels), engine_(tactic.engine) {
    const Attribute* a = n.attr("activation");
    const Attribute* p = n.attr("activation_params");
    activation_of(a ? a->s : "", p ? p->floats : std::vector<float>{}, &act_);
  }

  Status prepare(std::span<const TensorView> in, std::span<const TensorView> out) override {
    (void)out;
    return graph_for(in).status();
  }

  Status enqueue(std::span<const TensorView> in, std::span<TensorView> out, const KernelContext& ctx) override {
    KILN_ASSIGN_OR_RETURN(Prepared * p, graph_for(in));
    // With padded channels the padded input takes the front of the workspace.
    const int64_t padded = pad_ ? padded_input_bytes(in[0].dims, dtype_) : 0;
    if (padded + p->workspace > ctx.workspace_bytes) {
      return runtime_error("the convolution needs {} bytes of workspace, {} given", padded + p->workspace,
                           ctx.workspace_bytes);
    }
    out[0].dims = p->out_dims;
    auto pack = variant_pack(*p, in, out[0].data);
    void* workspace = ctx.workspace;
    if (pad_) {
      const Dims& x = in[0].dims;
      KILN_RETURN_IF_ERROR(launch_pad_channels(input_data(in[0], 0), dtype_, x[0] * x[2] * x[3], x[1],
                                               padded_channels(x[1]), ctx.workspace, ctx.stream));
      pack[p->x] = ctx.workspace;
      workspace = static_cast<uint8_t*>(ctx.workspace) + padded;
    }
    KILN_ASSIGN_OR_RETURN(cudnnHandle_t h, handle_for_stream(ctx.stream));
    if (p->plan_index >= 0) {
      KILN_FE_CHECK(p->graph->execute_plan_at_index(h, pack, workspace, p->plan_index), "running a convolution");
    } else {
      KILN_FE_CHECK(p->graph->execute(h, pack, workspace), "running a convolution");
    }
    if (p->epilogue) {
      const int64_t n = shape_numel(p->out_dims);
      const void* bias = in.size() > 2 && !in[2].omitted ? input_data(in[2], 2) : nullptr;
      const void* z = in.size() > 3 && !in[3].omitted ? input_data(in[3], 3) : nullptr;
      KILN_RETURN_IF_ERROR(launch_epilogue(act_, dtype_, out[0].data, bias, z, n, p->out_dims[1], ctx.stream));
    } else if (p->post_activation) {
      KILN_RETURN_IF_ERROR(
          launch_activation(act_, dtype_, out[0].data, out[0].data, shape_numel(p->out_dims), ctx.stream));
    }
    return {};
  }

 private:
  struct Prepared;
  using Pack = std::unordered_map<std::shared_ptr<fe::graph::Tensor_attributes>, void*>;

  Pack variant_pack(const Prepared& p, std::span<const TensorView> in, void* y) const {
    Pack pack;
    pack[p.x] = const_cast<void*>(input_data(in[0], 0));
    pack[p.w] = const_cast<void*>(input_data(in[1], 1));
    if (p.b) pack[p.b] = const_cast<void*>(input_data(in[2], 2));
    if (p.z) pack[p.z] = const_cast<void*>(input_data(in[3], 3));
    pack[p.y] = y;
    return pack;
  }

  struct Prepared {
    std::shared_ptr<fe::graph::Graph> graph;
    std::shared_ptr<fe::graph::Tensor_attributes> x, w, b, z, y;
    Dims out_dims;
    int64_t workspace = 0;
    bool post_activation = false;
    int64_t plan_index = -1;  // the engine configuration run, by the heuristics' rank; -1: their choice
    bool epilogue = false;    // bias, residual and activation as one pass after the convolution
  };

  // The shape's graph: bias, residual and activation fused into cuDNN's graph where its engines
  // take them (not for grouped convolutions, where few do), else the convolution alone and the
  // rest as one pass over its output.
  Result<Prepared*> graph_for(std::span<const TensorView> in) {
    const std::string key = shape_to_string(in[0].dims);
    if (auto it = cache_.find(key); it != cache_.end()) return it->second.get();
    const Attribute* group = node_.attr("group");
    Result<std::unique_ptr<Prepared>> made = invalid("not fused");
    const bool fusable = fuse_ && (!group || group->i == 1);
    if (fusable) made = make_graph(in, /*fuse=*/true);
    // An unsupported fused graph falls back to the unfused one, unless the tactic names an engine
    // configuration of the fused graph (the unfused ones are tactics of their own).
    if (!made.ok() && (!fusable || engine_ < 0)) made = make_graph(in, /*fuse=*/false);
    if (!made.ok()) return made.status();
    Prepared* raw = made->get();
    cache_.emplace(key, std::move(made).value());
    return raw;
  }

  Result<std::unique_ptr<Prepared>> make_graph(std::span<const TensorView> in, bool fuse) {
    Dims x = in[0].dims;
    Dims w = in[1].dims;
    if (x.size() != 4 || w.size() != 4) return invalid("the CUDA convolution takes 2-D images (rank 4)");
    const ConvGeometry geo = conv_geometry(node_, x, w);
    if (pad_) {
      // The graph reads the input and the filter with their channels padded (zeros); the tactic is
      // made only for ungrouped convolutions (make_conv_kernel).
      x[1] = w[1] = padded_channels(x[1]);
    }
    const std::vector<int64_t> pads(geo.pads, geo.pads + 4), strides(geo.strides, geo.strides + 2),
        dil(geo.dilations, geo.dilations + 2), out_hw(geo.out, geo.out + 2);
    auto p = std::make_unique<Prepared>();
    p->out_dims = {x[0], w[0], out_hw[0], out_hw[1]};
    auto g = std::make_shared<fe::graph::Graph>();
    g->set_io_data_type(fe_type(dtype_))
        .set_intermediate_data_type(fe::DataType_t::FLOAT)
        .set_compute_data_type(fe::DataType_t::FLOAT);
    const std::vector<int64_t> xd(x.begin(), x.end()), wd(w.begin(), w.end());
    const std::vector<int64_t> yd(p->out_dims.begin(), p->out_dims.end());
    p->x = g->tensor(fe::graph::Tensor_attributes().set_name("x").set_dim(xd).set_stride(nhwc_strides(xd)));
    p->w = g->tensor(fe::graph::Tensor_attributes().set_name("w").set_dim(wd).set_stride(nhwc_strides(wd)));
    auto conv = fe::graph::Conv_fprop_attributes()
                    .set_pre_padding({pads[0], pads[1]})
                    .set_post_padding({pads[2], pads[3]})
                    .set_stride({strides[0], strides[1]})
                    .set_dilation({dil[0], dil[1]});
    auto y = g->conv_fprop(p->x, p->w, conv);
    y->set_dim(yd).set_stride(nhwc_strides(yd));
    auto has = [&](size_t i) { return i < in.size() && !in[i].omitted; };
    if (!fuse) {
      p->epilogue = has(2) || has(3) || act_.kind != Activation::kNone;
      p->y = y;
      y->set_output(true).set_data_type(fe_type(dtype_));
    }
    if (fuse && has(2)) {
      const std::vector<int64_t> bd = {1, w[0], 1, 1};
      p->b = g->tensor(fe::graph::Tensor_attributes().set_name("b").set_dim(bd).set_stride({w[0], 1, w[0], w[0]}));
      y = g->pointwise(y, p->b, fe::graph::Pointwise_attributes().set_mode(fe::PointwiseMode_t::ADD));
    }
    if (fuse && has(3)) {
      p->z = g->tensor(fe::graph::Tensor_attributes().set_name("z").set_dim(yd).set_stride(nhwc_strides(yd)));
      y = g->pointwise(y, p->z, fe::graph::Pointwise_attributes().set_mode(fe::PointwiseMode_t::ADD));
    }
    // The activations cuDNN's pointwise modes express; the others run as one pass afterwards.
    auto pw = fe::graph::Pointwise_attributes();
    bool in_graph = fuse;
    switch (act_.kind) {
      case Activation::kNone: in_graph = false; break;
      case Activation::kRelu: pw.set_mode(fe::PointwiseMode_t::RELU_FWD); break;
      case Activation::kLeakyRelu: pw.set_mode(fe::PointwiseMode_t::RELU_FWD).set_relu_lower_clip_slope(act_.p0); break;
      case Activation::kClip:
        pw.set_mode(fe::PointwiseMode_t::RELU_FWD).set_relu_lower_clip(act_.p0).set_relu_upper_clip(act_.p1);
        break;
      case Activation::kSigmoid: pw.set_mode(fe::PointwiseMode_t::SIGMOID_FWD); break;
      case Activation::kTanh: pw.set_mode(fe::PointwiseMode_t::TANH_FWD); break;
      case Activation::kGeluErf: pw.set_mode(fe::PointwiseMode_t::GELU_FWD); break;
      case Activation::kGeluTanh: pw.set_mode(fe::PointwiseMode_t::GELU_APPROX_TANH_FWD); break;
      case Activation::kSwish: pw.set_mode(fe::PointwiseMode_t::SWISH_FWD).set_swish_beta(act_.p0); break;
      default: in_graph = false; p->post_activation = fuse;
    }
    if (!fuse) in_graph = false;
    if (in_graph) y = g->pointwise(y, pw);
    if (fuse) {
      y->set_output(true).set_dim(yd).set_stride(nhwc_strides(yd)).set_data_type(fe_type(dtype_));
      p->y = y;
    }
    {
      Handles& h = handles();
      std::lock_guard<std::mutex> lock(h.mu);
      if (!h.build) KILN_CUDNN_CHECK(cudnnCreate(&h.build));
      KILN_FE_CHECK(g->validate(), "validating a convolution graph");
      KILN_FE_CHECK(g->build_operation_graph(h.build), "building a convolution graph");
      KILN_FE_CHECK(g->create_execution_plans({fe::HeurMode_t::A, fe::HeurMode_t::FALLBACK}),
                    "choosing convolution engines");
      g->deselect_workspace_greater_than(kConvWorkspace);
      // Strict FP32: no engine that rounds the inputs to TF32 on tensor cores.
      if (dtype_ == DataType::kFloat && !tf32_) {
        g->deselect_numeric_notes({fe::NumericalNote_t::TENSOR_CORE, fe::NumericalNote_t::DOWN_CONVERT_INPUTS});
      }
      KILN_FE_CHECK(g->check_support(h.build), "checking convolution support");
      // A ranked configuration is chosen at the shapes the builder timed; at other shapes of a
      // profile cuDNN may rank fewer or be unable to build that one, and the heuristics' first
      // runs instead (what it would be at those shapes is not known without timing).
      bool ranked = engine_ >= 0 && engine_ < g->get_execution_plan_count();
      if (ranked) ranked = g->build_plan_at_index(engine_).is_good();
      if (ranked) {
        p->plan_index = engine_;
      } else {
        KILN_FE_CHECK(g->build_plans(h.build), "building convolution plans");
      }
    }
    if (p->plan_index >= 0) {
      KILN_FE_CHECK(g->get_workspace_size_plan_at_index(p->plan_index, p->workspace),
                    "reading the convolution workspace");
      if (p->workspace > kConvWorkspace) {
        return invalid("engine configuration {} needs {} bytes of workspace, more than {}", p->plan_index, p->workspace,
                       kConvWorkspace);
      }
    } else {
      KILN_FE_CHECK(g->get_workspace_size(p->workspace), "reading the convolution workspace");
    }
    p->graph = std::move(g);
    return p;
  }

  const Node& node_;
  DataType dtype_;
  bool tf32_;
  bool fuse_;   // the "cudnn" tactics; "cudnn-unfused" runs the convolution alone and one epilogue pass
  bool pad_;    // "cudnn-pad8": the input's channels padded to a multiple of 8 in the workspace first
  int engine_;  // the engine configuration's rank among the heuristics'; -1: their first supported
  ActivationSpec act_;
  std::map<std::string, std::unique_ptr<Prepared>> cache_;
};

// A pointwise convolution as one GEMM: the NHWC input is [N*H*W, C] row-major and the KRSC
// filter [K, C], so Y[N*H*W, K] = X x W^T, with the bias per column, the residual (NHWC like Y)
// as the accumulator and Relu or GELU in cuBLASLt's epilogue; other activations are one pass.
class ConvGemmKernel : public DeviceKernel {
 public:
  ConvGemmKernel(const Node& n, DataType dt, bool tf32) : dtype_(dt), tf32_(tf32) {
    const Attribute* a = n.attr("activation");
    const Attribute* p = n.attr("activation_params");
    activation_of(a ? a->s : "", p ? p->floats : std::vector<float>{}, &act_);
  }

  Status prepare(std::span<const TensorView> in, std::span<const TensorView> out) override {
    (void)out;
    return runner_for(in).status();
  }

  Status enqueue(std::span<const TensorView> in, std::span<TensorView> out, const KernelContext& ctx) override {
    KILN_ASSIGN_OR_RETURN(Prepared * p, runner_for(in));
    out[0].dims = p->out_dims;
    if (!p->runner) return {};  // no pixels
    const bool bias = in.size() > 2 && !in[2].omitted, z = in.size() > 3 && !in[3].omitted;
    KILN_RETURN_IF_ERROR(p->runner->run(input_data(in[0], 0), input_data(in[1], 1), z ? input_data(in[3], 3) : nullptr,
                                        out[0].data, bias ? input_data(in[2], 2) : nullptr, 1.0f, z ? 1.0f : 0.0f,
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
    bool post_activation = false;
  };

  Result<Prepared*> runner_for(std::span<const TensorView> in) {
    const Dims& x = in[0].dims;
    const Dims& w = in[1].dims;
    if (x.size() != 4 || w.size() != 4 || w[1] != x[1] || w[2] != 1 || w[3] != 1) {
      return invalid("the GEMM tactic takes a pointwise convolution, not input {} with filter {}", shape_to_string(x),
                     shape_to_string(w));
    }
    const std::string key = shape_to_string(x);
    if (auto it = cache_.find(key); it != cache_.end()) return it->second.get();
    auto p = std::make_unique<Prepared>();
    p->out_dims = {x[0], w[0], x[2], x[3]};
    GemmShape s;
    s.m = x[0] * x[2] * x[3];
    s.n = w[0];
    s.k = x[1];
    s.trans_b = true;  // the filter is [K, C]: B^T in memory
    GemmConfig cfg;
    cfg.dtype = dtype_;
    cfg.tf32 = tf32_;
    cfg.workspace_limit = kConvWorkspace;
    cfg.bias = in.size() > 2 && !in[2].omitted;
    cfg.accumulate = in.size() > 3 && !in[3].omitted;
    p->post_activation = set_gemm_epilogue(act_, dtype_, &cfg);  // as for MatMul steps
    if (s.m > 0) {
      KILN_ASSIGN_OR_RETURN(p->runner, GemmRunner::create(s, cfg));
    }
    Prepared* raw = p.get();
    cache_.emplace(key, std::move(p));
    return raw;
  }

  DataType dtype_;
  bool tf32_;
  ActivationSpec act_;
  std::map<std::string, std::unique_ptr<Prepared>> cache_;
};

}  // namespace

bool conv_has_epilogue(const Node& n) {
  const Attribute* group = n.attr("group");
  if (group && group->i != 1) return false;  // grouped convolutions run unfused either way
  const Attribute* act = n.attr("activation");
  return (n.inputs.size() > 2 && n.inputs[2]) || (n.inputs.size() > 3 && n.inputs[3]) || (act && !act->s.empty());
}

bool conv_pads_channels(const Node& n) {
  if (!is_conv(n) || n.inputs.size() < 2 || !n.inputs[0] || !n.inputs[1] || !n.inputs[1]->initializer) return false;
  const Attribute* group = n.attr("group");
  if (group && group->i != 1) return false;
  const TypeInfo& x = n.inputs[0]->type;
  // At static shapes only: the padded input's bytes are part of the step's workspace.
  if (x.kind != TypeInfo::Kind::kTensor || !x.shape.rank_known || x.shape.rank() != 4 || !x.shape.fully_known()) {
    return false;
  }
  const Dims d = x.shape.static_dims();
  return d[1] < kConvPadChannels && padded_input_bytes(d, DataType::kFloat) <= kConvPadWorkspaceLimit;
}

int64_t conv_workspace(const Node& n, const std::string& tactic) {
  ConvTactic t;
  if (!parse_conv_tactic(tactic, &t) || !t.pad_channels || !conv_pads_channels(n)) return kConvWorkspace;
  // Sized for float32, the widest element the step may compute in.
  return padded_input_bytes(n.inputs[0]->type.shape.static_dims(), DataType::kFloat) + kConvWorkspace;
}

bool conv_is_pointwise(const Node& n) {
  if (!is_conv(n) || n.inputs.size() < 2 || !n.inputs[1] || !n.inputs[1]->initializer) return false;
  const Dims& w = n.inputs[1]->initializer->dims();
  if (w.size() != 4 || w[2] != 1 || w[3] != 1) return false;
  auto all = [&](const char* key, int64_t v) {
    const Attribute* a = n.attr(key);
    if (!a) return true;
    for (int64_t x : a->ints) {
      if (x != v) return false;
    }
    return true;
  };
  const Attribute* group = n.attr("group");
  // (Any auto_pad pads a 1x1 window at stride 1 by nothing.)
  return (!group || group->i == 1) && all("strides", 1) && all("pads", 0);
}

std::vector<std::string> conv_tactics(const Node& n) {
  std::vector<std::string> t;

  for (const char* base : {kConvTactic, kConvUnfusedTactic}) {
    if (base == kConvUnfusedTactic && !conv_has_epilogue(n)) break;
    t.push_back(base);
    for (int k = 1; k < kConvEngineChoices; ++k) t.push_back(std::string(base) + ":" + std::to_string(k));
  }
  if (conv_pads_channels(n)) {
    t.push_back(kConvPaddedTactic);
    for (int k = 1; k < kConvEngineChoices; ++k) t.push_back(std::string(kConvPaddedTactic) + ":" + std::to_string(k));
  }
  if (conv_is_pointwise(n)) t.push_back(kConvGemmTactic);
  return t;
}

bool parse_conv_tactic(const std::string& tactic, ConvTactic* out) {
  const size_t colon = tactic.find(':');
  const std::string base = tactic.substr(0, colon);
  ConvTactic t;
  if (base == kConvTactic) {
    t.fused = true;
  } else if (base == kConvPaddedTactic) {
    t.fused = true;
    t.pad_channels = true;
  } else if (base == kConvUnfusedTactic) {
    t.fused = false;
  } else {
    return false;
  }
  if (colon != std::string::npos) {
    const std::string k = tactic.substr(colon + 1);
    if (k.empty() || k.size() > 3 || k.find_first_not_of("0123456789") != std::string::npos) return false;
    t.engine = std::stoi(k);
  }
  *out = t;
  return true;
}

bool conv_supports(const Node& n, DataType precision) {
  if (!is_conv(n) || !elementwise_dtype(precision) || n.inputs.size() < 2 || !n.inputs[0] || !n.inputs[1]) return false;
  const Value* x = n.inputs[0];
  const Value* w = n.inputs[1];
  if (!w->initializer || w->initializer->rank() != 4) return false;  // the filter is packed at load
  if (x->type.kind != TypeInfo::Kind::kTensor || !x->type.shape.rank_known || x->type.shape.rank() != 4) return false;
  for (const Value* v : n.inputs) {
    if (v && v->type.kind == TypeInfo::Kind::kTensor && !elementwise_dtype(v->type.dtype)) return false;
  }
  if (n.inputs.size() > 2 && n.inputs[2] && (!n.inputs[2]->initializer || n.inputs[2]->initializer->rank() != 1)) {
    return false;
  }
  ActivationSpec act;
  return activation_of(n.attr("activation") ? n.attr("activation")->s : "",
                       n.attr("activation_params") ? n.attr("activation_params")->floats : std::vector<float>{}, &act);
}

Result<std::unique_ptr<DeviceKernel>> make_conv_kernel(const Plan& plan, const Step& step, bool tf32,
                                                       WeightCache& weights) {
  if (step.tactic == kConvGemmTactic) {
    if (!conv_is_pointwise(*step.node)) {
      return invalid("step {}: the GEMM tactic runs pointwise convolutions only", step.name);
    }
    auto k = std::make_unique<ConvGemmKernel>(*step.node, step.precision, tf32);
    KILN_RETURN_IF_ERROR(bind_weights(*k, plan, step, weights, nullptr, WeightCache::Packing::kKRSC));
    return std::unique_ptr<DeviceKernel>(std::move(k));
  }
  ConvTactic tactic;  // an engine built before tactics were named ("cuda"): cuDNN, fused
  if (!parse_conv_tactic(step.tactic, &tactic) && step.tactic != "cuda") {
    return invalid("step {}: '{}' is not a convolution tactic", step.name, step.tactic);
  }
  if (tactic.pad_channels && !conv_pads_channels(*step.node)) {
    return invalid("step {}: tactic '{}' pads the channels of convolutions with fewer than 8", step.name, step.tactic);
  }
  auto k = std::make_unique<ConvKernel>(*step.node, step.precision, tf32, tactic);
  // The filter [K, C, R, S] goes to the device as KRSC, the layout NHWC convolutions read (with
  // C padded, zeros, where the tactic pads the input's channels).
  KILN_RETURN_IF_ERROR(
      bind_weights(*k, plan, step, weights, nullptr,
                   tactic.pad_channels ? WeightCache::Packing::kKRSCPad8 : WeightCache::Packing::kKRSC));
  return std::unique_ptr<DeviceKernel>(std::move(k));
}

std::string cudnn_version() {
  const size_t v = cudnnGetVersion();  // major * 10000 + minor * 100 + patch since cuDNN 9
  return std::to_string(v / 10000) + "." + std::to_string(v / 100 % 100) + "." + std::to_string(v % 100);
}

Result<void*> cudnn_stream_handle(void* stream) {
  KILN_ASSIGN_OR_RETURN(cudnnHandle_t h, handle_for_stream(stream));
  return static_cast<void*>(h);
}

Status with_cudnn_build_handle(const std::function<Status(void*)>& fn) {
  Handles& h = handles();
  std::lock_guard<std::mutex> lock(h.mu);
  if (!h.build) KILN_CUDNN_CHECK(cudnnCreate(&h.build));
  return fn(h.build);
}

void release_cudnn_handle(void* stream) {
  Handles& h = handles();
  std::lock_guard<std::mutex> lock(h.mu);
  if (auto it = h.by_stream.find(stream); it != h.by_stream.end()) {
    cudnnDestroy(it->second);
    h.by_stream.erase(it);
  }
}

}  // namespace kiln::cuda
