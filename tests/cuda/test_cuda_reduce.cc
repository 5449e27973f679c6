// Reductions and softmax on the GPU against the reference kernels: ReduceSum, ReduceMean,
// ReduceMax, ReduceMin, ReduceSumSquare and ReduceL2 over first, middle, last, contiguous and
// scattered axes, all axes and none (noop_with_empty_axes), keepdims 0 and 1, axes as attribute and
// as input; Softmax and LogSoftmax along the last and a middle axis with rows of 1, 7, 1000 and
// 2000, and the opset-11 coercion to 2-D. Whole models in float32, float16 and bfloat16, and the
// launchers with guard bytes around their outputs (empty reductions, size-1 dims, in place).
// Skipped where no GPU is visible.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "backends/cuda/kernels/reduce.h"
#include "cuda_test_util.h"
#include "model_builder.h"

namespace kiln {
namespace {
using namespace kiln::testing;

void add_axes(onnx::GraphProto* g, const std::string& name, const std::vector<int64_t>& axes) {
  auto* t = g->add_initializer();
  t->set_name(name);
  t->set_data_type(onnx::TensorProto::INT64);
  t->add_dims(static_cast<int64_t>(axes.size()));
  for (int64_t a : axes) t->add_int64_data(a);
}

// `shape` with its first dim symbolic ("n") and that dim set to each of `batches`; values uniform
// in [offset - 1, offset + 1).
std::vector<std::vector<RValue>> input_sets(const Dims& shape, std::initializer_list<int64_t> batches,
                                            float offset = 0) {
  std::vector<std::vector<RValue>> sets;
  uint32_t seed = 21;
  for (int64_t n : batches) {
    Dims d = shape;
    d[0] = n;
    Tensor t = random_float(d, seed++);
    for (float& v : t.span<float>()) v += offset;
    sets.push_back({RValue::of(std::move(t))});
  }
  return sets;
}

void add_batched_input(onnx::GraphProto* g, const Dims& shape) {
  std::vector<std::string> symbols(shape.size(), "");
  symbols[0] = "n";
  add_tensor_info(g->mutable_input(), "x", onnx::TensorProto::FLOAT, shape, symbols);
}

std::map<std::string, Dims> with_batch(const Dims& shape, int64_t n) {
  Dims d = shape;
  d[0] = n;
  return {{"x", d}};
}

// ---- reductions, whole models -------------------------------------------------------------------

struct ReduceCase {
  Dims shape;                 // the first dim is the batch
  std::vector<int64_t> axes;  // empty: none given
  int64_t keepdims;
  int64_t noop = 0;
};

std::vector<ReduceCase> reduce_cases() {
  return {
      {{2, 7, 5, 9}, {3}, 1},      {{2, 7, 5, 9}, {1}, 0},    {{2, 7, 5, 9}, {0}, 1}, {{2, 7, 5, 9}, {1, 2}, 0},
      {{2, 7, 5, 9}, {-1, -2}, 1}, {{2, 7, 5, 9}, {0, 2}, 0},  // scattered axes: the strided kernel
      {{2, 7, 5, 9}, {3, 1}, 1},   {{2, 7, 5, 9}, {}, 0},      // all axes
      {{2, 7, 5, 9}, {}, 1, 1},                                // none: noop_with_empty_axes
      {{2, 2000}, {1}, 0},                                     // long rows: a block per row
      {{2, 257, 33}, {1}, 1},                                  // along a middle axis of 257
      {{2, 1, 7, 1}, {0, 2}, 0},                               // contiguous once the 1s are set aside
  };
}

onnx::ModelProto reduce_model(const std::string& op, int opset, const ReduceCase& c) {
  onnx::ModelProto m = make_model(opset);
  auto* g = m.mutable_graph();
  add_batched_input(g, c.shape);
  const bool axes_input = opset >= (op == "ReduceSum" ? 13 : 18);
  std::vector<std::string> in = {"x"};
  if (axes_input && !c.axes.empty()) {
    add_axes(g, "axes", c.axes);
    in.push_back("axes");
  }
  auto* n = add_node(g, op, in, {"y"}, "reduce");
  if (!axes_input && !c.axes.empty()) add_ints_attr(n, "axes", c.axes);
  add_int_attr(n, "keepdims", c.keepdims);
  if (c.noop) add_int_attr(n, "noop_with_empty_axes", 1);
  g->add_output()->set_name("y");
  return m;
}

void check_reduce(const std::string& op, int opset, const std::vector<ReduceCase>& cases) {
  for (const ReduceCase& c : cases) {
    std::string axes;
    for (int64_t a : c.axes) axes += std::to_string(a) + " ";
    SCOPED_TRACE(op + " opset " + std::to_string(opset) + " " + shape_to_string(c.shape) + " axes " + axes +
                 "keepdims " + std::to_string(c.keepdims) + (c.noop ? " noop" : ""));
    // Values mostly positive: a sum that cancels to nearly 0 would measure only the input's rounding
    // to float16 or bfloat16 against the float32 reference.
    // reduce-to-global-pool would turn the H x W means and maxima into global pools: kept off, so
    // every case runs on the reduce kernels.
    expect_cuda_matches_reference(reduce_model(op, opset, c), with_batch(c.shape, 1), with_batch(c.shape, 2),
                                  input_sets(c.shape, {2, 1}, 0.5f), {op}, kAllPrecisions, Layout::kPlain, nullptr, {},
                                  {"reduce-to-global-pool"});
  }
}

// With the rewrite on (the default), ReduceMean and ReduceMax over H and W of a 4-D map run as
// global pools on the GPU, keepdims either way, and still match the reference.
TEST(CudaReduce, SpatialMeanAndMaxRunAsGlobalPools) {
  SKIP_WITHOUT_GPU();
  const std::vector<std::pair<std::string, std::string>> ops = {{"ReduceMean", "GlobalAveragePool"},
                                                                {"ReduceMax", "GlobalMaxPool"}};
  for (const auto& [op, pool] : ops) {
    for (int64_t keepdims : {1, 0}) {
      for (int opset : {13, 18}) {
        const ReduceCase c{{2, 7, 5, 9}, {2, 3}, keepdims};
        SCOPED_TRACE(op + " opset " + std::to_string(opset) + " keepdims " + std::to_string(keepdims));
        expect_cuda_matches_reference(reduce_model(op, opset, c), with_batch(c.shape, 1), with_batch(c.shape, 2),
                                      input_sets(c.shape, {2, 1}, 0.5f), {pool});
      }
    }
  }
}

TEST(CudaReduce, ReduceSumMatchesTheReference) {
  SKIP_WITHOUT_GPU();
  check_reduce("ReduceSum", 17, reduce_cases());
}

TEST(CudaReduce, ReduceMeanMatchesTheReference) {
  SKIP_WITHOUT_GPU();
  check_reduce("ReduceMean", 17, reduce_cases());
}

TEST(CudaReduce, ReduceMaxMatchesTheReference) {
  SKIP_WITHOUT_GPU();
  check_reduce("ReduceMax", 17, reduce_cases());
}

TEST(CudaReduce, ReduceMinMatchesTheReference) {
  SKIP_WITHOUT_GPU();
  check_reduce("ReduceMin", 17, reduce_cases());
}

TEST(CudaReduce, ReduceSumSquareMatchesTheReference) {
  SKIP_WITHOUT_GPU();
  check_reduce("ReduceSumSquare", 17, reduce_cases());
}

TEST(CudaReduce, ReduceL2MatchesTheReference) {
  SKIP_WITHOUT_GPU();
  check_reduce("ReduceL2", 17, reduce_cases());
}

// Axes as an input (opset 18) for every op, and as an attribute for ReduceSum (opset 11).
TEST(CudaReduce, AxesFromEitherPlace) {
  SKIP_WITHOUT_GPU();
  const std::vector<ReduceCase> cases = {
      {{2, 7, 5, 9}, {-1}, 0}, {{2, 7, 5, 9}, {0, 2}, 1}, {{2, 7, 5, 9}, {}, 1}, {{2, 7, 5, 9}, {}, 0, 1}};
  for (const char* op : {"ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceSumSquare", "ReduceL2"}) {
    check_reduce(op, 18, cases);
  }
  // noop_with_empty_axes comes with opset 13.
  check_reduce("ReduceSum", 11, {cases[0], cases[1], cases[2]});
}

// ---- softmax, whole models ------------------------------------------------------------------

struct SoftmaxCase {
  Dims shape;  // the first dim is the batch
  int64_t axis;
  bool has_axis = true;
};

onnx::ModelProto softmax_model(const std::string& op, int opset, const SoftmaxCase& c) {
  onnx::ModelProto m = make_model(opset);
  auto* g = m.mutable_graph();
  add_batched_input(g, c.shape);
  auto* n = add_node(g, op, {"x"}, {"y"}, "softmax");
  if (c.has_axis) add_int_attr(n, "axis", c.axis);
  g->add_output()->set_name("y");
  return m;
}

void check_softmax(int opset, const std::vector<SoftmaxCase>& cases) {
  for (const char* op : {"Softmax", "LogSoftmax"}) {
    for (const SoftmaxCase& c : cases) {
      SCOPED_TRACE(std::string(op) + " opset " + std::to_string(opset) + " " + shape_to_string(c.shape) + " axis " +
                   (c.has_axis ? std::to_string(c.axis) : "default"));
      expect_cuda_matches_reference(softmax_model(op, opset, c), with_batch(c.shape, 1), with_batch(c.shape, 3),
                                    input_sets(c.shape, {3, 1}), {op}, kAllPrecisions, Layout::kPlain);
    }
  }
}

TEST(CudaReduce, SoftmaxMatchesTheReference) {
  SKIP_WITHOUT_GPU();
  check_softmax(17, {
                        {{2, 5, 1}, -1},       // rows of one
                        {{2, 5, 7}, -1},       // rows of 7
                        {{2, 3, 1000}, 2},     // rows of 1000: a warp each
                        {{2, 2, 2000}, -1},    // rows of 2000: a block each
                        {{2, 7, 9}, 1},        // a middle axis
                        {{2, 1000, 3}, 1},     // a long middle axis
                        {{2, 4, 5, 6}, 0},     // the batch axis
                        {{2, 3, 7}, 0, false}  // the default axis (-1)
                    });
}

// Before opset 13 the input is coerced to 2-D at the axis: each row is the whole trailing block.
TEST(CudaReduce, SoftmaxBeforeOpset13CoercesTo2d) {
  SKIP_WITHOUT_GPU();
  check_softmax(11, {
                        {{2, 3, 4, 5}, 1},
                        {{2, 3, 4, 5}, 0, false},  // the default axis (1)
                        {{2, 3, 7}, 2},
                        {{2, 3, 4, 5}, -2},
                        {{2, 3, 4, 5}, 0},
                    });
}

// ---- the launchers against a CPU reduction written from the ONNX definition -----------------

// Values of `count` elements uniform in [lo, hi), rounded to `dt`.
std::vector<double> random_values(DataType dt, int64_t count, uint32_t seed, double lo = -2, double hi = 2) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> u(lo, hi);
  Tensor t(dt, {count});
  std::vector<double> v(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) {
    t.set_double(i, u(rng));
    v[static_cast<size_t>(i)] = t.get_double(i);
  }
  return v;
}

// Uploads `x` in `dt`, runs `launch(in, out)` into `out_count` elements and reads them back.
// `in_place`: the output is written over the input buffer.
template <typename Launch>
std::vector<double> run_on_device(DataType dt, const std::vector<double>& x, int64_t out_count, bool in_place,
                                  Launch launch) {
  Tensor xt(dt, {static_cast<int64_t>(x.size())});
  for (size_t i = 0; i < x.size(); ++i) xt.set_double(static_cast<int64_t>(i), x[i]);
  Tensor yt(dt, {out_count});
  Guarded gx(xt.nbytes()), gy(in_place ? 0 : yt.nbytes());
  if (xt.nbytes()) gx.upload(xt.raw());
  Status s = launch(gx.data(), in_place ? gx.data() : gy.data());
  EXPECT_TRUE(s.ok()) << s.message();
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  std::vector<uint8_t> bytes = in_place ? gx.download() : gy.download();
  if (yt.nbytes()) std::memcpy(yt.raw(), bytes.data(), yt.nbytes());
  std::vector<double> out(static_cast<size_t>(out_count));
  for (int64_t i = 0; i < out_count; ++i) out[static_cast<size_t>(i)] = yt.get_double(i);
  return out;
}

// `slack`: per element, an absolute error allowed on top of the precision's relative one (a sum's
// float32 rounding grows with the magnitudes summed, not with the result).
void expect_close(const std::vector<double>& got, const std::vector<double>& want, DataType dt,
                  const std::vector<double>& slack = {}) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    if (std::isnan(want[i])) {
      EXPECT_TRUE(std::isnan(got[i])) << "at " << i << ": " << got[i] << " instead of NaN";
    } else if (std::isinf(want[i])) {
      EXPECT_EQ(got[i], want[i]) << "at " << i;
    } else {
      const double extra = i < slack.size() ? slack[i] : 0.0;
      ASSERT_NEAR(got[i], want[i], tolerance(dt) * (1 + std::abs(want[i])) + extra) << "at " << i;
    }
  }
}

// The reduction in double; `slack` gets, per output, the float32 rounding a sum or mean may carry.
std::vector<double> reduce_reference(cuda::ReduceOp op, const std::vector<double>& x, const Dims& dims,
                                     const std::vector<bool>& reduced, std::vector<double>* slack) {
  const size_t rank = dims.size();
  int64_t outputs = 1, count = 1;
  for (size_t d = 0; d < rank; ++d) (reduced[d] ? count : outputs) *= dims[d];
  const double inf = std::numeric_limits<double>::infinity();
  const double init = op == cuda::ReduceOp::kMax ? -inf : op == cuda::ReduceOp::kMin ? inf : 0.0;
  std::vector<double> acc(static_cast<size_t>(outputs), init);
  slack->assign(static_cast<size_t>(outputs), 0.0);
  Dims idx(rank, 0);
  for (size_t i = 0; i < x.size(); ++i) {
    // The output element: the kept coordinates in row-major order.
    int64_t o = 0;
    for (size_t d = 0; d < rank; ++d) {
      if (!reduced[d]) o = o * dims[d] + idx[d];
    }
    double& a = acc[static_cast<size_t>(o)];
    const double v = x[i];
    if (op == cuda::ReduceOp::kSum || op == cuda::ReduceOp::kMean) (*slack)[static_cast<size_t>(o)] += std::abs(v);
    switch (op) {
      case cuda::ReduceOp::kSum:
      case cuda::ReduceOp::kMean: a += v; break;
      case cuda::ReduceOp::kMax: a = std::isnan(v) || v > a ? v : a; break;
      case cuda::ReduceOp::kMin: a = std::isnan(v) || v < a ? v : a; break;
      case cuda::ReduceOp::kSumSquare:
      case cuda::ReduceOp::kL2: a += v * v; break;
    }
    for (size_t d = rank; d-- > 0;) {
      if (++idx[d] < dims[d]) break;
      idx[d] = 0;
    }
  }
  for (size_t o = 0; o < acc.size(); ++o) {
    if (op == cuda::ReduceOp::kMean) {
      acc[o] /= static_cast<double>(count);
      (*slack)[o] /= static_cast<double>(count);
    }
    if (op == cuda::ReduceOp::kL2) acc[o] = std::sqrt(acc[o]);
    (*slack)[o] *= 1e-6;
  }
  return acc;
}

const char* reduce_name(cuda::ReduceOp op) {
  switch (op) {
    case cuda::ReduceOp::kSum: return "sum";
    case cuda::ReduceOp::kMean: return "mean";
    case cuda::ReduceOp::kMax: return "max";
    case cuda::ReduceOp::kMin: return "min";
    case cuda::ReduceOp::kSumSquare: return "sum_square";
    case cuda::ReduceOp::kL2: return "l2";
  }
  return "?";
}

TEST(CudaReduce, ReduceLauncherMatchesOverAnyAxes) {
  SKIP_WITHOUT_GPU();
  struct Case {
    Dims dims;
    std::vector<bool> reduced;
  };
  const Case cases[] = {
      {{3, 4, 5, 6}, {false, true, false, true}},  // scattered: strided
      {{3, 4, 5, 6}, {true, false, true, false}},
      {{3, 4, 5, 6}, {true, false, false, true}},
      {{3, 4, 5, 6}, {false, true, true, false}},  // [3, 20, 6]
      {{3, 4, 5, 6}, {true, true, true, true}},
      {{3, 4, 5, 6}, {false, false, false, false}},  // nothing reduced: each element on its own
      {{3, 4, 5, 6}, {false, false, false, true}},
      {{3, 1, 5, 1, 7}, {true, false, true, false, true}},  // all of it, once the 1s are set aside
      {{3, 1, 5, 1, 7}, {true, true, false, true, false}},  // [1, 3, 35]
      {{2, 5, 2, 5, 2, 5}, {true, false, true, false, true, false}},
      {{2, 3000}, {false, true}},  // a block per row
      {{1, 5000, 3}, {false, true, false}},
      {{0, 4}, {true, false}},  // empty reductions: 0, NaN, -inf or +inf
      {{4, 0}, {true, false}},  // no output at all
      {{}, {}},                 // a scalar
  };
  const cuda::ReduceOp ops[] = {cuda::ReduceOp::kSum, cuda::ReduceOp::kMean,      cuda::ReduceOp::kMax,
                                cuda::ReduceOp::kMin, cuda::ReduceOp::kSumSquare, cuda::ReduceOp::kL2};
  for (DataType dt : kFloats) {
    for (const Case& c : cases) {
      const std::vector<double> x = random_values(dt, shape_numel(c.dims), 9);
      bool flags[8] = {};
      int64_t outputs = 1;
      for (size_t d = 0; d < c.dims.size(); ++d) {
        flags[d] = c.reduced[d];
        if (!c.reduced[d]) outputs *= c.dims[d];
      }
      for (cuda::ReduceOp op : ops) {
        SCOPED_TRACE(std::string(dtype_name(dt)) + " " + reduce_name(op) + " " + shape_to_string(c.dims));
        const std::vector<double> got = run_on_device(dt, x, outputs, false, [&](const void* in, void* out) {
          return cuda::launch_reduce(op, dt, in, c.dims.data(), flags, static_cast<int>(c.dims.size()), out, nullptr);
        });
        std::vector<double> slack;
        const std::vector<double> want = reduce_reference(op, x, c.dims, c.reduced, &slack);
        expect_close(got, want, dt, slack);
      }
    }
  }
}

TEST(CudaReduce, ReduceMaxAndMinKeepNan) {
  SKIP_WITHOUT_GPU();
  const double nan = std::numeric_limits<double>::quiet_NaN();
  // Rows of 3 (a warp each) and one scattered reduction of the same values.
  const std::vector<double> x = {1, nan, 3, -1, 2, 0};
  const Dims dims = {2, 3};
  for (cuda::ReduceOp op : {cuda::ReduceOp::kMax, cuda::ReduceOp::kMin}) {
    const bool rows[2] = {false, true};
    const std::vector<double> got = run_on_device(DataType::kFloat, x, 2, false, [&](const void* in, void* out) {
      return cuda::launch_reduce(op, DataType::kFloat, in, dims.data(), rows, 2, out, nullptr);
    });
    EXPECT_TRUE(std::isnan(got[0])) << reduce_name(op);
    EXPECT_EQ(got[1], op == cuda::ReduceOp::kMax ? 2.0 : -1.0) << reduce_name(op);
    const bool columns[2] = {true, false};
    const std::vector<double> by_column = run_on_device(DataType::kFloat, x, 3, false, [&](const void* in, void* out) {
      return cuda::launch_reduce(op, DataType::kFloat, in, dims.data(), columns, 2, out, nullptr);
    });
    EXPECT_EQ(by_column[0], op == cuda::ReduceOp::kMax ? 1.0 : -1.0) << reduce_name(op);
    EXPECT_TRUE(std::isnan(by_column[1])) << reduce_name(op);
  }
}

std::vector<double> softmax_reference(bool log, const std::vector<double>& x, int64_t outer, int64_t n, int64_t inner) {
  std::vector<double> y(x.size());
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t i = 0; i < inner; ++i) {
      auto at = [&](int64_t k) { return static_cast<size_t>((o * n + k) * inner + i); };
      double m = -std::numeric_limits<double>::infinity(), sum = 0;
      for (int64_t k = 0; k < n; ++k) m = std::max(m, x[at(k)]);
      for (int64_t k = 0; k < n; ++k) sum += std::exp(x[at(k)] - m);
      for (int64_t k = 0; k < n; ++k) y[at(k)] = log ? x[at(k)] - m - std::log(sum) : std::exp(x[at(k)] - m) / sum;
    }
  }
  return y;
}

TEST(CudaReduce, SoftmaxLauncherMatches) {
  SKIP_WITHOUT_GPU();
  struct Case {
    int64_t outer, n, inner;
  };
  const Case cases[] = {{3, 1, 1}, {4, 7, 1},    {2, 1000, 1}, {2, 3000, 1}, {3, 7, 9},
                        {2, 1, 5}, {1, 257, 33}, {0, 5, 1},    {5, 0, 1},    {1, 1, 1}};
  for (DataType dt : kFloats) {
    for (const Case& c : cases) {
      // Inputs spread over [-8, 8) so that the max subtraction matters in float16.
      const std::vector<double> x = random_values(dt, c.outer * c.n * c.inner, 13, -8, 8);
      for (bool log : {false, true}) {
        for (bool in_place : {false, true}) {
          SCOPED_TRACE(std::string(dtype_name(dt)) + (log ? " log" : "") + (in_place ? " in place " : " ") +
                       std::to_string(c.outer) + "x" + std::to_string(c.n) + "x" + std::to_string(c.inner));
          const std::vector<double> got =
              run_on_device(dt, x, static_cast<int64_t>(x.size()), in_place, [&](const void* in, void* out) {
                return cuda::launch_softmax(log, dt, in, out, c.outer, c.n, c.inner, nullptr);
              });
          expect_close(got, softmax_reference(log, x, c.outer, c.n, c.inner), dt);
        }
      }
    }
  }
}

}  // namespace
}  // namespace kiln
