// The "cudnn-sdpa" tactic of Attention: cuDNN's fused scaled dot-product attention (FlashAttention
// style, FP32 softmax statistics) through the graph API. Q, K, V and the output are given to cuDNN
// as [batch, heads, seq, head] views with the strides of the node's 3-D or 4-D form; an additive
// mask is its bias, broadcast through zero strides. One graph per input shape, built when the
// shape is first prepared; a shape cuDNN cannot run falls back to Kiln's attention kernel.
#include <cudnn.h>
#include <cudnn_frontend.h>

#include <atomic>
#include <map>
#include <mutex>

#include "backends/cuda/attention_kernel.h"
#include "backends/cuda/cudnn_frontend_util.h"
#include "backends/cuda/kernels/attention.h"

namespace fe = cudnn_frontend;

namespace kiln::cuda {
namespace {

std::atomic<int64_t> g_sdpa_runs{0};
std::mutex g_fallback_mu;
std::string g_last_fallback;

std::vector<int64_t> dims4(int64_t b, int64_t h, int64_t s, int64_t d) {
  return {b, h, s, d};
}
std::vector<int64_t> strides4(const HeadStrides& st) {
  return {st.batch, st.head, st.seq, 1};
}

class SdpaKernel : public DeviceKernel {
 public:
  SdpaKernel(const Node& n, DataType dt) : node_(n), dtype_(dt) {}

  Status prepare(std::span<const TensorView> in, std::span<const TensorView> out) override {
    (void)out;
    return graph_for(in).status();
  }

  Status enqueue(std::span<const TensorView> in, std::span<TensorView> out, const KernelContext& ctx) override {
    AttentionShape s;
    AttentionInputs w;
    KILN_ASSIGN_OR_RETURN(out[0].dims, attention_shape(node_, in, &s, &w));
    const bool masked = in.size() > w.mask && !in[w.mask].omitted;
    const void* mask = masked ? input_data(in[w.mask], w.mask) : nullptr;
    const size_t es = dtype_size(dtype_);
    auto at = [&](size_t k, int64_t offset) -> void* {
      return const_cast<uint8_t*>(static_cast<const uint8_t*>(input_data(in[k], k))) +
             offset * static_cast<int64_t>(es);
    };
    void* q = at(w.q, w.q_offset);
    void* k = at(w.k, w.k_offset);
    void* v = at(w.v, w.v_offset);
    KILN_ASSIGN_OR_RETURN(Prepared * p, graph_for(in));
    if (p->graph && p->workspace > ctx.workspace_bytes) {
      p->graph.reset();
      p->why = "cuDNN asks for " + std::to_string(p->workspace) + " bytes of workspace, " +
               std::to_string(ctx.workspace_bytes) + " given";
      std::lock_guard<std::mutex> lock(g_fallback_mu);
      g_last_fallback = p->why;
    }
    if (!p->graph || s.batch == 0 || s.q_len == 0 || s.kv_len == 0) {
      return launch_attention(s, dtype_, q, k, v, mask, out[0].data, ctx.stream);
    }
    std::unordered_map<std::shared_ptr<fe::graph::Tensor_attributes>, void*> pack;
    pack[p->q] = q;
    pack[p->k] = k;
    pack[p->v] = v;
    if (p->bias) pack[p->bias] = const_cast<void*>(mask);
    pack[p->o] = out[0].data;
    KILN_ASSIGN_OR_RETURN(void* h, cudnn_stream_handle(ctx.stream));
    KILN_FE_CHECK(p->graph->execute(static_cast<cudnnHandle_t>(h), pack, ctx.workspace), "running attention");
    g_sdpa_runs.fetch_add(1);
    return {};
  }

 private:
  struct Prepared {
    std::shared_ptr<fe::graph::Graph> graph;  // null: Kiln's kernel runs this shape
    std::shared_ptr<fe::graph::Tensor_attributes> q, k, v, bias, o;
    int64_t workspace = 0;
    std::string why;  // why cuDNN does not run it
  };

  Result<Prepared*> graph_for(std::span<const TensorView> in) {
    std::string key;
    for (const TensorView& t : in) key += (t.omitted ? std::string("-") : shape_to_string(t.dims)) + ";";
    if (auto it = cache_.find(key); it != cache_.end()) return it->second.get();
    AttentionShape s;
    AttentionInputs w;
    KILN_RETURN_IF_ERROR(attention_shape(node_, in, &s, &w).status());
    auto p = std::make_unique<Prepared>();
    const TensorView none;
    Status made = make_graph(s, w.mask < in.size() ? in[w.mask] : none, p.get());
    if (!made.ok()) {
      p->graph.reset();
      p->why = made.message();
      std::lock_guard<std::mutex> lock(g_fallback_mu);
      g_last_fallback = p->why;
    }
    Prepared* raw = p.get();
    cache_.emplace(key, std::move(p));
    return raw;
  }

  // `mask`: the mask input's view, read where `s` has a mask.
  Status make_graph(const AttentionShape& s, const TensorView& mask, Prepared* p) {
    if (s.batch == 0 || s.q_len == 0 || s.kv_len == 0) return invalid("empty attention");
    if (s.mask_dtype != DataType::kUndefined) {
      if (!is_float(s.mask_dtype)) return invalid("cuDNN takes additive masks only");
      if (s.mask_len != s.kv_len) return invalid("the mask does not cover every key");
    }
    auto g = std::make_shared<fe::graph::Graph>();
    g->set_io_data_type(fe_type(dtype_))
        .set_intermediate_data_type(fe::DataType_t::FLOAT)
        .set_compute_data_type(fe::DataType_t::FLOAT);
    p->q = g->tensor(fe::graph::Tensor_attributes()
                         .set_name("Q")
                         .set_dim(dims4(s.batch, s.q_heads, s.q_len, s.head))
                         .set_stride(strides4(s.q)));
    p->k = g->tensor(fe::graph::Tensor_attributes()
                         .set_name("K")
                         .set_dim(dims4(s.batch, s.kv_heads, s.kv_len, s.head))
                         .set_stride(strides4(s.k)));
    p->v = g->tensor(fe::graph::Tensor_attributes()
                         .set_name("V")
                         .set_dim(dims4(s.batch, s.kv_heads, s.kv_len, s.v_head))
                         .set_stride(strides4(s.v)));
    auto options = fe::graph::SDPA_attributes()
                       .set_name("attention")
                       .set_generate_stats(false)
                       .set_attn_scale(s.scale)
                       .set_causal_mask(s.causal);
    if (s.mask_dtype != DataType::kUndefined) {
      // Broadcast axes of the mask: size 1 (with the packed stride) for batch and heads, stride 0
      // for query rows.
      const int64_t rows = s.mask_row ? s.q_len : 1;
      const int64_t heads = s.mask_head ? s.q_heads : 1;
      const std::vector<int64_t> bd = {s.mask_batch ? s.batch : 1, heads, s.q_len, s.kv_len};
      const std::vector<int64_t> bs = {s.mask_batch ? s.mask_batch : heads * rows * s.kv_len,
                                       s.mask_head ? s.mask_head : rows * s.kv_len, s.mask_row, 1};
      p->bias = g->tensor(fe::graph::Tensor_attributes().set_name("bias").set_dim(bd).set_stride(bs).set_data_type(
          fe_type(mask.storage.dtype)));
      options.set_bias(p->bias);
    }
    auto [o, stats] = g->sdpa(p->q, p->k, p->v, options);
    (void)stats;
    o->set_output(true).set_dim(dims4(s.batch, s.q_heads, s.q_len, s.v_head)).set_stride(strides4(s.o));
    p->o = o;
    KILN_RETURN_IF_ERROR(with_cudnn_build_handle([&](void* handle) -> Status {
      auto h = static_cast<cudnnHandle_t>(handle);
      KILN_FE_CHECK(g->validate(), "validating an attention graph");
      KILN_FE_CHECK(g->build_operation_graph(h), "building an attention graph");
      KILN_FE_CHECK(g->create_execution_plans({fe::HeurMode_t::A, fe::HeurMode_t::FALLBACK}),
                    "choosing attention engines");
      g->deselect_workspace_greater_than(kSdpaWorkspace);
      KILN_FE_CHECK(g->check_support(h), "checking attention support");
      KILN_FE_CHECK(g->build_plans(h), "building attention plans");
      return {};
    }));
    KILN_FE_CHECK(g->get_workspace_size(p->workspace), "reading the attention workspace");
    p->graph = std::move(g);
    return {};
  }

  const Node& node_;
  DataType dtype_;
  std::map<std::string, std::unique_ptr<Prepared>> cache_;
};

}  // namespace

int64_t sdpa_runs() {
  return g_sdpa_runs.load();
}

std::string last_sdpa_fallback() {
  std::lock_guard<std::mutex> lock(g_fallback_mu);
  return g_last_fallback;
}

bool sdpa_supports(const Node& n, DataType precision) {
  if (precision != DataType::kFloat16 && precision != DataType::kBFloat16) return false;
  // An additive mask only: Attention's input 3, kiln.PackedAttention's input 1.
  const size_t mask = n.domain == "kiln" && n.op_type == "PackedAttention" ? 1 : 3;
  if (n.inputs.size() > mask && n.inputs[mask] && !is_float(n.inputs[mask]->type.dtype)) return false;
  // Head sizes: multiples of 8 up to 128 (what cuDNN's Hopper and Ampere engines share).
  int64_t head = 0, v_head = 0;
  if (!attention_head_sizes(n, &head, &v_head)) return false;
  return head % 8 == 0 && v_head % 8 == 0 && head <= 128 && v_head <= 128;
}

Result<std::unique_ptr<DeviceKernel>> make_sdpa_kernel(const Node& n, DataType precision) {
  return std::unique_ptr<DeviceKernel>(std::make_unique<SdpaKernel>(n, precision));
}

}  // namespace kiln::cuda
