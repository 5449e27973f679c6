// Layout-changing data movement: Transpose, Concat, Split, Slice, Tile, Pad, CenterCropPad,
// DepthToSpace, SpaceToDepth, ReverseSequence. All copies go through copy_elements or the
// element copier, so every dtype (strings, bool, narrow floats, unpacked int4) is handled alike.
#include <algorithm>

#include "ops/broadcast.h"
#include "ops/movement_util.h"

namespace kiln {
namespace {

// ---- Transpose ------------------------------------------------------------------------------

Result<std::vector<int64_t>> transpose_perm(const Node& n, int64_t rank) {
  std::vector<int64_t> perm = node_attr_ints(n, "perm");
  if (!n.attr("perm")) {
    for (int64_t d = rank; d-- > 0;) perm.push_back(d);
    return perm;
  }
  if (static_cast<int64_t>(perm.size()) != rank) {
    return invalid("Transpose perm has {} entries for a tensor of rank {}", perm.size(), rank);
  }
  return normalize_axes(perm, rank, "Transpose perm");
}

Status transpose_kernel(OpContext& ctx) {
  const Tensor& x = ctx.input(0);
  KILN_ASSIGN_OR_RETURN(auto perm, transpose_perm(ctx.node(), x.rank()));
  ctx.set_output(0, permute(x, perm));
  return Status();
}

Status transpose_infer(InferContext& c) {
  const Shape* in = known_rank_shape(c, 0);
  if (!in) return infer_same_dtype(c, Shape::unknown());
  KILN_ASSIGN_OR_RETURN(auto perm, transpose_perm(c.node, in->rank()));
  std::vector<Dim> out;
  for (int64_t p : perm) out.push_back(in->dims[static_cast<size_t>(p)]);
  return infer_same_dtype(c, shape_from_dims(std::move(out)));
}

// ---- Concat ---------------------------------------------------------------------------------

int64_t concat_axis_attr(const Node& n) {
  return node_attr_int(n, "axis", n.opset < 4 ? 1 : 0);
}

Status concat_kernel(OpContext& ctx) {
  std::vector<const Tensor*> xs;
  for (size_t i = 0; i < ctx.num_inputs(); ++i) {
    if (ctx.has_input(i)) xs.push_back(&ctx.input(i));
  }
  if (xs.empty()) return invalid("Concat needs at least one input");
  const Tensor& first = *xs[0];
  if (first.rank() == 0) return invalid("Concat inputs must have rank >= 1");
  if (ctx.opset() >= 4 && !ctx.has_attr("axis")) return invalid("Concat needs the 'axis' attribute");
  KILN_ASSIGN_OR_RETURN(int64_t axis, normalize_axis(concat_axis_attr(ctx.node()), first.rank(), "Concat axis"));
  Dims od = first.dims();
  od[static_cast<size_t>(axis)] = 0;
  for (const Tensor* t : xs) {
    if (t->dtype() != first.dtype()) return invalid("Concat inputs have different dtypes");
    if (t->rank() != first.rank()) {
      return invalid("Concat inputs have different ranks ({} vs {})", shape_to_string(first.dims()),
                     shape_to_string(t->dims()));
    }
    for (int64_t d = 0; d < first.rank(); ++d) {
      if (d != axis && t->dims()[static_cast<size_t>(d)] != first.dims()[static_cast<size_t>(d)]) {
        return invalid("Concat inputs of shapes {} and {} differ outside axis {}", shape_to_string(first.dims()),
                       shape_to_string(t->dims()), axis);
      }
    }
    od[static_cast<size_t>(axis)] += t->dims()[static_cast<size_t>(axis)];
  }
  KILN_ASSIGN_OR_RETURN(Tensor out, Tensor::create(first.dtype(), od));
  int64_t outer = 1;
  for (int64_t d = 0; d < axis; ++d) outer *= od[static_cast<size_t>(d)];
  int64_t pos = 0;
  for (int64_t o = 0; o < outer; ++o) {
    for (const Tensor* t : xs) {
      const int64_t block = outer == 0 ? 0 : t->numel() / outer;
      copy_elements(out, pos, *t, o * block, block);
      pos += block;
    }
  }
  ctx.set_output(0, std::move(out));
  return Status();
}

Status concat_infer(InferContext& c) {
  std::vector<const Shape*> shapes;
  for (size_t i = 0; i < c.input_types.size(); ++i) {
    if (!infer_input(c, i)) continue;
    const Shape* s = known_rank_shape(c, i);
    if (!s) return infer_same_dtype(c, Shape::unknown());
    shapes.push_back(s);
  }
  if (shapes.empty()) return infer_same_dtype(c, Shape::unknown());
  const int64_t rank = shapes[0]->rank();
  KILN_ASSIGN_OR_RETURN(int64_t axis, normalize_axis(concat_axis_attr(c.node), rank, "Concat axis"));
  Shape out = shape_of_rank(rank);
  int64_t total = 0;
  bool total_known = true;
  for (const Shape* s : shapes) {
    if (s->rank() != rank) return invalid("Concat inputs have different ranks");
    for (int64_t d = 0; d < rank; ++d) {
      const Dim& v = s->dims[static_cast<size_t>(d)];
      if (d == axis) {
        if (v.known()) {
          total += v.value;
        } else {
          total_known = false;
        }
      } else if (!out.dims[static_cast<size_t>(d)].known() && (v.known() || !v.symbol.empty())) {
        out.dims[static_cast<size_t>(d)] = v;
      }
    }
  }
  if (total_known) out.dims[static_cast<size_t>(axis)] = Dim::of(total);
  return infer_same_dtype(c, out);
}

// ---- Split ----------------------------------------------------------------------------------

// Sizes along the axis for each output. `given` holds explicit sizes when there are any.
Result<std::vector<int64_t>> split_sizes(int64_t dim, size_t n_out, const std::vector<int64_t>* given,
                                         int64_t num_outputs) {
  if (given) {
    if (given->size() != n_out) return invalid("Split has {} sizes for {} outputs", given->size(), n_out);
    int64_t sum = 0;
    for (int64_t v : *given) {
      if (v < 0) return invalid("Split size {} is negative", v);
      sum += v;
    }
    if (sum != dim) return invalid("Split sizes sum to {} but the axis has size {}", sum, dim);
    return *given;
  }
  if (num_outputs > 0 && static_cast<size_t>(num_outputs) != n_out) {
    return invalid("Split num_outputs is {} but the node has {} outputs", num_outputs, n_out);
  }
  if (n_out == 0) return invalid("Split has no outputs");
  const int64_t n = static_cast<int64_t>(n_out);
  // An uneven split makes every chunk ceil(dim / n) and the last one what remains.
  const int64_t chunk = (dim + n - 1) / n;
  std::vector<int64_t> sizes(n_out, chunk);
  sizes.back() = dim - chunk * (n - 1);
  if (sizes.back() < 0) return invalid("cannot split an axis of size {} into {} outputs", dim, n);
  return sizes;
}

Status split_kernel(OpContext& ctx) {
  const Tensor& x = ctx.input(0);
  KILN_ASSIGN_OR_RETURN(int64_t axis, normalize_axis(ctx.attr_int("axis", 0), x.rank(), "Split axis"));
  std::vector<int64_t> given;
  bool has_given = false;
  if (ctx.opset() < 13) {
    has_given = ctx.has_attr("split");
    given = ctx.attr_ints("split");
  } else if (ctx.has_input(1)) {
    KILN_ASSIGN_OR_RETURN(given, int_input(ctx, 1, "split"));
    has_given = true;
  }
  const int64_t num_outputs = ctx.opset() >= 18 ? ctx.attr_int("num_outputs", 0) : 0;
  const int64_t dim = x.dims()[static_cast<size_t>(axis)];
  KILN_ASSIGN_OR_RETURN(auto sizes, split_sizes(dim, ctx.num_outputs(), has_given ? &given : nullptr, num_outputs));
  int64_t outer = 1;
  for (int64_t d = 0; d < axis; ++d) outer *= x.dims()[static_cast<size_t>(d)];
  const int64_t inner = dim == 0 || outer == 0 ? 0 : x.numel() / outer / dim;
  int64_t start = 0;
  for (size_t i = 0; i < sizes.size(); ++i) {
    Dims od = x.dims();
    od[static_cast<size_t>(axis)] = sizes[i];
    Tensor out(x.dtype(), od);
    const int64_t block = sizes[i] * inner;
    for (int64_t o = 0; o < outer; ++o) copy_elements(out, o * block, x, (o * dim + start) * inner, block);
    start += sizes[i];
    ctx.set_output(i, std::move(out));
  }
  return Status();
}

Status split_infer(InferContext& c) {
  const size_t n_out = c.node.outputs.size();
  const Shape* in = known_rank_shape(c, 0);
  std::vector<Shape> outs(n_out, Shape::unknown());
  if (in) {
    KILN_ASSIGN_OR_RETURN(int64_t axis, normalize_axis(node_attr_int(c.node, "axis", 0), in->rank(), "Split axis"));
    for (auto& s : outs) {
      s = *in;
      s.dims[static_cast<size_t>(axis)] = Dim{};
    }
    std::vector<int64_t> given;
    bool has_given = false, sizes_known = true;
    if (c.node.opset < 13) {
      has_given = c.node.attr("split") != nullptr;
      given = node_attr_ints(c.node, "split");
    } else if (infer_input(c, 1)) {
      const Tensor* k = infer_constant(c, 1);
      sizes_known = k != nullptr;
      if (k) given = k->to_int64_vector();
      has_given = true;
    }
    const Dim& d = in->dims[static_cast<size_t>(axis)];
    if (sizes_known && (has_given || d.known())) {
      const int64_t num_outputs = c.node.opset >= 18 ? node_attr_int(c.node, "num_outputs", 0) : 0;
      int64_t dim = d.known() ? d.value : 0;
      if (!d.known()) {
        for (int64_t v : given) dim += v;
      }
      KILN_ASSIGN_OR_RETURN(auto sizes, split_sizes(dim, n_out, has_given ? &given : nullptr, num_outputs));
      for (size_t i = 0; i < n_out; ++i) outs[i].dims[static_cast<size_t>(axis)] = Dim::of(sizes[i]);
    }
  }
  for (size_t i = 0; i < n_out; ++i) infer_output(c, i) = TypeInfo::tensor(infer_dtype(c, 0), outs[i]);
  return Status();
}

// ---- Slice ----------------------------------------------------------------------------------

}  // namespace

Result<std::vector<SliceAxis>> slice_plan(const Dims& dims, const std::vector<int64_t>& starts,
                                          const std::vector<int64_t>& ends, const std::vector<int64_t>* axes_in,
                                          const std::vector<int64_t>* steps_in) {
  const int64_t rank = static_cast<int64_t>(dims.size());
  if (starts.size() != ends.size()) return invalid("Slice starts and ends have different lengths");
  std::vector<int64_t> axes;
  if (axes_in) {
    if (axes_in->size() != starts.size()) return invalid("Slice axes and starts have different lengths");
    KILN_ASSIGN_OR_RETURN(axes, normalize_axes(*axes_in, rank, "Slice axes"));
  } else {
    if (static_cast<int64_t>(starts.size()) > rank) return invalid("Slice has more starts than the input rank");
    for (size_t i = 0; i < starts.size(); ++i) axes.push_back(static_cast<int64_t>(i));
  }
  if (steps_in && steps_in->size() != starts.size()) return invalid("Slice steps and starts have different lengths");
  std::vector<SliceAxis> plan(static_cast<size_t>(rank));
  for (int64_t d = 0; d < rank; ++d) plan[static_cast<size_t>(d)] = {0, 1, dims[static_cast<size_t>(d)]};
  for (size_t i = 0; i < axes.size(); ++i) {
    const int64_t dim = dims[static_cast<size_t>(axes[i])];
    const int64_t step = steps_in ? (*steps_in)[i] : 1;
    if (step == 0) return invalid("Slice step must not be zero");
    SliceAxis& p = plan[static_cast<size_t>(axes[i])];
    p.step = step;
    if (dim < 0) {
      p.count = -1;
      continue;
    }
    int64_t s = starts[i], e = ends[i];
    if (s < 0) s += dim;
    if (e < 0) e += dim;
    if (step > 0) {
      s = std::clamp<int64_t>(s, 0, dim);
      e = std::clamp<int64_t>(e, 0, dim);
      p.count = e > s ? (e - s - 1) / step + 1 : 0;
    } else {
      s = std::clamp<int64_t>(s, -1, dim - 1);
      e = std::clamp<int64_t>(e, -1, dim - 1);
      p.count = s > e ? (s - e - 1) / (-step) + 1 : 0;
    }
    p.start = s;
  }
  return plan;
}

namespace {

Status slice_kernel(OpContext& ctx) {
  const Tensor& x = ctx.input(0);
  std::vector<int64_t> starts, ends, axes, steps;
  bool has_axes = false, has_steps = false;
  if (ctx.opset() < 10) {
    starts = ctx.attr_ints("starts");
    ends = ctx.attr_ints("ends");
    has_axes = ctx.has_attr("axes");
    axes = ctx.attr_ints("axes");
  } else {
    KILN_ASSIGN_OR_RETURN(starts, int_input(ctx, 1, "starts"));
    KILN_ASSIGN_OR_RETURN(ends, int_input(ctx, 2, "ends"));
    if (ctx.has_input(3)) {
      KILN_ASSIGN_OR_RETURN(axes, int_input(ctx, 3, "axes"));
      has_axes = true;
    }
    if (ctx.has_input(4)) {
      KILN_ASSIGN_OR_RETURN(steps, int_input(ctx, 4, "steps"));
      has_steps = true;
    }
  }
  KILN_ASSIGN_OR_RETURN(auto plan,
                        slice_plan(x.dims(), starts, ends, has_axes ? &axes : nullptr, has_steps ? &steps : nullptr));
  const Dims xs = row_major_strides(x.dims());
  Dims od(plan.size()), ss(plan.size());
  int64_t offset = 0;
  for (size_t d = 0; d < plan.size(); ++d) {
    od[d] = plan[d].count;
    ss[d] = plan[d].step * xs[d];
    if (plan[d].count > 0) offset += plan[d].start * xs[d];
  }
  Tensor out(x.dtype(), od);
  with_element_copier(out, x, [&](auto copy) { strided_walk(od, ss, offset, copy); });
  ctx.set_output(0, std::move(out));
  return Status();
}

// Slice ends at or beyond this take the whole axis whatever its size (exporters write INT64_MAX).
constexpr int64_t kSliceToEnd = int64_t{1} << 62;

Status slice_infer(InferContext& c) {
  const Shape* in = known_rank_shape(c, 0);
  if (!in) return infer_same_dtype(c, Shape::unknown());
  std::vector<int64_t> starts, ends, axes, steps;
  bool has_axes = false, has_steps = false;
  // Ends given as dims (a Shape result): the symbol of each, where it is one.
  std::vector<std::string> end_symbols;
  if (c.node.opset < 10) {
    starts = node_attr_ints(c.node, "starts");
    ends = node_attr_ints(c.node, "ends");
    has_axes = c.node.attr("axes") != nullptr;
    axes = node_attr_ints(c.node, "axes");
  } else {
    auto consts = [&](size_t i, std::vector<int64_t>* out, std::vector<std::string>* symbols) {
      const ShapeValue* v = infer_value(c, i);
      if (!v) {
        const Tensor* k = infer_constant(c, i);
        if (!k) return false;
        *out = k->to_int64_vector();
        return true;
      }
      for (const ShapeElem& e : *v) {
        if (!e.is_const && (!symbols || e.symbol.empty())) return false;
        out->push_back(e.is_const ? e.value : 0);
        if (symbols) symbols->push_back(e.is_const ? std::string() : e.symbol);
      }
      return true;
    };
    if (!consts(1, &starts, nullptr) || !consts(2, &ends, &end_symbols) ||
        (infer_input(c, 3) && !consts(3, &axes, nullptr)) || (infer_input(c, 4) && !consts(4, &steps, nullptr))) {
      return infer_same_dtype(c, shape_of_rank(in->rank()));
    }
    has_axes = infer_input(c, 3) != nullptr;
    has_steps = infer_input(c, 4) != nullptr;
  }
  // The static plan where every sliced axis has a known size and a constant end; the other axes
  // are decided below.
  Dims dims = in->static_dims();
  std::vector<int64_t> norm_axes;
  for (size_t i = 0; i < starts.size(); ++i) {
    int64_t a = has_axes && i < axes.size() ? axes[i] : static_cast<int64_t>(i);
    if (a < 0) a += in->rank();
    norm_axes.push_back(a);
    const bool symbolic_end = i < end_symbols.size() && !end_symbols[i].empty();
    if (symbolic_end && a >= 0 && a < in->rank()) dims[static_cast<size_t>(a)] = -1;
  }
  KILN_ASSIGN_OR_RETURN(auto plan,
                        slice_plan(dims, starts, ends, has_axes ? &axes : nullptr, has_steps ? &steps : nullptr));
  Shape out = *in;
  for (size_t d = 0; d < plan.size(); ++d) {
    if (dims[d] >= 0) {
      const bool untouched = plan[d].start == 0 && plan[d].step == 1 && plan[d].count == dims[d];
      if (!untouched) out.dims[d] = Dim::of(plan[d].count);
    }
  }
  // Axes of unknown size, or with an end given as a dim: whole (keeping the dim) when sliced from
  // 0 with step 1 to an end that is surely past it, else unknown.
  for (size_t i = 0; i < norm_axes.size(); ++i) {
    const size_t a = static_cast<size_t>(norm_axes[i]);
    if (dims[a] >= 0) continue;
    const int64_t step = has_steps && i < steps.size() ? steps[i] : 1;
    const bool symbolic_end = i < end_symbols.size() && !end_symbols[i].empty();
    const bool to_end = symbolic_end ? end_symbols[i] == in->dims[a].symbol : ends[i] >= kSliceToEnd;
    if (!(starts[i] == 0 && step == 1 && to_end)) out.dims[a] = Dim{};
  }
  return infer_same_dtype(c, out);
}

// ---- Tile -----------------------------------------------------------------------------------

Result<std::vector<int64_t>> tile_repeats(const OpContext& ctx, int64_t rank) {
  std::vector<int64_t> reps;
  if (ctx.opset() < 6) {
    // Tile-1: a scalar count of tiles along one axis given as an input.
    if (!ctx.has_input(2)) return invalid("Tile-1 needs the 'tiles' and 'axis' inputs");
    int64_t tiles = ctx.input(1).get_int64(0);
    KILN_ASSIGN_OR_RETURN(int64_t axis, normalize_axis(ctx.input(2).get_int64(0), rank, "Tile axis"));
    reps.assign(static_cast<size_t>(rank), 1);
    reps[static_cast<size_t>(axis)] = tiles;
  } else {
    KILN_ASSIGN_OR_RETURN(reps, int_input(ctx, 1, "repeats"));
  }
  if (static_cast<int64_t>(reps.size()) != rank) {
    return invalid("Tile repeats has {} entries for a tensor of rank {}", reps.size(), rank);
  }
  for (int64_t v : reps) {
    if (v < 0) return invalid("Tile repeats must be non-negative, got {}", v);
  }
  return reps;
}

Status tile_kernel(OpContext& ctx) {
  const Tensor& x = ctx.input(0);
  KILN_ASSIGN_OR_RETURN(auto reps, tile_repeats(ctx, x.rank()));
  Dims od(reps.size());
  for (size_t d = 0; d < reps.size(); ++d) od[d] = x.dims()[d] * reps[d];
  KILN_ASSIGN_OR_RETURN(Tensor out, Tensor::create(x.dtype(), od));
  std::vector<std::vector<int64_t>> maps(od.size());
  for (size_t d = 0; d < od.size(); ++d) {
    maps[d].resize(static_cast<size_t>(od[d]));
    for (int64_t o = 0; o < od[d]; ++o) maps[d][static_cast<size_t>(o)] = o % x.dims()[d];
  }
  gather_by_axis_maps(x, maps, nullptr, out);
  ctx.set_output(0, std::move(out));
  return Status();
}

Status tile_infer(InferContext& c) {
  const Shape* in = known_rank_shape(c, 0);
  if (!in) return infer_same_dtype(c, Shape::unknown());
  Shape out = shape_of_rank(in->rank());
  const ShapeValue* reps = infer_value(c, 1);
  if (c.node.opset >= 6 && reps && static_cast<int64_t>(reps->size()) == in->rank()) {
    for (int64_t d = 0; d < in->rank(); ++d) {
      const Dim& v = in->dims[static_cast<size_t>(d)];
      const ShapeElem& r = (*reps)[static_cast<size_t>(d)];
      if (r.is_const && r.value == 1) {
        out.dims[static_cast<size_t>(d)] = v;
      } else if (r.is_const && v.known()) {
        out.dims[static_cast<size_t>(d)] = Dim::of(v.value * r.value);
      } else if (!r.is_const && v.known() && v.value == 1) {
        out.dims[static_cast<size_t>(d)] = r.to_dim();  // one element repeated n times
      }
    }
  }
  return infer_same_dtype(c, out);
}

// ---- Pad, CenterCropPad ---------------------------------------------------------------------

enum class PadMode { kConstant, kReflect, kEdge, kWrap };

// Source coordinate for a padded coordinate j (relative to the kept region of size n).
int64_t pad_source(int64_t j, int64_t n, PadMode mode) {
  if (j >= 0 && j < n) return j;
  switch (mode) {
    case PadMode::kConstant: return -1;
    case PadMode::kEdge: return j < 0 ? 0 : n - 1;
    case PadMode::kWrap: return ((j % n) + n) % n;
    case PadMode::kReflect: {
      if (n == 1) return 0;
      // Reflection without repeating the edge has period 2 * (n - 1), as numpy.pad's reflect.
      const int64_t period = 2 * (n - 1);
      int64_t m = ((j % period) + period) % period;
      return m < n ? m : period - m;
    }
  }
  return -1;
}

Status pad_kernel(OpContext& ctx) {
  const Tensor& x = ctx.input(0);
  const int64_t rank = x.rank();
  std::string mode_name = ctx.attr_string("mode", "constant");
  PadMode mode;
  if (mode_name == "constant") {
    mode = PadMode::kConstant;
  } else if (mode_name == "reflect") {
    mode = PadMode::kReflect;
  } else if (mode_name == "edge") {
    mode = PadMode::kEdge;
  } else if (mode_name == "wrap" && ctx.opset() >= 19) {
    mode = PadMode::kWrap;
  } else {
    return invalid("Pad mode '{}' is not supported", mode_name);
  }
  std::vector<int64_t> pads, axes;
  Tensor fill(x.dtype(), {});
  if (ctx.opset() < 11) {
    pads = ctx.attr_ints(ctx.opset() < 2 ? "paddings" : "pads");
    if (x.dtype() != DataType::kString) fill.set_double(0, ctx.attr_float("value", 0.0f));
  } else {
    KILN_ASSIGN_OR_RETURN(pads, int_input(ctx, 1, "pads"));
    if (ctx.has_input(2) && ctx.input(2).numel() > 0) {
      if (ctx.input(2).dtype() != x.dtype()) return invalid("Pad constant_value must have the data's dtype");
      copy_elements(fill, 0, ctx.input(2), 0, 1);
    }
    if (ctx.opset() >= 18 && ctx.has_input(3)) {
      KILN_ASSIGN_OR_RETURN(auto raw_axes, int_input(ctx, 3, "axes"));
      KILN_ASSIGN_OR_RETURN(axes, normalize_axes(raw_axes, rank, "Pad axes"));
    }
  }
  if (axes.empty() && !(ctx.opset() >= 18 && ctx.has_input(3))) {
    for (int64_t d = 0; d < rank; ++d) axes.push_back(d);
  }
  const size_t na = axes.size();
  if (pads.size() != 2 * na) return invalid("Pad pads has {} entries, expected {}", pads.size(), 2 * na);
  std::vector<int64_t> begin(static_cast<size_t>(rank), 0), end(static_cast<size_t>(rank), 0);
  for (size_t i = 0; i < na; ++i) {
    begin[static_cast<size_t>(axes[i])] = pads[i];
    end[static_cast<size_t>(axes[i])] = pads[na + i];
  }
  Dims od(static_cast<size_t>(rank));
  std::vector<int64_t> crop0(static_cast<size_t>(rank)), kept(static_cast<size_t>(rank));
  for (size_t d = 0; d < od.size(); ++d) {
    const int64_t dim = x.dims()[d];
    od[d] = dim + begin[d] + end[d];
    // Negative pads crop first; the remaining region is then padded.
    crop0[d] = std::max<int64_t>(0, -begin[d]);
    kept[d] = dim - crop0[d] - std::max<int64_t>(0, -end[d]);
    if (od[d] < 0 || kept[d] < 0) return invalid("Pad pads remove more than dimension {} of size {}", d, dim);
  }
  KILN_ASSIGN_OR_RETURN(Tensor out, Tensor::create(x.dtype(), od));
  std::vector<std::vector<int64_t>> maps(od.size());
  for (size_t d = 0; d < od.size(); ++d) {
    if (kept[d] == 0 && od[d] > 0 && mode != PadMode::kConstant && out.numel() > 0) {
      return invalid("Pad mode '{}' cannot pad dimension {} of size 0", mode_name, d);
    }
    const int64_t pb = std::max<int64_t>(0, begin[d]);
    maps[d].resize(static_cast<size_t>(od[d]));
    for (int64_t o = 0; o < od[d]; ++o) {
      int64_t s = kept[d] == 0 ? -1 : pad_source(o - pb, kept[d], mode);
      maps[d][static_cast<size_t>(o)] = s < 0 ? -1 : s + crop0[d];
    }
  }
  gather_by_axis_maps(x, maps, &fill, out);
  ctx.set_output(0, std::move(out));
  return Status();
}

Status pad_infer(InferContext& c) {
  const Shape* in = known_rank_shape(c, 0);
  if (!in) return infer_same_dtype(c, Shape::unknown());
  std::vector<int64_t> pads, axes;
  if (c.node.opset < 11) {
    pads = node_attr_ints(c.node, c.node.opset < 2 ? "paddings" : "pads");
  } else {
    const Tensor* k = infer_constant(c, 1);
    if (!k) return infer_same_dtype(c, shape_of_rank(in->rank()));
    pads = k->to_int64_vector();
    if (c.node.opset >= 18 && infer_input(c, 3)) {
      const Tensor* ka = infer_constant(c, 3);
      if (!ka) return infer_same_dtype(c, shape_of_rank(in->rank()));
      KILN_ASSIGN_OR_RETURN(axes, normalize_axes(ka->to_int64_vector(), in->rank(), "Pad axes"));
    } else {
      for (int64_t d = 0; d < in->rank(); ++d) axes.push_back(d);
    }
  }
  if (c.node.opset < 11) {
    for (int64_t d = 0; d < in->rank(); ++d) axes.push_back(d);
  }
  if (pads.size() != 2 * axes.size()) {
    return invalid("Pad pads has {} entries, expected {}", pads.size(), 2 * axes.size());
  }
  Shape out = *in;
  for (size_t i = 0; i < axes.size(); ++i) {
    const int64_t extra = pads[i] + pads[axes.size() + i];
    Dim& d = out.dims[static_cast<size_t>(axes[i])];
    if (extra == 0) continue;
    d = d.known() ? Dim::of(d.value + extra) : Dim{};
  }
  return infer_same_dtype(c, out);
}

Result<std::vector<int64_t>> crop_axes(const Node& n, int64_t rank, size_t n_shape) {
  std::vector<int64_t> axes;
  if (n.attr("axes")) {
    KILN_ASSIGN_OR_RETURN(axes, normalize_axes(node_attr_ints(n, "axes"), rank, "CenterCropPad axes"));
  } else {
    for (int64_t d = 0; d < rank; ++d) axes.push_back(d);
  }
  if (axes.size() != n_shape) return invalid("CenterCropPad shape has {} entries for {} axes", n_shape, axes.size());
  return axes;
}

Status center_crop_pad_kernel(OpContext& ctx) {
  const Tensor& x = ctx.input(0);
  KILN_ASSIGN_OR_RETURN(auto shape, int_input(ctx, 1, "shape"));
  KILN_ASSIGN_OR_RETURN(auto axes, crop_axes(ctx.node(), x.rank(), shape.size()));
  Dims od = x.dims();
  for (size_t i = 0; i < axes.size(); ++i) {
    if (shape[i] < 0) return invalid("CenterCropPad shape has a negative size {}", shape[i]);
    od[static_cast<size_t>(axes[i])] = shape[i];
  }
  KILN_ASSIGN_OR_RETURN(Tensor out, Tensor::create(x.dtype(), od));
  std::vector<std::vector<int64_t>> maps(od.size());
  for (size_t d = 0; d < od.size(); ++d) {
    const int64_t dim = x.dims()[d];
    // Cropping starts at floor((dim - size) / 2); padding puts the odd extra element at the end.
    const int64_t shift = dim >= od[d] ? (dim - od[d]) / 2 : -((od[d] - dim) / 2);
    maps[d].resize(static_cast<size_t>(od[d]));
    for (int64_t o = 0; o < od[d]; ++o) {
      const int64_t s = o + shift;
      maps[d][static_cast<size_t>(o)] = s >= 0 && s < dim ? s : -1;
    }
  }
  gather_by_axis_maps(x, maps, nullptr, out);
  ctx.set_output(0, std::move(out));
  return Status();
}

Status center_crop_pad_infer(InferContext& c) {
  const Shape* in = known_rank_shape(c, 0);
  const Tensor* k = infer_constant(c, 1);
  if (!in) return infer_same_dtype(c, Shape::unknown());
  if (!k) return infer_same_dtype(c, shape_of_rank(in->rank()));
  std::vector<int64_t> shape = k->to_int64_vector();
  KILN_ASSIGN_OR_RETURN(auto axes, crop_axes(c.node, in->rank(), shape.size()));
  Shape out = *in;
  for (size_t i = 0; i < axes.size(); ++i) out.dims[static_cast<size_t>(axes[i])] = Dim::of(shape[i]);
  return infer_same_dtype(c, out);
}

// ---- DepthToSpace, SpaceToDepth -------------------------------------------------------------

Status depth_space_check(const Tensor& x, int64_t b, const char* op) {
  if (x.rank() != 4) return invalid("{} input must be 4-D, got shape {}", op, shape_to_string(x.dims()));
  if (b <= 0) return invalid("{} blocksize must be positive, got {}", op, b);
  return Status();
}

Status depth_to_space_kernel(OpContext& ctx) {
  const Tensor& x = ctx.input(0);
  const int64_t b = ctx.attr_int("blocksize", 0);
  KILN_RETURN_IF_ERROR(depth_space_check(x, b, "DepthToSpace"));
  const int64_t n = x.dim(0), c = x.dim(1), h = x.dim(2), w = x.dim(3);
  if (c % (b * b) != 0) return invalid("DepthToSpace channels {} are not divisible by blocksize^2 = {}", c, b * b);
  const int64_t oc = c / (b * b);
  const std::string mode = ctx.attr_string("mode", "DCR");
  Tensor t;
  if (mode == "DCR") {
    t = permute(x.reshaped({n, b, b, oc, h, w}), {0, 3, 4, 1, 5, 2});
  } else if (mode == "CRD") {
    t = permute(x.reshaped({n, oc, b, b, h, w}), {0, 1, 4, 2, 5, 3});
  } else {
    return invalid("DepthToSpace mode '{}' is not DCR or CRD", mode);
  }
  ctx.set_output(0, t.reshaped({n, oc, h * b, w * b}));
  return Status();
}

Status space_to_depth_kernel(OpContext& ctx) {
  const Tensor& x = ctx.input(0);
  const int64_t b = ctx.attr_int("blocksize", 0);
  KILN_RETURN_IF_ERROR(depth_space_check(x, b, "SpaceToDepth"));
  const int64_t n = x.dim(0), c = x.dim(1), h = x.dim(2), w = x.dim(3);
  if (h % b != 0 || w % b != 0) {
    return invalid("SpaceToDepth spatial size {}x{} is not divisible by blocksize {}", h, w, b);
  }
  const std::string mode = ctx.attr_string("mode", "DCR");
  Tensor x6 = x.reshaped({n, c, h / b, b, w / b, b});
  Tensor t;
  if (mode == "DCR") {
    t = permute(x6, {0, 3, 5, 1, 2, 4});
  } else if (mode == "CRD") {
    t = permute(x6, {0, 1, 3, 5, 2, 4});
  } else {
    return invalid("SpaceToDepth mode '{}' is not DCR or CRD", mode);
  }
  ctx.set_output(0, t.reshaped({n, c * b * b, h / b, w / b}));
  return Status();
}

Status depth_space_infer(InferContext& c, bool to_space) {
  const Shape* in = known_rank_shape(c, 0);
  const int64_t b = node_attr_int(c.node, "blocksize", 0);
  if (!in || in->rank() != 4 || b <= 0) return infer_same_dtype(c, in ? *in : Shape::unknown());
  Shape out = *in;
  auto scale = [](const Dim& d, int64_t mul, int64_t div) { return d.known() ? Dim::of(d.value * mul / div) : Dim{}; };
  out.dims[1] = to_space ? scale(in->dims[1], 1, b * b) : scale(in->dims[1], b * b, 1);
  out.dims[2] = to_space ? scale(in->dims[2], b, 1) : scale(in->dims[2], 1, b);
  out.dims[3] = to_space ? scale(in->dims[3], b, 1) : scale(in->dims[3], 1, b);
  return infer_same_dtype(c, out);
}

// ---- ReverseSequence ------------------------------------------------------------------------

Status reverse_sequence_kernel(OpContext& ctx) {
  const Tensor& x = ctx.input(0);
  if (x.rank() < 2) return invalid("ReverseSequence input must have rank >= 2");
  const int64_t batch_axis = ctx.attr_int("batch_axis", 1);
  const int64_t time_axis = ctx.attr_int("time_axis", 0);
  if ((batch_axis != 0 && batch_axis != 1) || (time_axis != 0 && time_axis != 1) || batch_axis == time_axis) {
    return invalid("ReverseSequence batch_axis {} and time_axis {} must be 0 and 1", batch_axis, time_axis);
  }
  KILN_ASSIGN_OR_RETURN(auto lens, int_input(ctx, 1, "sequence_lens"));
  const int64_t batch = x.dim(batch_axis), time = x.dim(time_axis);
  if (static_cast<int64_t>(lens.size()) != batch) {
    return invalid("ReverseSequence sequence_lens has {} entries for a batch of {}", lens.size(), batch);
  }
  const Dims xs = row_major_strides(x.dims());
  const int64_t inner = xs[1];
  Tensor out(x.dtype(), x.dims());
  for (int64_t bi = 0; bi < batch; ++bi) {
    const int64_t len = lens[static_cast<size_t>(bi)];
    if (len < 0 || len > time) return invalid("ReverseSequence length {} is outside [0, {}]", len, time);
    for (int64_t t = 0; t < time; ++t) {
      const int64_t src_t = t < len ? len - 1 - t : t;
      const int64_t base = bi * xs[static_cast<size_t>(batch_axis)];
      copy_elements(out, base + t * xs[static_cast<size_t>(time_axis)], x,
                    base + src_t * xs[static_cast<size_t>(time_axis)], inner);
    }
  }
  ctx.set_output(0, std::move(out));
  return Status();
}

}  // namespace

void register_movement_layout_ops(OpRegistry& r) {
  r.add({"", "Transpose", 1, transpose_kernel, transpose_infer});
  r.add({"", "Concat", 1, concat_kernel, concat_infer});
  r.add({"", "Split", 1, split_kernel, split_infer});
  r.add({"", "Slice", 1, slice_kernel, slice_infer});
  r.add({"", "Tile", 1, tile_kernel, tile_infer});
  r.add({"", "Pad", 1, pad_kernel, pad_infer});
  r.add({"", "CenterCropPad", 18, center_crop_pad_kernel, center_crop_pad_infer});
  r.add({"", "DepthToSpace", 1, depth_to_space_kernel, [](InferContext& c) { return depth_space_infer(c, true); }});
  r.add({"", "SpaceToDepth", 1, space_to_depth_kernel, [](InferContext& c) { return depth_space_infer(c, false); }});
  r.add({"", "ReverseSequence", 10, reverse_sequence_kernel, same_shape_infer});
}

}  // namespace kiln
