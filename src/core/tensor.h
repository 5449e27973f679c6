#pragma once
// A dense tensor: dtype, shape, and a shared byte buffer (or a vector of strings for kString).
// Copies are shallow (the buffer is shared); clone() makes a deep copy. Tensors are row-major.
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/status.h"

namespace kiln {

using Dims = std::vector<int64_t>;

// Product of dims; -1 when it would overflow int64 or a dim is negative.
int64_t shape_numel(std::span<const int64_t> dims);
std::string shape_to_string(std::span<const int64_t> dims);  // "1x3x224x224", "scalar" for rank 0

// Largest tensor Kiln will allocate by default; a request above the limit is an error naming the
// tensor's shape rather than an out-of-memory kill. Embedders (and the fuzz targets) may lower it.
constexpr int64_t kMaxTensorBytes = int64_t{1} << 40;
int64_t max_tensor_bytes();
void set_max_tensor_bytes(int64_t bytes);
// Checks that a buffer of `dims` elements of `elem_bytes` each stays within max_tensor_bytes();
// kernels call it before sizing scratch buffers from attributes or input data.
Status check_allocation(std::span<const int64_t> dims, size_t elem_bytes, const char* what);

class Tensor {
 public:
  Tensor() = default;
  // Allocates a zero-filled tensor. Fails on negative dims or absurd sizes.
  static Result<Tensor> create(DataType dtype, Dims dims);
  // Same, its bytes left as they come (string tensors still hold empty strings): for a tensor the
  // caller overwrites whole, such as an output copied out of an engine's arena, where zeroing
  // first would pass over its bytes once more.
  static Result<Tensor> create_uninitialized(DataType dtype, Dims dims);
  // Same, for internal use where sizes are known to be sane; aborts on failure.
  Tensor(DataType dtype, Dims dims);

  // A tensor over memory someone else owns (a memory-mapped engine file, an arena): `bytes` must
  // hold numel * dtype_size bytes and stay alive as long as the tensor; pass an aliasing
  // shared_ptr that keeps the owner alive. Not for strings.
  static Tensor wrap(DataType dtype, Dims dims, std::shared_ptr<uint8_t[]> bytes);
  // A weight packed for the one kernel that reads it (a filter in a library's blocked layout, in
  // the element type the kernel computes in, padded): dtype and dims stay the logical tensor's,
  // `nbytes` bytes at `bytes` hold it packed, and `packing` is the packer's description of how
  // (opaque to everyone else). Its elements cannot be read one by one (the element accessors abort).
  static Tensor wrap_packed(DataType dtype, Dims dims, std::shared_ptr<uint8_t[]> bytes, size_t nbytes,
                            std::string packing);

  template <typename T>
  static Tensor scalar(T value) {
    Tensor t(TypeToDType<T>::value, {});
    if constexpr (std::is_same_v<T, std::string>) {
      t.strings()[0] = value;
    } else {
      t.data<T>()[0] = value;
    }
    return t;
  }
  template <typename T>
  static Tensor from_vector(const std::vector<T>& values, Dims dims) {
    Tensor t(TypeToDType<T>::value, std::move(dims));
    for (size_t i = 0; i < values.size() && i < static_cast<size_t>(t.numel()); ++i) {
      if constexpr (std::is_same_v<T, std::string>) {
        t.strings()[i] = values[i];
      } else {
        t.data<T>()[i] = values[i];
      }
    }
    return t;
  }

  bool defined() const { return dtype_ != DataType::kUndefined; }
  DataType dtype() const { return dtype_; }
  const Dims& dims() const { return dims_; }
  int64_t rank() const { return static_cast<int64_t>(dims_.size()); }
  int64_t dim(int64_t i) const { return dims_[static_cast<size_t>(i < 0 ? i + rank() : i)]; }
  int64_t numel() const { return numel_; }
  // The bytes the tensor holds: numel * dtype_size, or a packed tensor's.
  size_t nbytes() const { return packing_ ? packed_bytes_ : static_cast<size_t>(numel_) * dtype_size(dtype_); }
  bool packed() const { return packing_ != nullptr; }
  // A packed tensor's description of its packing; empty for the others.
  const std::string& packing() const;

  void* raw() { return bytes_ ? bytes_.get() : nullptr; }
  const void* raw() const { return bytes_ ? bytes_.get() : nullptr; }
  template <typename T>
  T* data() {
    return static_cast<T*>(raw());
  }
  template <typename T>
  const T* data() const {
    return static_cast<const T*>(raw());
  }
  template <typename T>
  std::span<T> span() {
    return {data<T>(), static_cast<size_t>(numel_)};
  }
  template <typename T>
  std::span<const T> span() const {
    return {data<T>(), static_cast<size_t>(numel_)};
  }
  std::vector<std::string>& strings() { return *strings_; }
  const std::vector<std::string>& strings() const { return *strings_; }

  // Same data, new shape (numel must match). Shares the buffer. Not for packed tensors.
  Tensor reshaped(Dims dims) const;
  Tensor clone() const;

  // Element i converted to double / int64 (any numeric or bool dtype).
  double get_double(int64_t i) const;
  int64_t get_int64(int64_t i) const;
  // All elements as int64 (for shape-like inputs: Reshape's shape, Slice's starts ...).
  std::vector<int64_t> to_int64_vector() const;
  std::vector<double> to_double_vector() const;
  // Stores a double into element i with the conversion rules of a C++ cast (floats round).
  void set_double(int64_t i, double v);

 private:
  static Result<Tensor> allocate(DataType dtype, Dims dims, bool zeroed);
  DataType dtype_ = DataType::kUndefined;
  Dims dims_;
  int64_t numel_ = 0;
  std::shared_ptr<uint8_t[]> bytes_;
  std::shared_ptr<std::vector<std::string>> strings_;
  std::shared_ptr<const std::string> packing_;  // set for packed tensors
  size_t packed_bytes_ = 0;
  void check_not_packed(const char* what) const;
};

// Copies `count` elements (any dtype, strings included) from src[src_index..] to dst[dst_index..].
// Both tensors must have the same dtype; data-movement kernels use this instead of typed loops.
void copy_elements(Tensor& dst, int64_t dst_index, const Tensor& src, int64_t src_index, int64_t count);

}  // namespace kiln
