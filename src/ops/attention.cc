// Attention (opset 23-25), RotaryEmbedding (opset 23) and kiln.PackedAttention (Attention's 3-D
// form on Q, K and V packed side by side in one tensor, what merge-qkv-projections makes).
//
// The kernels compute in double but round every intermediate to the operator's element type at
// the points where the ONNX reference does, so that float16/bfloat16 results agree with the
// reference bit for bit in the common case (a single rounding difference in bfloat16 is already
// ~0.4% relative error). Matrix products accumulate in float for the narrow types, as NumPy does.
#include <cmath>
#include <cstring>
#include <limits>
#include <optional>

#include "core/dispatch.h"
#include "ops/attention_common.h"
#include "ops/registry.h"

namespace kiln {

void register_attention_extra_ops(OpRegistry& r);  // attention_linear.cc

namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

// Dimensions of one Attention call after the 3D inputs are viewed as 4D.
struct AttnDims {
  int64_t batch = 0, q_heads = 0, kv_heads = 0, q_len = 0, kv_new = 0, past = 0, head = 0, v_head = 0;
  bool three_d = false;
  int64_t kv_len() const { return past + kv_new; }
};

// Reads a (B, S, H*D) or (B, H, S, D) tensor into (B, H, S, D) order, rounded through `dt`.
std::vector<double> to_bhsd(const Tensor& t, bool three_d, int64_t b, int64_t h, int64_t s, int64_t d) {
  std::vector<double> out(static_cast<size_t>(b * h * s * d));
  for (int64_t bi = 0; bi < b; ++bi)
    for (int64_t hi = 0; hi < h; ++hi)
      for (int64_t si = 0; si < s; ++si)
        for (int64_t di = 0; di < d; ++di) {
          int64_t src = three_d ? ((bi * s + si) * h + hi) * d + di : ((bi * h + hi) * s + si) * d + di;
          out[static_cast<size_t>(((bi * h + hi) * s + si) * d + di)] = t.get_double(src);
        }
  return out;
}

// present = concat(past, new) along the sequence axis, in (B, H, P+S, D) layout and the new
// tensor's dtype. `fresh` is K or V as given (3D or 4D).
Tensor concat_cache(const Tensor* past, const Tensor& fresh, bool three_d, int64_t b, int64_t h, int64_t p, int64_t s,
                    int64_t d) {
  Tensor out(fresh.dtype(), {b, h, p + s, d});
  for (int64_t bi = 0; bi < b; ++bi)
    for (int64_t hi = 0; hi < h; ++hi) {
      int64_t base = (bi * h + hi) * (p + s) * d;
      if (past && p > 0) copy_elements(out, base, *past, (bi * h + hi) * p * d, p * d);
      for (int64_t si = 0; si < s; ++si) {
        int64_t src = three_d ? ((bi * s + si) * h + hi) * d : ((bi * h + hi) * s + si) * d;
        copy_elements(out, base + (p + si) * d, fresh, src, d);
      }
    }
  return out;
}

Status attention_kernel(OpContext& ctx) {
  const Tensor& q = ctx.input(0);
  const Tensor& k = ctx.input(1);
  const Tensor& v = ctx.input(2);
  const DataType dt = q.dtype();
  if (!is_float(dt) || !is_float(k.dtype()) || !is_float(v.dtype()))
    return invalid("Attention expects floating-point Q, K and V");
  if (q.rank() != k.rank() || q.rank() != v.rank() || (q.rank() != 3 && q.rank() != 4))
    return invalid("Q, K and V must all be 3D or all 4D, got {}, {} and {}", shape_to_string(q.dims()),
                   shape_to_string(k.dims()), shape_to_string(v.dims()));
  const bool has_past_k = ctx.has_input(4), has_past_v = ctx.has_input(5);
  if (has_past_k != has_past_v) return invalid("past_key and past_value must be given together");
  const bool has_nonpad = ctx.has_input(6);
  if (has_nonpad && has_past_k) return invalid("nonpad_kv_seqlen cannot be combined with past_key/past_value");

  AttnDims a;
  a.three_d = q.rank() == 3;
  a.batch = q.dim(0);
  if (k.dim(0) != a.batch || v.dim(0) != a.batch) return invalid("Q, K and V must have the same batch size");
  if (a.three_d) {
    a.q_heads = ctx.attr_int("q_num_heads", 0);
    a.kv_heads = ctx.attr_int("kv_num_heads", 0);
    if (a.q_heads <= 0 || a.kv_heads <= 0)
      return invalid("3D Attention inputs need positive q_num_heads and kv_num_heads attributes");
    if (q.dim(2) % a.q_heads || k.dim(2) % a.kv_heads || v.dim(2) % a.kv_heads)
      return invalid("hidden sizes {}, {}, {} are not divisible by the head counts {} and {}", q.dim(2), k.dim(2),
                     v.dim(2), a.q_heads, a.kv_heads);
    a.q_len = q.dim(1);
    a.kv_new = k.dim(1);
    a.head = q.dim(2) / a.q_heads;
    if (k.dim(2) / a.kv_heads != a.head) return invalid("Q and K head sizes differ");
    a.v_head = v.dim(2) / a.kv_heads;
    if (v.dim(1) != a.kv_new) return invalid("K and V sequence lengths differ");
  } else {
    if (ctx.opset() >= 25 && (ctx.has_attr("q_num_heads") || ctx.has_attr("kv_num_heads")))
      return invalid("q_num_heads and kv_num_heads must not be given for 4D inputs");
    a.q_heads = q.dim(1);
    a.kv_heads = k.dim(1);
    if (v.dim(1) != a.kv_heads) return invalid("K and V head counts differ");
    a.q_len = q.dim(2);
    a.kv_new = k.dim(2);
    a.head = q.dim(3);
    if (k.dim(3) != a.head) return invalid("Q and K head sizes differ ({} vs {})", a.head, k.dim(3));
    a.v_head = v.dim(3);
    if (v.dim(2) != a.kv_new) return invalid("K and V sequence lengths differ");
  }
  if (a.kv_heads == 0 || a.q_heads % a.kv_heads != 0)
    return invalid("q heads ({}) must be a multiple of kv heads ({})", a.q_heads, a.kv_heads);
  const Tensor* past_k = has_past_k ? &ctx.input(4) : nullptr;
  const Tensor* past_v = has_past_v ? &ctx.input(5) : nullptr;
  if (past_k) {
    if (past_k->rank() != 4 || past_v->rank() != 4 || past_k->dim(0) != a.batch || past_k->dim(1) != a.kv_heads ||
        past_k->dim(3) != a.head || past_v->dim(0) != a.batch || past_v->dim(1) != a.kv_heads ||
        past_v->dim(3) != a.v_head || past_v->dim(2) != past_k->dim(2))
      return invalid("past_key {} / past_value {} do not match (batch, kv_heads, past, head_size)",
                     shape_to_string(past_k->dims()), shape_to_string(past_v->dims()));
    if (past_k->dtype() != k.dtype() || past_v->dtype() != v.dtype())
      return invalid("past_key/past_value element types differ from K/V");
    a.past = past_k->dim(2);
  }
  const int64_t kv_len = a.kv_len();
  const int64_t B = a.batch, H = a.q_heads, Sq = a.q_len, D = a.head, Dv = a.v_head;
  const int64_t group = a.q_heads / a.kv_heads;

  std::vector<int64_t> nonpad;
  if (has_nonpad) {
    const Tensor& np = ctx.input(6);
    if (np.numel() != B) return invalid("nonpad_kv_seqlen must have batch_size ({}) elements", B);
    nonpad = np.to_int64_vector();
  }

  // Additive bias of shape (B, H, Sq, kv_len), built only when something masks.
  const bool causal = ctx.attr_int("is_causal", 0) != 0;
  const int64_t left_win = ctx.attr_int("left_window_size", -1);
  const int64_t right_win = ctx.attr_int("right_window_size", -1);
  if (left_win < -1 || right_win < -1) return invalid("window sizes must be -1 or nonnegative");
  const bool windowed = left_win >= 0 || right_win >= 0;
  const bool has_mask = ctx.has_input(3);
  const bool use_bias = has_mask || causal || windowed || has_nonpad;
  std::vector<double> bias;
  if (use_bias) {
    bias.assign(static_cast<size_t>(B * H * Sq * kv_len), 0.0);
    if (has_mask) {
      const Tensor& m = ctx.input(3);
      if (m.rank() > 4 || m.rank() < 1) return invalid("attn_mask must have rank 1 to 4");
      const bool is_bool = m.dtype() == DataType::kBool;
      if (!is_bool && !is_float(m.dtype())) return invalid("attn_mask must be bool or floating-point");
      const int64_t mlast = m.dim(-1);
      if (mlast > kv_len) return invalid("attn_mask's last dim ({}) exceeds the kv length ({})", mlast, kv_len);
      // Right-aligned broadcast of the (padded) mask against (B, H, Sq, kv_len).
      const int64_t full[4] = {B, H, Sq, kv_len};
      int64_t mdims[4] = {1, 1, 1, 1};
      for (int64_t i = 0; i < m.rank(); ++i) mdims[4 - m.rank() + i] = m.dim(i);
      for (int i = 0; i < 3; ++i)
        if (mdims[i] != 1 && mdims[i] != full[i])
          return invalid("attn_mask {} does not broadcast to {}", shape_to_string(m.dims()),
                         shape_to_string(Dims(full, full + 4)));
      int64_t mstride[4];
      mstride[3] = 1;
      for (int i = 2; i >= 0; --i) mstride[i] = mstride[i + 1] * mdims[i + 1];
      std::vector<double> mv = m.to_double_vector();
      for (int64_t b = 0; b < B; ++b)
        for (int64_t h = 0; h < H; ++h)
          for (int64_t i = 0; i < Sq; ++i) {
            int64_t mrow = (mdims[0] == 1 ? 0 : b) * mstride[0] + (mdims[1] == 1 ? 0 : h) * mstride[1] +
                           (mdims[2] == 1 ? 0 : i) * mstride[2];
            double* row = &bias[static_cast<size_t>(((b * H + h) * Sq + i) * kv_len)];
            for (int64_t j = 0; j < kv_len; ++j) {
              double x;
              if (j >= mlast) {
                x = kNegInf;  // a short mask is padded with "not allowed"
              } else {
                int64_t jj = mdims[3] == 1 ? 0 : j;
                double mvv = mv[static_cast<size_t>(mrow + jj)];
                x = is_bool ? (mvv != 0 ? 0.0 : kNegInf) : round_to(dt, mvv);
              }
              row[j] = x;
            }
          }
    }
    for (int64_t b = 0; b < B; ++b) {
      // Keys preceding the query block: the internal cache, or the external cache's fill level.
      const int64_t offset = past_k ? a.past : (has_nonpad ? nonpad[static_cast<size_t>(b)] - Sq : 0);
      for (int64_t h = 0; h < H; ++h)
        for (int64_t i = 0; i < Sq; ++i) {
          double* row = &bias[static_cast<size_t>(((b * H + h) * Sq + i) * kv_len)];
          const int64_t p = i + offset;
          for (int64_t j = 0; j < kv_len; ++j) {
            bool allowed = true;
            if (causal && j > p) allowed = false;
            if (left_win >= 0 && p - j > left_win) allowed = false;
            if (right_win >= 0 && j - p > right_win) allowed = false;
            if (has_nonpad && j >= nonpad[static_cast<size_t>(b)]) allowed = false;
            if (!allowed) row[j] = kNegInf;
          }
        }
    }
  }

  const int64_t mode = ctx.attr_int("qk_matmul_output_mode", 0);
  if (mode < 0 || mode > 3) return invalid("qk_matmul_output_mode must be 0..3, got {}", mode);
  DataType sm_dt = dt;
  if (ctx.has_attr("softmax_precision")) {
    int64_t sp = ctx.attr_int("softmax_precision", 1);
    if (sp != 1 && sp != 10 && sp != 11 && sp != 16) return invalid("unsupported softmax_precision {}", sp);
    sm_dt = static_cast<DataType>(sp);
  }
  const double softcap = ctx.attr_float("softcap", 0.0f);
  const double scale_attr = ctx.has_attr("scale") ? ctx.attr_float("scale", 1.0f) : 1.0 / std::sqrt(double(D));
  // The reference scales Q and K by sqrt(scale) each, in the element type.
  const double sc = round_to(dt, std::sqrt(scale_attr));

  std::vector<double> qv = to_bhsd(q, a.three_d, B, H, Sq, D);
  for (double& x : qv) x = round_to(dt, x * sc);
  Tensor present_k = concat_cache(past_k, k, a.three_d, B, a.kv_heads, a.past, a.kv_new, D);
  Tensor present_v = concat_cache(past_v, v, a.three_d, B, a.kv_heads, a.past, a.kv_new, Dv);
  std::vector<double> kv = present_k.to_double_vector();
  for (double& x : kv) x = round_to(dt, x * sc);
  std::vector<double> vv = present_v.to_double_vector();

  Tensor y(dt, a.three_d ? Dims{B, Sq, H * Dv} : Dims{B, H, Sq, Dv});
  const bool want_qk = ctx.output_wanted(3);
  Tensor qk_out;
  if (want_qk) qk_out = Tensor(dt, {B, H, Sq, kv_len});
  const double cap = round_to(dt, softcap);
  std::vector<double> raw(static_cast<size_t>(kv_len)), s(static_cast<size_t>(kv_len)), p(static_cast<size_t>(kv_len));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      const int64_t kh = h / group;
      const double* kbase = &kv[static_cast<size_t>((b * a.kv_heads + kh) * kv_len * D)];
      const double* vbase = &vv[static_cast<size_t>((b * a.kv_heads + kh) * kv_len * Dv)];
      for (int64_t i = 0; i < Sq; ++i) {
        const double* qrow = &qv[static_cast<size_t>(((b * H + h) * Sq + i) * D)];
        const double* brow = use_bias ? &bias[static_cast<size_t>(((b * H + h) * Sq + i) * kv_len)] : nullptr;
        for (int64_t j = 0; j < kv_len; ++j) raw[j] = dot_rounded(dt, qrow, 1, kbase + j * D, 1, D);
        bool row_masked = use_bias && kv_len > 0;
        for (int64_t j = 0; j < kv_len; ++j) {
          double x = raw[j];
          if (softcap > 0) x = round_to(dt, round_to(dt, std::tanh(round_to(dt, x / cap))) * cap);
          s[j] = x;
          if (brow) {
            if (brow[j] != kNegInf) row_masked = false;
            p[j] = round_to(dt, x + brow[j]);
          } else {
            p[j] = x;
          }
        }
        const int64_t out_row = ((b * H + h) * Sq + i) * kv_len;
        if (want_qk && mode == 0)
          for (int64_t j = 0; j < kv_len; ++j) qk_out.set_double(out_row + j, raw[j]);
        if (want_qk && mode == 1)
          for (int64_t j = 0; j < kv_len; ++j) qk_out.set_double(out_row + j, s[j]);
        if (want_qk && mode == 2)
          for (int64_t j = 0; j < kv_len; ++j) qk_out.set_double(out_row + j, p[j]);
        for (int64_t j = 0; j < kv_len; ++j) p[j] = round_to(sm_dt, p[j]);
        softmax_rounded(sm_dt, p.data(), kv_len);
        // A row with no attendable key is zero, decided on the bias rather than on the logits.
        for (int64_t j = 0; j < kv_len; ++j) p[j] = row_masked ? 0.0 : round_to(dt, p[j]);
        if (want_qk && mode == 3)
          for (int64_t j = 0; j < kv_len; ++j) qk_out.set_double(out_row + j, p[j]);
        for (int64_t d = 0; d < Dv; ++d) {
          double r = dot_rounded(dt, p.data(), 1, vbase + d, Dv, kv_len);
          int64_t yi = a.three_d ? ((b * Sq + i) * H + h) * Dv + d : ((b * H + h) * Sq + i) * Dv + d;
          y.set_double(yi, r);
        }
      }
    }
  ctx.set_output(0, std::move(y));
  if (ctx.output_wanted(1)) ctx.set_output(1, std::move(present_k));
  if (ctx.output_wanted(2)) ctx.set_output(2, std::move(present_v));
  if (want_qk) ctx.set_output(3, std::move(qk_out));
  return Status();
}

// ---- inference ------------------------------------------------------------------------------

Dim dim_of(const TypeInfo* t, int64_t i) {
  if (!t || !t->shape.rank_known) return Dim{};
  int64_t r = t->shape.rank();
  if (i < 0) i += r;
  if (i < 0 || i >= r) return Dim{};
  return t->shape.dims[static_cast<size_t>(i)];
}

Dim dim_div(const Dim& d, int64_t n) {
  return d.known() && n > 0 ? Dim::of(d.value / n) : Dim{};
}
Dim dim_mul(const Dim& d, int64_t n) {
  return d.known() ? Dim::of(d.value * n) : Dim{};
}
Dim dim_add(const Dim& a, const Dim& b) {
  return a.known() && b.known() ? Dim::of(a.value + b.value) : Dim{};
}

Shape shape_of(std::vector<Dim> dims) {
  Shape s;
  s.rank_known = true;
  s.dims = std::move(dims);
  return s;
}

int64_t node_attr_int(const Node& n, const std::string& key, int64_t def) {
  const Attribute* at = n.attr(key);
  return at ? at->i : def;
}

Status attention_infer(InferContext& ic) {
  ic.output_types.resize(ic.node.outputs.size());
  const TypeInfo* q = ic.input_types.size() > 0 ? ic.input_types[0] : nullptr;
  const TypeInfo* k = ic.input_types.size() > 1 ? ic.input_types[1] : nullptr;
  const TypeInfo* v = ic.input_types.size() > 2 ? ic.input_types[2] : nullptr;
  const TypeInfo* pk = ic.input_types.size() > 4 ? ic.input_types[4] : nullptr;
  if (!q) return Status();
  const DataType dt = q->dtype;
  const DataType vdt = v ? v->dtype : dt;
  const bool rank_known = q->shape.rank_known;
  const bool three_d = rank_known && q->shape.rank() == 3;
  Shape y, pres_k, pres_v, qk;
  if (rank_known) {
    Dim past = pk ? dim_of(pk, 2) : Dim::of(0);
    if (three_d) {
      int64_t qh = node_attr_int(ic.node, "q_num_heads", 0), kvh = node_attr_int(ic.node, "kv_num_heads", 0);
      Dim vhead = dim_div(dim_of(v, 2), kvh);
      y = shape_of({dim_of(q, 0), dim_of(q, 1), dim_mul(vhead, qh)});
      Dim kvlen = dim_add(past, dim_of(k, 1));
      pres_k = shape_of({dim_of(q, 0), kvh > 0 ? Dim::of(kvh) : Dim{}, kvlen, dim_div(dim_of(k, 2), kvh)});
      pres_v = shape_of({dim_of(q, 0), kvh > 0 ? Dim::of(kvh) : Dim{}, kvlen, vhead});
      qk = shape_of({dim_of(q, 0), qh > 0 ? Dim::of(qh) : Dim{}, dim_of(q, 1), kvlen});
    } else {
      y = shape_of({dim_of(q, 0), dim_of(q, 1), dim_of(q, 2), dim_of(v, 3)});
      Dim kvlen = dim_add(past, dim_of(k, 2));
      pres_k = shape_of({dim_of(q, 0), dim_of(k, 1), kvlen, dim_of(k, 3)});
      pres_v = shape_of({dim_of(q, 0), dim_of(v, 1), kvlen, dim_of(v, 3)});
      qk = shape_of({dim_of(q, 0), dim_of(q, 1), dim_of(q, 2), kvlen});
    }
  }
  const size_t n = ic.output_types.size();
  if (n > 0) ic.output_types[0] = TypeInfo::tensor(dt, y);
  if (n > 1) ic.output_types[1] = TypeInfo::tensor(k ? k->dtype : dt, pres_k);
  if (n > 2) ic.output_types[2] = TypeInfo::tensor(vdt, pres_v);
  if (n > 3) ic.output_types[3] = TypeInfo::tensor(dt, qk);
  return Status();
}

// ---- RotaryEmbedding ------------------------------------------------------------------------

Status rotary_kernel(OpContext& ctx) {
  const Tensor& x = ctx.input(0);
  const Tensor& cos_c = ctx.input(1);
  const Tensor& sin_c = ctx.input(2);
  const DataType dt = x.dtype();
  if (!is_float(dt)) return invalid("RotaryEmbedding expects a floating-point input");
  if (x.rank() != 3 && x.rank() != 4) return invalid("input must be 3D or 4D, got {}", shape_to_string(x.dims()));
  const bool four_d = x.rank() == 4;
  const int64_t B = x.dim(0);
  int64_t S, H, D;
  if (four_d) {
    H = x.dim(1);
    S = x.dim(2);
    D = x.dim(3);
  } else {
    S = x.dim(1);
    H = ctx.attr_int("num_heads", 0);
    if (H <= 0) return invalid("num_heads is required for 3D input");
    if (x.dim(2) % H) return invalid("hidden size {} is not divisible by num_heads {}", x.dim(2), H);
    D = x.dim(2) / H;
  }
  int64_t rd = ctx.attr_int("rotary_embedding_dim", 0);
  if (rd == 0) rd = D;
  if (rd < 0 || rd > D || rd % 2) return invalid("invalid rotary_embedding_dim {} for head size {}", rd, D);
  const int64_t half = rd / 2;
  const bool interleaved = ctx.attr_int("interleaved", 0) != 0;
  if (cos_c.dims() != sin_c.dims()) return invalid("cos_cache and sin_cache shapes differ");
  if (cos_c.rank() < 1 || cos_c.dim(-1) != half)
    return invalid("cos/sin cache last dim must be rotary_embedding_dim/2 = {}", half);

  // Row of the caches for each (b, s).
  std::vector<int64_t> rows(static_cast<size_t>(B * S));
  if (ctx.has_input(3)) {
    const Tensor& pos = ctx.input(3);
    if (cos_c.rank() != 2) return invalid("with position_ids the caches must be 2D");
    if (pos.rank() != 2 || pos.dim(0) != B || pos.dim(1) != S)
      return invalid("position_ids must have shape (batch, sequence) = ({}, {})", B, S);
    std::vector<int64_t> pv = pos.to_int64_vector();
    for (size_t i = 0; i < pv.size(); ++i) {
      if (pv[i] < 0 || pv[i] >= cos_c.dim(0))
        return invalid("position id {} out of range [0, {})", pv[i], cos_c.dim(0));
      rows[i] = pv[i];
    }
  } else {
    if (cos_c.rank() != 3 || (cos_c.dim(0) != B && cos_c.dim(0) != 1) || cos_c.dim(1) != S)
      return invalid("without position_ids the caches must have shape (batch, sequence, {})", half);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t s = 0; s < S; ++s) rows[static_cast<size_t>(b * S + s)] = (cos_c.dim(0) == 1 ? 0 : b) * S + s;
  }
  std::vector<double> cv = cos_c.to_double_vector(), sv = sin_c.to_double_vector();
  Tensor y = x.clone();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t s = 0; s < S; ++s) {
      const double* cr = &cv[static_cast<size_t>(rows[static_cast<size_t>(b * S + s)] * half)];
      const double* sr = &sv[static_cast<size_t>(rows[static_cast<size_t>(b * S + s)] * half)];
      for (int64_t h = 0; h < H; ++h) {
        const int64_t base = four_d ? ((b * H + h) * S + s) * D : ((b * S + s) * H + h) * D;
        for (int64_t i = 0; i < half; ++i) {
          const int64_t i1 = base + (interleaved ? 2 * i : i);
          const int64_t i2 = base + (interleaved ? 2 * i + 1 : i + half);
          const double x1 = x.get_double(i1), x2 = x.get_double(i2);
          const double c = cr[i], sn = sr[i];
          const double re = round_to(dt, round_to(dt, c * x1) - round_to(dt, sn * x2));
          const double im = round_to(dt, round_to(dt, sn * x1) + round_to(dt, c * x2));
          y.set_double(i1, re);
          y.set_double(i2, im);
        }
      }
    }
  ctx.set_output(0, std::move(y));
  return Status();
}

Status same_as_input0_infer(InferContext& ic) {
  ic.output_types.resize(ic.node.outputs.size());
  if (!ic.output_types.empty() && !ic.input_types.empty() && ic.input_types[0]) ic.output_types[0] = *ic.input_types[0];
  return Status();
}

// ---- kiln.PackedAttention ----------------------------------------------------------------------

// Q, K and V as column blocks of one [B, S, (Hq + 2 Hkv) * D] tensor: the 3-D Attention of the
// three blocks (the same attributes), each block copied out first. With seq_first = 1 the input
// is [S, B, width] and the output [S, B, Hq * Dv] (the sequence-first layout of PyTorch's
// nn.MultiheadAttention).
Status packed_attention_kernel(OpContext& ctx) {
  const Tensor& qkv = ctx.input(0);
  const int64_t hq = ctx.attr_int("q_num_heads", 0), hkv = ctx.attr_int("kv_num_heads", 0);
  const bool seq_first = ctx.attr_int("seq_first", 0) != 0;
  if (qkv.rank() != 3) return invalid("PackedAttention takes a 3-D [batch, seq, width] input, not {}", qkv.rank());
  if (hq <= 0 || hkv <= 0 || qkv.dim(2) % (hq + 2 * hkv) != 0)
    return invalid("width {} is not (q_num_heads {} + 2 x kv_num_heads {}) heads", qkv.dim(2), hq, hkv);
  const int64_t d = qkv.dim(2) / (hq + 2 * hkv);
  const int64_t b = seq_first ? qkv.dim(1) : qkv.dim(0), s = seq_first ? qkv.dim(0) : qkv.dim(1);
  const int64_t widths[3] = {hq * d, hkv * d, hkv * d};
  const size_t es = dtype_size(qkv.dtype());
  // Row (batch i, token j) of the input: j * B + i sequence-first, i * S + j otherwise.
  auto row_of = [&](int64_t i, int64_t j) { return seq_first ? j * b + i : i * s + j; };
  std::vector<RValue> parts;
  int64_t offset = 0;
  for (int64_t w : widths) {
    Tensor t(qkv.dtype(), {b, s, w});
    for (int64_t i = 0; i < b; ++i) {
      for (int64_t j = 0; j < s; ++j) {
        std::memcpy(static_cast<uint8_t*>(t.raw()) + (i * s + j) * w * es,
                    static_cast<const uint8_t*>(qkv.raw()) + (row_of(i, j) * qkv.dim(2) + offset) * es,
                    static_cast<size_t>(w) * es);
      }
    }
    parts.push_back(RValue::of(std::move(t)));
    offset += w;
  }
  std::vector<const RValue*> in = {&parts[0], &parts[1], &parts[2]};
  if (ctx.has_input(1)) in.push_back(ctx.input_value(1));
  OpContext sub(ctx.node(), std::move(in), nullptr);
  KILN_RETURN_IF_ERROR(attention_kernel(sub));
  if (!seq_first) {
    ctx.set_output_value(0, std::move(sub.outputs()[0]));
    return Status();
  }
  const Tensor& y = sub.outputs()[0].tensor;  // [B, S, E]
  const int64_t e = y.dim(2);
  Tensor out(y.dtype(), {s, b, e});
  for (int64_t i = 0; i < b; ++i) {
    for (int64_t j = 0; j < s; ++j) {
      std::memcpy(static_cast<uint8_t*>(out.raw()) + (j * b + i) * e * es,
                  static_cast<const uint8_t*>(y.raw()) + (i * s + j) * e * es, static_cast<size_t>(e) * es);
    }
  }
  ctx.set_output(0, std::move(out));
  return Status();
}

Status packed_attention_infer(InferContext& ic) {
  ic.output_types.resize(1);
  const TypeInfo* x = ic.input_types.empty() ? nullptr : ic.input_types[0];
  if (!x) return Status();
  const int64_t hq = node_attr_int(ic.node, "q_num_heads", 0), hkv = node_attr_int(ic.node, "kv_num_heads", 0);
  Shape y;
  if (x->shape.rank_known && x->shape.rank() == 3 && hq > 0 && hkv > 0) {
    // The output keeps the input's two leading axes, [B, S] or, sequence-first, [S, B].
    y = shape_of({dim_of(x, 0), dim_of(x, 1), dim_mul(dim_div(dim_of(x, 2), hq + 2 * hkv), hq)});
  }
  ic.output_types[0] = TypeInfo::tensor(x->dtype, y);
  return Status();
}

}  // namespace

void register_attention_ops(OpRegistry& r) {
  r.add({"", "Attention", 23, attention_kernel, attention_infer});
  r.add({"kiln", "PackedAttention", 1, packed_attention_kernel, packed_attention_infer});
  r.add({"", "RotaryEmbedding", 23, rotary_kernel, same_as_input0_infer});
  register_attention_extra_ops(r);
}

}  // namespace kiln
