#include "core/tensor.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "core/dispatch.h"

namespace kiln {

int64_t shape_numel(std::span<const int64_t> dims) {
  int64_t n = 1;
  for (int64_t d : dims) {
    if (d < 0) return -1;
    if (d != 0 && n > std::numeric_limits<int64_t>::max() / d) return -1;
    n *= d;
  }
  return n;
}

std::string shape_to_string(std::span<const int64_t> dims) {
  if (dims.empty()) return "scalar";
  std::string s;
  for (size_t i = 0; i < dims.size(); ++i) {
    if (i) s += 'x';
    s += std::to_string(dims[i]);
  }
  return s;
}

namespace {
std::atomic<int64_t> g_max_tensor_bytes{kMaxTensorBytes};
}  // namespace

int64_t max_tensor_bytes() {
  return g_max_tensor_bytes.load(std::memory_order_relaxed);
}
void set_max_tensor_bytes(int64_t bytes) {
  g_max_tensor_bytes.store(bytes, std::memory_order_relaxed);
}

Status check_allocation(std::span<const int64_t> dims, size_t elem_bytes, const char* what) {
  const int64_t n = shape_numel(dims);
  const int64_t limit = max_tensor_bytes();
  if (n < 0 || (elem_bytes && n > limit / static_cast<int64_t>(elem_bytes))) {
    return invalid("{} of shape {} exceeds the {} byte limit", what, shape_to_string(dims), limit);
  }
  return {};
}

Result<Tensor> Tensor::create(DataType dtype, Dims dims) {
  return allocate(dtype, std::move(dims), true);
}

Result<Tensor> Tensor::create_uninitialized(DataType dtype, Dims dims) {
  return allocate(dtype, std::move(dims), false);
}

Result<Tensor> Tensor::allocate(DataType dtype, Dims dims, bool zeroed) {
  if (dtype == DataType::kUndefined || !dtype_valid(static_cast<int32_t>(dtype))) {
    return invalid("cannot create a tensor of undefined dtype");
  }
  int64_t n = shape_numel(dims);
  if (n < 0) return invalid("tensor shape {} is negative or overflows", shape_to_string(dims));
  size_t es = dtype == DataType::kString ? sizeof(std::string) : dtype_size(dtype);
  const int64_t limit = max_tensor_bytes();
  if (n > limit / static_cast<int64_t>(es)) {
    return invalid("tensor of shape {} ({} elements of {}) exceeds the {} byte limit", shape_to_string(dims), n,
                   dtype_name(dtype), limit);
  }
  Tensor t;
  t.dtype_ = dtype;
  t.dims_ = std::move(dims);
  t.numel_ = n;
  if (dtype == DataType::kString) {
    t.strings_ = std::make_shared<std::vector<std::string>>(static_cast<size_t>(n));
  } else {
    size_t bytes = static_cast<size_t>(n) * es;
    // Keep one byte allocated so raw() is never null for a defined tensor.
    uint8_t* p = static_cast<uint8_t*>(zeroed ? std::calloc(bytes ? bytes : 1, 1) : std::malloc(bytes ? bytes : 1));
    if (!p)
      return runtime_error("out of memory allocating {} bytes for a tensor of shape {}", bytes,
                           shape_to_string(t.dims_));
    t.bytes_ = std::shared_ptr<uint8_t[]>(p, [](uint8_t* q) { std::free(q); });
  }
  return t;
}

Tensor::Tensor(DataType dtype, Dims dims) {
  auto r = create(dtype, std::move(dims));
  if (!r.ok()) {
    std::fprintf(stderr, "kiln: internal error: %s\n", r.status().message().c_str());
    std::abort();
  }
  *this = std::move(r).value();
}

Tensor Tensor::wrap(DataType dtype, Dims dims, std::shared_ptr<uint8_t[]> bytes) {
  Tensor t;
  t.dtype_ = dtype;
  t.numel_ = shape_numel(dims);
  t.dims_ = std::move(dims);
  t.bytes_ = std::move(bytes);
  return t;
}

Tensor Tensor::wrap_packed(DataType dtype, Dims dims, std::shared_ptr<uint8_t[]> bytes, size_t nbytes,
                           std::string packing) {
  Tensor t = wrap(dtype, std::move(dims), std::move(bytes));
  t.packing_ = std::make_shared<const std::string>(std::move(packing));
  t.packed_bytes_ = nbytes;
  return t;
}

const std::string& Tensor::packing() const {
  static const std::string none;
  return packing_ ? *packing_ : none;
}

void Tensor::check_not_packed(const char* what) const {
  if (!packing_) return;
  std::fprintf(stderr, "kiln: internal error: %s of a tensor packed for a kernel\n", what);
  std::abort();
}

Tensor Tensor::reshaped(Dims dims) const {
  check_not_packed("reshaped");
  Tensor t = *this;
  t.dims_ = std::move(dims);
  return t;
}

Tensor Tensor::clone() const {
  Tensor t = *this;
  if (dtype_ == DataType::kString) {
    t.strings_ = std::make_shared<std::vector<std::string>>(*strings_);
  } else if (bytes_) {
    size_t bytes = nbytes();
    uint8_t* p = static_cast<uint8_t*>(std::malloc(bytes ? bytes : 1));
    if (!p) std::abort();
    if (bytes) std::memcpy(p, bytes_.get(), bytes);
    t.bytes_ = std::shared_ptr<uint8_t[]>(p, [](uint8_t* q) { std::free(q); });
  }
  return t;
}

double Tensor::get_double(int64_t i) const {
  check_not_packed("an element");
  double out = 0;
  switch (dtype_) {
    case DataType::kBool: return data<bool>()[i] ? 1.0 : 0.0;
    case DataType::kInt4:
    case DataType::kInt2: return data<int8_t>()[i];
    case DataType::kUInt4:
    case DataType::kUInt2: return data<uint8_t>()[i];
    default: break;
  }
  if (is_narrow_float(dtype_) && dtype_ != DataType::kFloat16 && dtype_ != DataType::kBFloat16) {
    return minifloat_to_float(data<uint8_t>()[i], dtype_);
  }
  Status s = visit_numeric(dtype_, [&]<typename T>() {
    out = static_cast<double>(static_cast<std::conditional_t<std::is_class_v<T>, float, T>>(data<T>()[i]));
    return Status();
  });
  (void)s;
  return out;
}

int64_t Tensor::get_int64(int64_t i) const {
  check_not_packed("an element");
  if (is_integer(dtype_) || dtype_ == DataType::kBool) {
    int64_t out = 0;
    switch (dtype_) {
      case DataType::kBool: return data<bool>()[i] ? 1 : 0;
      case DataType::kInt4:
      case DataType::kInt2: return data<int8_t>()[i];
      case DataType::kUInt4:
      case DataType::kUInt2: return data<uint8_t>()[i];
      default: break;
    }
    Status s = visit_int(dtype_, [&]<typename T>() {
      out = static_cast<int64_t>(data<T>()[i]);
      return Status();
    });
    (void)s;
    return out;
  }
  return static_cast<int64_t>(get_double(i));
}

std::vector<int64_t> Tensor::to_int64_vector() const {
  std::vector<int64_t> v(static_cast<size_t>(numel_));
  for (int64_t i = 0; i < numel_; ++i) v[static_cast<size_t>(i)] = get_int64(i);
  return v;
}

std::vector<double> Tensor::to_double_vector() const {
  std::vector<double> v(static_cast<size_t>(numel_));
  for (int64_t i = 0; i < numel_; ++i) v[static_cast<size_t>(i)] = get_double(i);
  return v;
}

void Tensor::set_double(int64_t i, double v) {
  check_not_packed("setting an element");
  switch (dtype_) {
    case DataType::kBool: data<bool>()[i] = v != 0; return;
    case DataType::kInt4:
    case DataType::kInt2: data<int8_t>()[i] = static_cast<int8_t>(v); return;
    case DataType::kUInt4:
    case DataType::kUInt2: data<uint8_t>()[i] = static_cast<uint8_t>(v); return;
    default: break;
  }
  if (is_narrow_float(dtype_) && dtype_ != DataType::kFloat16 && dtype_ != DataType::kBFloat16) {
    data<uint8_t>()[i] = float_to_minifloat(static_cast<float>(v), dtype_, true);
    return;
  }
  Status s = visit_numeric(dtype_, [&]<typename T>() {
    if constexpr (std::is_class_v<T>) {
      data<T>()[i] = T(static_cast<float>(v));
    } else {
      data<T>()[i] = static_cast<T>(v);
    }
    return Status();
  });
  (void)s;
}

void copy_elements(Tensor& dst, int64_t dst_index, const Tensor& src, int64_t src_index, int64_t count) {
  if (count <= 0) return;
  if (src.dtype() == DataType::kString) {
    for (int64_t k = 0; k < count; ++k) dst.strings()[dst_index + k] = src.strings()[src_index + k];
    return;
  }
  size_t es = dtype_size(src.dtype());
  std::memcpy(static_cast<uint8_t*>(dst.raw()) + dst_index * es,
              static_cast<const uint8_t*>(src.raw()) + src_index * es, static_cast<size_t>(count) * es);
}

}  // namespace kiln
