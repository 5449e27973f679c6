#include "backends/cpu/onednn.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cstring>
#include <mutex>
#include <string_view>

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

namespace {

// Every live packing in the process: the bytes packed, their layout and the packing's.
struct Packing {
  const void* data;
  dnnl::memory::desc user, want;
  std::weak_ptr<dnnl::memory> packed;
};
std::mutex packings_mutex;
std::vector<Packing>& packings() {
  static std::vector<Packing> all;
  return all;
}

}  // namespace

const dnnl::memory& PackedWeights::get(const dnnl::memory::desc& user, const void* data, const dnnl::memory::desc& want,
                                       dnnl::stream& stream) {
  if (const dnnl::memory* own = held(want)) return *own;
  std::lock_guard<std::mutex> lock(packings_mutex);
  std::vector<Packing>& all = packings();
  all.erase(std::remove_if(all.begin(), all.end(), [](const Packing& p) { return p.packed.expired(); }), all.end());
  std::shared_ptr<dnnl::memory> packed;
  for (const Packing& p : all) {
    if (p.data == data && p.user == user && p.want == want) packed = p.packed.lock();
    if (packed) break;
  }
  if (!packed) {
    dnnl::memory from(user, cpu_engine(), const_cast<void*>(data));
    packed = std::make_shared<dnnl::memory>(want, cpu_engine());
    dnnl::reorder(from, *packed).execute(stream, from, *packed);
    stream.wait();
    all.push_back({data, user, want, packed});
  }
  held_.emplace_back(want, packed);
  return *held_.back().second;
}

namespace {

// A packing's description: this prefix, then oneDNN's memory descriptor as its bytes (a C struct
// of oneDNN 2's ABI, the same in every oneDNN with this library's major version).
constexpr std::string_view kPackingPrefix = "onednn2-md:";

// The layout of `dims` elements of type `dt` row-major (as ONNX lays a tensor out).
dnnl::memory::desc row_major(const dnnl::memory::dims& dims, dnnl::memory::data_type dt) {
  dnnl::memory::dims strides(dims.size(), 1);
  for (size_t i = dims.size() - 1; i > 0; --i) strides[i - 1] = strides[i] * dims[i];
  return dnnl::memory::desc(dims, dt, strides);
}

}  // namespace

std::optional<PackedWeight> pack_weight_as(const Tensor& logical, const dnnl::memory::desc& user,
                                           const dnnl::memory::desc& want) {
  if (want.data.format_kind != dnnl_blocked || user.get_size() != logical.nbytes()) return std::nullopt;
  const DataType dtype = want.data_type() == dnnl::memory::data_type::bf16  ? DataType::kBFloat16
                         : want.data_type() == dnnl::memory::data_type::f32 ? DataType::kFloat
                                                                            : DataType::kUndefined;
  if (dtype == DataType::kUndefined) return std::nullopt;
  const size_t bytes = want.get_size();
  // Aligned as the engine file aligns weights (kBlobAlignment), zeroed padding included.
  uint8_t* p = static_cast<uint8_t*>(std::aligned_alloc(64, (bytes + 63) / 64 * 64));
  if (!p) return std::nullopt;
  std::shared_ptr<uint8_t[]> buffer(p, [](uint8_t* q) { std::free(q); });
  std::memset(p, 0, bytes);
  dnnl::stream stream(cpu_engine());
  dnnl::memory from(user, cpu_engine(), const_cast<void*>(logical.raw()));
  dnnl::memory to(want, cpu_engine(), p);
  dnnl::reorder(from, to).execute(stream, from, to);
  stream.wait();
  std::string packing(kPackingPrefix);
  packing.append(reinterpret_cast<const char*>(&want.data), sizeof(want.data));
  PackedWeight w;
  w.tensor = Tensor::wrap_packed(logical.dtype(), logical.dims(), std::move(buffer), bytes, std::move(packing));
  w.storage = Storage{dtype, Layout::kBlocked, "cpu"};
  return w;
}

Result<dnnl::memory::desc> packing_desc(const std::string& packing) {
  if (packing.size() != kPackingPrefix.size() + sizeof(dnnl_memory_desc_t) ||
      packing.compare(0, kPackingPrefix.size(), kPackingPrefix) != 0) {
    return invalid("the weight's packing is not oneDNN {}'s ({} bytes); rebuild the engine", onednn_version(),
                   packing.size());
  }
  dnnl_memory_desc_t md;
  std::memcpy(&md, packing.data() + kPackingPrefix.size(), sizeof(md));
  bool ok = md.format_kind == dnnl_blocked && md.ndims >= 1 && md.ndims <= DNNL_MAX_NDIMS &&
            (md.data_type == dnnl_f32 || md.data_type == dnnl_bf16) && md.format_desc.blocking.inner_nblks >= 0 &&
            md.format_desc.blocking.inner_nblks <= DNNL_MAX_NDIMS;
  for (int i = 0; ok && i < md.ndims; ++i) ok = md.dims[i] > 0 && md.padded_dims[i] >= md.dims[i];
  if (!ok) return invalid("the weight's packing is corrupt; rebuild the engine");
  return dnnl::memory::desc(md);
}

Result<Tensor> unpack_weight(const Tensor& packed) {
  KILN_ASSIGN_OR_RETURN(const dnnl::memory::desc md, packing_desc(packed.packing()));
  const dnnl::memory::data_type logical = dnnl_type(packed.dtype());
  if (md.get_size() > packed.nbytes() || logical == dnnl::memory::data_type::undef) {
    return invalid("a weight packed as {} bytes of {} cannot be unpacked", packed.nbytes(), dtype_name(packed.dtype()));
  }
  // The packing's dims are the weight's as oneDNN saw it (a grouped filter's 5-D): the same
  // elements, row-major.
  int64_t numel = 1;
  for (int64_t d : md.dims()) numel *= d;
  if (numel != packed.numel()) return invalid("a weight packed with {} elements for {}", numel, packed.numel());
  KILN_ASSIGN_OR_RETURN(Tensor out, Tensor::create_uninitialized(packed.dtype(), packed.dims()));
  try {
    dnnl::stream stream(cpu_engine());
    dnnl::memory from(md, cpu_engine(), const_cast<void*>(packed.raw()));
    dnnl::memory to(row_major(md.dims(), logical), cpu_engine(), out.raw());
    dnnl::reorder(from, to).execute(stream, from, to);
    stream.wait();
  } catch (const dnnl::error& e) {
    return onednn_error("unpacking a weight", e);
  }
  return out;
}

Result<const dnnl::memory*> PackedWeights::get(const dnnl::memory::desc& user, const TensorView& w,
                                               const dnnl::memory::desc& want, dnnl::stream& stream) {
  const Tensor* t = w.value ? &w.value->tensor : nullptr;
  if (!t || !t->packed()) return &get(user, w.data, want, stream);
  if (const dnnl::memory* own = held(want)) return own;
  KILN_ASSIGN_OR_RETURN(const dnnl::memory::desc packed, packing_desc(t->packing()));
  if (packed.dims() != user.dims() || packed.get_size() > t->nbytes() || t->raw() != w.data) {
    return invalid("a weight packed as {} bytes of dims [{}] for dims [{}]", t->nbytes(),
                   fmt::join(packed.dims(), ", "), fmt::join(user.dims(), ", "));
  }
  if (packed == want) {
    // Used where it lies (in the engine file's mapping): nothing to reorder, nothing to hold.
    held_.emplace_back(want, std::make_shared<dnnl::memory>(want, cpu_engine(), const_cast<void*>(w.data)));
    return held_.back().second.get();
  }
  try {
    return &get(packed, w.data, want, stream);
  } catch (const dnnl::error&) {
  }
  // Some layouts (Winograd's transformed filters) are reordered into from plain ones alone: the
  // packed weight goes back to its plain layout first, then into `want`, held by this kernel.
  dnnl::memory from(packed, cpu_engine(), const_cast<void*>(w.data));
  dnnl::memory plain(row_major(packed.dims(), packed.data_type()), cpu_engine());
  auto to = std::make_shared<dnnl::memory>(want, cpu_engine());
  dnnl::reorder(from, plain).execute(stream, from, plain);
  dnnl::reorder(plain, *to).execute(stream, plain, *to);
  stream.wait();
  held_.emplace_back(want, to);
  return to.get();
}

const dnnl::memory* PackedWeights::held(const dnnl::memory::desc& want) const {
  auto own = std::find_if(held_.begin(), held_.end(), [&](const auto& e) { return e.first == want; });
  return own == held_.end() ? nullptr : own->second.get();
}

size_t PackedWeights::live() {
  std::lock_guard<std::mutex> lock(packings_mutex);
  size_t n = 0;
  for (const Packing& p : packings()) n += p.packed.expired() ? 0 : 1;
  return n;
}

dnnl::memory OnednnStep::bound(const dnnl::memory::desc& md, bool output, size_t view) {
  dnnl::memory m(md, cpu_engine(), nullptr);
  bindings.push_back({m, output, view});
  return m;
}

void OnednnStep::bind(int arg, const dnnl::memory::desc& md, bool output, size_t view) {
  args[arg] = bound(md, output, view);
}

int64_t OnednnStep::workspace_share(const dnnl::memory::desc& md) {
  return (static_cast<int64_t>(md.get_size()) + 63) / 64 * 64;
}

dnnl::memory OnednnStep::scratch(int arg, const dnnl::memory::desc& md) {
  dnnl::memory own(md, cpu_engine());
  dnnl::memory m(md, cpu_engine(), own.get_data_handle());
  scratch_args.push_back({m, own, workspace_bytes});
  workspace_bytes += workspace_share(md);
  args[arg] = m;
  return m;
}

void OnednnStep::reorder_in(const dnnl::memory::desc& md, size_t view, const dnnl::memory& to) {
  dnnl::memory from = bound(md, false, view);
  before.push_back({dnnl::reorder(from, to), {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}}});
}

void OnednnStep::reorder_out(const dnnl::memory& from, const dnnl::memory::desc& md, size_t view) {
  dnnl::memory to = bound(md, true, view);
  after.push_back({dnnl::reorder(from, to), {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}}});
}

void OnednnStep::in_place_after(const dnnl::primitive& primitive, const dnnl::memory::desc& md, size_t view) {
  dnnl::memory m = bound(md, true, view);
  after.push_back({primitive, {{DNNL_ARG_SRC, m}, {DNNL_ARG_DST, m}}});
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
  auto it = prepared_.find(key_of(in));
  if (it == prepared_.end()) return runtime_error("{}: these input shapes were not prepared", node_.describe());
  OnednnStep& s = *it->second;
  if (s.empty) return {};
  try {
    for (OnednnStep::Binding& b : s.bindings) {
      b.memory.set_data_handle(b.output ? out[b.view].data : in[b.view].data);
    }
    // Scratch in the context's workspace, shared by every step: the bytes stay in cache from one
    // step to the next, where each step's own would be cold.
    const bool shared = ctx.workspace && ctx.workspace_bytes >= s.workspace_bytes;
    for (OnednnStep::Scratch& sc : s.scratch_args) {
      sc.memory.set_data_handle(shared ? static_cast<uint8_t*>(ctx.workspace) + sc.offset : sc.own.get_data_handle());
    }
    if (s.accumulate_from >= 0) {
      const void* from = in[static_cast<size_t>(s.accumulate_from)].data;
      if (from != out[0].data) std::memcpy(out[0].data, from, s.output_bytes);
    }
    for (OnednnStep::Extra& e : s.before) e.primitive.execute(stream_, e.args);
    s.primitive.execute(stream_, s.args);
    for (OnednnStep::Extra& e : s.after) e.primitive.execute(stream_, e.args);
    stream_.wait();
  } catch (const dnnl::error& e) {
    return onednn_error("running " + node_.describe(), e);
  }
  return {};
}

}  // namespace kiln::cpu
