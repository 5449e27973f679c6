// Times oneDNN's convolution on ResNet-50's batch-1 shapes of its last two stages (NHWC, filter in
// the layout oneDNN picks, bias and ReLU fused) twice: with one filter, which stays in the cache
// from run to run (as when a step is timed alone), and with the filter rotated through copies that
// together far exceed the caches (as inside a whole model, where the other steps' filters evict
// it). The difference is the time a step spends reading its filter from memory.
//
//   g++ -O2 -fopenmp -o /tmp/onednn_conv_cold_weights bench/onednn_conv_cold_weights.cc -ldnnl
//   OMP_NUM_THREADS=2 /tmp/onednn_conv_cold_weights
//
// Written against oneDNN 2.x's API (operation descriptors).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <dnnl.hpp>
#include <vector>

using namespace dnnl;
using tag = memory::format_tag;

namespace {

struct Shape {
  int c, k, h, r, stride;
};

// The median of `runs` runs, each with the next of `filters`.
double median_ms(convolution_forward& conv, stream& s, memory& src, std::vector<memory>& filters, memory& bias,
                 memory& dst, int runs) {
  std::vector<double> ms;
  for (int i = 0; i < runs; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    conv.execute(s, {{DNNL_ARG_SRC, src},
                     {DNNL_ARG_WEIGHTS, filters[static_cast<size_t>(i) % filters.size()]},
                     {DNNL_ARG_BIAS, bias},
                     {DNNL_ARG_DST, dst}});
    s.wait();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::nth_element(ms.begin(), ms.begin() + runs / 2, ms.end());
  return ms[static_cast<size_t>(runs / 2)];
}

}  // namespace

int main() {
  engine eng(engine::kind::cpu, 0);
  stream s(eng);
  const Shape shapes[] = {
      {1024, 256, 14, 1, 1},  {256, 256, 14, 3, 1}, {256, 1024, 14, 1, 1}, {1024, 512, 14, 1, 1}, {512, 512, 14, 3, 2},
      {1024, 2048, 14, 1, 2}, {512, 2048, 7, 1, 1}, {2048, 512, 7, 1, 1},  {512, 512, 7, 3, 1},
  };
  constexpr size_t kColdBytes = size_t{256} << 20;  // the copies' total: past any cache here
  std::printf("%-26s %10s %10s %10s %10s %12s\n", "conv (C->K, HxW, RxR/s)", "filter", "warm ms", "cold ms",
              "cold/warm", "cold GFLOP/s");
  for (const Shape& sh : shapes) {
    const int pad = sh.r / 2, oh = (sh.h + 2 * pad - sh.r) / sh.stride + 1;
    const memory::desc src_md({1, sh.c, sh.h, sh.h}, memory::data_type::f32, tag::nhwc);
    const memory::desc dst_md({1, sh.k, oh, oh}, memory::data_type::f32, tag::nhwc);
    const memory::desc bias_md({sh.k}, memory::data_type::f32, tag::x);
    const memory::desc w_md({sh.k, sh.c, sh.r, sh.r}, memory::data_type::f32, tag::any);
    const convolution_forward::desc d(prop_kind::forward_inference, algorithm::convolution_direct, src_md, w_md,
                                      bias_md, dst_md, {sh.stride, sh.stride}, {pad, pad}, {pad, pad});
    post_ops ops;
    ops.append_eltwise(1.f, algorithm::eltwise_relu, 0.f, 0.f);
    primitive_attr attr;
    attr.set_post_ops(ops);
    const convolution_forward::primitive_desc pd(d, attr, eng);
    convolution_forward conv(pd);
    memory src(src_md, eng), dst(dst_md, eng), bias(bias_md, eng);
    std::fill_n(static_cast<float*>(src.get_data_handle()), src_md.get_size() / 4, 0.5f);
    std::fill_n(static_cast<float*>(bias.get_data_handle()), bias_md.get_size() / 4, 0.1f);
    const size_t filter_bytes = pd.weights_desc().get_size();
    const size_t copies = std::max<size_t>(2, kColdBytes / filter_bytes);
    std::vector<memory> filters;
    for (size_t i = 0; i < copies; ++i) {
      filters.emplace_back(pd.weights_desc(), eng);
      // Written, so that each copy has pages of its own (untouched ones would all read as one).
      std::fill_n(static_cast<float*>(filters.back().get_data_handle()), filter_bytes / 4, 0.01f);
    }
    std::vector<memory> one = {filters[0]};
    median_ms(conv, s, src, one, bias, dst, 20);
    const double warm = median_ms(conv, s, src, one, bias, dst, 200);
    const double cold = median_ms(conv, s, src, filters, bias, dst, 200);
    const double flop = 2.0 * oh * oh * sh.k * sh.c * sh.r * sh.r;
    char name[64];
    std::snprintf(name, sizeof name, "%d->%d, %dx%d, %dx%d/%d", sh.c, sh.k, sh.h, sh.h, sh.r, sh.r, sh.stride);
    std::printf("%-26s %8.2f MB %10.3f %10.3f %10.2f %12.0f   %s\n", name, filter_bytes / 1e6, warm, cold, cold / warm,
                flop / cold / 1e6, pd.impl_info_str());
  }
  return 0;
}
