#include "backends/cpu/pool.h"

#include "backends/cpu/onednn.h"
#include "ops/nn_common.h"

namespace kiln::cpu {
namespace {

using dnnl::memory;
using Tag = memory::format_tag;

bool is_global(const Node& n) {
  return n.op_type == "GlobalAveragePool" || n.op_type == "GlobalMaxPool";
}
bool is_max(const Node& n) {
  return n.op_type == "MaxPool" || n.op_type == "GlobalMaxPool";
}

class PoolKernel : public OnednnKernel {
 public:
  PoolKernel(const Node& n, Layout layout) : OnednnKernel(n), tag_(layout == Layout::kNHWC ? Tag::nhwc : Tag::nchw) {}

 private:
  Status build(std::span<const TensorView> in, std::span<const TensorView> out, OnednnStep* s) override {
    (void)out;
    const Dims& x = in[0].dims;
    if (x.size() != 4) return invalid("{}: a 2-D pooling", node_.describe());
    memory::dims kernel, strides, dilations, pad_l, pad_r;
    Dims y;
    if (is_global(node_)) {
      kernel = {x[2], x[3]};
      strides = {1, 1};
      dilations = {0, 0};
      pad_l = pad_r = {0, 0};
      y = {x[0], x[1], 1, 1};
    } else {
      const Dims k = nn::node_ints(node_, "kernel_shape");
      const bool ceil_mode = nn::node_int(node_, "ceil_mode", 0) != 0;
      KILN_ASSIGN_OR_RETURN(nn::Window w,
                            nn::make_window(node_, {x[2], x[3]}, k, ceil_mode, node_.op_type == "MaxPool"));
      kernel = {w.kernel[0], w.kernel[1]};
      strides = {w.strides[0], w.strides[1]};
      dilations = {w.dilations[0] - 1, w.dilations[1] - 1};
      pad_l = {w.pads[0], w.pads[1]};
      // Ceil mode's extra windows run past the end padding: oneDNN needs that much more padding
      // on the right to produce them (max pooling never picks a padded tap).
      pad_r = {w.pads[2], w.pads[3]};
      for (int d = 0; d < 2; ++d) {
        const int64_t span = (w.kernel[d] - 1) * w.dilations[d] + 1;
        const int64_t need = (w.out[d] - 1) * w.strides[d] + span - x[2 + d] - w.pads[d];
        pad_r[d] = std::max<int64_t>(pad_r[d], need);
      }
      y = {x[0], x[1], w.out[0], w.out[1]};
    }
    if (shape_numel(x) == 0 || shape_numel(y) == 0) {
      s->empty = true;
      return {};
    }
    // FP32, or BF16 in a BF16 step (oneDNN averages in FP32 either way).
    const memory::data_type type = dnnl_type(in[0].storage.dtype);
    if (dnnl_type(out[0].storage.dtype) != type) {
      return invalid("{}: input stored as {}, output as {}", node_.describe(), dtype_name(in[0].storage.dtype),
                     dtype_name(out[0].storage.dtype));
    }
    const memory::desc src_md(memory::dims(x.begin(), x.end()), type, tag_);
    const memory::desc dst_md(memory::dims(y.begin(), y.end()), type, tag_);
    dnnl::algorithm alg = dnnl::algorithm::pooling_max;
    if (!is_max(node_)) {
      alg = nn::node_int(node_, "count_include_pad", 0) != 0 ? dnnl::algorithm::pooling_avg_include_padding
                                                             : dnnl::algorithm::pooling_avg_exclude_padding;
    }
    dnnl::pooling_v2_forward::desc desc(dnnl::prop_kind::forward_inference, alg, src_md, dst_md, strides, kernel,
                                        dilations, pad_l, pad_r);
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    dnnl::pooling_v2_forward::primitive_desc pd(desc, attr, cpu_engine());
    s->primitive = dnnl::pooling_v2_forward(pd);
    s->bind(DNNL_ARG_SRC, src_md, false, 0);
    s->bind(DNNL_ARG_DST, dst_md, true, 0);
    s->scratch(DNNL_ARG_SCRATCHPAD, pd.scratchpad_desc());
    return {};
  }

  const Tag tag_;
};

}  // namespace

bool pool_supported(const Node& n, DataType precision, Layout layout) {
  if (!n.domain.empty() || !float_or_native_bf16(precision) || (layout != Layout::kPlain && layout != Layout::kNHWC)) {
    return false;
  }
  const bool avg = n.op_type == "AveragePool", max = n.op_type == "MaxPool";
  if (!avg && !max && !is_global(n)) return false;
  if (n.inputs.size() != 1 || !n.inputs[0] || n.outputs.empty()) return false;
  if (n.outputs.size() > 1 && n.outputs[1]) return false;  // MaxPool's indices
  const TypeInfo& t = n.inputs[0]->type;
  if (t.kind != TypeInfo::Kind::kTensor || t.dtype != DataType::kFloat || !t.shape.rank_known || t.shape.rank() != 4) {
    return false;
  }
  if (max && nn::node_int(n, "storage_order", 0) != 0) return false;
  // Average pooling in ceil mode counts the taps of the extra windows in ONNX's own way.
  if (avg && nn::node_int(n, "ceil_mode", 0) != 0) return false;
  if (avg && nn::node_has(n, "dilations")) {
    for (int64_t d : nn::node_ints(n, "dilations")) {
      if (d != 1) return false;
    }
  }
  return true;
}

std::unique_ptr<StepKernel> make_pool_kernel(const Step& step) {
  return std::make_unique<PoolKernel>(*step.node, step.layout);
}

}  // namespace kiln::cpu
