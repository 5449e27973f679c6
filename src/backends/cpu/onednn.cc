#include "backends/cpu/onednn.h"

#include <fmt/format.h>

#include <cstring>

#include "core/cpu_isa.h"

namespace kiln::cpu {

const dnnl::engine& cpu_engine() {
  static const dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

bool bf16_native() {
  static const bool native = [] {
    const auto want = static_cast<unsigned>(dnnl::cpu_isa::avx512_core_bf16);
    return (static_cast<unsigned>(dnnl::get_effective_cpu_isa()) & want) == want;
  }();
  return native && cpu_isa() >= CpuIsa::kAvx512;
}

dnnl::memory::data_type dnnl_type(DataType t) {
  using dt = dnnl::memory::data_type;
  switch (t) {
    case DataType::kFloat: return dt::f32;
    case DataType::kBFloat16: return dt::bf16;
    case DataType::kFloat16: return dt::f16;
    case DataType::kInt32: return dt::s32;
    case DataType::kInt8: return dt::s8;
    case DataType::kUInt8: return dt::u8;
    default: return dt::undef;
  }
}

std::string onednn_version() {
  const dnnl_version_t* v = dnnl_version();
  return fmt::format("{}.{}.{}", v->major, v->minor, v->patch);
}

namespace {

// The eltwise post-ops (algorithm, alpha, beta) computing activation `name` with `params`.
bool activation_ops(const std::string& name, const std::vector<float>& p,
                    std::vector<std::tuple<dnnl::algorithm, float, float>>* out) {
  using A = dnnl::algorithm;
  auto param = [&](size_t i, float def) { return i < p.size() ? p[i] : def; };
  if (name.empty()) return true;
  if (name == "Relu") {
    out->emplace_back(A::eltwise_relu, 0.f, 0.f);
  } else if (name == "LeakyRelu") {
    out->emplace_back(A::eltwise_relu, param(0, 0.01f), 0.f);
  } else if (name == "Clip") {
    out->emplace_back(A::eltwise_clip, param(0, -3.402823466e38f), param(1, 3.402823466e38f));
  } else if (name == "Sigmoid") {
    out->emplace_back(A::eltwise_logistic, 0.f, 0.f);
  } else if (name == "Tanh") {
    out->emplace_back(A::eltwise_tanh, 0.f, 0.f);
  } else if (name == "HardSigmoid") {
    // max(0, min(1, alpha * x + beta)): a linear op, then a clip (oneDNN 2.6 has no hardsigmoid).
    out->emplace_back(A::eltwise_linear, param(0, 0.2f), param(1, 0.5f));
    out->emplace_back(A::eltwise_clip, 0.f, 1.f);
  } else if (name == "HardSwish") {
    out->emplace_back(A::eltwise_hardswish, 0.f, 0.f);
  } else if (name == "Swish") {
    out->emplace_back(A::eltwise_swish, param(0, 1.f), 0.f);
  } else if (name == "Gelu") {
    out->emplace_back(param(0, 0.f) != 0.f ? A::eltwise_gelu_tanh : A::eltwise_gelu_erf, 0.f, 0.f);
  } else {
    return false;
  }
  return true;
}

bool node_activation(const Node& n, std::vector<std::tuple<dnnl::algorithm, float, float>>* out) {
  const Attribute* a = n.attr("activation");
  const Attribute* p = n.attr("activation_params");
  return activation_ops(a ? a->s : "", p ? p->floats : std::vector<float>{}, out);
}

}  // namespace

bool activation_supported(const Node& n) {
  std::vector<std::tuple<dnnl::algorithm, float, float>> ops;
  return node_activation(n, &ops);
}

bool append_activation(const Node& n, dnnl::post_ops* ops) {
  std::vector<std::tuple<dnnl::algorithm, float, float>> list;
  if (!node_activation(n, &list)) return false;
  for (const auto& [alg, alpha, beta] : list) ops->append_eltwise(1.f, alg, alpha, beta);
  return true;
}

Status onednn_error(const std::string& what, const dnnl::error& e) {
  return runtime_error("{}: oneDNN error {} ({})", what, static_cast<int>(e.status), e.what());
}

void OnednnStep::bind(int arg, const dnnl::memory::desc& md, bool output, size_t view) {
  args[arg] = dnnl::memory(md, cpu_engine(), nullptr);
  bindings.push_back({arg, output, view});
}

OnednnKernel::OnednnKernel(const Node& n) : node_(n), stream_(cpu_engine()) {}

std::vector<Dims> OnednnKernel::key_of(std::span<const TensorView> in) {
  std::vector<Dims> key;
  for (const TensorView& v : in) key.push_back(v.omitted ? Dims{} : v.dims);
  return key;
}

Status OnednnKernel::prepare(std::span<const TensorView> in, std::span<const TensorView> out) {
  std::vector<Dims> key = key_of(in);
  if (prepared_.count(key)) return {};
  auto s = std::make_unique<OnednnStep>();
  try {
    KILN_RETURN_IF_ERROR(build(in, out, s.get()));
  } catch (const dnnl::error& e) {
    return onednn_error("preparing " + node_.describe(), e);
  }
  prepared_[std::move(key)] = std::move(s);
  return {};
}

Status OnednnKernel::enqueue(std::span<const TensorView> in, std::span<TensorView> out, const KernelContext& ctx) {
  (void)ctx;
  auto it = prepared_.find(key_of(in));
  if (it == prepared_.end()) return runtime_error("{}: these input shapes were not prepared", node_.describe());
  OnednnStep& s = *it->second;
  if (s.empty) return {};
  try {
    for (const OnednnStep::Binding& b : s.bindings) {
      s.args.at(b.arg).set_data_handle(b.output ? out[b.view].data : in[b.view].data);
    }
    if (s.accumulate_from >= 0) {
      const void* from = in[static_cast<size_t>(s.accumulate_from)].data;
      if (from != out[0].data) std::memcpy(out[0].data, from, s.output_bytes);
    }
    s.primitive.execute(stream_, s.args);
    stream_.wait();
  } catch (const dnnl::error& e) {
    return onednn_error("running " + node_.describe(), e);
  }
  return {};
}

}  // namespace kiln::cpu
