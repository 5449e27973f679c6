// Gemm, MatMul (numpy semantics: batched, broadcast, 1-D promotion), MatMulInteger and
// QLinearMatMul. Float types accumulate in double; integer MatMul/Gemm accumulate in 64 bits and
// wrap on the final cast like a C++ conversion.
#include <cmath>

#include "ops/broadcast.h"
#include "ops/nn_common.h"

namespace kiln {

Result<Shape> broadcast_infer_shape(const std::vector<const Shape*>& shapes);  // elementwise.cc

namespace {

struct MatMulPlan {
  int64_t m = 0, k = 0, n = 0;
  Dims out;
  std::vector<int64_t> a_off, b_off;  // per output batch: offset of its A and B matrices
};

// Unknown dims (-1) are allowed when only the output shape is wanted (inference).
Result<MatMulPlan> plan_matmul(const Dims& ad, const Dims& bd, bool offsets) {
  if (ad.empty() || bd.empty()) return invalid("MatMul inputs must have rank >= 1");
  Dims a = ad, b = bd;
  const bool a_vec = a.size() == 1, b_vec = b.size() == 1;
  if (a_vec) a.insert(a.begin(), 1);
  if (b_vec) b.push_back(1);
  MatMulPlan p;
  p.m = a[a.size() - 2];
  p.k = a.back();
  p.n = b.back();
  const int64_t kb = b[b.size() - 2];
  if (p.k >= 0 && kb >= 0 && p.k != kb) {
    return invalid("inner dimensions differ: {} x {}", shape_to_string(ad), shape_to_string(bd));
  }
  Dims abatch(a.begin(), a.end() - 2), bbatch(b.begin(), b.end() - 2);
  Dims batch;
  const size_t br = std::max(abatch.size(), bbatch.size());
  for (size_t i = 0; i < br; ++i) {
    const int64_t x = i + abatch.size() >= br ? abatch[i + abatch.size() - br] : 1;
    const int64_t y = i + bbatch.size() >= br ? bbatch[i + bbatch.size() - br] : 1;
    if (x >= 0 && y >= 0 && x != y && x != 1 && y != 1) {
      return invalid("batch dimensions do not broadcast: {} x {}", shape_to_string(ad), shape_to_string(bd));
    }
    batch.push_back(x == 1 ? y : (y == 1 ? x : (x >= 0 ? x : y)));
  }
  p.out = batch;
  if (!a_vec) p.out.push_back(p.m);
  if (!b_vec) p.out.push_back(p.n);
  if (offsets) {
    Broadcaster bc({abatch, bbatch}, batch);
    bc.for_each([&](int64_t, const int64_t* idx) {
      p.a_off.push_back(idx[0] * p.m * p.k);
      p.b_off.push_back(idx[1] * p.k * p.n);
    });
    if (shape_numel(batch) > 0 && p.a_off.empty()) {
      p.a_off.push_back(0);
      p.b_off.push_back(0);
    }
  }
  return p;
}

// Y[batch, m, n] = sum_k A[m, k] * B[k, n] in double.
std::vector<double> matmul_doubles(const MatMulPlan& p, const std::vector<double>& a, const std::vector<double>& b) {
  std::vector<double> y(static_cast<size_t>(static_cast<int64_t>(p.a_off.size()) * p.m * p.n), 0.0);
  for (size_t bi = 0; bi < p.a_off.size(); ++bi) {
    nn::gemm_acc(a.data() + p.a_off[bi], b.data() + p.b_off[bi], y.data() + static_cast<int64_t>(bi) * p.m * p.n, p.m,
                 p.k, p.n);
  }
  return y;
}

Status matmul_kernel(OpContext& ctx) {
  const Tensor& a = ctx.input(0);
  const Tensor& b = ctx.input(1);
  if (a.dtype() != b.dtype()) return invalid("A is {} but B is {}", dtype_name(a.dtype()), dtype_name(b.dtype()));
  KILN_ASSIGN_OR_RETURN(MatMulPlan p, plan_matmul(a.dims(), b.dims(), true));
  KILN_ASSIGN_OR_RETURN(Tensor y, Tensor::create(a.dtype(), p.out));
  if (is_float(a.dtype())) {
    KILN_RETURN_IF_ERROR(visit_float(a.dtype(), [&]<typename T>() { return Status(); }));
    nn::store_doubles(y, matmul_doubles(p, nn::to_doubles(a), nn::to_doubles(b)));
    ctx.set_output(0, std::move(y));
    return Status();
  }
  KILN_RETURN_IF_ERROR(visit_int(a.dtype(), [&]<typename T>() {
    using Acc = std::conditional_t<std::is_signed_v<T>, int64_t, uint64_t>;
    const T* av = a.data<T>();
    const T* bv = b.data<T>();
    T* yv = y.data<T>();
    for (size_t bi = 0; bi < p.a_off.size(); ++bi) {
      for (int64_t i = 0; i < p.m; ++i) {
        for (int64_t j = 0; j < p.n; ++j) {
          uint64_t acc = 0;  // unsigned arithmetic wraps without undefined behaviour
          for (int64_t q = 0; q < p.k; ++q) {
            acc += static_cast<uint64_t>(static_cast<Acc>(av[p.a_off[bi] + i * p.k + q])) *
                   static_cast<uint64_t>(static_cast<Acc>(bv[p.b_off[bi] + q * p.n + j]));
          }
          yv[(static_cast<int64_t>(bi) * p.m + i) * p.n + j] = static_cast<T>(acc);
        }
      }
    }
    return Status();
  }));
  ctx.set_output(0, std::move(y));
  return Status();
}

Status gemm_kernel(OpContext& ctx) {
  const Tensor& a = ctx.input(0);
  const Tensor& b = ctx.input(1);
  KILN_RETURN_IF_ERROR(visit_numeric(a.dtype(), [&]<typename T>() { return Status(); }));
  if (a.dtype() != b.dtype()) return invalid("A is {} but B is {}", dtype_name(a.dtype()), dtype_name(b.dtype()));
  if (a.rank() != 2 || b.rank() != 2) {
    return invalid("A and B must be 2-D, got {} and {}", shape_to_string(a.dims()), shape_to_string(b.dims()));
  }
  const bool ta = ctx.attr_int("transA", 0) != 0, tb = ctx.attr_int("transB", 0) != 0;
  const double alpha = ctx.attr_float("alpha", 1.0f), beta = ctx.attr_float("beta", 1.0f);
  const int64_t m = ta ? a.dim(1) : a.dim(0), k = ta ? a.dim(0) : a.dim(1);
  const int64_t kb = tb ? b.dim(1) : b.dim(0), n = tb ? b.dim(0) : b.dim(1);
  if (k != kb) return invalid("inner dimensions differ: {} vs {}", k, kb);
  std::vector<double> av = nn::to_doubles(a), bv = nn::to_doubles(b);
  // Normalize to A [m, k] and B [k, n].
  if (ta) {
    std::vector<double> t(av.size());
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t q = 0; q < k; ++q) t[static_cast<size_t>(i * k + q)] = av[static_cast<size_t>(q * m + i)];
    }
    av.swap(t);
  }
  if (tb) {
    std::vector<double> t(bv.size());
    for (int64_t q = 0; q < k; ++q) {
      for (int64_t j = 0; j < n; ++j) t[static_cast<size_t>(q * n + j)] = bv[static_cast<size_t>(j * k + q)];
    }
    bv.swap(t);
  }
  std::vector<double> y(static_cast<size_t>(m * n), 0.0);
  nn::gemm_acc(av.data(), bv.data(), y.data(), m, k, n);
  for (double& v : y) v *= alpha;
  if (ctx.has_input(2) && beta != 0.0) {
    const Tensor& c = ctx.input(2);
    KILN_ASSIGN_OR_RETURN(Dims bs, broadcast_shapes({Dims{m, n}, c.dims()}));
    if (bs != Dims{m, n}) return invalid("C shape {} does not broadcast to {}x{}", shape_to_string(c.dims()), m, n);
    std::vector<double> cv = nn::to_doubles(c);
    Broadcaster br({Dims{m, n}, c.dims()}, Dims{m, n});
    br.for_each(
        [&](int64_t o, const int64_t* idx) { y[static_cast<size_t>(o)] += beta * cv[static_cast<size_t>(idx[1])]; });
  }
  KILN_ASSIGN_OR_RETURN(Tensor out, Tensor::create(a.dtype(), {m, n}));
  nn::store_doubles(out, y);
  ctx.set_output(0, std::move(out));
  return Status();
}

bool is_8bit(DataType t) {
  return t == DataType::kUInt8 || t == DataType::kInt8;
}

// A per-tensor (one element) or per-row/per-column (`count` elements) quantization parameter.
Result<std::vector<double>> quant_param(const OpContext& ctx, size_t i, int64_t count, const char* what) {
  if (!ctx.has_input(i)) return std::vector<double>(static_cast<size_t>(std::max<int64_t>(count, 1)), 0.0);
  std::vector<double> v = nn::to_doubles(ctx.input(i));
  if (v.size() == 1) return std::vector<double>(static_cast<size_t>(std::max<int64_t>(count, 1)), v[0]);
  if (static_cast<int64_t>(v.size()) == count) return v;
  return invalid("{} has {} elements, expected 1 or {}", what, v.size(), count);
}

// A - a_zp (per row) and B - b_zp (per column), in doubles.
void shift_rows_cols(std::vector<double>& a, std::vector<double>& b, const MatMulPlan& p,
                     const std::vector<double>& azp, const std::vector<double>& bzp) {
  for (size_t i = 0; i < a.size(); ++i)
    a[i] -= azp[static_cast<size_t>((static_cast<int64_t>(i) / std::max<int64_t>(p.k, 1)) % std::max<int64_t>(p.m, 1))];
  for (size_t i = 0; i < b.size(); ++i)
    b[i] -= bzp[static_cast<size_t>(static_cast<int64_t>(i) % std::max<int64_t>(p.n, 1))];
}

Status matmul_integer_kernel(OpContext& ctx) {
  const Tensor& a = ctx.input(0);
  const Tensor& b = ctx.input(1);
  if (!is_8bit(a.dtype()) || !is_8bit(b.dtype())) {
    return invalid("MatMulInteger expects int8/uint8 inputs, got {} and {}", dtype_name(a.dtype()),
                   dtype_name(b.dtype()));
  }
  KILN_ASSIGN_OR_RETURN(MatMulPlan p, plan_matmul(a.dims(), b.dims(), true));
  KILN_ASSIGN_OR_RETURN(std::vector<double> azp, quant_param(ctx, 2, p.m, "a_zero_point"));
  KILN_ASSIGN_OR_RETURN(std::vector<double> bzp, quant_param(ctx, 3, p.n, "b_zero_point"));
  std::vector<double> av = nn::to_doubles(a), bv = nn::to_doubles(b);
  shift_rows_cols(av, bv, p, azp, bzp);
  KILN_ASSIGN_OR_RETURN(Tensor y, Tensor::create(DataType::kInt32, p.out));
  nn::store_doubles(y, matmul_doubles(p, av, bv));
  ctx.set_output(0, std::move(y));
  return Status();
}

Status qlinear_matmul_kernel(OpContext& ctx) {
  for (size_t i : {0, 1, 3, 4, 6}) {
    if (!ctx.has_input(i)) return invalid("QLinearMatMul input {} is required", i);
  }
  const Tensor& a = ctx.input(0);
  const Tensor& b = ctx.input(3);
  if (!is_8bit(a.dtype()) || !is_8bit(b.dtype())) {
    return invalid("QLinearMatMul expects int8/uint8 a and b, got {} and {}", dtype_name(a.dtype()),
                   dtype_name(b.dtype()));
  }
  KILN_ASSIGN_OR_RETURN(MatMulPlan p, plan_matmul(a.dims(), b.dims(), true));
  KILN_ASSIGN_OR_RETURN(std::vector<double> as, quant_param(ctx, 1, p.m, "a_scale"));
  KILN_ASSIGN_OR_RETURN(std::vector<double> azp, quant_param(ctx, 2, p.m, "a_zero_point"));
  KILN_ASSIGN_OR_RETURN(std::vector<double> bs, quant_param(ctx, 4, p.n, "b_scale"));
  KILN_ASSIGN_OR_RETURN(std::vector<double> bzp, quant_param(ctx, 5, p.n, "b_zero_point"));
  if (ctx.input(6).numel() != 1) return invalid("y_scale must have one element");
  const double ys = ctx.input(6).get_double(0);
  const double yzp = ctx.has_input(7) ? ctx.input(7).get_double(0) : 0.0;
  const DataType out_type = ctx.has_input(7) ? ctx.input(7).dtype() : a.dtype();
  std::vector<double> av = nn::to_doubles(a), bv = nn::to_doubles(b);
  shift_rows_cols(av, bv, p, azp, bzp);
  std::vector<double> acc = matmul_doubles(p, av, bv);
  // Multipliers per (row, column), computed in the scales' precision.
  std::vector<double> mult(static_cast<size_t>(std::max<int64_t>(p.m * p.n, 0)));
  KILN_RETURN_IF_ERROR(visit_float(ctx.input(1).dtype(), [&]<typename S>() {
    for (int64_t i = 0; i < p.m; ++i) {
      for (int64_t j = 0; j < p.n; ++j) {
        mult[static_cast<size_t>(i * p.n + j)] =
            nn::requant_multiplier<S>(as[static_cast<size_t>(i)], bs[static_cast<size_t>(j)], ys);
      }
    }
    return Status();
  }));
  const int64_t mn = std::max<int64_t>(p.m * p.n, 1);
  for (size_t i = 0; i < acc.size(); ++i) {
    acc[i] = nn::saturate(nn::round_half_even(acc[i] * mult[static_cast<size_t>(static_cast<int64_t>(i) % mn)] + yzp),
                          out_type);
  }
  KILN_ASSIGN_OR_RETURN(Tensor y, Tensor::create(out_type, p.out));
  nn::store_doubles(y, acc);
  ctx.set_output(0, std::move(y));
  return Status();
}

// ---- inference --------------------------------------------------------------------------------

Status matmul_infer_common(InferContext& ctx, size_t ai, size_t bi, DataType out_type) {
  nn::prepare_outputs(ctx);
  const TypeInfo* a = nn::tensor_input(ctx, ai);
  const TypeInfo* b = nn::tensor_input(ctx, bi);
  if (ctx.output_types.empty()) return Status();
  if (out_type == DataType::kUndefined && a) out_type = a->dtype;
  Shape shape;
  if (a && b && a->shape.rank_known && b->shape.rank_known) {
    KILN_ASSIGN_OR_RETURN(MatMulPlan p, plan_matmul(a->shape.static_dims(), b->shape.static_dims(), false));
    shape = nn::shape_from_dims(p.out);
    // The same shape with symbols kept: M from A, N from B, batch dims broadcast like elementwise
    // operands.
    if (a->shape.rank() >= 1 && b->shape.rank() >= 1) {
      std::vector<Dim> ad = a->shape.dims, bd = b->shape.dims;
      const bool a_vec = ad.size() == 1, b_vec = bd.size() == 1;
      if (a_vec) ad.insert(ad.begin(), Dim::of(1));
      if (b_vec) bd.push_back(Dim::of(1));
      Shape ab = nn::shape_from_dims({}), bb = nn::shape_from_dims({});
      ab.dims.assign(ad.begin(), ad.end() - 2);
      bb.dims.assign(bd.begin(), bd.end() - 2);
      KILN_ASSIGN_OR_RETURN(Shape batch, broadcast_infer_shape({&ab, &bb}));
      if (!a_vec) batch.dims.push_back(ad[ad.size() - 2]);
      if (!b_vec) batch.dims.push_back(bd.back());
      shape = std::move(batch);
    }
  }
  ctx.output_types[0] = TypeInfo::tensor(out_type, shape);
  return Status();
}

Status matmul_infer(InferContext& ctx) {
  return matmul_infer_common(ctx, 0, 1, DataType::kUndefined);
}
Status matmul_integer_infer(InferContext& ctx) {
  return matmul_infer_common(ctx, 0, 1, DataType::kInt32);
}
Status qlinear_matmul_infer(InferContext& ctx) {
  const TypeInfo* yzp = nn::tensor_input(ctx, 7);
  return matmul_infer_common(ctx, 0, 3, yzp ? yzp->dtype : DataType::kUndefined);
}

Status gemm_infer(InferContext& ctx) {
  nn::prepare_outputs(ctx);
  const TypeInfo* a = nn::tensor_input(ctx, 0);
  const TypeInfo* b = nn::tensor_input(ctx, 1);
  if (!a || ctx.output_types.empty()) return Status();
  Shape shape;
  if (b && a->shape.rank_known && b->shape.rank_known) {
    if (a->shape.rank() != 2 || b->shape.rank() != 2) return invalid("A and B must be 2-D");
    const bool ta = nn::node_int(ctx.node, "transA", 0) != 0, tb = nn::node_int(ctx.node, "transB", 0) != 0;
    shape.rank_known = true;
    shape.dims = {a->shape.dims[ta ? 1 : 0], b->shape.dims[tb ? 0 : 1]};
  }
  ctx.output_types[0] = TypeInfo::tensor(a->dtype, shape);
  return Status();
}

}  // namespace

void register_matmul_ops(OpRegistry& r) {
  r.add({"", "Gemm", 1, gemm_kernel, gemm_infer});
  r.add({"", "MatMul", 1, matmul_kernel, matmul_infer});
  r.add({"", "MatMulInteger", 10, matmul_integer_kernel, matmul_integer_infer});
  r.add({"", "QLinearMatMul", 10, qlinear_matmul_kernel, qlinear_matmul_infer});
}

}  // namespace kiln
