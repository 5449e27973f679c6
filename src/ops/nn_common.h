#pragma once
// Helpers shared by the nn family (conv.cc, conv_transpose.cc, pool.cc, norm.cc, matmul.cc):
// bulk dtype conversion, sliding-window geometry (pads, auto_pad, ceil_mode), im2col/col2im and
// small attribute readers that work on a Node so kernels and shape inference share them.
#include <string>
#include <vector>

#include "core/dispatch.h"
#include "core/tensor.h"
#include "ir/graph.h"
#include "ops/op_context.h"
#include "ops/registry.h"

namespace kiln::nn {

// ---- attributes read from a Node (usable from both kernels and inference) ------------------
int64_t node_int(const Node& n, const std::string& key, int64_t def);
float node_float(const Node& n, const std::string& key, float def);
std::string node_string(const Node& n, const std::string& key, const std::string& def);
std::vector<int64_t> node_ints(const Node& n, const std::string& key, std::vector<int64_t> def = {});
bool node_has(const Node& n, const std::string& key);
// The axes a Reduce node (ai.onnx) names: its `axes` attribute before the opset where they moved
// to the second input (13 for ReduceSum, 18 for the others), that input's value after, read from
// `constant` (the input's constant value; null where it has none). Empty where none are given.
// False where they are computed at run time or are not int32/int64 of rank 0 or 1.
bool reduce_node_axes(const Node& n, const Tensor* constant, std::vector<int64_t>* axes);

// ---- dtype conversion ---------------------------------------------------------------------
// All elements of a numeric tensor as doubles (one dtype dispatch, not one per element).
std::vector<double> to_doubles(const Tensor& t);
// Writes doubles into a numeric tensor of the same size; narrow floats round through float,
// integers truncate like a C++ cast (callers round/saturate first where the op says so).
void store_doubles(Tensor& t, const std::vector<double>& v);
// Round half to even, as numpy's rint/round do.
double round_half_even(double v);

// Clamps an already rounded value to the range of an integer dtype (NaN becomes 0).
double saturate(double v, DataType t);

// The requantization multiplier a_scale * b_scale / y_scale computed in the scales' own
// precision S (float32, or float16 for QLinearMatMul-21), as the ONNX reference does; it is then
// applied to the integer accumulator in double.
template <typename S>
double requant_multiplier(double a_scale, double b_scale, double y_scale) {
  if constexpr (std::is_same_v<S, double>) {
    return a_scale * b_scale / y_scale;
  } else {
    auto q = [](double v) { return static_cast<float>(S(static_cast<float>(v))); };
    const float ab = q(static_cast<double>(q(a_scale) * q(b_scale)));
    return q(static_cast<double>(ab / q(y_scale)));
  }
}

// ---- sliding windows ------------------------------------------------------------------------
enum class AutoPad { kNotSet, kSameUpper, kSameLower, kValid };
Result<AutoPad> parse_auto_pad(const Node& n);

// The geometry of a sliding window over `in` (spatial dims only). `out` is the grid of window
// positions; pads are [begin_0.., end_0..]. Unknown input dims (-1, inference only) give
// unknown output dims.
struct Window {
  Dims in, kernel, strides, dilations, pads, out;
  size_t rank() const { return in.size(); }
  int64_t kernel_size() const;
  int64_t out_size() const;
  int64_t in_size() const;
  bool known() const;  // every dim known (false only during inference)
};

// Reads strides/dilations/pads/auto_pad from the node and computes the output grid.
// Conv-style when ceil_mode is false; pools pass their ceil_mode. Checks attribute sizes/values.
Result<Window> make_window(const Node& n, const Dims& in_spatial, const Dims& kernel, bool ceil_mode,
                           bool use_dilations = true);

// Whether the window's output dim d equals its input dim whatever the input size: stride 1 and
// padding that makes up for the kernel's span (SAME, or pads summing to span - 1). Inference uses it
// to keep symbolic spatial dims.
bool window_keeps_size(const Node& n, const Window& w, size_t d);

// Splits total padding per auto_pad (SAME_UPPER puts the extra at the end).
void split_same_pad(AutoPad ap, int64_t total, int64_t* begin, int64_t* end);

// For every (kernel tap kk, output position o) the flat offset into one image of dims w.in,
// stored at [kk * out_size + o], or -1 when the tap falls in the padding.
std::vector<int64_t> tap_offsets(const Window& w);

// ConvTranspose's geometry: X [N, C, D...], W [C, M/group, k...]. win.in holds the output image
// dims and win.out the input's spatial dims (the column grid); win.pads are the pads taken off
// the full result. Output spatial size and pads follow the spec: output_shape wins over pads;
// otherwise auto_pad SAME_* gives in * stride; else the explicit-pads formula.
struct TransposeSetup {
  int64_t n = 0, c = 0, m = 0, group = 1;
  Window win;
  Dims out_dims;  // [N, M, out...]
};
Result<TransposeSetup> transpose_setup(const Node& node, const Dims& xd, const Dims& wd);

// Gathers the receptive fields of `channels` planar images (spatial dims w.in) into a row-major
// [channels * kernel_size, out_size] matrix; taps falling in the padding read 0.
void im2col(const double* img, int64_t channels, const Window& w, double* col);
// The adjoint: scatter-adds such a matrix back into `channels` images of dims w.in.
void col2im(const double* col, int64_t channels, const Window& w, double* img);

// y[m x n] (+)= a[m x k] * b[k x n], all row-major doubles.
void gemm_acc(const double* a, const double* b, double* y, int64_t m, int64_t k, int64_t n);

// Floor division for possibly negative numerators (Python's //).
inline int64_t floor_div(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

// ---- inference helpers ----------------------------------------------------------------------
// Ensures output_types has one entry per node output.
void prepare_outputs(InferContext& ctx);
// The input's TypeInfo when it is a tensor type, else nullptr.
const TypeInfo* tensor_input(const InferContext& ctx, size_t i);
// Spatial dims (from index 2) of a known-rank shape, -1 for unknown.
Dims spatial_dims(const Shape& s);
Shape shape_from_dims(const Dims& d);  // -1 becomes an unknown Dim

}  // namespace kiln::nn
