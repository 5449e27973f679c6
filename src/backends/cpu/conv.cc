#include "backends/cpu/conv.h"

#include <algorithm>
#include <optional>
#include <string>
#include <string_view>

#include "backends/cpu/onednn.h"
#include "ops/fused.h"
#include "ops/nn_common.h"

namespace kiln::cpu {
namespace {

using dnnl::memory;
using Tag = memory::format_tag;

bool is_float_tensor(const Value* v, int rank) {
  return v && v->type.kind == TypeInfo::Kind::kTensor && v->type.dtype == DataType::kFloat &&
         (rank < 0 || (v->type.shape.rank_known && static_cast<int>(v->type.shape.rank()) == rank));
}

memory::dims to_dnnl(const Dims& d) {
  return memory::dims(d.begin(), d.end());
}

// The element types a convolution reads and writes: its activations' (input, residual and output
// alike: FP32, or BF16 in a BF16 step) and those the filter and bias are stored in.
struct ConvTypes {
  memory::data_type act = memory::data_type::f32;
  memory::data_type weights = memory::data_type::f32;
  memory::data_type bias = memory::data_type::f32;
};

// A convolution's oneDNN descriptor for input dims `x` and filter dims `wd`: what the kernel runs
// and what the tactic list enumerates the implementations of.
struct ConvSetup {
  Dims y;
  memory::desc src_md, dst_md, w_user_md, bias_md;
  std::optional<dnnl::convolution_forward::desc> desc;  // empty for a zero-size convolution
  dnnl::primitive_attr attr;
  bool winograd = false;
  // The activation's eltwise ops where they run after the primitive, on the output (Winograd's
  // post-ops are ReLU alone); empty where they are its post-ops.
  dnnl::post_ops activation_after;
};

// `winograd`: oneDNN's Winograd algorithm, which computes in blocked layouts of its own (the
// descriptor's activations are `any`; src_md and dst_md stay the views' layouts).
// `activation_after`: the activation runs after the primitive rather than as its post-ops.
Result<ConvSetup> conv_setup(const Node& n, Tag act_tag, const Dims& x, const Dims& wd, bool has_bias,
                             bool has_residual, const ConvTypes& types, bool winograd, bool activation_after = false) {
  if (x.size() != 4 || wd.size() != 4) return invalid("{}: a 2-D convolution", n.describe());
  ConvSetup c;
  c.winograd = winograd;
  const int64_t group = nn::node_int(n, "group", 1);
  const int64_t m = wd[0];
  KILN_ASSIGN_OR_RETURN(nn::Window win, nn::make_window(n, {x[2], x[3]}, {wd[2], wd[3]}, false));
  c.y = {x[0], m, win.out[0], win.out[1]};
  if (shape_numel(x) == 0 || shape_numel(c.y) == 0) return c;
  c.src_md = memory::desc(to_dnnl(x), types.act, act_tag);
  c.dst_md = memory::desc(to_dnnl(c.y), types.act, act_tag);
  const memory::dims wdims = group > 1 ? memory::dims{group, m / group, wd[1], wd[2], wd[3]} : to_dnnl(wd);
  c.w_user_md = memory::desc(wdims, types.weights, group > 1 ? Tag::goihw : Tag::oihw);
  // The filter is packed in the activations' type (a BF16 step reorders its FP32 filter once).
  const memory::desc w_any_md(wdims, types.act, Tag::any);
  c.bias_md = memory::desc({m}, types.bias, Tag::a);
  const memory::dims strides = {win.strides[0], win.strides[1]};
  const memory::dims dilations = {win.dilations[0] - 1, win.dilations[1] - 1};
  const memory::dims pad_l = {win.pads[0], win.pads[1]}, pad_r = {win.pads[2], win.pads[3]};
  const auto prop = dnnl::prop_kind::forward_inference;
  const auto alg = winograd ? dnnl::algorithm::convolution_winograd : dnnl::algorithm::convolution_direct;
  const memory::desc src_md = winograd ? memory::desc(to_dnnl(x), types.act, Tag::any) : c.src_md;
  const memory::desc dst_md = winograd ? memory::desc(to_dnnl(c.y), types.act, Tag::any) : c.dst_md;
  c.desc = has_bias
               ? dnnl::convolution_forward::desc(prop, alg, src_md, w_any_md, c.bias_md, dst_md, strides, dilations,
                                                 pad_l, pad_r)
               : dnnl::convolution_forward::desc(prop, alg, src_md, w_any_md, dst_md, strides, dilations, pad_l, pad_r);
  dnnl::post_ops ops;
  // FusedConv: act(conv + bias + residual). The residual, of the output's shape, is summed into the
  // output (a binary-add post-op reading it instead loses it where the output overlays it, as the
  // memory plan allows: the convolution accumulates in its output).
  if (has_residual) ops.append_sum(1.f);
  if (!append_activation(n, activation_after ? &c.activation_after : &ops)) {
    return invalid("{}: activation not available on oneDNN", n.describe());
  }
  c.attr.set_post_ops(ops);
  c.attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return c;
}

// The implementation named `impl` among those oneDNN offers for `c`, or the first it offers where
// `impl` is empty or not offered here (an engine built on a CPU with
// other instructions).
dnnl::convolution_forward::primitive_desc conv_pd(const ConvSetup& c, const std::string& impl) {
  dnnl::convolution_forward::primitive_desc pd(*c.desc, c.attr, cpu_engine());
  if (impl.empty() || pd.impl_info_str() == impl) return pd;
  while (pd.next_impl()) {
    if (pd.impl_info_str() == impl) return pd;
  }
  return dnnl::convolution_forward::primitive_desc(*c.desc, c.attr, cpu_engine());
}

// The implementation name of a Winograd tactic ("onednn:winograd:<implementation>") follows this.
constexpr std::string_view kWinograd = "winograd:";
// The fewest output pixels (batch x height x width) a Winograd tactic is offered for.
constexpr int64_t kWinogradMinPixels = 128;

// What a convolution runs for one set of shapes: its setup and oneDNN's primitive descriptor
// (empty for a zero-size convolution).
struct ConvPrimitive {
  ConvSetup setup;
  std::optional<dnnl::convolution_forward::primitive_desc> pd;
};

// The primitive of the tactic implementation `impl` ("": oneDNN's first; "<name>": that direct
// implementation; "winograd:<name>": its Winograd algorithm, with the activation after it where
// not among its post-ops), or oneDNN's first direct one where this CPU does not offer it (an
// engine built on a CPU with other instructions). May throw dnnl::error.
Result<ConvPrimitive> conv_primitive(const Node& n, Tag act_tag, const Dims& x, const Dims& wd, bool has_bias,
                                     bool has_residual, const ConvTypes& types, const std::string& impl) {
  ConvPrimitive p;
  if (impl.rfind(kWinograd, 0) == 0) {
    for (bool activation_after : {false, true}) {
      try {
        KILN_ASSIGN_OR_RETURN(p.setup,
                              conv_setup(n, act_tag, x, wd, has_bias, has_residual, types, true, activation_after));
        if (!p.setup.desc) return p;
        p.pd = conv_pd(p.setup, impl.substr(kWinograd.size()));
        return p;
      } catch (const dnnl::error&) {
      }
    }
  }
  KILN_ASSIGN_OR_RETURN(p.setup, conv_setup(n, act_tag, x, wd, has_bias, has_residual, types, false));
  if (p.setup.desc) p.pd = conv_pd(p.setup, impl.rfind(kWinograd, 0) == 0 ? "" : impl);
  return p;
}

// The context workspace bytes a primitive's kernel places its scratch in: the scratchpad, and
// activations in a layout of its own (as OnednnKernel places them).
int64_t conv_workspace(const ConvPrimitive& p) {
  if (!p.pd) return 0;
  int64_t bytes = OnednnStep::workspace_share(p.pd->scratchpad_desc());
  if (p.pd->src_desc() != p.setup.src_md) bytes += OnednnStep::workspace_share(p.pd->src_desc());
  if (p.pd->dst_desc() != p.setup.dst_md) bytes += OnednnStep::workspace_share(p.pd->dst_desc());
  return bytes;
}

class ConvKernel : public OnednnKernel {
 public:
  ConvKernel(const Node& n, Layout layout, std::string impl)
      : OnednnKernel(n), act_tag_(layout == Layout::kNHWC ? Tag::nhwc : Tag::nchw), impl_(std::move(impl)) {}

 private:
  Status build(std::span<const TensorView> in, std::span<const TensorView> out, OnednnStep* s) override {
    // (Inputs computed by earlier steps have no data yet at prepare: presence is the node's.)
    const bool has_bias = in.size() > 2 && !in[2].omitted;
    const bool has_residual = in.size() > 3 && !in[3].omitted;
    ConvTypes types;
    types.act = dnnl_type(in[0].storage.dtype);
    types.weights = dnnl_type(in[1].storage.dtype);
    if (has_bias) types.bias = dnnl_type(in[2].storage.dtype);
    if (types.act == memory::data_type::undef || dnnl_type(out[0].storage.dtype) != types.act ||
        (has_residual && dnnl_type(in[3].storage.dtype) != types.act) || types.weights == memory::data_type::undef ||
        types.bias == memory::data_type::undef) {
      return invalid("{}: input stored as {}, output as {}: a convolution reads and writes one of float32 and bfloat16",
                     node_.describe(), dtype_name(in[0].storage.dtype), dtype_name(out[0].storage.dtype));
    }
    KILN_ASSIGN_OR_RETURN(
        ConvPrimitive p, conv_primitive(node_, act_tag_, in[0].dims, in[1].dims, has_bias, has_residual, types, impl_));
    if (!p.pd) {
      s->empty = true;
      return {};
    }
    const ConvSetup& c = p.setup;
    const dnnl::convolution_forward::primitive_desc& pd = *p.pd;
    if (!in[1].data) return invalid("{}: the filter has no data at prepare", node_.describe());
    if (has_residual && in[3].dims != c.y) {
      return invalid("{}: residual of shape {} for an output of {}", node_.describe(), shape_to_string(in[3].dims),
                     shape_to_string(c.y));
    }
    const dnnl::engine& eng = cpu_engine();
    s->primitive = dnnl::convolution_forward(pd);
    // The filter in the primitive's layout: reordered once per layout (shapes mostly share one).
    KILN_ASSIGN_OR_RETURN(const memory* w, weights_.get(c.w_user_md, in[1], pd.weights_desc(), stream_));
    s->own(DNNL_ARG_WEIGHTS, *w);
    // Activations in a layout of the primitive's own (Winograd's blocked ones) are reordered from
    // the views before it runs, and its result into the output after; the residual goes into the
    // output the sum post-op accumulates into.
    if (pd.src_desc() == c.src_md) {
      s->bind(DNNL_ARG_SRC, c.src_md, false, 0);
    } else {
      const memory src = s->scratch(DNNL_ARG_SRC, pd.src_desc());
      s->reorder_in(c.src_md, 0, src);
    }
    if (pd.dst_desc() == c.dst_md) {
      s->bind(DNNL_ARG_DST, c.dst_md, true, 0);
      if (has_residual) {
        s->accumulate_from = 3;
        s->output_bytes = c.dst_md.get_size();
      }
    } else {
      const memory dst = s->scratch(DNNL_ARG_DST, pd.dst_desc());
      if (has_residual) s->reorder_in(c.dst_md, 3, dst);
      s->reorder_out(dst, c.dst_md, 0);
    }
    // An activation the primitive has no post-op for runs on the output, in place.
    for (int i = 0; i < c.activation_after.len(); ++i) {
      float scale = 0, alpha = 0, beta = 0;
      dnnl::algorithm alg;
      c.activation_after.get_params_eltwise(i, scale, alg, alpha, beta);
      const dnnl::eltwise_forward::primitive_desc epd({dnnl::prop_kind::forward_inference, alg, c.dst_md, alpha, beta},
                                                      eng);
      s->in_place_after(dnnl::eltwise_forward(epd), c.dst_md, 0);
    }
    if (has_bias) s->bind(DNNL_ARG_BIAS, c.bias_md, false, 2);
    s->scratch(DNNL_ARG_SCRATCHPAD, pd.scratchpad_desc());
    return {};
  }

  const Tag act_tag_;       // the activations' layout: NHWC (oneDNN's direct kernels) or NCHW
  const std::string impl_;  // the tactic's implementation (as conv_primitive takes it)
  PackedWeights weights_;
};

}  // namespace

bool conv_supported(const Node& n, DataType precision, Layout layout) {
  const bool conv = (n.domain.empty() && n.op_type == "Conv") || (n.domain == kKilnDomain && n.op_type == "FusedConv");
  if (!conv || !float_or_native_bf16(precision) || (layout != Layout::kPlain && layout != Layout::kNHWC)) {
    return false;
  }
  if (n.inputs.size() < 2 || n.outputs.size() != 1 || !is_float_tensor(n.inputs[0], 4)) return false;
  if (!is_float_tensor(n.inputs[1], 4) || !n.inputs[1]->initializer) return false;
  if (n.inputs.size() > 2 && n.inputs[2] && !is_float_tensor(n.inputs[2], 1)) return false;
  if (n.inputs.size() > 3 && n.inputs[3] && !is_float_tensor(n.inputs[3], 4)) return false;
  if (n.inputs.size() > 4) return false;
  const int64_t group = nn::node_int(n, "group", 1);
  const Dims& w = n.inputs[1]->initializer->dims();
  if (group < 1 || w[0] % group != 0) return false;
  return activation_supported(n);
}

std::vector<std::string> conv_tactics(const Node& n, DataType precision, Layout layout) {
  std::vector<std::string> tactics = {kOnednnTactic};
  const Value* x = n.inputs[0];
  if (!x->type.shape.fully_known()) return tactics;  // enumerated at static shapes only
  const bool has_bias = n.inputs.size() > 2 && n.inputs[2];
  const bool has_residual = n.inputs.size() > 3 && n.inputs[3];
  try {
    ConvTypes types;
    types.act = dnnl_type(precision);
    const Tag tag = layout == Layout::kNHWC ? Tag::nhwc : Tag::nchw;
    const Dims& wd = n.inputs[1]->initializer->dims();
    Result<ConvSetup> c = conv_setup(n, tag, x->type.shape.static_dims(), wd, has_bias, has_residual, types, false);
    if (!c.ok() || !c->desc) return tactics;
    // oneDNN's Winograd convolutions (FP32 3x3, stride 1, on AVX-512): F(2x2, 3x3) does 2.25x
    // fewer multiplications than the direct one and F(4x4, 3x3) 4x, at the cost of reorders to and
    // from their blocked layouts and a transformed filter 16/9 (36/9) the size. Offered where the
    // output has at least kWinogradMinPixels pixels: on fewer (ResNet-50's 7x7 at batch 1), the
    // step is bound by reading its filter from memory, which timing on a warm cache does not show.
    if (c->y[0] * c->y[2] * c->y[3] >= kWinogradMinPixels) {
      Result<ConvPrimitive> w = conv_primitive(n, tag, x->type.shape.static_dims(), wd, has_bias, has_residual, types,
                                               std::string(kWinograd));
      if (w.ok() && w->pd && w->setup.winograd) {
        // Each of oneDNN's Winograd implementations: F(2x2, 3x3) and F(4x4, 3x3) on AVX-512.
        dnnl::convolution_forward::primitive_desc wpd = *w->pd;
        do {
          const std::string tactic = std::string(kOnednnTactic) + ":" + std::string(kWinograd) + wpd.impl_info_str();
          if (std::find(tactics.begin(), tactics.end(), tactic) == tactics.end()) tactics.push_back(tactic);
        } while (wpd.next_impl());
      }
    }
    dnnl::convolution_forward::primitive_desc pd(*c->desc, c->attr, cpu_engine());
    // Implementations are told apart by name: one named as the first is the first. Those for an
    // older instruction set than the first's (SSE4.1 beside AVX) are not timed: they never win,
    // and timing them costs build time.
    const std::string first = pd.impl_info_str();
    const bool avx = first.find("avx") != std::string::npos;
    while (pd.next_impl()) {
      const std::string impl = pd.impl_info_str();
      const std::string tactic = std::string(kOnednnTactic) + ":" + impl;
      const bool older = avx && impl.find("sse") != std::string::npos;
      if (impl != first && !older && impl.rfind("ref", 0) != 0 &&
          std::find(tactics.begin(), tactics.end(), tactic) == tactics.end()) {
        tactics.push_back(tactic);
      }
    }
  } catch (const dnnl::error&) {
  }
  return tactics;
}

namespace {

// The implementation a tactic names, as conv_primitive takes it ("" for "onednn").
std::string tactic_impl(const std::string& tactic) {
  const std::string prefix = std::string(kOnednnTactic) + ":";
  return tactic.rfind(prefix, 0) == 0 ? tactic.substr(prefix.size()) : "";
}

}  // namespace

int64_t conv_workspace_bytes(const Step& step) {
  const Node& n = *step.node;
  const Value* x = n.inputs[0];
  if (!x->type.shape.fully_known() || !is_onednn_tactic(step.tactic)) return 0;
  const std::string impl = tactic_impl(step.tactic);
  try {
    ConvTypes types;
    types.act = dnnl_type(step.precision);
    Result<ConvPrimitive> p =
        conv_primitive(n, step.layout == Layout::kNHWC ? Tag::nhwc : Tag::nchw, x->type.shape.static_dims(),
                       n.inputs[1]->initializer->dims(), n.inputs.size() > 2 && n.inputs[2],
                       n.inputs.size() > 3 && n.inputs[3], types, impl);
    return p.ok() ? conv_workspace(*p) : 0;
  } catch (const dnnl::error&) {
    return 0;
  }
}

Result<std::optional<PackedWeight>> conv_pack_weight(const Plan& plan, const Step& step, size_t k) {
  const Node& n = *step.node;
  if (k != 1 || !is_onednn_tactic(step.tactic) || !step.shape_tactics.empty() || step.inputs.empty() ||
      step.inputs[0] < 0) {
    return std::optional<PackedWeight>();
  }
  // The input's shape at the profile's largest (that of every run in a static engine).
  const TypeInfo& x = plan.slots[static_cast<size_t>(step.inputs[0])].type;
  const std::shared_ptr<Tensor>& w = n.inputs[1]->initializer;
  if (!x.shape.fully_known() || !w || w->packed() || w->dtype() != DataType::kFloat)
    return std::optional<PackedWeight>();
  try {
    ConvTypes types;
    types.act = dnnl_type(step.precision);
    Result<ConvPrimitive> p = conv_primitive(n, step.layout == Layout::kNHWC ? Tag::nhwc : Tag::nchw,
                                             x.shape.static_dims(), w->dims(), n.inputs.size() > 2 && n.inputs[2],
                                             n.inputs.size() > 3 && n.inputs[3], types, tactic_impl(step.tactic));
    if (!p.ok() || !p->pd) return std::optional<PackedWeight>();
    return pack_weight_as(*w, p->setup.w_user_md, p->pd->weights_desc());
  } catch (const dnnl::error& e) {
    return onednn_error(n.describe() + ": packing the filter", e);
  }
}

std::unique_ptr<StepKernel> make_conv_kernel(const Step& step) {
  return std::make_unique<ConvKernel>(*step.node, step.layout, tactic_impl(step.tactic));
}

}  // namespace kiln::cpu
