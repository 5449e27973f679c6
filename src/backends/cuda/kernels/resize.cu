#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/kernels/float_cast.cuh"
#include "backends/cuda/kernels/resize.h"

namespace kiln::cuda {
namespace {

// Where output index `o` of one axis reads: nearest reads i0; linear blends i0 and i1 with weight f
// on i1.
struct Tap {
  int i0, i1;
  float f;
};

// The source coordinate of output index `o`, as the reference forms it. The explicit roundings
// keep the compiler from contracting a multiply and an add into one FMA, which would round
// differently from the host and could move a nearest pick across a tie.
__device__ double source_coord(ResizeCoord m, double o, const ResizeAxis& a) {
  const double in = static_cast<double>(a.in);
  const double out_f = __dmul_rn(a.scale, in);
  const double centre = __ddiv_rn(__dadd_rn(o, 0.5), a.scale);
  switch (m) {
    case ResizeCoord::kAlignCorners:
      return out_f == 1.0 ? 0.0 : __ddiv_rn(__dmul_rn(o, static_cast<double>(a.in - 1)), __dadd_rn(out_f, -1.0));
    case ResizeCoord::kAsymmetric: return __ddiv_rn(o, a.scale);
    case ResizeCoord::kTfHalfPixelForNn: return centre;
    case ResizeCoord::kPytorchHalfPixel: return out_f == 1.0 ? -0.5 : __dadd_rn(centre, -0.5);
    case ResizeCoord::kHalfPixelSymmetric: {
      const double adjustment = __ddiv_rn(static_cast<double>(a.out), out_f);
      const double offset = __dmul_rn(__ddiv_rn(in, 2.0), __dadd_rn(1.0, -adjustment));
      return __dadd_rn(__dadd_rn(offset, centre), -0.5);
    }
    case ResizeCoord::kHalfPixel: break;
  }
  return __dadd_rn(centre, -0.5);
}

__device__ Tap make_tap(const ResizeParams& p, const ResizeAxis& a, int64_t o) {
  Tap t{static_cast<int>(o), static_cast<int>(o), 0.f};
  if (a.identity) return t;
  const double last = static_cast<double>(a.in - 1);
  // Every coordinate outside [-1, in] reads the same edge pixel as the bound does; clamping first
  // keeps the conversion to an integer in range.
  const double x = fmin(fmax(source_coord(p.coord, static_cast<double>(o), a), -1.0), last + 1.0);
  const double fl = floor(x);
  const double frac = __dadd_rn(x, -fl);
  const int lo = static_cast<int>(fl);
  int i0 = lo, i1 = lo;
  if (frac != 0.0) {
    if (p.linear) {
      i1 = lo + 1;
      t.f = static_cast<float>(frac);
    } else {
      bool up = false;
      switch (p.nearest) {
        case NearestMode::kRoundPreferFloor: up = frac > 0.5; break;
        case NearestMode::kRoundPreferCeil: up = frac >= 0.5; break;
        case NearestMode::kFloor: up = false; break;
        case NearestMode::kCeil: up = true; break;
      }
      i0 = i1 = up ? lo + 1 : lo;
    }
  }
  t.i0 = min(max(i0, 0), static_cast<int>(a.in - 1));
  t.i1 = min(max(i1, 0), static_cast<int>(a.in - 1));
  return t;
}

// One output element from the plane or image at `base`: `row` elements between source rows and
// `col` between source columns.
template <typename T, bool kLinear>
__device__ __forceinline__ T sample(const T* base, int64_t row, int64_t col, const Tap& th, const Tap& tw) {
  if constexpr (!kLinear) {
    return base[th.i0 * row + tw.i0 * col];
  } else {
    const float a = f32(base[th.i0 * row + tw.i0 * col]), b = f32(base[th.i0 * row + tw.i1 * col]);
    const float c = f32(base[th.i1 * row + tw.i0 * col]), d = f32(base[th.i1 * row + tw.i1 * col]);
    const float top = (1.f - tw.f) * a + tw.f * b, bottom = (1.f - tw.f) * c + tw.f * d;
    return cast<T>((1.f - th.f) * top + th.f * bottom);
  }
}

constexpr int kTile = 256;  // output pixels per block (and threads per block)

// Plain: thread i of block (x, y, z) makes output pixel x * kTile + i of every plane of images y,
// y + gridDim.y, ... and channels [z * cpb, (z + 1) * cpb): its taps are computed once.
template <typename T, bool kLinear>
__global__ void __launch_bounds__(kTile) resize_nchw(ResizeParams p, const T* x, T* y, int64_t cpb) {
  const int64_t ohw = p.h.out * p.w.out, ihw = p.h.in * p.w.in;
  const int64_t pix = blockIdx.x * static_cast<int64_t>(kTile) + threadIdx.x;
  if (pix >= ohw) return;
  const int64_t oh = pix / p.w.out, ow = pix - oh * p.w.out;
  const Tap th = make_tap(p, p.h, oh), tw = make_tap(p, p.w, ow);
  const int64_t c0 = blockIdx.z * cpb, c1 = min(c0 + cpb, p.c);
  for (int64_t n = blockIdx.y; n < p.n; n += gridDim.y) {
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t plane = n * p.c + c;
      y[plane * ohw + pix] = sample<T, kLinear>(x + plane * ihw, p.w.in, 1, th, tw);
    }
  }
}

// NHWC: block (x, y, z) makes output pixels [x * kTile, x * kTile + kTile) of images y, y +
// gridDim.y, ..., channels [z * cpb, (z + 1) * cpb), channels fastest so that neighbouring threads
// touch neighbouring bytes. The taps of its pixels are computed once, into shared memory.
template <typename T, bool kLinear>
__global__ void __launch_bounds__(kTile) resize_nhwc(ResizeParams p, const T* x, T* y, int64_t cpb) {
  __shared__ Tap taps_h[kTile], taps_w[kTile];
  const int64_t ohw = p.h.out * p.w.out, ihw = p.h.in * p.w.in;
  const int64_t pix0 = blockIdx.x * static_cast<int64_t>(kTile);
  const int count = static_cast<int>(min(static_cast<int64_t>(kTile), ohw - pix0));
  for (int i = threadIdx.x; i < count; i += blockDim.x) {
    const int64_t oh = (pix0 + i) / p.w.out, ow = pix0 + i - oh * p.w.out;
    taps_h[i] = make_tap(p, p.h, oh);
    taps_w[i] = make_tap(p, p.w, ow);
  }
  __syncthreads();
  const int64_t c0 = blockIdx.z * cpb;
  const unsigned channels = static_cast<unsigned>(min(cpb, p.c - c0));
  const unsigned total = static_cast<unsigned>(count) * channels;
  for (int64_t n = blockIdx.y; n < p.n; n += gridDim.y) {
    const T* xn = x + n * ihw * p.c + c0;
    T* yn = y + (n * ohw + pix0) * p.c + c0;
    for (unsigned e = threadIdx.x; e < total; e += blockDim.x) {
      const unsigned i = e / channels, k = e - i * channels;
      yn[i * p.c + k] = sample<T, kLinear>(xn + k, p.w.in * p.c, p.c, taps_h[i], taps_w[i]);
    }
  }
}

int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}
int64_t lmin(int64_t a, int64_t b) {
  return a < b ? a : b;
}
int64_t lmax(int64_t a, int64_t b) {
  return a < b ? b : a;
}

template <typename T, bool kLinear>
Status run(const ResizeParams& p, const void* x, void* y, cudaStream_t s) {
  const int64_t ohw = p.h.out * p.w.out;
  const int64_t tiles = ceil_div(ohw, kTile);
  const int64_t images = lmin(p.n, 65535);
  // Channels per block: about 8192 outputs a block, but enough blocks to fill the GPU when the
  // image is small, and no more than 65535 channel slices.
  int64_t cpb = lmax(1, 8192 / lmin(ohw, kTile));
  const int64_t want_slices = ceil_div(1024, tiles * images);
  cpb = lmin(cpb, ceil_div(p.c, want_slices));
  cpb = lmax(lmin(cpb, p.c), ceil_div(p.c, 65535));
  const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(images),
                  static_cast<unsigned>(ceil_div(p.c, cpb)));
  if (p.nhwc) {
    resize_nhwc<T, kLinear><<<grid, kTile, 0, s>>>(p, static_cast<const T*>(x), static_cast<T*>(y), cpb);
  } else {
    resize_nchw<T, kLinear><<<grid, kTile, 0, s>>>(p, static_cast<const T*>(x), static_cast<T*>(y), cpb);
  }
  KILN_CUDA_CHECK_LAUNCH("the resize kernel");
  return {};
}

}  // namespace

bool resize_dtype(DataType dt, bool linear) {
  if (linear) return dt == DataType::kFloat || dt == DataType::kFloat16 || dt == DataType::kBFloat16;
  if (dt == DataType::kString || dt == DataType::kUndefined) return false;
  const size_t size = dtype_size(dt);
  return size == 1 || size == 2 || size == 4 || size == 8;
}

Status launch_resize(const ResizeParams& p, DataType dt, const void* x, void* y, void* stream) {
  if (!resize_dtype(dt, p.linear)) {
    return invalid("no CUDA {} resize for {}", p.linear ? "linear" : "nearest", dtype_name(dt));
  }
  const int64_t out = p.n * p.c * p.h.out * p.w.out;
  if (out == 0) return {};
  auto s = static_cast<cudaStream_t>(stream);
  if (p.h.in == 0 || p.w.in == 0) {
    // Nothing to sample: the reference leaves such an output at zero.
    KILN_CUDA_CHECK(cudaMemsetAsync(y, 0, static_cast<size_t>(out) * dtype_size(dt), s));
    return {};
  }
  if (p.h.in > INT32_MAX || p.w.in > INT32_MAX || p.h.out > INT32_MAX || p.w.out > INT32_MAX) {
    return invalid("a resize of {}x{} to {}x{} is beyond the CUDA kernel's 32-bit indices", p.h.in, p.w.in, p.h.out,
                   p.w.out);
  }
  if (p.linear) {
    switch (dt) {
      case DataType::kFloat: return run<float, true>(p, x, y, s);
      case DataType::kFloat16: return run<__half, true>(p, x, y, s);
      default: return run<__nv_bfloat16, true>(p, x, y, s);
    }
  }
  switch (dtype_size(dt)) {
    case 1: return run<uint8_t, false>(p, x, y, s);
    case 2: return run<uint16_t, false>(p, x, y, s);
    case 4: return run<uint32_t, false>(p, x, y, s);
    default: return run<uint64_t, false>(p, x, y, s);
  }
}

}  // namespace kiln::cuda
