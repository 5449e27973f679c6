// Reads an attention's Q, K and V in place where they are head views of one packed projection:
//   P = x @ [Wq | Wk | Wv]                                      [B, S, 3E] or [S, B, 3E]
//   Q4 = Transpose(Reshape(Gather(Squeeze(Transpose(...(P)))), ...))  (likewise K4, V4)
//   Y = Attention(Q4, K4, V4 [, mask])
// becomes Y = view(kiln.PackedAttention(P [, mask])). PyTorch's nn.MultiheadAttention (ViT)
// exports the split of its packed in-projection as such chains of Reshape, Transpose, Squeeze,
// Unsqueeze, Gather and Slice, sequence-first ([S, B, 3E]); each is a copy at run time. The pass
// follows each chain back to its source and, without looking at the ops one by one, computes the
// element strides of the [B, H, S, D] view it makes. When the three views are the column blocks
// of one packed tensor, batch- or sequence-first, attention reads that tensor through strides, and
// its output goes back to the 4-D (or 3-D) form through a Reshape and a Transpose, which
// Transpose/reshape folding then merges with the exporter's own head merge (the two Transposes
// cancel). Static shapes only.
#include <numeric>
#include <optional>

#include "ops/fused.h"
#include "passes/passes.h"
#include "passes/pattern.h"

namespace kiln {
namespace {

constexpr const char* kName = "pack-attention-views";

// A strided view of `base` (taken as contiguous). Each axis is one or more sub-axes in row-major
// order, each a (size, element stride) pair, so that merging axes of different strides (a
// Reshape of [S, B, E] into [S, B * H, D]) stays exact; an axis of size 1 has no sub-axes.
using SubAxes = std::vector<std::pair<int64_t, int64_t>>;
struct View {
  Value* base = nullptr;
  int64_t offset = 0;
  std::vector<SubAxes> axes;

  int64_t dim(size_t i) const {
    int64_t n = 1;
    for (const auto& [size, stride] : axes[i]) n *= size;
    return n;
  }
  Dims dims() const {
    Dims d;
    for (size_t i = 0; i < axes.size(); ++i) d.push_back(dim(i));
    return d;
  }
  // The axis's single stride, merging contiguous sub-axes; false when it has none.
  bool stride(size_t i, int64_t* out) const {
    if (axes[i].empty()) {
      *out = 0;
      return true;
    }
    int64_t size = axes[i].back().first, st = axes[i].back().second;
    for (size_t k = axes[i].size() - 1; k-- > 0;) {
      if (axes[i][k].second != st * size) return false;
      size *= axes[i][k].first;
    }
    *out = st;
    return true;
  }
};

View contiguous_view(Value* v, const Dims& dims) {
  View w;
  w.base = v;
  w.axes.resize(dims.size());
  int64_t stride = 1;
  for (size_t i = dims.size(); i-- > 0;) {
    if (dims[i] != 1) w.axes[i] = {{dims[i], stride}};
    stride *= dims[i];
  }
  return w;
}

// The view as `to` (same element count): its sub-axes regrouped, a sub-axis split where a new
// axis ends inside it.
bool reshape_view(const View& in, const Dims& to, View* out) {
  SubAxes flat;
  for (const SubAxes& a : in.axes) {
    for (const auto& sa : a) {
      if (sa.first == 0) return false;
      if (sa.first != 1) flat.push_back(sa);
    }
  }
  out->base = in.base;
  out->offset = in.offset;
  out->axes.assign(to.size(), {});
  size_t next = 0;
  for (size_t i = 0; i < to.size(); ++i) {
    int64_t left = to[i];
    if (left <= 0) return false;
    while (left > 1) {
      if (next >= flat.size()) return false;
      auto [size, stride] = flat[next];
      if (size <= left) {
        if (left % size) return false;
        out->axes[i].push_back(flat[next++]);
        left /= size;
      } else {
        if (size % left) return false;
        // The outer `left` indices of the sub-axis go to this axis, the rest stays for the next.
        out->axes[i].push_back({left, stride * (size / left)});
        flat[next] = {size / left, stride};
        left = 1;
      }
    }
  }
  return next == flat.size();
}

bool const_ints(const Value* v, std::vector<int64_t>* out) {
  const Tensor* t = constant_of(v);
  if (!t || (t->dtype() != DataType::kInt64 && t->dtype() != DataType::kInt32)) return false;
  out->clear();
  for (int64_t i = 0; i < t->numel(); ++i) out->push_back(static_cast<int64_t>(t->get_double(i)));
  return true;
}

// The view of `v`, following data-movement ops back to the furthest source whose view is still
// one set of strides. False only when `v` itself has no static shape.
bool view_of(Value* v, View* out, int depth = 0) {
  Dims dims;
  if (!static_dims(v, &dims)) return false;
  *out = contiguous_view(v, dims);
  Node* n = v->producer;
  if (!n || !n->domain.empty() || n->inputs.empty() || !n->inputs[0] || depth > 64) return true;
  const std::string& op = n->op_type;
  const bool reshape_like = op == "Reshape" || op == "Flatten" || op == "Squeeze" || op == "Unsqueeze";
  if (!reshape_like && op != "Transpose" && op != "Gather" && op != "Slice" && op != "Identity") return true;
  View in;
  if (!view_of(n->inputs[0], &in, depth + 1)) return true;
  View r;
  const int64_t rank = static_cast<int64_t>(in.axes.size());
  if (op == "Identity") {
    r = in;
  } else if (reshape_like) {
    if (!reshape_view(in, dims, &r)) return true;
  } else if (op == "Transpose") {
    std::vector<int64_t> perm(static_cast<size_t>(rank));
    std::iota(perm.rbegin(), perm.rend(), 0);
    if (const Attribute* p = n->attr("perm")) perm = p->ints;
    if (static_cast<int64_t>(perm.size()) != rank) return true;
    r.base = in.base;
    r.offset = in.offset;
    for (int64_t p : perm) {
      if (p < 0 || p >= rank) return true;
      r.axes.push_back(in.axes[static_cast<size_t>(p)]);
    }
  } else if (op == "Gather") {
    // One constant index: the axis is dropped (a scalar index) or kept at size 1.
    std::vector<int64_t> idx;
    if (n->inputs.size() < 2 || !const_ints(n->inputs[1], &idx) || idx.size() != 1) return true;
    int64_t axis = 0;
    if (const Attribute* a = n->attr("axis")) axis = a->i;
    if (axis < 0) axis += rank;
    if (axis < 0 || axis >= rank) return true;
    const size_t ax = static_cast<size_t>(axis);
    int64_t i = idx[0] < 0 ? idx[0] + in.dim(ax) : idx[0];
    if (i < 0 || i >= in.dim(ax)) return true;
    r = in;
    // The index split over the axis's sub-axes, innermost last.
    for (size_t k = in.axes[ax].size(); k-- > 0;) {
      r.offset += (i % in.axes[ax][k].first) * in.axes[ax][k].second;
      i /= in.axes[ax][k].first;
    }
    r.axes[ax].clear();
    if (constant_of(n->inputs[1])->rank() == 0) r.axes.erase(r.axes.begin() + axis);
  } else {  // Slice (opset 10 and later: starts, ends, axes, steps as inputs)
    std::vector<int64_t> starts, ends, axes, steps;
    if (n->opset < 10 || n->inputs.size() < 3 || !const_ints(n->inputs[1], &starts) ||
        !const_ints(n->inputs[2], &ends) || starts.size() != ends.size()) {
      return true;
    }
    if (n->inputs.size() > 3 && n->inputs[3]) {
      if (!const_ints(n->inputs[3], &axes)) return true;
    } else {
      axes.resize(starts.size());
      std::iota(axes.begin(), axes.end(), 0);
    }
    if (n->inputs.size() > 4 && n->inputs[4]) {
      if (!const_ints(n->inputs[4], &steps)) return true;
    } else {
      steps.assign(starts.size(), 1);
    }
    if (axes.size() != starts.size() || steps.size() != starts.size()) return true;
    r = in;
    for (size_t k = 0; k < starts.size(); ++k) {
      const int64_t axis = axes[k] < 0 ? axes[k] + rank : axes[k];
      if (axis < 0 || axis >= rank || steps[k] <= 0) return true;
      const size_t ax = static_cast<size_t>(axis);
      const int64_t d = in.dim(ax);
      int64_t st = 0;
      if (!in.stride(ax, &st)) return true;  // a sliced axis must have one stride
      int64_t s = starts[k] < 0 ? starts[k] + d : starts[k];
      int64_t e = ends[k] < 0 ? ends[k] + d : ends[k];
      s = std::clamp<int64_t>(s, 0, d);
      e = std::clamp<int64_t>(e, 0, d);
      const int64_t count = e > s ? (e - s + steps[k] - 1) / steps[k] : 0;
      if (count == 0) return true;
      r.offset += s * st;
      r.axes[ax].clear();
      if (count > 1) r.axes[ax] = {{count, st * steps[k]}};
    }
  }
  if (r.dims() != dims) return true;  // the op's result is not what inference says: leave it
  *out = std::move(r);
  return true;
}

// An Attention input as a [B, H, S, D] view with one stride per axis: 4-D as is, 3-D
// [B, S, H * D] split into `heads`.
struct HeadView {
  Value* base = nullptr;
  int64_t offset = 0;
  Dims dims;
  std::vector<int64_t> strides;
};

bool head_view(Value* v, int64_t heads, HeadView* out) {
  View w;
  if (!view_of(v, &w)) return false;
  if (w.axes.size() == 3) {
    if (heads <= 0 || w.dim(2) % heads != 0) return false;
    const int64_t d = w.dim(2) / heads;
    Dims to = {w.dim(0), w.dim(1), heads, d};
    View split;
    if (!reshape_view(w, to, &split)) return false;
    std::swap(split.axes[1], split.axes[2]);  // [B, S, H, D] -> [B, H, S, D]
    w = std::move(split);
  }
  if (w.axes.size() != 4) return false;
  out->base = w.base;
  out->offset = w.offset;
  out->dims = w.dims();
  out->strides.resize(4);
  for (size_t i = 0; i < 4; ++i) {
    if (!w.stride(i, &out->strides[i])) return false;
  }
  return true;
}

bool try_pack(Graph& g, Node& att, PassContext& ctx) {
  if (!att.domain.empty() || att.op_type != "Attention" || att.inputs.size() < 3 || att.inputs.size() > 4) return false;
  if (att.outputs.size() != 1 || !att.outputs[0]) return false;
  const Attribute* softcap = att.attr("softcap");
  if (softcap && softcap->f != 0.0f) return false;
  for (const char* key : {"left_window_size", "right_window_size", "qk_matmul_output_mode"}) {
    const Attribute* a = att.attr(key);
    if (a && a->i != (std::string(key) == "qk_matmul_output_mode" ? 0 : -1)) return false;
  }
  Dims ydims;
  if (!static_dims(att.outputs[0], &ydims)) return false;
  const int64_t rank = static_cast<int64_t>(ydims.size());
  const Attribute* hq_attr = att.attr("q_num_heads");
  const Attribute* hkv_attr = att.attr("kv_num_heads");
  const int64_t hq3 = hq_attr ? hq_attr->i : 0, hkv3 = hkv_attr ? hkv_attr->i : 0;
  HeadView q, k, v;
  if (!head_view(att.inputs[0], hq3, &q) || !head_view(att.inputs[1], hkv3, &k) || !head_view(att.inputs[2], hkv3, &v))
    return false;
  if (q.base != k.base || q.base != v.base || q.base == att.inputs[0]) return false;
  Dims pdims;
  if (!static_dims(q.base, &pdims) || pdims.empty() || !is_float(q.base->type.dtype)) return false;
  const int64_t d = q.dims[3];
  if (k.dims[3] != d || v.dims[3] != d || q.strides[3] != 1 || k.strides[3] != 1 || v.strides[3] != 1) return false;
  if (q.dims[0] != k.dims[0] || q.dims[0] != v.dims[0] || k.dims[1] != v.dims[1]) return false;
  if (q.dims[2] != k.dims[2] || q.dims[2] != v.dims[2]) return false;  // self-attention: one sequence
  int64_t batch = q.dims[0], hq = q.dims[1], hkv = k.dims[1];
  const int64_t seq = q.dims[2], width = pdims.back();
  // One head per batch entry whose batch axis steps by a head (an export that merged batch and
  // heads, [B * H, S, D], at batch 1): the batch axis is the heads.
  const bool merged =
      hq == 1 && hkv == 1 && q.strides[0] == d && k.strides[0] == d && v.strides[0] == d && width == 3 * batch * d;
  if (merged) {
    for (HeadView* w : {&q, &k, &v}) {
      w->dims = {1, w->dims[0], w->dims[2], d};
      w->strides = {width * seq, d, w->strides[2], 1};
    }
    hq = hkv = batch;
    batch = 1;
  }
  if (width != (hq + 2 * hkv) * d) return false;
  int64_t numel = 1;
  for (int64_t x : pdims) numel *= x;
  if (numel != batch * seq * width) return false;
  // The three views are Q, K and V column blocks, heads side by side, in one of the two layouts.
  auto strides_are = [&](const HeadView& w, int64_t heads, int64_t offset, int64_t sb, int64_t ss) {
    return w.offset == offset && (w.dims[1] == 1 || w.strides[1] == d) && (w.dims[0] == 1 || w.strides[0] == sb) &&
           (w.dims[2] == 1 || w.strides[2] == ss) && w.dims[1] == heads;
  };
  auto packed = [&](int64_t sb, int64_t ss) {
    return strides_are(q, hq, 0, sb, ss) && strides_are(k, hkv, hq * d, sb, ss) &&
           strides_are(v, hkv, (hq + hkv) * d, sb, ss);
  };
  bool seq_first;
  if (packed(seq * width, width)) {
    seq_first = false;
  } else if (packed(width, batch * width)) {
    seq_first = true;
  } else {
    return false;
  }
  // At batch 1 (or sequence 1) both layouts are the same memory: the one of the source's shape is
  // taken, so that the Transposes around attention's output cancel the exporter's.
  if (batch == 1 || seq == 1) seq_first = pdims == Dims{seq, batch, width};

  size_t pos = static_cast<size_t>(att.index);
  const std::string base = att.name.empty() ? "attention" : att.name;
  auto reshape = [&](Value* x, const Dims& to, const std::string& suffix) {
    return add_reshape_at(g, pos++, base + suffix, x, to);
  };
  auto transpose = [&](Value* x, std::vector<int64_t> perm, const std::string& suffix) {
    return add_transpose_at(g, pos++, base + suffix, x, std::move(perm), 0);  // the caller sets the output
  };
  const Dims p3 = seq_first ? Dims{seq, batch, width} : Dims{batch, seq, width};
  Value* packed_in = pdims == p3 ? q.base : reshape(q.base, p3, "_packed")->outputs[0];
  std::vector<Value*> att_in = {packed_in};
  if (att.inputs.size() > 3 && att.inputs[3]) att_in.push_back(att.inputs[3]);
  Node* pa = add_node_at(g, pos++, "PackedAttention", base, att_in, 1, kKilnDomain, 1);
  pa->attrs = att.attrs;
  pa->attrs["q_num_heads"] = int_attr(hq);
  pa->attrs["kv_num_heads"] = int_attr(hkv);
  if (seq_first) pa->attrs["seq_first"] = int_attr(1);
  set_provenance(pa, {&att});
  // Back to the Attention's own output form from PackedAttention's [B, S, E] or [S, B, E]: the
  // 4-D [B, H, S, Dv], the 3-D [B, S, E], or for heads as the batch axis [H, S, Dv].
  Value* y = att.outputs[0];
  std::vector<Node*> tail;
  if (merged) {
    // Batch 1: [S, H, Dv] is the output's memory in either layout; [H, S, Dv] one Transpose away,
    // which cancels the exporter's Transpose back to [S, H, Dv].
    Node* rs = reshape(pa->outputs[0], Dims{seq, hq, ydims.back()}, "_heads");
    tail = {rs, transpose(rs->outputs[0], {1, 0, 2}, "_heads_first")};
  } else if (rank == 4) {
    const int64_t dv = ydims.back();
    Node* rs = reshape(pa->outputs[0], seq_first ? Dims{seq, batch, hq, dv} : Dims{batch, seq, hq, dv}, "_heads");
    tail = {rs,
            transpose(rs->outputs[0], seq_first ? std::vector<int64_t>{1, 2, 0, 3} : std::vector<int64_t>{0, 2, 1, 3},
                      "_heads_first")};
  } else if (seq_first) {
    tail = {transpose(pa->outputs[0], {1, 0, 2}, "_batch_first")};
  }
  Node* last = tail.empty() ? pa : tail.back();
  last->outputs = {y};
  y->producer = last;
  for (Node* t : tail) set_provenance(t, {&att});
  const Node* gone = &att;
  g.erase_nodes_if([&](const Node& n) { return &n == gone; });
  ctx.record(kName);
  return true;
}

}  // namespace

PassInfo attention_views_packing_pass() {
  return {kName,
          "Reads an attention's Q, K and V in place where they are head views (Reshape, Transpose, Gather, Slice "
          "chains) of one packed projection: kiln.PackedAttention, batch- or sequence-first",
          [](Graph& g, PassContext& ctx) -> Result<bool> {
            bool changed = false;
            for (size_t i = 0; i < g.nodes().size(); ++i) {
              if (try_pack(g, *g.nodes()[i], ctx)) changed = true;
            }
            return changed;
          }};
}

}  // namespace kiln
