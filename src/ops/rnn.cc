// Recurrent layers: RNN, GRU, LSTM. One driver walks directions, batch entries and time steps
// (honouring sequence_lens and layout); each op supplies only its cell. Everything is computed
// in double from converted inputs, which keeps float16/bfloat16 exact enough and the code short.
#include <algorithm>
#include <cctype>
#include <cmath>

#include "ops/registry.h"

namespace kiln {
namespace {

// ---- activations -------------------------------------------------------------------------

struct Activation {
  enum class Kind {
    kRelu,
    kTanh,
    kSigmoid,
    kAffine,
    kLeakyRelu,
    kThresholdedRelu,
    kScaledTanh,
    kHardSigmoid,
    kElu,
    kSoftsign,
    kSoftplus
  };
  Kind kind = Kind::kTanh;
  double alpha = 0;
  double beta = 0;

  double operator()(double x) const {
    switch (kind) {
      case Kind::kRelu: return std::max(x, 0.0);
      case Kind::kTanh: return std::tanh(x);
      case Kind::kSigmoid: return 1.0 / (1.0 + std::exp(-x));
      case Kind::kAffine: return alpha * x + beta;
      case Kind::kLeakyRelu: return x >= 0 ? x : alpha * x;
      case Kind::kThresholdedRelu: return x > alpha ? x : 0.0;
      case Kind::kScaledTanh: return alpha * std::tanh(beta * x);
      case Kind::kHardSigmoid: return std::clamp(alpha * x + beta, 0.0, 1.0);
      case Kind::kElu: return x >= 0 ? x : alpha * (std::exp(x) - 1.0);
      case Kind::kSoftsign: return x / (1.0 + std::abs(x));
      case Kind::kSoftplus: return std::log1p(std::exp(-std::abs(x))) + std::max(x, 0.0);
    }
    return x;
  }
};

struct ActivationSpec {
  const char* name;
  Activation::Kind kind;
  bool has_alpha;
  double alpha;
  bool has_beta;
  double beta;
};

constexpr ActivationSpec kActivations[] = {
    {"relu", Activation::Kind::kRelu, false, 0, false, 0},
    {"tanh", Activation::Kind::kTanh, false, 0, false, 0},
    {"sigmoid", Activation::Kind::kSigmoid, false, 0, false, 0},
    {"affine", Activation::Kind::kAffine, true, 1.0, true, 0.0},
    {"leakyrelu", Activation::Kind::kLeakyRelu, true, 0.01, false, 0},
    {"thresholdedrelu", Activation::Kind::kThresholdedRelu, true, 1.0, false, 0},
    {"scaledtanh", Activation::Kind::kScaledTanh, true, 1.0, true, 1.0},
    {"hardsigmoid", Activation::Kind::kHardSigmoid, true, 0.2, true, 0.5},
    {"elu", Activation::Kind::kElu, true, 1.0, false, 0},
    {"softsign", Activation::Kind::kSoftsign, false, 0, false, 0},
    {"softplus", Activation::Kind::kSoftplus, false, 0, false, 0},
};

// Parses `activations` with activation_alpha/beta. As in onnxruntime, the alpha and beta lists are
// consumed in order only by the activations that take those parameters; missing ones default.
Result<std::vector<Activation>> parse_activations(const OpContext& ctx, const std::vector<std::string>& defaults,
                                                  int64_t num_dir) {
  std::vector<std::string> names = ctx.attr_strings("activations");
  size_t per_dir = defaults.size();
  auto total = per_dir * static_cast<size_t>(num_dir);
  if (names.empty()) {
    for (int64_t d = 0; d < num_dir; ++d) names.insert(names.end(), defaults.begin(), defaults.end());
  } else if (names.size() == per_dir && total != per_dir) {
    // A single set of activations given for a bidirectional layer applies to both directions.
    names.insert(names.end(), names.begin(), names.end());
  }
  if (names.size() != total) {
    return invalid("activations has {} entries, expected {} ({} per direction)", names.size(), total, per_dir);
  }
  std::vector<float> alphas = ctx.attr_floats("activation_alpha");
  std::vector<float> betas = ctx.attr_floats("activation_beta");
  size_t ai = 0, bi = 0;
  std::vector<Activation> acts;
  for (const std::string& name : names) {
    std::string lower;
    for (char c : name) lower += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    const ActivationSpec* spec = nullptr;
    for (const auto& s : kActivations) {
      if (lower == s.name) spec = &s;
    }
    if (!spec) return invalid("unsupported activation '{}'", name);
    Activation a;
    a.kind = spec->kind;
    a.alpha = spec->alpha;
    a.beta = spec->beta;
    if (spec->has_alpha && ai < alphas.size()) a.alpha = alphas[ai++];
    if (spec->has_beta && bi < betas.size()) a.beta = betas[bi++];
    acts.push_back(a);
  }
  return acts;
}

// ---- the shared problem description ---------------------------------------------------------

enum class Op { kRnn, kGru, kLstm };

int64_t gate_count(Op op) {
  return op == Op::kRnn ? 1 : op == Op::kGru ? 3 : 4;
}

struct Problem {
  Op op;
  int64_t seq = 0, batch = 0, input = 0, hidden = 0, dirs = 1, gates = 1;
  int64_t layout = 0;
  bool reverse_only = false;
  std::vector<double> x, w, r, b, h0, c0, p;
  std::vector<int64_t> lens;
  std::vector<Activation> acts;  // per direction: acts_per_dir consecutive entries
  size_t acts_per_dir = 1;
  bool clip = false;
  double clip_value = 0;
  bool linear_before_reset = false;  // GRU
  bool input_forget = false;         // LSTM

  double x_at(int64_t t, int64_t bi, int64_t i) const {
    auto idx = layout == 0 ? (t * batch + bi) * input + i : (bi * seq + t) * input + i;
    return x[static_cast<size_t>(idx)];
  }
  // Offset of [d, b, :] in initial_h/initial_c and Y_h/Y_c.
  size_t state_offset(int64_t d, int64_t bi) const {
    return static_cast<size_t>((layout == 0 ? d * batch + bi : bi * dirs + d) * hidden);
  }
  // Offset of [t, d, b, :] in Y.
  size_t y_offset(int64_t t, int64_t d, int64_t bi) const {
    return static_cast<size_t>((layout == 0 ? (t * dirs + d) * batch + bi : (bi * seq + t) * dirs + d) * hidden);
  }
  double clipped(double v) const { return clip ? std::clamp(v, -clip_value, clip_value) : v; }
  const Activation& act(int64_t d, size_t k) const { return acts[static_cast<size_t>(d) * acts_per_dir + k]; }
};

Status expect_dims(const Tensor& t, const char* name, const Dims& want) {
  if (t.dims() != want) {
    return invalid("{} has shape {}, expected {}", name, shape_to_string(t.dims()), shape_to_string(want));
  }
  return Status();
}

Result<Problem> parse_problem(const OpContext& ctx, Op op) {
  Problem pb;
  pb.op = op;
  pb.gates = gate_count(op);
  for (size_t i = 0; i < 3; ++i) {
    if (!ctx.has_input(i)) return invalid("input {} (X, W, R) is required", i);
  }
  const Tensor& x = ctx.input(0);
  const Tensor& w = ctx.input(1);
  const Tensor& r = ctx.input(2);
  if (!is_float(x.dtype()) || x.dtype() != w.dtype() || x.dtype() != r.dtype()) {
    return invalid("X, W and R must share one floating-point type");
  }
  if (x.rank() != 3 || w.rank() != 3 || r.rank() != 3) return invalid("X, W and R must have rank 3");
  pb.layout = ctx.attr_int("layout", 0);
  if (pb.layout != 0 && pb.layout != 1) return invalid("layout must be 0 or 1, got {}", pb.layout);
  pb.seq = pb.layout == 0 ? x.dim(0) : x.dim(1);
  pb.batch = pb.layout == 0 ? x.dim(1) : x.dim(0);
  pb.input = x.dim(2);

  std::string direction = ctx.attr_string("direction", "forward");
  if (direction == "forward" || direction == "reverse") {
    pb.dirs = 1;
    pb.reverse_only = direction == "reverse";
  } else if (direction == "bidirectional") {
    pb.dirs = 2;
  } else {
    return invalid("unknown direction '{}'", direction);
  }
  pb.hidden = r.dim(2);
  if (ctx.has_attr("hidden_size") && ctx.attr_int("hidden_size", 0) != pb.hidden) {
    return invalid("hidden_size {} disagrees with R's shape {}", ctx.attr_int("hidden_size", 0),
                   shape_to_string(r.dims()));
  }
  int64_t gh = pb.gates * pb.hidden;
  KILN_RETURN_IF_ERROR(expect_dims(w, "W", {pb.dirs, gh, pb.input}));
  KILN_RETURN_IF_ERROR(expect_dims(r, "R", {pb.dirs, gh, pb.hidden}));
  pb.x = x.to_double_vector();
  pb.w = w.to_double_vector();
  pb.r = r.to_double_vector();

  if (ctx.has_input(3)) {
    KILN_RETURN_IF_ERROR(expect_dims(ctx.input(3), "B", {pb.dirs, 2 * gh}));
    pb.b = ctx.input(3).to_double_vector();
  } else {
    pb.b.assign(static_cast<size_t>(pb.dirs * 2 * gh), 0.0);
  }
  pb.lens.assign(static_cast<size_t>(pb.batch), pb.seq);
  if (ctx.has_input(4)) {
    const Tensor& sl = ctx.input(4);
    KILN_RETURN_IF_ERROR(expect_dims(sl, "sequence_lens", {pb.batch}));
    for (int64_t i = 0; i < pb.batch; ++i) {
      int64_t v = sl.get_int64(i);
      if (v < 0 || v > pb.seq) return invalid("sequence_lens[{}] = {} is outside [0, {}]", i, v, pb.seq);
      pb.lens[static_cast<size_t>(i)] = v;
    }
  }
  Dims state_dims = pb.layout == 0 ? Dims{pb.dirs, pb.batch, pb.hidden} : Dims{pb.batch, pb.dirs, pb.hidden};
  auto state_size = static_cast<size_t>(pb.dirs * pb.batch * pb.hidden);
  if (ctx.has_input(5)) {
    KILN_RETURN_IF_ERROR(expect_dims(ctx.input(5), "initial_h", state_dims));
    pb.h0 = ctx.input(5).to_double_vector();
  } else {
    pb.h0.assign(state_size, 0.0);
  }
  if (op == Op::kLstm) {
    if (ctx.has_input(6)) {
      KILN_RETURN_IF_ERROR(expect_dims(ctx.input(6), "initial_c", state_dims));
      pb.c0 = ctx.input(6).to_double_vector();
    } else {
      pb.c0.assign(state_size, 0.0);
    }
    if (ctx.has_input(7)) {
      KILN_RETURN_IF_ERROR(expect_dims(ctx.input(7), "P", {pb.dirs, 3 * pb.hidden}));
      pb.p = ctx.input(7).to_double_vector();
    } else {
      pb.p.assign(static_cast<size_t>(pb.dirs * 3 * pb.hidden), 0.0);
    }
    pb.input_forget = ctx.attr_int("input_forget", 0) != 0;
  }
  if (op == Op::kGru) pb.linear_before_reset = ctx.attr_int("linear_before_reset", 0) != 0;

  if (ctx.has_attr("clip")) {
    pb.clip = true;
    pb.clip_value = ctx.attr_float("clip", 0);
    if (!(pb.clip_value > 0)) return invalid("clip must be positive, got {}", pb.clip_value);
  }
  std::vector<std::string> defaults;
  if (op == Op::kRnn) defaults = {"Tanh"};
  if (op == Op::kGru) defaults = {"Sigmoid", "Tanh"};
  if (op == Op::kLstm) defaults = {"Sigmoid", "Tanh", "Tanh"};
  pb.acts_per_dir = defaults.size();
  KILN_ASSIGN_OR_RETURN(pb.acts, parse_activations(ctx, defaults, pb.dirs));
  return pb;
}

// ---- cells -------------------------------------------------------------------------------

double dot(const double* a, const double* b, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

// Scratch for one cell step: gate pre-activations from the input (wx) and the state (rh).
struct Step {
  std::vector<double> xt, wx, rh, h_new, c_new;
};

// wx[g*H + j] = W[g*H + j] . x_t + Wb[g*H + j]; rh likewise with R, h_prev and Rb.
void project(const Problem& pb, int64_t d, const double* h_prev, Step& s) {
  int64_t gh = pb.gates * pb.hidden;
  const double* w = pb.w.data() + d * gh * pb.input;
  const double* r = pb.r.data() + d * gh * pb.hidden;
  const double* wb = pb.b.data() + d * 2 * gh;
  const double* rb = wb + gh;
  for (int64_t k = 0; k < gh; ++k) {
    s.wx[static_cast<size_t>(k)] = dot(w + k * pb.input, s.xt.data(), pb.input) + wb[k];
    s.rh[static_cast<size_t>(k)] = dot(r + k * pb.hidden, h_prev, pb.hidden) + rb[k];
  }
}

void rnn_cell(const Problem& pb, int64_t d, const double* h_prev, const double*, Step& s) {
  project(pb, d, h_prev, s);
  const Activation& f = pb.act(d, 0);
  for (int64_t j = 0; j < pb.hidden; ++j) {
    auto k = static_cast<size_t>(j);
    s.h_new[k] = f(pb.clipped(s.wx[k] + s.rh[k]));
  }
}

// Gate order z, r, h. With linear_before_reset the reset gate multiplies (R_h h + Rb_h) instead
// of h before the projection, which needs R_h h without the reset applied: project() gives that.
void gru_cell(const Problem& pb, int64_t d, const double* h_prev, const double*, Step& s) {
  project(pb, d, h_prev, s);
  const Activation& f = pb.act(d, 0);
  const Activation& g = pb.act(d, 1);
  int64_t hs = pb.hidden;
  const double* rh_w = pb.r.data() + (d * 3 + 2) * hs * hs;
  const double* rb_h = pb.b.data() + d * 6 * hs + 5 * hs;
  std::vector<double> reset_h(static_cast<size_t>(hs));
  std::vector<double> z(static_cast<size_t>(hs));
  for (int64_t j = 0; j < hs; ++j) {
    auto k = static_cast<size_t>(j);
    z[k] = f(pb.clipped(s.wx[k] + s.rh[k]));
    double rg = f(pb.clipped(s.wx[k + static_cast<size_t>(hs)] + s.rh[k + static_cast<size_t>(hs)]));
    reset_h[k] = rg * (pb.linear_before_reset ? s.rh[k + 2 * static_cast<size_t>(hs)] : h_prev[j]);
  }
  for (int64_t j = 0; j < hs; ++j) {
    auto k = static_cast<size_t>(j);
    double rec = pb.linear_before_reset ? reset_h[k] : dot(rh_w + j * hs, reset_h.data(), hs) + rb_h[j];
    double ht = g(pb.clipped(s.wx[k + 2 * static_cast<size_t>(hs)] + rec));
    s.h_new[k] = (1.0 - z[k]) * ht + z[k] * h_prev[j];
  }
}

// Gate order i, o, f, c; peepholes P in order i, o, f.
void lstm_cell(const Problem& pb, int64_t d, const double* h_prev, const double* c_prev, Step& s) {
  project(pb, d, h_prev, s);
  const Activation& f = pb.act(d, 0);
  const Activation& g = pb.act(d, 1);
  const Activation& h = pb.act(d, 2);
  int64_t hs = pb.hidden;
  const double* p = pb.p.data() + d * 3 * hs;
  for (int64_t j = 0; j < hs; ++j) {
    auto pre = [&](int64_t gate) {
      auto k = static_cast<size_t>(gate * hs + j);
      return s.wx[k] + s.rh[k];
    };
    double it = f(pb.clipped(pre(0) + p[j] * c_prev[j]));
    double ft = pb.input_forget ? 1.0 - it : f(pb.clipped(pre(2) + p[2 * hs + j] * c_prev[j]));
    double ct = g(pb.clipped(pre(3)));
    double c = ft * c_prev[j] + it * ct;
    double ot = f(pb.clipped(pre(1) + p[hs + j] * c));
    s.c_new[static_cast<size_t>(j)] = c;
    s.h_new[static_cast<size_t>(j)] = ot * h(c);
  }
}

using Cell = void (*)(const Problem&, int64_t, const double*, const double*, Step&);

// ---- driver ------------------------------------------------------------------------------

Status run_recurrence(OpContext& ctx, Op op, Cell cell) {
  KILN_ASSIGN_OR_RETURN(Problem pb, parse_problem(ctx, op));
  auto hs = static_cast<size_t>(pb.hidden);
  std::vector<double> y(static_cast<size_t>(pb.seq * pb.dirs * pb.batch * pb.hidden), 0.0);
  std::vector<double> yh(pb.h0.size()), yc(pb.c0.size());
  Step s;
  s.xt.resize(static_cast<size_t>(pb.input));
  s.wx.resize(static_cast<size_t>(pb.gates) * hs);
  s.rh.resize(s.wx.size());
  s.h_new.resize(hs);
  s.c_new.resize(hs);
  std::vector<double> h(hs), c(hs);
  bool lstm = op == Op::kLstm;
  for (int64_t d = 0; d < pb.dirs; ++d) {
    bool reverse = pb.reverse_only || d == 1;
    for (int64_t bi = 0; bi < pb.batch; ++bi) {
      size_t so = pb.state_offset(d, bi);
      std::copy_n(pb.h0.begin() + static_cast<std::ptrdiff_t>(so), hs, h.begin());
      if (lstm) std::copy_n(pb.c0.begin() + static_cast<std::ptrdiff_t>(so), hs, c.begin());
      int64_t len = pb.lens[static_cast<size_t>(bi)];
      // A reverse pass over a shorter sequence starts at its own last step, not at seq - 1.
      for (int64_t step = 0; step < len; ++step) {
        int64_t t = reverse ? len - 1 - step : step;
        for (int64_t i = 0; i < pb.input; ++i) s.xt[static_cast<size_t>(i)] = pb.x_at(t, bi, i);
        cell(pb, d, h.data(), c.data(), s);
        h = s.h_new;
        if (lstm) c = s.c_new;
        std::copy(h.begin(), h.end(), y.begin() + static_cast<std::ptrdiff_t>(pb.y_offset(t, d, bi)));
      }
      std::copy(h.begin(), h.end(), yh.begin() + static_cast<std::ptrdiff_t>(so));
      if (lstm) std::copy(c.begin(), c.end(), yc.begin() + static_cast<std::ptrdiff_t>(so));
    }
  }

  DataType dt = ctx.input(0).dtype();
  auto emit = [&](size_t index, const std::vector<double>& v, Dims dims) -> Status {
    if (!ctx.output_wanted(index)) return Status();
    KILN_ASSIGN_OR_RETURN(Tensor t, Tensor::create(dt, std::move(dims)));
    for (size_t i = 0; i < v.size(); ++i) t.set_double(static_cast<int64_t>(i), v[i]);
    ctx.set_output(index, std::move(t));
    return Status();
  };
  Dims state_dims = pb.layout == 0 ? Dims{pb.dirs, pb.batch, pb.hidden} : Dims{pb.batch, pb.dirs, pb.hidden};
  Dims y_dims =
      pb.layout == 0 ? Dims{pb.seq, pb.dirs, pb.batch, pb.hidden} : Dims{pb.batch, pb.seq, pb.dirs, pb.hidden};
  KILN_RETURN_IF_ERROR(emit(0, y, y_dims));
  KILN_RETURN_IF_ERROR(emit(1, yh, state_dims));
  if (lstm) KILN_RETURN_IF_ERROR(emit(2, yc, state_dims));
  return Status();
}

Status rnn_kernel(OpContext& ctx) {
  return run_recurrence(ctx, Op::kRnn, rnn_cell);
}
Status gru_kernel(OpContext& ctx) {
  return run_recurrence(ctx, Op::kGru, gru_cell);
}
Status lstm_kernel(OpContext& ctx) {
  return run_recurrence(ctx, Op::kLstm, lstm_cell);
}

// ---- inference ---------------------------------------------------------------------------

Dim dim_of(const TypeInfo* t, int64_t i) {
  if (!t || t->kind != TypeInfo::Kind::kTensor || !t->shape.rank_known || t->shape.rank() <= i) return Dim{};
  return t->shape.dims[static_cast<size_t>(i)];
}

Status recurrence_infer(InferContext& ic, Op op) {
  auto in = [&](size_t i) -> const TypeInfo* { return i < ic.input_types.size() ? ic.input_types[i] : nullptr; };
  const TypeInfo* x = in(0);
  if (!x || x->kind != TypeInfo::Kind::kTensor) return Status();
  if (x->shape.rank_known && x->shape.rank() != 3) return invalid("X must have rank 3, got {}", x->shape.rank());
  const Attribute* layout_attr = ic.node.attr("layout");
  int64_t layout = layout_attr ? layout_attr->i : 0;
  const Attribute* dir_attr = ic.node.attr("direction");
  Dim dirs = Dim::of(dir_attr && dir_attr->s == "bidirectional" ? 2 : 1);
  Dim hidden = dim_of(in(2), 2);
  if (const Attribute* hsa = ic.node.attr("hidden_size")) hidden = Dim::of(hsa->i);
  if (!hidden.known()) {
    Dim wd = dim_of(in(1), 1);
    if (wd.known()) hidden = Dim::of(wd.value / gate_count(op));
  }
  Dim seq = dim_of(x, layout == 0 ? 0 : 1);
  Dim batch = dim_of(x, layout == 0 ? 1 : 0);
  auto shape = [](std::vector<Dim> d) {
    Shape s;
    s.rank_known = true;
    s.dims = std::move(d);
    return s;
  };
  size_t n_out = ic.node.outputs.size();
  if (ic.output_types.size() < n_out) ic.output_types.resize(n_out);
  if (n_out > 0) {
    ic.output_types[0] =
        TypeInfo::tensor(x->dtype, layout == 0 ? shape({seq, dirs, batch, hidden}) : shape({batch, seq, dirs, hidden}));
  }
  Shape state = layout == 0 ? shape({dirs, batch, hidden}) : shape({batch, dirs, hidden});
  for (size_t i = 1; i < n_out && i < (op == Op::kLstm ? 3u : 2u); ++i)
    ic.output_types[i] = TypeInfo::tensor(x->dtype, state);
  return Status();
}

}  // namespace

void register_rnn_ops(OpRegistry& r) {
  r.add({"", "RNN", 1, rnn_kernel, [](InferContext& ic) { return recurrence_infer(ic, Op::kRnn); }});
  r.add({"", "GRU", 1, gru_kernel, [](InferContext& ic) { return recurrence_infer(ic, Op::kGru); }});
  r.add({"", "LSTM", 1, lstm_kernel, [](InferContext& ic) { return recurrence_infer(ic, Op::kLstm); }});
}

}  // namespace kiln
