// Random generators: RandomUniform, RandomNormal, their *Like forms, Bernoulli and Multinomial.
// ONNX leaves the generator unspecified; with a `seed` attribute the output is reproducible from
// run to run (std::mt19937_64 seeded with it), without one each run draws a fresh seed.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "ops/registry.h"

namespace kiln {
namespace {

std::mt19937_64 make_rng(const OpContext& ctx) {
  if (ctx.has_attr("seed")) {
    float s = ctx.attr_float("seed", 0.0f);
    uint32_t bits;
    std::memcpy(&bits, &s, 4);
    return std::mt19937_64(bits);
  }
  std::random_device rd;
  return std::mt19937_64((static_cast<uint64_t>(rd()) << 32) ^ rd());
}

Result<DataType> float_dtype_attr(const OpContext& ctx, DataType def, const char* op) {
  const int64_t d = ctx.attr_int("dtype", static_cast<int64_t>(def));
  if (!dtype_valid(static_cast<int32_t>(d))) return invalid("{}: bad dtype {}", op, d);
  auto t = static_cast<DataType>(d);
  if (t != DataType::kFloat && t != DataType::kDouble && t != DataType::kFloat16 && t != DataType::kBFloat16) {
    return invalid("{}: dtype must be a floating-point type, got {}", op, dtype_name(t));
  }
  return t;
}

// Fills a new tensor from `draw`, which returns doubles.
template <typename Draw>
Result<Tensor> generate(DataType dt, const Dims& dims, Draw&& draw) {
  KILN_ASSIGN_OR_RETURN(Tensor y, Tensor::create(dt, dims));
  for (int64_t i = 0; i < y.numel(); ++i) y.set_double(i, draw());
  return y;
}

Status random_kernel(OpContext& ctx, bool normal, bool like) {
  const char* op =
      normal ? (like ? "RandomNormalLike" : "RandomNormal") : (like ? "RandomUniformLike" : "RandomUniform");
  Dims dims;
  DataType def = DataType::kFloat;
  if (like) {
    dims = ctx.input(0).dims();
    def = ctx.input(0).dtype();
    if (!ctx.has_attr("dtype") && !is_float(def)) def = DataType::kFloat;
  } else {
    if (!ctx.has_attr("shape")) return invalid("{} needs the 'shape' attribute", op);
    dims = ctx.attr_ints("shape");
  }
  KILN_ASSIGN_OR_RETURN(DataType dt, float_dtype_attr(ctx, def, op));
  std::mt19937_64 rng = make_rng(ctx);
  Tensor y;
  if (normal) {
    const double mean = ctx.attr_float("mean", 0.0f);
    const double scale = ctx.attr_float("scale", 1.0f);
    std::normal_distribution<double> dist(mean, scale);
    KILN_ASSIGN_OR_RETURN(y, generate(dt, dims, [&] { return dist(rng); }));
  } else {
    const double low = ctx.attr_float("low", 0.0f);
    const double high = ctx.attr_float("high", 1.0f);
    if (!(low <= high)) return invalid("{}: low ({}) must not exceed high ({})", op, low, high);
    std::uniform_real_distribution<double> dist(0.0, 1.0);
    KILN_ASSIGN_OR_RETURN(y, generate(dt, dims, [&] { return low + (high - low) * dist(rng); }));
  }
  ctx.set_output(0, std::move(y));
  return Status();
}

Status bernoulli_kernel(OpContext& ctx) {
  const Tensor& p = ctx.input(0);
  if (!is_float(p.dtype())) return invalid("Bernoulli: input must be floating point, got {}", dtype_name(p.dtype()));
  const int64_t d = ctx.attr_int("dtype", static_cast<int64_t>(p.dtype()));
  if (!dtype_valid(static_cast<int32_t>(d)) || static_cast<DataType>(d) == DataType::kString) {
    return invalid("Bernoulli: bad dtype {}", d);
  }
  std::mt19937_64 rng = make_rng(ctx);
  std::uniform_real_distribution<double> dist(0.0, 1.0);
  KILN_ASSIGN_OR_RETURN(Tensor y, Tensor::create(static_cast<DataType>(d), p.dims()));
  for (int64_t i = 0; i < p.numel(); ++i) y.set_double(i, dist(rng) < p.get_double(i) ? 1.0 : 0.0);
  ctx.set_output(0, std::move(y));
  return Status();
}

// Input: [batch, classes] unnormalized log-probabilities; output: [batch, sample_size] class ids.
Status multinomial_kernel(OpContext& ctx) {
  const Tensor& x = ctx.input(0);
  if (x.rank() != 2)
    return invalid("Multinomial: input must be [batch_size, class_size], got {}", shape_to_string(x.dims()));
  if (!is_float(x.dtype())) return invalid("Multinomial: input must be floating point");
  const int64_t samples = ctx.attr_int("sample_size", 1);
  if (samples < 0) return invalid("Multinomial: sample_size must be >= 0");
  const int64_t d = ctx.attr_int("dtype", static_cast<int64_t>(DataType::kInt32));
  if (d != static_cast<int64_t>(DataType::kInt32) && d != static_cast<int64_t>(DataType::kInt64)) {
    return invalid("Multinomial: dtype must be int32 or int64");
  }
  const int64_t batch = x.dim(0), classes = x.dim(1);
  if (classes == 0 && samples > 0) return invalid("Multinomial: no classes to sample from");
  std::mt19937_64 rng = make_rng(ctx);
  std::uniform_real_distribution<double> dist(0.0, 1.0);
  KILN_ASSIGN_OR_RETURN(Tensor y, Tensor::create(static_cast<DataType>(d), {batch, samples}));
  std::vector<double> cdf(static_cast<size_t>(classes));
  for (int64_t b = 0; b < batch; ++b) {
    double mx = -INFINITY;
    for (int64_t c = 0; c < classes; ++c) mx = std::max(mx, x.get_double(b * classes + c));
    double total = 0;
    for (int64_t c = 0; c < classes; ++c) {
      total += std::exp(x.get_double(b * classes + c) - mx);
      cdf[static_cast<size_t>(c)] = total;
    }
    for (int64_t s = 0; s < samples; ++s) {
      const double u = dist(rng) * total;
      int64_t c = static_cast<int64_t>(std::upper_bound(cdf.begin(), cdf.end(), u) - cdf.begin());
      if (c >= classes) c = classes - 1;
      y.set_double(b * samples + s, static_cast<double>(c));
    }
  }
  ctx.set_output(0, std::move(y));
  return Status();
}

}  // namespace

void register_random_ops(OpRegistry& r) {
  r.add({"", "RandomUniform", 1, [](OpContext& c) { return random_kernel(c, false, false); }, nullptr});
  r.add({"", "RandomNormal", 1, [](OpContext& c) { return random_kernel(c, true, false); }, nullptr});
  r.add({"", "RandomUniformLike", 1, [](OpContext& c) { return random_kernel(c, false, true); }, nullptr});
  r.add({"", "RandomNormalLike", 1, [](OpContext& c) { return random_kernel(c, true, true); }, nullptr});
  r.add({"", "Bernoulli", 15, bernoulli_kernel, nullptr});
  r.add({"", "Multinomial", 7, multinomial_kernel, nullptr});
}

}  // namespace kiln
