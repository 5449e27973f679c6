#pragma once
// Host-side conversions between a tensor as ONNX defines it (its logical dtype, row-major) and
// the bytes of a slot's storage (another element type, NHWC). The reference adapter and the
// executor use them where a storage differs from the logical type; fast backends convert with
// their own kernels (kiln.Reformat steps).
#include "core/tensor.h"
#include "plan/plan.h"

namespace kiln {

// Bytes `dims` take in `storage` (its element type): -1 for strings and unknown sizes.
int64_t storage_bytes(const Dims& dims, const Storage& storage);

// Whether bytes in `storage` are exactly the logical tensor's (same element type, plain layout).
bool storage_is_logical(const Storage& storage, DataType logical);

// Both functions read and write host memory: the caller checks that the storage's device is
// visible to the host.
// Writes `t` (logical, row-major) into `dst` in `storage`; `capacity` bytes are available.
Status write_storage(const Tensor& t, const Storage& storage, void* dst, int64_t capacity);

// Reads a tensor of `logical` dtype and `dims` from bytes in `storage`.
Result<Tensor> read_storage(const void* src, const Storage& storage, DataType logical, const Dims& dims);

// Ops that read only their input's shape (Shape, Size), whatever its storage: no transition
// moves their input, and a host kernel of theirs is given the dims alone.
bool reads_shape_only(const Node& n);

}  // namespace kiln
