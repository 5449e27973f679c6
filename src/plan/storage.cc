#include "plan/storage.h"

#include <cstring>

namespace kiln {
namespace {

// For NHWC storage of a 4-D [N, C, H, W] tensor, the storage position of logical element `i`.
int64_t nhwc_index(const Dims& d, int64_t i) {
  const int64_t w = i % d[3], h = (i / d[3]) % d[2], c = (i / (d[3] * d[2])) % d[1], n = i / (d[3] * d[2] * d[1]);
  return ((n * d[2] + h) * d[3] + w) * d[1] + c;
}

Status check_layout(const Storage& s, const Dims& dims) {
  if (s.layout == Layout::kPlain) return {};
  if (s.layout == Layout::kNHWC && dims.size() == 4) return {};
  return invalid("storage {} cannot hold a tensor of shape {}", storage_name(s), shape_to_string(dims));
}

}  // namespace

int64_t storage_bytes(const Dims& dims, const Storage& storage) {
  if (storage.dtype == DataType::kString || storage.dtype == DataType::kUndefined) return -1;
  const int64_t n = shape_numel(dims);
  return n < 0 ? -1 : n * static_cast<int64_t>(dtype_size(storage.dtype));
}

bool storage_is_logical(const Storage& storage, DataType logical) {
  return storage.layout == Layout::kPlain && (storage.dtype == logical || storage.dtype == DataType::kUndefined);
}

Status write_storage(const Tensor& t, const Storage& storage, void* dst, int64_t capacity) {
  KILN_RETURN_IF_ERROR(check_layout(storage, t.dims()));
  const DataType dt = storage.dtype == DataType::kUndefined ? t.dtype() : storage.dtype;
  const int64_t bytes = storage_bytes(t.dims(), Storage{dt, storage.layout, storage.device});
  if (bytes < 0) return invalid("a {} tensor has no byte storage", dtype_name(t.dtype()));
  if (bytes > capacity) {
    return runtime_error("{} bytes of {} do not fit the {} bytes of their slot", bytes, shape_to_string(t.dims()),
                         capacity);
  }
  if (storage_is_logical(storage, t.dtype())) {
    // A view written over its own input (a Reshape in place) is already where it belongs.
    if (bytes && dst != t.raw()) std::memmove(dst, t.raw(), static_cast<size_t>(bytes));
    return {};
  }
  // Element by element through a tensor of the storage type (the reference path, not a fast one).
  Tensor out(dt, {t.numel()});
  const bool nhwc = storage.layout == Layout::kNHWC;
  for (int64_t i = 0; i < t.numel(); ++i) out.set_double(nhwc ? nhwc_index(t.dims(), i) : i, t.get_double(i));
  if (bytes) std::memcpy(dst, out.raw(), static_cast<size_t>(bytes));
  return {};
}

Result<Tensor> read_storage(const void* src, const Storage& storage, DataType logical, const Dims& dims) {
  KILN_RETURN_IF_ERROR(check_layout(storage, dims));
  const DataType dt = storage.dtype == DataType::kUndefined ? logical : storage.dtype;
  const int64_t bytes = storage_bytes(dims, Storage{dt, storage.layout, storage.device});
  // Every element is written below (copied, or converted one by one): no zeroing first.
  KILN_ASSIGN_OR_RETURN(Tensor out, Tensor::create_uninitialized(logical, dims));
  if (storage_is_logical(storage, logical)) {
    if (bytes > 0) std::memcpy(out.raw(), src, static_cast<size_t>(bytes));
    return out;
  }
  KILN_ASSIGN_OR_RETURN(Tensor in, Tensor::create(dt, {out.numel()}));
  if (bytes > 0) std::memcpy(in.raw(), src, static_cast<size_t>(bytes));
  const bool nhwc = storage.layout == Layout::kNHWC;
  for (int64_t i = 0; i < out.numel(); ++i) out.set_double(i, in.get_double(nhwc ? nhwc_index(dims, i) : i));
  return out;
}

bool reads_shape_only(const Node& n) {
  return n.domain.empty() && (n.op_type == "Shape" || n.op_type == "Size");
}

}  // namespace kiln
