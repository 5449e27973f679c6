// Einsum (general: implicit/explicit output, ellipsis broadcasting, repeated labels) and Det.
#include <algorithm>
#include <cmath>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "core/dispatch.h"
#include "ops/registry.h"

namespace kiln {

namespace {

// Labels are the letters' character codes, so sorting labels sorts them as NumPy's implicit mode
// does ('A' < 'a'); the dims an ellipsis stands for get labels kEllipsisLabel + j, where j counts
// the broadcast ellipsis dims from the left (right-aligned across operands, like broadcasting).
constexpr int kEllipsisLabel = 128;

struct EinsumSpec {
  std::vector<std::vector<int>> inputs;  // per operand, per dim: its label
  std::vector<int> output;               // labels of the output dims
  int ellipsis_rank = 0;                 // number of broadcast dims the ellipsis stands for
};

// Splits one term into letters and at most one "...", returning the letter labels and where the
// ellipsis sits (-1 when absent).
Status parse_term(const std::string& term, std::vector<int>* letters, int* ellipsis_pos) {
  *ellipsis_pos = -1;
  for (size_t i = 0; i < term.size();) {
    char c = term[i];
    if (c == '.') {
      if (term.compare(i, 3, "...") != 0) return invalid("einsum term '{}' has a stray '.'", term);
      if (*ellipsis_pos >= 0) return invalid("einsum term '{}' has more than one ellipsis", term);
      *ellipsis_pos = static_cast<int>(letters->size());
      i += 3;
    } else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) {
      letters->push_back(static_cast<unsigned char>(c));
      ++i;
    } else {
      return invalid("einsum term '{}' has an invalid character '{}'", term, c);
    }
  }
  return Status();
}

Result<EinsumSpec> parse_einsum(const std::string& equation, const std::vector<int64_t>& ranks) {
  std::string eq;
  for (char c : equation) {
    if (c != ' ' && c != '\t' && c != '\n') eq.push_back(c);
  }
  std::string lhs = eq, rhs;
  const size_t arrow = eq.find("->");
  const bool explicit_out = arrow != std::string::npos;
  if (explicit_out) {
    lhs = eq.substr(0, arrow);
    rhs = eq.substr(arrow + 2);
  }
  std::vector<std::string> terms;
  size_t start = 0;
  while (true) {
    size_t comma = lhs.find(',', start);
    terms.push_back(lhs.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  if (terms.size() != ranks.size()) {
    return invalid("einsum equation '{}' has {} operands but the node has {} inputs", equation, terms.size(),
                   ranks.size());
  }
  EinsumSpec spec;
  std::vector<std::vector<int>> letters(terms.size());
  std::vector<int> ell_pos(terms.size());
  for (size_t t = 0; t < terms.size(); ++t) {
    KILN_RETURN_IF_ERROR(parse_term(terms[t], &letters[t], &ell_pos[t]));
    const int64_t nl = static_cast<int64_t>(letters[t].size());
    if (ell_pos[t] < 0 ? ranks[t] != nl : ranks[t] < nl) {
      return invalid("einsum term '{}' does not fit operand {} of rank {}", terms[t], t, ranks[t]);
    }
    if (ell_pos[t] >= 0) spec.ellipsis_rank = std::max(spec.ellipsis_rank, static_cast<int>(ranks[t] - nl));
  }
  std::vector<int> occurrences(kEllipsisLabel, 0);
  for (size_t t = 0; t < terms.size(); ++t) {
    std::vector<int> labels;
    for (int i = 0; i <= static_cast<int>(letters[t].size()); ++i) {
      if (i == ell_pos[t]) {
        const int e = static_cast<int>(ranks[t]) - static_cast<int>(letters[t].size());
        for (int k = 0; k < e; ++k) labels.push_back(kEllipsisLabel + spec.ellipsis_rank - e + k);
      }
      if (i < static_cast<int>(letters[t].size())) {
        labels.push_back(letters[t][static_cast<size_t>(i)]);
        ++occurrences[static_cast<size_t>(letters[t][static_cast<size_t>(i)])];
      }
    }
    spec.inputs.push_back(std::move(labels));
  }
  if (explicit_out) {
    std::vector<int> out_letters;
    int out_ell = -1;
    KILN_RETURN_IF_ERROR(parse_term(rhs, &out_letters, &out_ell));
    std::vector<bool> seen(kEllipsisLabel, false);
    for (int i = 0; i <= static_cast<int>(out_letters.size()); ++i) {
      if (i == out_ell) {
        for (int k = 0; k < spec.ellipsis_rank; ++k) spec.output.push_back(kEllipsisLabel + k);
      }
      if (i < static_cast<int>(out_letters.size())) {
        const int l = out_letters[static_cast<size_t>(i)];
        if (occurrences[static_cast<size_t>(l)] == 0) {
          return invalid("einsum output label '{}' does not appear in any operand", static_cast<char>(l));
        }
        if (seen[static_cast<size_t>(l)])
          return invalid("einsum output label '{}' appears twice", static_cast<char>(l));
        seen[static_cast<size_t>(l)] = true;
        spec.output.push_back(l);
      }
    }
  } else {
    // Implicit output: the broadcast dims, then the labels used exactly once, in label order.
    for (int k = 0; k < spec.ellipsis_rank; ++k) spec.output.push_back(kEllipsisLabel + k);
    for (int l = 0; l < kEllipsisLabel; ++l) {
      if (occurrences[static_cast<size_t>(l)] == 1) spec.output.push_back(l);
    }
  }
  return spec;
}

template <typename T>
double to_double(T v) {
  if constexpr (std::is_class_v<T>) {
    return static_cast<float>(v);
  } else {
    return static_cast<double>(v);
  }
}

Status einsum_kernel(OpContext& ctx) {
  const std::string equation = ctx.attr_string("equation", "");
  const size_t n_in = ctx.num_inputs();
  std::vector<int64_t> ranks;
  for (size_t i = 0; i < n_in; ++i) {
    if (!ctx.has_input(i)) return invalid("einsum input {} is missing", i);
    if (ctx.input(i).dtype() != ctx.input(0).dtype()) return invalid("einsum inputs have different dtypes");
    ranks.push_back(ctx.input(i).rank());
  }
  if (n_in == 0) return invalid("einsum needs at least one input");
  KILN_ASSIGN_OR_RETURN(EinsumSpec spec, parse_einsum(equation, ranks));

  // Size of every label; ellipsis dims of size 1 broadcast, letters must agree exactly.
  constexpr int kNumLabels = kEllipsisLabel + 64;
  if (spec.ellipsis_rank > 64) return invalid("einsum ellipsis covers too many dims");
  std::vector<int64_t> size(kNumLabels, -1);
  for (size_t t = 0; t < n_in; ++t) {
    const Dims& d = ctx.input(t).dims();
    for (size_t k = 0; k < d.size(); ++k) {
      int64_t& s = size[static_cast<size_t>(spec.inputs[t][k])];
      const bool ell = spec.inputs[t][k] >= kEllipsisLabel;
      if (s < 0 || (ell && s == 1)) {
        s = d[k];
      } else if (d[k] != s && !(ell && d[k] == 1)) {
        return invalid("einsum dimension mismatch for label '{}': {} vs {}",
                       ell ? std::string("...") : std::string(1, static_cast<char>(spec.inputs[t][k])), s, d[k]);
      }
    }
  }
  // Loop order: output labels (outer), then the summed ones.
  std::vector<int> loop = spec.output;
  std::vector<bool> in_loop(kNumLabels, false);
  for (int l : loop) in_loop[static_cast<size_t>(l)] = true;
  for (const auto& labels : spec.inputs) {
    for (int l : labels) {
      if (!in_loop[static_cast<size_t>(l)]) {
        in_loop[static_cast<size_t>(l)] = true;
        loop.push_back(l);
      }
    }
  }
  const size_t nl = loop.size();
  std::vector<size_t> pos(kNumLabels, 0);
  for (size_t j = 0; j < nl; ++j) pos[static_cast<size_t>(loop[j])] = j;
  // Per operand, per loop label: the stride (repeated labels add up: a diagonal walk).
  std::vector<std::vector<int64_t>> strides(n_in + 1, std::vector<int64_t>(nl, 0));
  for (size_t t = 0; t < n_in; ++t) {
    const Dims& d = ctx.input(t).dims();
    int64_t s = 1;
    for (size_t k = d.size(); k-- > 0;) {
      if (d[k] != 1 || size[static_cast<size_t>(spec.inputs[t][k])] == 1) {
        strides[t][pos[static_cast<size_t>(spec.inputs[t][k])]] += s;
      }
      s *= d[k];
    }
  }
  Dims out_dims;
  for (int l : spec.output) out_dims.push_back(size[static_cast<size_t>(l)]);
  {
    int64_t s = 1;
    for (size_t k = spec.output.size(); k-- > 0;) {
      strides[n_in][k] = s;
      s *= out_dims[k];
    }
  }
  std::vector<int64_t> extent(nl);
  int64_t total = 1;
  for (size_t j = 0; j < nl; ++j) {
    extent[j] = size[static_cast<size_t>(loop[j])];
    total *= extent[j];
  }
  const DataType dt = ctx.input(0).dtype();
  KILN_ASSIGN_OR_RETURN(Tensor out, Tensor::create(dt, out_dims));
  KILN_RETURN_IF_ERROR(visit_numeric(dt, [&]<typename T>() -> Status {
    // Floats accumulate in double; integers in 64-bit modular arithmetic, truncated at the end.
    constexpr bool kFloat = std::is_class_v<T> || std::is_floating_point_v<T>;
    using Acc = std::conditional_t<kFloat, double, uint64_t>;
    std::vector<const T*> in(n_in);
    for (size_t t = 0; t < n_in; ++t) in[t] = ctx.input(t).data<T>();
    std::vector<Acc> acc(static_cast<size_t>(out.numel()), Acc(0));
    // The last loop label runs in a tight inner loop; the others advance an odometer.
    const size_t outer_labels = nl == 0 ? 0 : nl - 1;
    const int64_t inner_n = nl == 0 ? 1 : extent[nl - 1];
    std::vector<int64_t> inner_stride(n_in + 1, 0);
    if (nl > 0) {
      for (size_t t = 0; t <= n_in; ++t) inner_stride[t] = strides[t][nl - 1];
    }
    const int64_t outer_total = inner_n == 0 ? 0 : total / inner_n;
    std::vector<int64_t> off(n_in + 1, 0), counter(outer_labels, 0);
    for (int64_t it = 0; it < outer_total; ++it) {
      for (int64_t k = 0; k < inner_n; ++k) {
        Acc prod = Acc(1);
        for (size_t t = 0; t < n_in; ++t) {
          const T v = in[t][off[t] + k * inner_stride[t]];
          if constexpr (kFloat) {
            prod *= to_double(v);
          } else {
            prod *= static_cast<uint64_t>(static_cast<std::conditional_t<std::is_signed_v<T>, int64_t, uint64_t>>(v));
          }
        }
        acc[static_cast<size_t>(off[n_in] + k * inner_stride[n_in])] += prod;
      }
      for (size_t j = outer_labels; j-- > 0;) {
        ++counter[j];
        for (size_t t = 0; t <= n_in; ++t) off[t] += strides[t][j];
        if (counter[j] < extent[j]) break;
        for (size_t t = 0; t <= n_in; ++t) off[t] -= strides[t][j] * counter[j];
        counter[j] = 0;
      }
    }
    T* po = out.data<T>();
    for (size_t i = 0; i < acc.size(); ++i) {
      if constexpr (std::is_class_v<T>) {
        po[i] = T(static_cast<float>(acc[i]));
      } else {
        po[i] = static_cast<T>(acc[i]);
      }
    }
    return Status();
  }));
  ctx.set_output(0, std::move(out));
  return Status();
}

Status einsum_infer(InferContext& ic) {
  if (ic.output_types.empty()) ic.output_types.resize(1);
  std::vector<int64_t> ranks;
  DataType dt = DataType::kUndefined;
  bool ranks_known = true;
  for (const TypeInfo* t : ic.input_types) {
    if (!t) return Status();
    if (dt == DataType::kUndefined) dt = t->dtype;
    if (!t->shape.rank_known) ranks_known = false;
    ranks.push_back(t->shape.rank());
  }
  TypeInfo out = TypeInfo::tensor(dt);
  const Attribute* eq = ic.node.attr("equation");
  if (ranks_known && eq && !ranks.empty()) {
    KILN_ASSIGN_OR_RETURN(EinsumSpec spec, parse_einsum(eq->s, ranks));
    out.shape.rank_known = true;
    for (int l : spec.output) {
      Dim best;
      for (size_t t = 0; t < spec.inputs.size(); ++t) {
        for (size_t k = 0; k < spec.inputs[t].size(); ++k) {
          if (spec.inputs[t][k] != l) continue;
          const Dim& d = ic.input_types[t]->shape.dims[k];
          // A broadcast dim of 1 says nothing when another operand has the real size.
          if (!best.known() && best.symbol.empty()) {
            best = d;
          } else if (best.known() && best.value == 1 && !(d.known() && d.value == 1)) {
            best = d;
          }
        }
      }
      out.shape.dims.push_back(best);
    }
  }
  ic.output_types[0] = out;
  return Status();
}

// ---- Det ------------------------------------------------------------------------------------

Status det_kernel(OpContext& ctx) {
  const Tensor& x = ctx.input(0);
  if (x.rank() < 2) return invalid("Det needs a tensor of rank >= 2, got shape {}", shape_to_string(x.dims()));
  const int64_t m = x.dim(-1);
  if (x.dim(-2) != m) return invalid("Det needs square matrices, got shape {}", shape_to_string(x.dims()));
  Dims out_dims(x.dims().begin(), x.dims().end() - 2);
  Tensor out(x.dtype(), out_dims);
  const int64_t batch = out.numel();
  KILN_RETURN_IF_ERROR(visit_float(x.dtype(), [&]<typename T>() -> Status {
    const T* px = x.data<T>();
    T* po = out.data<T>();
    std::vector<double> a(static_cast<size_t>(m * m));
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t i = 0; i < m * m; ++i) a[static_cast<size_t>(i)] = to_double(px[b * m * m + i]);
      // LU decomposition with partial pivoting; each row swap flips the sign.
      double det = 1;
      for (int64_t c = 0; c < m && det != 0; ++c) {
        int64_t piv = c;
        for (int64_t r = c + 1; r < m; ++r) {
          if (std::fabs(a[static_cast<size_t>(r * m + c)]) > std::fabs(a[static_cast<size_t>(piv * m + c)])) piv = r;
        }
        const double p = a[static_cast<size_t>(piv * m + c)];
        if (p == 0) {
          det = 0;
          break;
        }
        if (piv != c) {
          for (int64_t k = 0; k < m; ++k)
            std::swap(a[static_cast<size_t>(piv * m + k)], a[static_cast<size_t>(c * m + k)]);
          det = -det;
        }
        det *= p;
        for (int64_t r = c + 1; r < m; ++r) {
          const double f = a[static_cast<size_t>(r * m + c)] / p;
          if (f == 0) continue;
          for (int64_t k = c; k < m; ++k) a[static_cast<size_t>(r * m + k)] -= f * a[static_cast<size_t>(c * m + k)];
        }
      }
      if constexpr (std::is_class_v<T>) {
        po[b] = T(static_cast<float>(det));
      } else {
        po[b] = static_cast<T>(det);
      }
    }
    return Status();
  }));
  ctx.set_output(0, std::move(out));
  return Status();
}

Status det_infer(InferContext& ic) {
  if (ic.output_types.empty()) ic.output_types.resize(1);
  const TypeInfo* x = ic.input_types.empty() ? nullptr : ic.input_types[0];
  if (!x) return Status();
  TypeInfo out = TypeInfo::tensor(x->dtype);
  if (x->shape.rank_known) {
    if (x->shape.rank() < 2) return invalid("Det needs a tensor of rank >= 2, got shape {}", x->shape.to_string());
    out.shape.rank_known = true;
    out.shape.dims.assign(x->shape.dims.begin(), x->shape.dims.end() - 2);
  }
  ic.output_types[0] = out;
  return Status();
}

}  // namespace

void register_reduce_einsum_ops(OpRegistry& r) {
  r.add({"", "Einsum", 12, einsum_kernel, einsum_infer});
  r.add({"", "Det", 11, det_kernel, det_infer});
}

}  // namespace kiln
