#include "backends/cpu/reformat.h"

#include <map>

#include "backends/cpu/onednn.h"

namespace kiln::cpu {
namespace {

using dnnl::memory;
using Tag = memory::format_tag;

Result<Tag> tag_of(const Storage& s) {
  if (s.dtype != DataType::kFloat) return invalid("a reformat of {} values", dtype_name(s.dtype));
  if (s.layout == Layout::kPlain) return Tag::nchw;
  if (s.layout == Layout::kNHWC) return Tag::nhwc;
  return invalid("a reformat from or to layout {}", layout_name(s.layout));
}

class ReformatKernel : public StepKernel {
 public:
  explicit ReformatKernel(const Node& n) : node_(n), stream_(cpu_engine()) {}

  Status prepare(std::span<const TensorView> in, std::span<const TensorView> out) override {
    const Dims& x = in[0].dims;
    if (prepared_.count(x)) return {};
    if (x.size() != 4) return invalid("{}: a 4-D reformat", node_.describe());
    auto p = std::make_unique<Prepared>();
    if (shape_numel(x) == 0) {
      p->empty = true;
      prepared_[x] = std::move(p);
      return {};
    }
    KILN_ASSIGN_OR_RETURN(Tag from, tag_of(in[0].storage));
    KILN_ASSIGN_OR_RETURN(Tag to, tag_of(out[0].storage));
    try {
      const memory::dims d(x.begin(), x.end());
      p->src = memory({d, memory::data_type::f32, from}, cpu_engine(), nullptr);
      p->dst = memory({d, memory::data_type::f32, to}, cpu_engine(), nullptr);
      p->primitive = dnnl::reorder(p->src, p->dst);
    } catch (const dnnl::error& e) {
      return onednn_error("preparing " + node_.describe(), e);
    }
    prepared_[x] = std::move(p);
    return {};
  }

  Status enqueue(std::span<const TensorView> in, std::span<TensorView> out, const KernelContext& ctx) override {
    (void)ctx;
    auto it = prepared_.find(in[0].dims);
    if (it == prepared_.end()) return runtime_error("{}: shape not prepared", node_.describe());
    Prepared& p = *it->second;
    if (p.empty) return {};
    try {
      p.src.set_data_handle(in[0].data);
      p.dst.set_data_handle(out[0].data);
      p.primitive.execute(stream_, p.src, p.dst);
      stream_.wait();
    } catch (const dnnl::error& e) {
      return onednn_error("running " + node_.describe(), e);
    }
    return {};
  }

 private:
  struct Prepared {
    bool empty = false;
    dnnl::reorder primitive;
    memory src, dst;
  };
  const Node& node_;
  dnnl::stream stream_;
  std::map<Dims, std::unique_ptr<Prepared>> prepared_;
};

}  // namespace

bool reformat_supported(const Node& n, DataType precision, Layout layout) {
  if (n.domain != "kiln" || n.op_type != "Reformat" || precision != DataType::kFloat) return false;
  if (layout != Layout::kPlain && layout != Layout::kNHWC) return false;
  if (n.inputs.size() != 1 || !n.inputs[0] || n.outputs.size() != 1) return false;
  const TypeInfo& t = n.inputs[0]->type;
  return t.kind == TypeInfo::Kind::kTensor && t.dtype == DataType::kFloat && t.shape.rank_known && t.shape.rank() == 4;
}

std::unique_ptr<StepKernel> make_reformat_kernel(const Step& step) {
  return std::make_unique<ReformatKernel>(*step.node);
}

}  // namespace kiln::cpu
