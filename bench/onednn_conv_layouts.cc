// Times oneDNN's convolution on the shapes of ResNet-50 (batch 1) with activations in NHWC and in
// the layout oneDNN picks for itself (format_tag::any: blocked nChw8c/nChw16c), filters in the
// layout it picks, bias and ReLU fused, and prints the implementation it chose. It answers whether
// a blocked activation layout in Kiln's planner, or another oneDNN release, would pay on this CPU.
//
//   g++ -O2 -fopenmp -o /tmp/onednn_conv_layouts bench/onednn_conv_layouts.cc -ldnnl
//   OMP_NUM_THREADS=2 /tmp/onednn_conv_layouts
//
// Written against oneDNN 2.x's API (operation descriptors); build with -DKILN_ONEDNN3 for 3.x.
#include <chrono>
#include <cstdio>
#include <dnnl.hpp>

using namespace dnnl;
using tag = memory::format_tag;

namespace {

struct Shape {
  int c, k, h, r, stride;
};

double time_conv(engine& eng, stream& s, const Shape& sh, bool blocked) {
  const int pad = sh.r / 2, oh = (sh.h + 2 * pad - sh.r) / sh.stride + 1;
  const memory::desc src({1, sh.c, sh.h, sh.h}, memory::data_type::f32, blocked ? tag::any : tag::nhwc);
  const memory::desc wei({sh.k, sh.c, sh.r, sh.r}, memory::data_type::f32, tag::any);
  const memory::desc bia({sh.k}, memory::data_type::f32, tag::x);
  const memory::desc dst({1, sh.k, oh, oh}, memory::data_type::f32, blocked ? tag::any : tag::nhwc);
  post_ops ops;
  primitive_attr attr;
#ifdef KILN_ONEDNN3
  ops.append_eltwise(algorithm::eltwise_relu, 0.f, 0.f);
  attr.set_post_ops(ops);
  convolution_forward::primitive_desc pd(eng, prop_kind::forward_inference, algorithm::convolution_direct, src, wei,
                                         bia, dst, {sh.stride, sh.stride}, {pad, pad}, {pad, pad}, attr);
#else
  ops.append_eltwise(1.f, algorithm::eltwise_relu, 0.f, 0.f);
  attr.set_post_ops(ops);
  convolution_forward::desc d(prop_kind::forward_inference, algorithm::convolution_direct, src, wei, bia, dst,
                              {sh.stride, sh.stride}, {pad, pad}, {pad, pad});
  convolution_forward::primitive_desc pd(d, attr, eng);
#endif
  memory x(pd.src_desc(), eng), w(pd.weights_desc(), eng), b(pd.bias_desc(), eng), y(pd.dst_desc(), eng);
  convolution_forward conv(pd);
  auto once = [&] {
    conv.execute(s, {{DNNL_ARG_SRC, x}, {DNNL_ARG_WEIGHTS, w}, {DNNL_ARG_BIAS, b}, {DNNL_ARG_DST, y}});
    s.wait();
  };
  for (int i = 0; i < 5; ++i) once();
  int n = 0;
  double elapsed = 0;
  const auto t0 = std::chrono::steady_clock::now();
  while (elapsed < 0.5) {
    once();
    ++n;
    elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  const double ms = elapsed / n * 1e3;
  const double gflops = 2.0 * sh.k * sh.c * sh.r * sh.r * oh * oh / (ms * 1e6);
  std::printf("%5d -> %4d  %3dx%-3d %dx%d/%d  %-8s %-22s %8.3f ms %7.1f GFLOP/s\n", sh.c, sh.k, sh.h, sh.h, sh.r, sh.r,
              sh.stride, blocked ? "blocked" : "nhwc", pd.impl_info_str(), ms, gflops);
  return ms;
}

}  // namespace

int main() {
  engine eng(engine::kind::cpu, 0);
  stream s(eng);
  // ResNet-50's distinct convolutions: the stem, then per stage the 3x3 and the two 1x1s.
  const Shape shapes[] = {{3, 64, 224, 7, 2},   {64, 64, 56, 3, 1},   {64, 256, 56, 1, 1},  {256, 64, 56, 1, 1},
                          {128, 128, 28, 3, 1}, {512, 128, 28, 1, 1}, {256, 256, 14, 3, 1}, {1024, 256, 14, 1, 1},
                          {512, 512, 7, 3, 1},  {2048, 512, 7, 1, 1}};
  for (const Shape& sh : shapes) {
    for (bool blocked : {false, true}) time_conv(eng, s, sh, blocked);
  }
  return 0;
}
