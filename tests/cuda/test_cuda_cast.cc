// Cast on the GPU against the reference kernel: integer masks to float (what BERT's exports do to
// attention_mask), floats to integers (truncation toward zero) and to bool, bool to float and
// integer widths, in strict FP32, FP16 and BF16 builds (where a float side is stored in the
// build's precision). Values are exact in every float type, so the conversions compare exactly.
// Integer comparisons too. Skipped where no GPU is visible.
#include <gtest/gtest.h>

#include "cuda_test_util.h"
#include "model_builder.h"

namespace kiln {
namespace {
using namespace kiln::testing;

onnx::ModelProto cast_model(int from, int to, const Dims& dims) {
  onnx::ModelProto m = make_model(19);
  auto* g = m.mutable_graph();
  add_tensor_info(g->mutable_input(), "x", from, dims);
  add_int_attr(add_node(g, "Cast", {"x"}, {"y"}, "cast"), "to", to);
  g->add_output()->set_name("y");
  return m;
}

Tensor values(DataType dt, const Dims& dims) {
  Tensor t(dt, dims);
  for (int64_t i = 0; i < t.numel(); ++i) {
    const double v = dt == DataType::kBool ? (i % 3 != 0) : is_float(dt) ? (i % 17) - 8 + 0.25 : (i % 19) - 9;
    t.set_double(i, dt == DataType::kUInt8 ? std::abs(v) : v);
  }
  return t;
}

TEST(CudaCast, Conversions) {
  SKIP_WITHOUT_GPU();
  using P = onnx::TensorProto;
  const struct {
    int from, to;
    DataType dt;
  } cases[] = {
      {P::INT64, P::FLOAT, DataType::kInt64},   {P::FLOAT, P::INT32, DataType::kFloat},
      {P::FLOAT, P::INT64, DataType::kFloat},   {P::FLOAT, P::BOOL, DataType::kFloat},
      {P::BOOL, P::FLOAT, DataType::kBool},     {P::INT32, P::INT64, DataType::kInt32},
      {P::INT64, P::INT32, DataType::kInt64},   {P::UINT8, P::FLOAT, DataType::kUInt8},
      {P::FLOAT, P::FLOAT16, DataType::kFloat},
  };
  for (const Dims& dims : {Dims{1}, Dims{3, 257}, Dims{0, 4}, Dims{2, 3, 5, 7}}) {
    for (const auto& c : cases) {
      SCOPED_TRACE(std::to_string(c.from) + " -> " + std::to_string(c.to) + " " + shape_to_string(dims));
      expect_cuda_matches_reference(cast_model(c.from, c.to, dims), {{"x", dims}}, {{"x", dims}},
                                    {{RValue::of(values(c.dt, dims))}}, {"Cast"});
    }
  }
}

// Integer comparisons (compare_kernel.cc) against the reference: token ids against a padding id
// and the not-equal mask RoBERTa's exporter writes (Equal, then Not), positions against lengths
// broadcast along rows, in int64 and int32, with values past 2^24 that differ by one (a float
// register would call them equal), and an empty batch.
TEST(CudaCompare, IntegerComparisons) {
  SKIP_WITHOUT_GPU();
  using P = onnx::TensorProto;
  const char* ops[] = {"Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual"};
  for (int elem : {static_cast<int>(P::INT64), static_cast<int>(P::INT32)}) {
    const DataType dt = elem == P::INT64 ? DataType::kInt64 : DataType::kInt32;
    for (const char* op : ops) {
      SCOPED_TRACE(std::string(op) + " " + std::string(dtype_name(dt)));
      onnx::ModelProto m = make_model(17);
      auto* g = m.mutable_graph();
      add_tensor_info(g->mutable_input(), "ids", elem, {0, 37}, {"n", ""});
      add_tensor_info(g->mutable_input(), "len", elem, {0, 1}, {"n", ""});
      auto* pad = g->add_initializer();  // a scalar: 2^24 + 1
      pad->set_name("pad");
      pad->set_data_type(elem);
      if (elem == P::INT64) {
        pad->add_int64_data(16777217);
      } else {
        pad->add_int32_data(16777217);
      }
      add_node(g, op, {"ids", "pad"}, {"is_pad"});
      add_node(g, "Not", {"is_pad"}, {"keep"});
      add_node(g, op, {"ids", "len"}, {"by_row"});
      g->add_output()->set_name("keep");
      g->add_output()->set_name("by_row");
      std::vector<std::vector<RValue>> sets;
      for (int64_t n : {3, 1, 0}) {
        Tensor ids(dt, {n, 37}), len(dt, {n, 1});
        for (int64_t i = 0; i < ids.numel(); ++i) ids.set_double(i, i % 5 == 0 ? 16777216 + (i % 3) : (i * 7) % 41 - 3);
        for (int64_t r = 0; r < n; ++r) len.set_double(r, 10 + 9 * r);
        sets.push_back({RValue::of(ids), RValue::of(len)});
      }
      expect_cuda_matches_reference(m, {{"ids", {0, 37}}, {"len", {0, 1}}}, {{"ids", {3, 37}}, {"len", {3, 1}}}, sets,
                                    {op, "Not"}, std::span<const PrecisionMode>(kAllPrecisions, 1));
    }
  }
}

}  // namespace
}  // namespace kiln
