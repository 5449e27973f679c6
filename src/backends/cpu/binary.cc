#include "backends/cpu/binary.h"

#include <map>

#include "backends/cpu/onednn.h"

namespace kiln::cpu {
namespace {

using dnnl::memory;
using Tag = memory::format_tag;

bool algorithm_of(const std::string& op, dnnl::algorithm* alg, bool* commutative) {
  static const std::map<std::string, std::pair<dnnl::algorithm, bool>> ops = {
      {"Add", {dnnl::algorithm::binary_add, true}}, {"Sub", {dnnl::algorithm::binary_sub, false}},
      {"Mul", {dnnl::algorithm::binary_mul, true}}, {"Div", {dnnl::algorithm::binary_div, false}},
      {"Max", {dnnl::algorithm::binary_max, true}}, {"Min", {dnnl::algorithm::binary_min, true}}};
  auto it = ops.find(op);
  if (it == ops.end()) return false;
  *alg = it->second.first;
  *commutative = it->second.second;
  return true;
}

// Whether `b` broadcasts to `a` (every dim equal or 1).
bool broadcasts_to(const Dims& b, const Dims& a) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (b[i] != a[i] && b[i] != 1) return false;
  }
  return true;
}

class BinaryKernel : public OnednnKernel {
 public:
  BinaryKernel(const Node& n, Layout layout) : OnednnKernel(n), tag_(layout == Layout::kNHWC ? Tag::nhwc : Tag::nchw) {
    bool commutative = false;
    algorithm_of(n.op_type, &alg_, &commutative);
  }

 private:
  Status build(std::span<const TensorView> in, std::span<const TensorView> out, OnednnStep* s) override {
    const Dims& a = in[0].dims;
    const Dims& b = in[1].dims;
    // oneDNN broadcasts its second source only: the commutative ops swap a broadcast first one.
    size_t full = 0;
    if (!broadcasts_to(b, a)) {
      if (!broadcasts_to(a, b)) {
        return invalid("{}: operands {} and {}", node_.describe(), shape_to_string(a), shape_to_string(b));
      }
      full = 1;
    }
    const Dims& fd = in[full].dims;
    const Dims& sd = in[1 - full].dims;
    if (shape_numel(fd) == 0) {
      s->empty = true;
      return {};
    }
    // FP32, or BF16 activations in a BF16 step (a constant operand stays FP32).
    const memory::desc src0_md(memory::dims(fd.begin(), fd.end()), dnnl_type(in[full].storage.dtype), tag_);
    const memory::desc src1_md(memory::dims(sd.begin(), sd.end()), dnnl_type(in[1 - full].storage.dtype), tag_);
    const memory::desc dst_md(memory::dims(fd.begin(), fd.end()), dnnl_type(out[0].storage.dtype), tag_);
    dnnl::binary::desc desc(alg_, src0_md, src1_md, dst_md);
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    dnnl::binary::primitive_desc pd(desc, attr, cpu_engine());
    s->primitive = dnnl::binary(pd);
    s->bind(DNNL_ARG_SRC_0, src0_md, false, full);
    s->bind(DNNL_ARG_SRC_1, src1_md, false, 1 - full);
    s->bind(DNNL_ARG_DST, dst_md, true, 0);
    s->scratch(DNNL_ARG_SCRATCHPAD, pd.scratchpad_desc());
    return {};
  }

  const Tag tag_;
  dnnl::algorithm alg_ = dnnl::algorithm::binary_add;
};

}  // namespace

bool rank4_float(const Value* v) {
  return v && v->type.kind == TypeInfo::Kind::kTensor && v->type.dtype == DataType::kFloat &&
         v->type.shape.rank_known && v->type.shape.rank() == 4;
}

bool binary_supported(const Node& n, DataType precision, Layout layout) {
  dnnl::algorithm alg;
  bool commutative = false;
  if (!n.domain.empty() || !algorithm_of(n.op_type, &alg, &commutative)) return false;
  if (!float_or_native_bf16(precision) || (layout != Layout::kPlain && layout != Layout::kNHWC)) return false;
  if (n.inputs.size() != 2 || n.outputs.size() != 1 || !rank4_float(n.inputs[0]) || !rank4_float(n.inputs[1])) {
    return false;
  }
  // A constant operand is stored plain whatever the step's layout: only one whose bytes are the
  // same in NHWC (one pixel) may meet an NHWC step.
  for (const Value* v : n.inputs) {
    if (v->initializer && layout == Layout::kNHWC) {
      const Dims& d = v->initializer->dims();
      if (d[2] != 1 || d[3] != 1) return false;
    }
  }
  // Which operand broadcasts is checked on the shapes at prepare; oneDNN broadcasts only its second
  // source, so one operand must have the output's shape: the first for a non-commutative op, either
  // for a commutative one (two operands each broadcast along their own dims, [B, 1, 1, S] +
  // [1, 1, S, S], stay on the reference kernel).
  const Shape& a = n.inputs[0]->type.shape;
  const Shape& b = n.inputs[1]->type.shape;
  const Shape& y = n.outputs[0]->type.shape;
  if (!y.rank_known) return false;
  return a.dims == y.dims || (commutative && b.dims == y.dims);
}

std::unique_ptr<StepKernel> make_binary_kernel(const Step& step) {
  return std::make_unique<BinaryKernel>(*step.node, step.layout);
}

}  // namespace kiln::cpu
