#include "backends/attention_shape.h"

#include <cmath>

#include "ops/fused.h"

namespace kiln {
namespace {

int64_t attr_i(const Node& n, const char* key, int64_t def) {
  const Attribute* a = n.attr(key);
  return a ? a->i : def;
}

bool has_input(const Node& n, size_t i) {
  return n.inputs.size() > i && n.inputs[i] != nullptr;
}

bool is_packed(const Node& n) {
  return n.domain == kKilnDomain && n.op_type == "PackedAttention";
}

bool mask_type_supported(const Value* m) {
  if (m->type.dtype != DataType::kBool && !is_float(m->type.dtype)) return false;
  return !m->type.shape.rank_known || (m->type.shape.rank() >= 1 && m->type.shape.rank() <= 4);
}

}  // namespace

bool attention_head_sizes(const Node& n, int64_t* head, int64_t* v_head) {
  if (is_packed(n)) {
    const Shape& x = n.inputs[0]->type.shape;
    const int64_t hq = attr_i(n, "q_num_heads", 0), hk = attr_i(n, "kv_num_heads", 0);
    if (!x.rank_known || x.rank() != 3 || hq <= 0 || hk <= 0 || !x.dims[2].known()) return false;
    if (x.dims[2].value % (hq + 2 * hk) != 0) return false;
    *head = *v_head = x.dims[2].value / (hq + 2 * hk);
    return *head > 0;
  }
  const Shape& q = n.inputs[0]->type.shape;
  const Shape& v = n.inputs[2]->type.shape;
  if (!q.rank_known || !v.rank_known || q.rank() != v.rank()) return false;
  if (q.rank() == 4) {
    *head = q.dims[3].value;
    *v_head = v.dims[3].value;
  } else if (q.rank() == 3) {
    const int64_t hq = attr_i(n, "q_num_heads", 0), hk = attr_i(n, "kv_num_heads", 0);
    if (hq <= 0 || hk <= 0 || !q.dims[2].known() || !v.dims[2].known()) return false;
    *head = q.dims[2].value / hq;
    *v_head = v.dims[2].value / hk;
  } else {
    return false;
  }
  return *head > 0 && *v_head > 0;
}

bool attention_form_supported(const Node& n, int64_t* head, int64_t* v_head) {
  if (is_packed(n)) {
    if (n.inputs.empty() || !n.inputs[0] || n.inputs.size() > 2 || !is_float(n.inputs[0]->type.dtype)) return false;
    if (has_input(n, 1) && !mask_type_supported(n.inputs[1])) return false;
  } else {
    if (!n.domain.empty() || n.op_type != "Attention" || n.inputs.size() < 3) return false;
    for (size_t i = 0; i < 3; ++i) {
      if (!n.inputs[i] || !is_float(n.inputs[i]->type.dtype)) return false;
    }
    for (size_t i = 4; i < n.inputs.size(); ++i) {
      if (n.inputs[i]) return false;  // a KV cache or nonpad_kv_seqlen
    }
    if (has_input(n, 3) && !mask_type_supported(n.inputs[3])) return false;
    const Attribute* softcap = n.attr("softcap");
    if (softcap && softcap->f != 0.0f) return false;
    if (attr_i(n, "left_window_size", -1) != -1 || attr_i(n, "right_window_size", -1) != -1) return false;
  }
  for (size_t i = 1; i < n.outputs.size(); ++i) {
    if (n.outputs[i]) return false;  // present_key / present_value / qk_matmul_output
  }
  return attention_head_sizes(n, head, v_head);
}

Status attention_common(const Node& n, std::span<const TensorView> in, size_t mask_input, AttentionShape* s);

Result<Dims> attention_shape(const Node& n, std::span<const TensorView> in, AttentionShape* s, AttentionInputs* where) {
  *where = AttentionInputs{};
  if (is_packed(n)) {
    // [B, S, (Hq + 2 Hkv) * D]: Q, K and V column blocks, each row of the three a token's.
    const Dims& x = in[0].dims;
    s->q_heads = attr_i(n, "q_num_heads", 0);
    s->kv_heads = attr_i(n, "kv_num_heads", 0);
    if (x.size() != 3 || s->q_heads <= 0 || s->kv_heads <= 0 || x[2] % (s->q_heads + 2 * s->kv_heads) != 0) {
      return invalid("packed Q, K and V of shape {} for {} query and {} key/value heads", shape_to_string(x),
                     s->q_heads, s->kv_heads);
    }
    // Sequence-first ([S, B, width] in, [S, B, Hq * Dv] out): a token's row is s * B + b.
    const bool seq_first = attr_i(n, "seq_first", 0) != 0;
    s->batch = seq_first ? x[1] : x[0];
    s->q_len = s->kv_len = seq_first ? x[0] : x[1];
    s->head = s->v_head = x[2] / (s->q_heads + 2 * s->kv_heads);
    s->q = s->k = s->v = seq_first ? HeadStrides{x[2], s->head, x[1] * x[2]} : HeadStrides{x[1] * x[2], s->head, x[2]};
    where->q = where->k = where->v = 0;
    where->mask = 1;
    where->k_offset = s->q_heads * s->head;
    where->v_offset = (s->q_heads + s->kv_heads) * s->head;
    const int64_t width = s->q_heads * s->v_head;
    const Dims out = {x[0], x[1], width};
    s->o = seq_first ? HeadStrides{width, s->v_head, x[1] * width} : HeadStrides{x[1] * width, s->v_head, width};
    KILN_RETURN_IF_ERROR(attention_common(n, in, where->mask, s));
    return out;
  }
  const Dims& q = in[0].dims;
  const Dims& k = in[1].dims;
  const Dims& v = in[2].dims;
  if (q.size() != k.size() || q.size() != v.size() || (q.size() != 3 && q.size() != 4)) {
    return invalid("Q, K and V must all be 3-D or all 4-D, got {}, {} and {}", shape_to_string(q), shape_to_string(k),
                   shape_to_string(v));
  }
  s->batch = q[0];
  if (k[0] != s->batch || v[0] != s->batch) return invalid("Q, K and V must have the same batch size");
  Dims out;
  if (q.size() == 3) {
    s->q_heads = attr_i(n, "q_num_heads", 0);
    s->kv_heads = attr_i(n, "kv_num_heads", 0);
    if (s->q_heads <= 0 || s->kv_heads <= 0) return invalid("3-D Attention needs q_num_heads and kv_num_heads");
    if (q[2] % s->q_heads || k[2] % s->kv_heads || v[2] % s->kv_heads) {
      return invalid("hidden sizes {}, {}, {} are not divisible by the head counts", q[2], k[2], v[2]);
    }
    s->q_len = q[1];
    s->kv_len = k[1];
    s->head = q[2] / s->q_heads;
    s->v_head = v[2] / s->kv_heads;
    if (k[2] / s->kv_heads != s->head || v[1] != s->kv_len) return invalid("K and V do not match Q");
    s->q = {q[1] * q[2], s->head, q[2]};
    s->k = {k[1] * k[2], s->head, k[2]};
    s->v = {v[1] * v[2], s->v_head, v[2]};
    out = {s->batch, s->q_len, s->q_heads * s->v_head};
    s->o = {out[1] * out[2], s->v_head, out[2]};
  } else {
    s->q_heads = q[1];
    s->kv_heads = k[1];
    s->q_len = q[2];
    s->kv_len = k[2];
    s->head = q[3];
    s->v_head = v[3];
    if (v[1] != s->kv_heads || k[3] != s->head || v[2] != s->kv_len) return invalid("K and V do not match Q");
    s->q = {q[1] * q[2] * q[3], q[2] * q[3], q[3]};
    s->k = {k[1] * k[2] * k[3], k[2] * k[3], k[3]};
    s->v = {v[1] * v[2] * v[3], v[2] * v[3], v[3]};
    out = {s->batch, s->q_heads, s->q_len, s->v_head};
    s->o = {out[1] * out[2] * out[3], out[2] * out[3], out[3]};
  }
  KILN_RETURN_IF_ERROR(attention_common(n, in, 3, s));
  return out;
}

// What both forms share: grouped heads, the scale, causality and the mask's broadcast (input
// `mask_input`).
Status attention_common(const Node& n, std::span<const TensorView> in, size_t mask_input, AttentionShape* s) {
  if (s->kv_heads == 0 || s->q_heads % s->kv_heads != 0) {
    return invalid("query heads ({}) must be a multiple of key/value heads ({})", s->q_heads, s->kv_heads);
  }
  const Attribute* scale = n.attr("scale");
  s->scale = scale ? scale->f : static_cast<float>(1.0 / std::sqrt(static_cast<double>(s->head)));
  s->causal = attr_i(n, "is_causal", 0) != 0;
  s->mask_dtype = DataType::kUndefined;
  if (in.size() > mask_input && !in[mask_input].omitted) {
    const Dims& m = in[mask_input].dims;
    if (m.empty() || m.size() > 4) return invalid("attn_mask must have rank 1 to 4, not {}", m.size());
    int64_t md[4] = {1, 1, 1, 1};
    for (size_t i = 0; i < m.size(); ++i) md[4 - m.size() + i] = m[i];
    const int64_t full[3] = {s->batch, s->q_heads, s->q_len};
    for (int i = 0; i < 3; ++i) {
      if (md[i] != 1 && md[i] != full[i]) {
        return invalid("attn_mask {} does not broadcast to [{}, {}, {}, {}]", shape_to_string(m), s->batch, s->q_heads,
                       s->q_len, s->kv_len);
      }
    }
    if (md[3] > s->kv_len) return invalid("attn_mask's last dim ({}) exceeds the key length ({})", md[3], s->kv_len);
    s->mask_dtype = in[mask_input].storage.dtype;
    s->mask_len = md[3];
    s->mask_key = 1;
    s->mask_row = md[2] == 1 ? 0 : md[3];
    s->mask_head = md[1] == 1 ? 0 : md[2] * md[3];
    s->mask_batch = md[0] == 1 ? 0 : md[1] * md[2] * md[3];
  }
  return {};
}

}  // namespace kiln
