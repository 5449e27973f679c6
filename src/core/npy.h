#pragma once
// NumPy .npy files (format versions 1.0-3.0), little-endian, C order.
#include <filesystem>

#include "core/status.h"
#include "core/tensor.h"

namespace kiln {

// Reads a .npy file. Errors name the file and what is wrong (bad magic, Fortran order, unsupported
// dtype, truncated data).
Result<Tensor> read_npy(const std::filesystem::path& file);
Result<Tensor> parse_npy(const std::string& bytes, const std::string& source);
// Writes a .npy file atomically (a temporary file renamed into place, so a failure leaves no
// partial file). float16 is written as '<f2'; bfloat16 and the narrow floats as float32; sub-byte
// integers as int8/uint8; strings as fixed-width unicode ('<U').
Status write_npy(const std::filesystem::path& file, const Tensor& t);
std::string serialize_npy(const Tensor& t);

}  // namespace kiln
