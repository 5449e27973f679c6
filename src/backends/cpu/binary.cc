#include "backends/cpu/binary.h"

#include <map>
#include <unordered_map>

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

class BinaryKernel : public StepKernel {
 public:
  BinaryKernel(const Node& n, Layout layout)
      : node_(n), tag_(layout == Layout::kNHWC ? Tag::nhwc : Tag::nchw), stream_(cpu_engine()) {
    bool commutative = false;
    algorithm_of(n.op_type, &alg_, &commutative);
  }

  Status prepare(std::span<const TensorView> in, std::span<const TensorView> out) override {
    (void)out;
    try {
      return prepare_shape(in[0].dims, in[1].dims);
    } catch (const dnnl::error& e) {
      return onednn_error("preparing " + node_.describe(), e);
    }
  }

  Status enqueue(std::span<const TensorView> in, std::span<TensorView> out, const KernelContext& ctx) override {
    (void)ctx;
    auto it = prepared_.find({in[0].dims, in[1].dims});
    if (it == prepared_.end()) return runtime_error("{}: shapes not prepared", node_.describe());
    Prepared& p = *it->second;
    if (p.empty) return {};
    try {
      // oneDNN broadcasts its second source only: the commutative ops swap a broadcast first one.
      p.src0.set_data_handle(in[p.swapped ? 1 : 0].data);
      p.src1.set_data_handle(in[p.swapped ? 0 : 1].data);
      p.dst.set_data_handle(out[0].data);
      p.primitive.execute(stream_, p.args);
      stream_.wait();
    } catch (const dnnl::error& e) {
      return onednn_error("running " + node_.describe(), e);
    }
    return {};
  }

 private:
  struct Prepared {
    bool empty = false, swapped = false;
    dnnl::binary primitive;
    memory src0, src1, dst, scratch;
    std::unordered_map<int, memory> args;
  };

  Status prepare_shape(const Dims& a, const Dims& b) {
    const std::pair<Dims, Dims> key{a, b};
    if (prepared_.count(key)) return {};
    auto p = std::make_unique<Prepared>();
    Dims full = a, small = b;
    if (!broadcasts_to(b, a)) {
      if (!broadcasts_to(a, b))
        return invalid("{}: operands {} and {}", node_.describe(), shape_to_string(a), shape_to_string(b));
      p->swapped = true;
      full = b;
      small = a;
    }
    if (shape_numel(full) == 0) {
      p->empty = true;
      prepared_[key] = std::move(p);
      return {};
    }
    const auto f32 = memory::data_type::f32;
    const memory::desc src0_md(memory::dims(full.begin(), full.end()), f32, tag_);
    const memory::desc src1_md(memory::dims(small.begin(), small.end()), f32, tag_);
    dnnl::binary::desc desc(alg_, src0_md, src1_md, src0_md);
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    dnnl::binary::primitive_desc pd(desc, attr, cpu_engine());
    p->primitive = dnnl::binary(pd);
    p->src0 = memory(src0_md, cpu_engine(), nullptr);
    p->src1 = memory(src1_md, cpu_engine(), nullptr);
    p->dst = memory(src0_md, cpu_engine(), nullptr);
    p->scratch = memory(pd.scratchpad_desc(), cpu_engine());
    p->args = {{DNNL_ARG_SRC_0, p->src0},
               {DNNL_ARG_SRC_1, p->src1},
               {DNNL_ARG_DST, p->dst},
               {DNNL_ARG_SCRATCHPAD, p->scratch}};
    prepared_[key] = std::move(p);
    return {};
  }

  const Node& node_;
  const Tag tag_;
  dnnl::algorithm alg_ = dnnl::algorithm::binary_add;
  dnnl::stream stream_;
  std::map<std::pair<Dims, Dims>, std::unique_ptr<Prepared>> prepared_;
};

bool rank4_float(const Value* v) {
  return v && v->type.kind == TypeInfo::Kind::kTensor && v->type.dtype == DataType::kFloat &&
         v->type.shape.rank_known && v->type.shape.rank() == 4;
}

}  // namespace

bool binary_supported(const Node& n, DataType precision, Layout layout) {
  dnnl::algorithm alg;
  bool commutative = false;
  if (!n.domain.empty() || !algorithm_of(n.op_type, &alg, &commutative)) return false;
  if (precision != DataType::kFloat || (layout != Layout::kPlain && layout != Layout::kNHWC)) return false;
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
  // Which operand broadcasts is checked on the shapes at prepare; a non-commutative op needs the
  // first one full (the output's shape).
  if (!commutative) {
    const Shape& a = n.inputs[0]->type.shape;
    const Shape& y = n.outputs[0]->type.shape;
    if (!y.rank_known || a.dims != y.dims) return false;
  }
  return true;
}

std::unique_ptr<StepKernel> make_binary_kernel(const Step& step) {
  return std::make_unique<BinaryKernel>(*step.node, step.layout);
}

}  // namespace kiln::cpu
