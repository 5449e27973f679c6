// ai.onnx.ml operators: LabelEncoder, TreeEnsemble, ArrayFeatureExtractor, Binarizer.
#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "core/dispatch.h"
#include "ops/registry.h"

namespace kiln {
namespace {

// ---- LabelEncoder ---------------------------------------------------------------------------

// The keys_* / values_* attribute that is set, as a 1-D tensor.
Result<Tensor> attr_as_tensor(const OpContext& ctx, const std::string& prefix, bool* found) {
  *found = true;
  if (const Tensor* t = ctx.attr_tensor(prefix + "_tensor")) return t->reshaped({t->numel()});
  if (ctx.has_attr(prefix + "_strings")) {
    auto v = ctx.attr_strings(prefix + "_strings");
    return Tensor::from_vector(v, {static_cast<int64_t>(v.size())});
  }
  if (ctx.has_attr(prefix + "_int64s")) {
    auto v = ctx.attr_ints(prefix + "_int64s");
    return Tensor::from_vector(v, {static_cast<int64_t>(v.size())});
  }
  if (ctx.has_attr(prefix + "_floats")) {
    auto v = ctx.attr_floats(prefix + "_floats");
    return Tensor::from_vector(v, {static_cast<int64_t>(v.size())});
  }
  *found = false;
  return Tensor();
}

// The default output for unmatched inputs, as a one-element tensor of the values' type.
Tensor label_encoder_default(const OpContext& ctx, DataType vt) {
  if (const Tensor* t = ctx.attr_tensor("default_tensor"); t && t->numel() >= 1 && t->dtype() == vt) {
    Tensor d(vt, {1});
    copy_elements(d, 0, *t, 0, 1);
    return d;
  }
  Tensor d(vt, {1});
  if (vt == DataType::kString) {
    d.strings()[0] = ctx.attr_string("default_string", "_Unused");
  } else if (is_float(vt)) {
    d.set_double(0, ctx.has_attr("default_float") ? ctx.attr_float("default_float", -0.0f) : -0.0);
  } else {
    d.set_double(0, static_cast<double>(ctx.attr_int("default_int64", -1)));
  }
  return d;
}

Status label_encoder_kernel(OpContext& ctx) {
  const Tensor& x = ctx.input(0);
  Tensor keys, values;
  bool have_keys = false, have_values = false;
  if (ctx.opset() < 2 || ctx.has_attr("classes_strings")) {
    // LabelEncoder-1: string <-> int64 through the position in classes_strings.
    auto classes = ctx.attr_strings("classes_strings");
    std::vector<int64_t> ids(classes.size());
    for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int64_t>(i);
    Tensor names = Tensor::from_vector(classes, {static_cast<int64_t>(classes.size())});
    Tensor nums = Tensor::from_vector(ids, {static_cast<int64_t>(ids.size())});
    keys = x.dtype() == DataType::kString ? names : nums;
    values = x.dtype() == DataType::kString ? nums : names;
    have_keys = have_values = true;
  } else {
    KILN_ASSIGN_OR_RETURN(keys, attr_as_tensor(ctx, "keys", &have_keys));
    KILN_ASSIGN_OR_RETURN(values, attr_as_tensor(ctx, "values", &have_values));
  }
  if (!have_keys || !have_values) return invalid("LabelEncoder needs one keys_* and one values_* attribute");
  if (keys.numel() != values.numel()) {
    return invalid("LabelEncoder: {} keys but {} values", keys.numel(), values.numel());
  }
  if ((x.dtype() == DataType::kString) != (keys.dtype() == DataType::kString)) {
    return invalid("LabelEncoder: input type {} does not match key type {}", dtype_name(x.dtype()),
                   dtype_name(keys.dtype()));
  }
  const DataType vt = values.dtype();
  Tensor deflt = label_encoder_default(ctx, vt);
  KILN_ASSIGN_OR_RETURN(Tensor y, Tensor::create(vt, x.dims()));
  const int64_t n = x.numel();
  // Later keys override earlier ones; NaN keys match any NaN input.
  if (x.dtype() == DataType::kString) {
    std::map<std::string, int64_t> m;
    for (int64_t i = 0; i < keys.numel(); ++i) m[keys.strings()[static_cast<size_t>(i)]] = i;
    for (int64_t i = 0; i < n; ++i) {
      auto it = m.find(x.strings()[static_cast<size_t>(i)]);
      if (it != m.end()) {
        copy_elements(y, i, values, it->second, 1);
      } else {
        copy_elements(y, i, deflt, 0, 1);
      }
    }
  } else if (is_integer(x.dtype()) && is_integer(keys.dtype())) {
    std::map<int64_t, int64_t> m;
    for (int64_t i = 0; i < keys.numel(); ++i) m[keys.get_int64(i)] = i;
    for (int64_t i = 0; i < n; ++i) {
      auto it = m.find(x.get_int64(i));
      if (it != m.end()) {
        copy_elements(y, i, values, it->second, 1);
      } else {
        copy_elements(y, i, deflt, 0, 1);
      }
    }
  } else {
    std::map<double, int64_t> m;
    int64_t nan_key = -1;
    for (int64_t i = 0; i < keys.numel(); ++i) {
      double k = keys.get_double(i);
      if (std::isnan(k)) {
        nan_key = i;
      } else {
        m[k] = i;
      }
    }
    for (int64_t i = 0; i < n; ++i) {
      double v = x.get_double(i);
      int64_t hit = -1;
      if (std::isnan(v)) {
        hit = nan_key;
      } else if (auto it = m.find(v); it != m.end()) {
        hit = it->second;
      }
      if (hit >= 0) {
        copy_elements(y, i, values, hit, 1);
      } else {
        copy_elements(y, i, deflt, 0, 1);
      }
    }
  }
  ctx.set_output(0, std::move(y));
  return Status();
}

// ---- ArrayFeatureExtractor / Binarizer --------------------------------------------------------

Status array_feature_extractor_kernel(OpContext& ctx) {
  const Tensor& x = ctx.input(0);
  const Tensor& ind = ctx.input(1);
  if (x.rank() < 1) return invalid("ArrayFeatureExtractor: input must have rank >= 1");
  if (!is_integer(ind.dtype())) return invalid("ArrayFeatureExtractor: indices must be integers");
  const std::vector<int64_t> idx = ind.to_int64_vector();
  const int64_t last = x.dim(-1);
  for (int64_t v : idx) {
    if (v < 0 || v >= last) return invalid("ArrayFeatureExtractor: index {} is out of range [0, {})", v, last);
  }
  const auto k = static_cast<int64_t>(idx.size());
  Dims out_dims = x.rank() == 1 ? Dims{1, k} : Dims(x.dims().begin(), x.dims().end() - 1);
  if (x.rank() > 1) out_dims.push_back(k);
  KILN_ASSIGN_OR_RETURN(Tensor y, Tensor::create(x.dtype(), out_dims));
  const int64_t rows = last == 0 ? 0 : x.numel() / last;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < k; ++j) copy_elements(y, r * k + j, x, r * last + idx[static_cast<size_t>(j)], 1);
  }
  ctx.set_output(0, std::move(y));
  return Status();
}

Status binarizer_kernel(OpContext& ctx) {
  const Tensor& x = ctx.input(0);
  const double threshold = ctx.attr_float("threshold", 0.0f);
  KILN_ASSIGN_OR_RETURN(Tensor y, Tensor::create(x.dtype(), x.dims()));
  Status s = visit_numeric(x.dtype(), [&]<typename T>() -> Status {
    const T* in = x.data<T>();
    T* out = y.data<T>();
    for (int64_t i = 0; i < x.numel(); ++i) {
      out[i] = static_cast<double>(static_cast<std::conditional_t<std::is_class_v<T>, float, T>>(in[i])) > threshold
                   ? T(1)
                   : T(0);
    }
    return Status();
  });
  KILN_RETURN_IF_ERROR(s);
  ctx.set_output(0, std::move(y));
  return Status();
}

// ---- TreeEnsemble ----------------------------------------------------------------------------

enum Mode { kLeq = 0, kLt, kGte, kGt, kEq, kNeq, kMember };

std::vector<double> tensor_attr_doubles(const OpContext& ctx, const std::string& name) {
  const Tensor* t = ctx.attr_tensor(name);
  return t ? t->to_double_vector() : std::vector<double>{};
}

// Inverse of the standard normal CDF via erfinv: a rational first guess refined by Newton steps.
double erfinv(double y) {
  if (y <= -1) return -INFINITY;
  if (y >= 1) return INFINITY;
  const double a = 0.147;
  const double l = std::log(1 - y * y);
  const double t = 2 / (M_PI * a) + l / 2;
  double x = std::copysign(std::sqrt(std::sqrt(t * t - l / a) - t), y);
  for (int i = 0; i < 3; ++i) x -= (std::erf(x) - y) / (2 / std::sqrt(M_PI) * std::exp(-x * x));
  return x;
}

Status tree_ensemble_kernel(OpContext& ctx) {
  const Tensor& x = ctx.input(0);
  if (!is_float(x.dtype())) return invalid("TreeEnsemble: input must be a float tensor, got {}", dtype_name(x.dtype()));
  if (x.rank() != 2 && x.rank() != 1)
    return invalid("TreeEnsemble: input must be [N, F], got {}", shape_to_string(x.dims()));
  const int64_t rows = x.rank() == 2 ? x.dim(0) : 1;
  const int64_t feats = x.rank() == 2 ? x.dim(1) : x.dim(0);

  const auto feature = ctx.attr_ints("nodes_featureids");
  const auto true_ids = ctx.attr_ints("nodes_truenodeids");
  const auto false_ids = ctx.attr_ints("nodes_falsenodeids");
  const auto true_leaf = ctx.attr_ints("nodes_trueleafs");
  const auto false_leaf = ctx.attr_ints("nodes_falseleafs");
  const auto missing_true = ctx.attr_ints("nodes_missing_value_tracks_true");
  const auto leaf_target = ctx.attr_ints("leaf_targetids");
  const auto roots = ctx.attr_ints("tree_roots");
  const std::vector<double> splits = tensor_attr_doubles(ctx, "nodes_splits");
  const std::vector<double> modes_d = tensor_attr_doubles(ctx, "nodes_modes");
  const std::vector<double> leaf_w = tensor_attr_doubles(ctx, "leaf_weights");
  const std::vector<double> members = tensor_attr_doubles(ctx, "membership_values");
  const int64_t n_targets = ctx.attr_int("n_targets", 0);
  const int64_t agg = ctx.attr_int("aggregate_function", 1);
  const int64_t post = ctx.attr_int("post_transform", 0);

  const size_t nn = feature.size();
  if (true_ids.size() != nn || false_ids.size() != nn || true_leaf.size() != nn || false_leaf.size() != nn ||
      splits.size() != nn || modes_d.size() != nn || (!missing_true.empty() && missing_true.size() != nn)) {
    return invalid("TreeEnsemble: the nodes_* attributes must all have {} entries", nn);
  }
  if (leaf_target.size() != leaf_w.size())
    return invalid("TreeEnsemble: leaf_targetids and leaf_weights differ in length");
  if (n_targets <= 0) return invalid("TreeEnsemble: n_targets must be positive");
  if (agg < 0 || agg > 3) return invalid("TreeEnsemble: bad aggregate_function {}", agg);
  if (post < 0 || post > 4) return invalid("TreeEnsemble: bad post_transform {}", post);
  for (int64_t t : leaf_target) {
    if (t < 0 || t >= n_targets) return invalid("TreeEnsemble: leaf target {} is out of range", t);
  }
  // Member sets, in node order, each terminated by NaN.
  std::vector<std::set<double>> sets(nn);
  size_t mpos = 0;
  for (size_t i = 0; i < nn; ++i) {
    int m = static_cast<int>(modes_d[i]);
    if (m < kLeq || m > kMember) return invalid("TreeEnsemble: bad node mode {}", m);
    if (feature[i] < 0 || feature[i] >= feats)
      return invalid("TreeEnsemble: feature id {} is out of range", feature[i]);
    if (!true_leaf[i] && (true_ids[i] < 0 || true_ids[i] >= static_cast<int64_t>(nn)))
      return invalid("TreeEnsemble: bad true node id");
    if (!false_leaf[i] && (false_ids[i] < 0 || false_ids[i] >= static_cast<int64_t>(nn)))
      return invalid("TreeEnsemble: bad false node id");
    if (true_leaf[i] && (true_ids[i] < 0 || true_ids[i] >= static_cast<int64_t>(leaf_w.size())))
      return invalid("TreeEnsemble: bad true leaf id");
    if (false_leaf[i] && (false_ids[i] < 0 || false_ids[i] >= static_cast<int64_t>(leaf_w.size())))
      return invalid("TreeEnsemble: bad false leaf id");
    if (m != kMember) continue;
    while (mpos < members.size() && !std::isnan(members[mpos])) sets[i].insert(members[mpos++]);
    if (mpos >= members.size()) return invalid("TreeEnsemble: membership_values has too few NaN-terminated sets");
    ++mpos;
  }
  for (int64_t r : roots) {
    if (r < 0 || r >= static_cast<int64_t>(nn)) return invalid("TreeEnsemble: tree root {} is out of range", r);
  }

  const std::vector<double> xs = x.to_double_vector();
  std::vector<double> out(static_cast<size_t>(rows * n_targets));
  const double init = agg == 2   ? std::numeric_limits<double>::max()
                      : agg == 3 ? std::numeric_limits<double>::lowest()
                                 : 0.0;
  if (agg >= 2) {
    // The reference starts MIN/MAX from the input type's largest finite value.
    double big =
        x.dtype() == DataType::kDouble ? std::numeric_limits<double>::max() : std::numeric_limits<float>::max();
    std::fill(out.begin(), out.end(), agg == 2 ? big : -big);
  } else {
    std::fill(out.begin(), out.end(), init);
  }
  const double ntrees = static_cast<double>(roots.size());
  for (int64_t row = 0; row < rows; ++row) {
    const double* f = xs.data() + row * feats;
    double* o = out.data() + row * n_targets;
    for (int64_t root : roots) {
      auto node = static_cast<size_t>(root);
      int64_t leaf = -1;
      // A root whose two branches are the same leaf is a single-leaf tree.
      if (true_leaf[node] && false_leaf[node] && true_ids[node] == false_ids[node]) leaf = true_ids[node];
      for (size_t steps = 0; leaf < 0; ++steps) {
        if (steps > nn) return invalid("TreeEnsemble: tree at root {} has a cycle", root);
        const double v = f[feature[node]];
        bool go_true;
        if (std::isnan(v) && !missing_true.empty() && missing_true[node]) {
          go_true = true;
        } else {
          const double s = splits[node];
          switch (static_cast<int>(modes_d[node])) {
            case kLeq: go_true = v <= s; break;
            case kLt: go_true = v < s; break;
            case kGte: go_true = v >= s; break;
            case kGt: go_true = v > s; break;
            case kEq: go_true = v == s; break;
            case kNeq: go_true = v != s; break;
            default: go_true = sets[node].count(v) > 0; break;
          }
        }
        const int64_t next = go_true ? true_ids[node] : false_ids[node];
        if (go_true ? true_leaf[node] : false_leaf[node]) {
          leaf = next;
        } else {
          node = static_cast<size_t>(next);
        }
      }
      const double w = leaf_w[static_cast<size_t>(leaf)];
      double& dst = o[leaf_target[static_cast<size_t>(leaf)]];
      switch (agg) {
        case 0: dst += w / ntrees; break;
        case 1: dst += w; break;
        case 2: dst = std::min(dst, w); break;
        default: dst = std::max(dst, w); break;
      }
    }
    switch (post) {
      case 1:
      case 3: {  // SOFTMAX, SOFTMAX_ZERO (zeros stay zero and take no share)
        double mx = -INFINITY;
        for (int64_t t = 0; t < n_targets; ++t) {
          if (post == 1 || o[t] != 0) mx = std::max(mx, o[t]);
        }
        double sum = 0;
        for (int64_t t = 0; t < n_targets; ++t) {
          o[t] = (post == 3 && o[t] == 0) ? 0.0 : std::exp(o[t] - mx);
          sum += o[t];
        }
        if (sum > 0) {
          for (int64_t t = 0; t < n_targets; ++t) o[t] /= sum;
        }
        break;
      }
      case 2:
        for (int64_t t = 0; t < n_targets; ++t) o[t] = 1 / (1 + std::exp(-o[t]));
        break;
      case 4:
        for (int64_t t = 0; t < n_targets; ++t) o[t] = std::sqrt(2.0) * erfinv(2 * o[t] - 1);
        break;
      default: break;
    }
  }
  Tensor y(x.dtype(), {rows, n_targets});
  for (size_t i = 0; i < out.size(); ++i) y.set_double(static_cast<int64_t>(i), out[i]);
  ctx.set_output(0, std::move(y));
  return Status();
}

}  // namespace

void register_ml_ops(OpRegistry& r) {
  r.add({"ai.onnx.ml", "LabelEncoder", 1, label_encoder_kernel, nullptr});
  r.add({"ai.onnx.ml", "TreeEnsemble", 5, tree_ensemble_kernel, nullptr});
  r.add({"ai.onnx.ml", "ArrayFeatureExtractor", 1, array_feature_extractor_kernel, nullptr});
  r.add({"ai.onnx.ml", "Binarizer", 1, binarizer_kernel, nullptr});
}

}  // namespace kiln
