#include <cstring>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/kernels/movement.h"

namespace kiln::cuda {
namespace {

constexpr int kThreads = 256;
// Positions below this bound are computed in 32-bit integers: 64-bit division costs several
// times as much on the GPU, and index arithmetic is most of what these kernels do. The bound
// leaves room for the grid stride to be added without overflow.
constexpr int64_t kIndex32 = int64_t{1} << 30;

unsigned blocks_for(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(b < (int64_t{1} << 20) ? (b > 0 ? b : 1) : (int64_t{1} << 20));
}

int64_t abs64(int64_t v) {
  return v < 0 ? -v : v;
}

// ---- strided copy ---------------------------------------------------------------------------

template <typename I, int R>
struct Box {
  I dims[R];
  I src_strides[R];
  I dst_strides[R];
  I src_offset;
  I dst_offset;
};

template <typename E, typename I, int R>
__global__ void __launch_bounds__(kThreads)
    strided_copy_kernel(const E* __restrict__ src, E* __restrict__ dst, I total, Box<I, R> b) {
  const I step = static_cast<I>(gridDim.x) * static_cast<I>(blockDim.x);
  for (I i = static_cast<I>(blockIdx.x) * static_cast<I>(blockDim.x) + static_cast<I>(threadIdx.x); i < total;
       i += step) {
    I rest = i, s = b.src_offset, d = b.dst_offset;
#pragma unroll
    for (int k = R - 1; k > 0; --k) {
      const I c = rest % b.dims[k];
      rest /= b.dims[k];
      s += c * b.src_strides[k];
      d += c * b.dst_strides[k];
    }
    s += rest * b.src_strides[0];
    d += rest * b.dst_strides[0];
    dst[d] = src[s];
  }
}

// The box after size-1 dims are dropped, dims ordered by destination stride (consecutive threads
// write consecutive addresses) and dims that are contiguous in both tensors merged.
struct Normalized {
  int rank = 0;
  int64_t dims[kMaxMovementRank];
  int64_t src_strides[kMaxMovementRank];
  int64_t dst_strides[kMaxMovementRank];
  int64_t src_offset = 0;
  int64_t dst_offset = 0;
  int64_t total = 1;
  size_t width = 1;  // bytes moved per element
};

Normalized normalize(const StridedCopy& c, size_t element_bytes, const void* src, const void* dst) {
  Normalized n;
  n.src_offset = c.src_offset;
  n.dst_offset = c.dst_offset;
  n.width = element_bytes;
  int order[kMaxMovementRank];
  int kept = 0;
  for (int d = 0; d < c.rank; ++d) {
    n.total *= c.dims[d];
    if (c.dims[d] != 1) order[kept++] = d;
  }
  if (n.total == 0) return n;
  // Insertion sort, stable: larger destination strides outside.
  for (int i = 1; i < kept; ++i) {
    const int v = order[i];
    int j = i;
    while (j > 0 && abs64(c.dst_strides[order[j - 1]]) < abs64(c.dst_strides[v])) {
      order[j] = order[j - 1];
      --j;
    }
    order[j] = v;
  }
  for (int i = 0; i < kept; ++i) {
    const int d = order[i];
    n.dims[n.rank] = c.dims[d];
    n.src_strides[n.rank] = c.src_strides[d];
    n.dst_strides[n.rank] = c.dst_strides[d];
    ++n.rank;
  }
  // Merge from the innermost dim outwards: dim k-1 continues dim k when its strides are dim k's
  // times dim k's size, in both tensors.
  int r = n.rank;
  if (r > 1) {
    int out = r - 1;  // the merged list grows downwards from the innermost dim
    for (int k = r - 2; k >= 0; --k) {
      if (n.src_strides[k] == n.src_strides[out] * n.dims[out] &&
          n.dst_strides[k] == n.dst_strides[out] * n.dims[out]) {
        n.dims[out] *= n.dims[k];
      } else {
        --out;
        n.dims[out] = n.dims[k];
        n.src_strides[out] = n.src_strides[k];
        n.dst_strides[out] = n.dst_strides[k];
      }
    }
    const int merged = r - out;
    for (int k = 0; k < merged; ++k) {
      n.dims[k] = n.dims[out + k];
      n.src_strides[k] = n.src_strides[out + k];
      n.dst_strides[k] = n.dst_strides[out + k];
    }
    n.rank = merged;
  }
  if (n.rank == 0) {
    n.rank = 1;
    n.dims[0] = 1;
    n.src_strides[0] = 1;
    n.dst_strides[0] = 1;
  }
  // Where the innermost dim is contiguous on both sides, move several elements at once (up to 16
  // bytes), when every stride, offset and pointer allows the wider access.
  const int last = n.rank - 1;
  if (n.src_strides[last] == 1 && n.dst_strides[last] == 1) {
    for (size_t w = 16; w > element_bytes; w /= 2) {
      const int64_t ratio = static_cast<int64_t>(w / element_bytes);
      bool ok = n.dims[last] % ratio == 0 && n.src_offset % ratio == 0 && n.dst_offset % ratio == 0 &&
                reinterpret_cast<uintptr_t>(src) % w == 0 && reinterpret_cast<uintptr_t>(dst) % w == 0;
      for (int k = 0; ok && k < last; ++k) ok = n.src_strides[k] % ratio == 0 && n.dst_strides[k] % ratio == 0;
      if (!ok) continue;
      n.dims[last] /= ratio;
      n.total /= ratio;
      for (int k = 0; k < last; ++k) {
        n.src_strides[k] /= ratio;
        n.dst_strides[k] /= ratio;
      }
      n.src_offset /= ratio;
      n.dst_offset /= ratio;
      n.width = w;
      break;
    }
  }
  return n;
}

// Whether every position the box touches (and the element count) fits the 32-bit path.
bool fits_index32(int64_t total, int rank, const int64_t* dims, const int64_t* const* strides, int n_strides,
                  const int64_t* offsets) {
  if (total >= kIndex32) return false;
  for (int t = 0; t < n_strides; ++t) {
    int64_t reach = abs64(offsets[t]);
    for (int d = 0; d < rank; ++d) reach += (dims[d] - 1) * abs64(strides[t][d]);
    if (reach >= kIndex32) return false;
  }
  return true;
}

template <typename E, typename I, int R>
Status copy_ranked(const void* src, void* dst, const Normalized& n, cudaStream_t s) {
  Box<I, R> b{};
  const int pad = R - n.rank;  // leading dims of size 1 when the box has fewer than R
  for (int k = 0; k < R; ++k) {
    const bool real = k >= pad;
    b.dims[k] = real ? static_cast<I>(n.dims[k - pad]) : I{1};
    b.src_strides[k] = real ? static_cast<I>(n.src_strides[k - pad]) : I{0};
    b.dst_strides[k] = real ? static_cast<I>(n.dst_strides[k - pad]) : I{0};
  }
  b.src_offset = static_cast<I>(n.src_offset);
  b.dst_offset = static_cast<I>(n.dst_offset);
  strided_copy_kernel<E, I, R><<<blocks_for(n.total), kThreads, 0, s>>>(
      static_cast<const E*>(src), static_cast<E*>(dst), static_cast<I>(n.total), b);
  KILN_CUDA_CHECK_LAUNCH("the strided copy kernel");
  return {};
}

template <typename E, typename I>
Status copy_indexed(const void* src, void* dst, const Normalized& n, cudaStream_t s) {
  switch (n.rank) {
    case 1: return copy_ranked<E, I, 1>(src, dst, n, s);
    case 2: return copy_ranked<E, I, 2>(src, dst, n, s);
    case 3: return copy_ranked<E, I, 3>(src, dst, n, s);
    case 4: return copy_ranked<E, I, 4>(src, dst, n, s);
    default: return copy_ranked<E, I, kMaxMovementRank>(src, dst, n, s);
  }
}

template <typename E>
Status copy_typed(const void* src, void* dst, const Normalized& n, cudaStream_t s) {
  const int64_t* strides[2] = {n.src_strides, n.dst_strides};
  const int64_t offsets[2] = {n.src_offset, n.dst_offset};
  if (fits_index32(n.total, n.rank, n.dims, strides, 2, offsets)) return copy_indexed<E, int32_t>(src, dst, n, s);
  return copy_indexed<E, int64_t>(src, dst, n, s);
}

// ---- pad ------------------------------------------------------------------------------------

template <typename I>
struct PadBox {
  int rank;
  I out_dims[kMaxMovementRank];
  I dst_strides[kMaxMovementRank];
  I kept[kMaxMovementRank];
  I src_first[kMaxMovementRank];
  I dst_first[kMaxMovementRank];
  I src_strides[kMaxMovementRank];
};

template <typename E, typename I>
__global__ void __launch_bounds__(kThreads)
    pad_kernel(const E* __restrict__ src, E* __restrict__ dst, I total, PadBox<I> p, PadMode mode, E fill) {
  const I step = static_cast<I>(gridDim.x) * static_cast<I>(blockDim.x);
  for (I i = static_cast<I>(blockIdx.x) * static_cast<I>(blockDim.x) + static_cast<I>(threadIdx.x); i < total;
       i += step) {
    I rest = i, s = 0, d = 0;
    bool hole = false;
    for (int k = p.rank - 1; k >= 0; --k) {
      const I c = rest % p.out_dims[k];
      rest /= p.out_dims[k];
      d += c * p.dst_strides[k];
      const I n = p.kept[k];
      I j = c - p.dst_first[k];
      if (j < 0 || j >= n) {
        if (mode == PadMode::kConstant || n == 0) {
          hole = true;
          continue;
        }
        if (mode == PadMode::kEdge) {
          j = j < 0 ? I{0} : n - 1;
        } else if (mode == PadMode::kWrap) {
          j = ((j % n) + n) % n;
        } else if (n == 1) {
          j = 0;
        } else {
          // Reflection without repeating the edge repeats every 2 * (n - 1), as numpy.pad's reflect.
          const I period = 2 * (n - 1);
          const I m = ((j % period) + period) % period;
          j = m < n ? m : period - m;
        }
      }
      s += (j + p.src_first[k]) * p.src_strides[k];
    }
    dst[d] = hole ? fill : src[s];
  }
}

template <typename E, typename I>
Status pad_indexed(const void* src, void* dst, const PadCopy& c, const int* order, int64_t total, PadMode mode,
                   uint64_t fill_bits, cudaStream_t s) {
  PadBox<I> p{};
  p.rank = c.rank;
  for (int k = 0; k < c.rank; ++k) {
    const int d = order[k];
    p.out_dims[k] = static_cast<I>(c.out_dims[d]);
    p.dst_strides[k] = static_cast<I>(c.dst_strides[d]);
    p.kept[k] = static_cast<I>(c.kept[d]);
    p.src_first[k] = static_cast<I>(c.src_first[d]);
    p.dst_first[k] = static_cast<I>(c.dst_first[d]);
    p.src_strides[k] = static_cast<I>(c.src_strides[d]);
  }
  E fill;
  std::memcpy(&fill, &fill_bits, sizeof(E));
  pad_kernel<E, I><<<blocks_for(total), kThreads, 0, s>>>(static_cast<const E*>(src), static_cast<E*>(dst),
                                                          static_cast<I>(total), p, mode, fill);
  KILN_CUDA_CHECK_LAUNCH("the pad kernel");
  return {};
}

template <typename E>
Status pad_typed(const void* src, void* dst, const PadCopy& c, const int* order, int64_t total, PadMode mode,
                 uint64_t fill_bits, cudaStream_t s) {
  // Reach of the output, and of the input region read (its last kept element along each dim).
  bool small = total < kIndex32;
  int64_t out_reach = 0, in_reach = 0;
  for (int d = 0; d < c.rank; ++d) {
    out_reach += (c.out_dims[d] - 1) * abs64(c.dst_strides[d]);
    if (c.kept[d] > 0) in_reach += (c.src_first[d] + c.kept[d] - 1) * abs64(c.src_strides[d]);
  }
  small = small && out_reach < kIndex32 && in_reach < kIndex32;
  if (small) return pad_indexed<E, int32_t>(src, dst, c, order, total, mode, fill_bits, s);
  return pad_indexed<E, int64_t>(src, dst, c, order, total, mode, fill_bits, s);
}

// ---- gather ---------------------------------------------------------------------------------

template <typename E, typename I, typename Index>
__global__ void __launch_bounds__(kThreads)
    gather_kernel(const E* __restrict__ data, E* __restrict__ out, const Index* __restrict__ indices, I total, I count,
                  I inner, I axis_dim) {
  const I step = static_cast<I>(gridDim.x) * static_cast<I>(blockDim.x);
  for (I i = static_cast<I>(blockIdx.x) * static_cast<I>(blockDim.x) + static_cast<I>(threadIdx.x); i < total;
       i += step) {
    const I j = i % inner;
    const I t = i / inner;
    const I k = t % count;
    const I o = t / count;
    int64_t v = static_cast<int64_t>(indices[k]);
    if (v < 0) v += axis_dim;
    if (v < 0 || v >= static_cast<int64_t>(axis_dim)) {
      out[i] = E{};
    } else {
      out[i] = data[(o * axis_dim + static_cast<I>(v)) * inner + j];
    }
  }
}

template <typename E, typename I>
Status gather_indexed(const void* data, void* out, const void* indices, DataType index_dtype, int64_t total,
                      int64_t count, int64_t inner, int64_t axis_dim, cudaStream_t s) {
  const E* d = static_cast<const E*>(data);
  E* o = static_cast<E*>(out);
  const I t = static_cast<I>(total), c = static_cast<I>(count), n = static_cast<I>(inner), a = static_cast<I>(axis_dim);
  if (index_dtype == DataType::kInt64) {
    gather_kernel<E, I, int64_t>
        <<<blocks_for(total), kThreads, 0, s>>>(d, o, static_cast<const int64_t*>(indices), t, c, n, a);
  } else {
    gather_kernel<E, I, int32_t>
        <<<blocks_for(total), kThreads, 0, s>>>(d, o, static_cast<const int32_t*>(indices), t, c, n, a);
  }
  KILN_CUDA_CHECK_LAUNCH("the gather kernel");
  return {};
}

template <typename E>
Status gather_typed(const void* data, void* out, const void* indices, DataType index_dtype, int64_t outer,
                    int64_t axis_dim, int64_t count, int64_t inner, cudaStream_t s) {
  const int64_t total = outer * count * inner;
  if (total < kIndex32 && outer * axis_dim * inner < kIndex32) {
    return gather_indexed<E, int32_t>(data, out, indices, index_dtype, total, count, inner, axis_dim, s);
  }
  return gather_indexed<E, int64_t>(data, out, indices, index_dtype, total, count, inner, axis_dim, s);
}

// The widest access (up to 16 bytes) that moves whole rows of `inner` elements from aligned
// pointers.
size_t row_width(size_t element_bytes, int64_t inner, const void* a, const void* b) {
  for (size_t w = 16; w > element_bytes; w /= 2) {
    if ((inner * static_cast<int64_t>(element_bytes)) % static_cast<int64_t>(w) == 0 &&
        reinterpret_cast<uintptr_t>(a) % w == 0 && reinterpret_cast<uintptr_t>(b) % w == 0) {
      return w;
    }
  }
  return element_bytes;
}

}  // namespace

Status launch_strided_copy(const void* src, void* dst, size_t element_bytes, const StridedCopy& copy, void* stream) {
  if (!movement_element_bytes(element_bytes)) return invalid("no CUDA copy for elements of {} bytes", element_bytes);
  if (copy.rank < 0 || copy.rank > kMaxMovementRank) {
    return invalid("the CUDA strided copy takes at most {} dims, not {}", kMaxMovementRank, copy.rank);
  }
  for (int d = 0; d < copy.rank; ++d) {
    if (copy.dims[d] < 0) return invalid("a strided copy of negative size {}", copy.dims[d]);
  }
  const Normalized n = normalize(copy, element_bytes, src, dst);
  if (n.total == 0) return {};
  auto s = static_cast<cudaStream_t>(stream);
  if (n.rank == 1 && n.src_strides[0] == 1 && n.dst_strides[0] == 1) {
    const size_t w = n.width;
    KILN_CUDA_CHECK(cudaMemcpyAsync(static_cast<char*>(dst) + n.dst_offset * static_cast<int64_t>(w),
                                    static_cast<const char*>(src) + n.src_offset * static_cast<int64_t>(w),
                                    static_cast<size_t>(n.total) * w, cudaMemcpyDeviceToDevice, s));
    return {};
  }
  switch (n.width) {
    case 1: return copy_typed<uint8_t>(src, dst, n, s);
    case 2: return copy_typed<uint16_t>(src, dst, n, s);
    case 4: return copy_typed<uint32_t>(src, dst, n, s);
    case 8: return copy_typed<unsigned long long>(src, dst, n, s);
    default: return copy_typed<uint4>(src, dst, n, s);
  }
}

Status launch_pad(const void* src, void* dst, size_t element_bytes, const PadCopy& pad, PadMode mode,
                  uint64_t fill_bits, void* stream) {
  if (!movement_element_bytes(element_bytes)) return invalid("no CUDA pad for elements of {} bytes", element_bytes);
  if (pad.rank < 0 || pad.rank > kMaxMovementRank) {
    return invalid("the CUDA pad takes at most {} dims, not {}", kMaxMovementRank, pad.rank);
  }
  int64_t total = 1;
  for (int d = 0; d < pad.rank; ++d) {
    if (pad.out_dims[d] < 0 || pad.kept[d] < 0) return invalid("a pad of negative size");
    total *= pad.out_dims[d];
  }
  if (total == 0) return {};
  for (int d = 0; d < pad.rank; ++d) {
    if (pad.kept[d] == 0 && mode != PadMode::kConstant) {
      return invalid("a non-constant pad of dimension {} that keeps no element", d);
    }
  }
  // Dims by destination stride, larger outside, so that consecutive threads write consecutive
  // addresses whatever the output's layout.
  int order[kMaxMovementRank];
  for (int d = 0; d < pad.rank; ++d) order[d] = d;
  for (int i = 1; i < pad.rank; ++i) {
    const int v = order[i];
    int j = i;
    while (j > 0 && abs64(pad.dst_strides[order[j - 1]]) < abs64(pad.dst_strides[v])) {
      order[j] = order[j - 1];
      --j;
    }
    order[j] = v;
  }
  auto s = static_cast<cudaStream_t>(stream);
  switch (element_bytes) {
    case 1: return pad_typed<uint8_t>(src, dst, pad, order, total, mode, fill_bits, s);
    case 2: return pad_typed<uint16_t>(src, dst, pad, order, total, mode, fill_bits, s);
    case 4: return pad_typed<uint32_t>(src, dst, pad, order, total, mode, fill_bits, s);
    default: return pad_typed<unsigned long long>(src, dst, pad, order, total, mode, fill_bits, s);
  }
}

Status launch_gather(const void* data, void* out, size_t element_bytes, const void* indices, DataType index_dtype,
                     int64_t outer, int64_t axis_dim, int64_t count, int64_t inner, void* stream) {
  if (!movement_element_bytes(element_bytes)) return invalid("no CUDA gather for elements of {} bytes", element_bytes);
  if (index_dtype != DataType::kInt64 && index_dtype != DataType::kInt32) {
    return invalid("CUDA Gather takes int32 or int64 indices, not {}", dtype_name(index_dtype));
  }
  if (outer < 0 || axis_dim < 0 || count < 0 || inner < 0) return invalid("a gather of negative size");
  if (outer == 0 || count == 0 || inner == 0) return {};
  // Rows of `inner` elements move as wider words where sizes and alignment allow.
  const size_t w = row_width(element_bytes, inner, data, out);
  const int64_t rows = inner * static_cast<int64_t>(element_bytes) / static_cast<int64_t>(w);
  auto s = static_cast<cudaStream_t>(stream);
  switch (w) {
    case 1: return gather_typed<uint8_t>(data, out, indices, index_dtype, outer, axis_dim, count, rows, s);
    case 2: return gather_typed<uint16_t>(data, out, indices, index_dtype, outer, axis_dim, count, rows, s);
    case 4: return gather_typed<uint32_t>(data, out, indices, index_dtype, outer, axis_dim, count, rows, s);
    case 8: return gather_typed<unsigned long long>(data, out, indices, index_dtype, outer, axis_dim, count, rows, s);
    default: return gather_typed<uint4>(data, out, indices, index_dtype, outer, axis_dim, count, rows, s);
  }
}

}  // namespace kiln::cuda
