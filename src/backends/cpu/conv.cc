#include "backends/cpu/conv.h"

#include <algorithm>

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

class ConvKernel : public OnednnKernel {
 public:
  ConvKernel(const Node& n, Layout layout)
      : OnednnKernel(n), act_tag_(layout == Layout::kNHWC ? Tag::nhwc : Tag::nchw) {}

 private:
  Status build(std::span<const TensorView> in, std::span<const TensorView> out, OnednnStep* s) override {
    (void)out;
    const Dims& x = in[0].dims;
    const Dims& wd = in[1].dims;
    if (x.size() != 4 || wd.size() != 4) return invalid("{}: a 2-D convolution", node_.describe());
    const int64_t group = nn::node_int(node_, "group", 1);
    const int64_t m = wd[0];
    KILN_ASSIGN_OR_RETURN(nn::Window win, nn::make_window(node_, {x[2], x[3]}, {wd[2], wd[3]}, false));
    const Dims y = {x[0], m, win.out[0], win.out[1]};
    if (shape_numel(x) == 0 || shape_numel(y) == 0) {
      s->empty = true;
      return {};
    }
    const auto f32 = memory::data_type::f32;
    const memory::desc src_md(to_dnnl(x), f32, act_tag_);
    const memory::desc dst_md(to_dnnl(y), f32, act_tag_);
    const memory::dims wdims = group > 1 ? memory::dims{group, m / group, wd[1], wd[2], wd[3]} : to_dnnl(wd);
    const memory::desc w_user_md(wdims, f32, group > 1 ? Tag::goihw : Tag::oihw);
    const memory::desc w_any_md(wdims, f32, Tag::any);
    // (Inputs computed by earlier steps have no data yet at prepare: presence is the node's.)
    const bool has_bias = in.size() > 2 && !in[2].omitted;
    const bool has_residual = in.size() > 3 && !in[3].omitted;
    if (!in[1].data) return invalid("{}: the filter has no data at prepare", node_.describe());
    const memory::desc bias_md({m}, f32, Tag::a);
    const memory::dims strides = {win.strides[0], win.strides[1]};
    const memory::dims dilations = {win.dilations[0] - 1, win.dilations[1] - 1};
    const memory::dims pad_l = {win.pads[0], win.pads[1]}, pad_r = {win.pads[2], win.pads[3]};
    const auto prop = dnnl::prop_kind::forward_inference;
    const auto alg = dnnl::algorithm::convolution_direct;
    auto desc = has_bias ? dnnl::convolution_forward::desc(prop, alg, src_md, w_any_md, bias_md, dst_md, strides,
                                                           dilations, pad_l, pad_r)
                         : dnnl::convolution_forward::desc(prop, alg, src_md, w_any_md, dst_md, strides, dilations,
                                                           pad_l, pad_r);
    dnnl::post_ops ops;
    // FusedConv: act(conv + bias + residual). The residual, of the output's shape, is summed
    // into the output (a binary-add post-op reading it instead loses it where the output overlays
    // it, as the memory plan allows: the convolution accumulates in its output).
    if (has_residual) {
      if (in[3].dims != y) {
        return invalid("{}: residual of shape {} for an output of {}", node_.describe(), shape_to_string(in[3].dims),
                       shape_to_string(y));
      }
      ops.append_sum(1.f);
      s->accumulate_from = 3;
      s->output_bytes = dst_md.get_size();
    }
    if (!append_activation(node_, &ops)) return invalid("{}: activation not available on oneDNN", node_.describe());
    dnnl::primitive_attr attr;
    attr.set_post_ops(ops);
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    const dnnl::engine& eng = cpu_engine();
    dnnl::convolution_forward::primitive_desc pd(desc, attr, eng);
    s->primitive = dnnl::convolution_forward(pd);
    // The filter in the primitive's layout: reordered once per layout (shapes mostly share one).
    const memory::desc w_md = pd.weights_desc();
    auto w = std::find_if(weights_.begin(), weights_.end(), [&](const auto& e) { return e.first == w_md; });
    if (w == weights_.end()) {
      memory user(w_user_md, eng, in[1].data);
      memory packed(w_md, eng);
      dnnl::reorder(user, packed).execute(stream_, user, packed);
      stream_.wait();
      weights_.emplace_back(w_md, packed);
      w = weights_.end() - 1;
    }
    s->bind(DNNL_ARG_SRC, src_md, false, 0);
    s->bind(DNNL_ARG_DST, dst_md, true, 0);
    if (has_bias) s->bind(DNNL_ARG_BIAS, bias_md, false, 2);
    s->own(DNNL_ARG_WEIGHTS, w->second);
    s->own(DNNL_ARG_SCRATCHPAD, memory(pd.scratchpad_desc(), eng));
    return {};
  }

  const Tag act_tag_;  // the activations' layout: NHWC (oneDNN's direct kernels) or NCHW
  // Packed filters by layout (memory::desc has equality, no ordering).
  std::vector<std::pair<memory::desc, memory>> weights_;
};

}  // namespace

bool conv_supported(const Node& n, DataType precision, Layout layout) {
  const bool conv = (n.domain.empty() && n.op_type == "Conv") || (n.domain == kKilnDomain && n.op_type == "FusedConv");
  if (!conv || precision != DataType::kFloat || (layout != Layout::kPlain && layout != Layout::kNHWC)) return false;
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

std::unique_ptr<StepKernel> make_conv_kernel(const Step& step) {
  return std::make_unique<ConvKernel>(*step.node, step.layout);
}

}  // namespace kiln::cpu
