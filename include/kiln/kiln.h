#pragma once
/// @file
/// Kiln's public C++ API: load an ONNX model and run it.
///
/// Everything here is a plain struct or a class behind a private-implementation pointer, so the
/// library's internals can change without breaking callers. Errors are values: functions that can
/// fail return `kiln::Status` (or fill a `kiln::Error`), never throw.
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace kiln {

/// What went wrong, with a message naming the file, node or tensor at fault.
struct Error {
  /// 1: runtime failure, 2: usage error, 3: invalid or unsupported model or input (the exit codes
  /// of the `kiln` command).
  int code = 0;
  std::string message;
};

/// A dense, row-major tensor in host memory. `dtype` uses ONNX's TensorProto.DataType numbering
/// (1 float, 6 int32, 7 int64, 9 bool, 10 float16, 11 double ...). Sub-byte types hold one value
/// per byte. String tensors use `strings` instead of `data`.
struct HostTensor {
  int32_t dtype = 0;
  std::vector<int64_t> shape;
  std::vector<uint8_t> data;
  std::vector<std::string> strings;
};

/// Declared name, element type and shape of a model input or output (-1: unknown or symbolic).
struct IoInfo {
  std::string name;
  int32_t dtype = 0;
  std::vector<int64_t> shape;
  bool shape_known = false;
};

/// The range of shapes an engine accepts for one input: any shape with min <= dims <= max
/// (element-wise); `opt` is the shape to tune for.
struct InputProfile {
  std::string name;
  std::vector<int64_t> min, opt, max;
};

/// How to build an engine (the options of `kiln build`).
struct BuildConfig {
  std::string device = "cpu";  ///< "cpu" or "cuda"
  /// Shapes for inputs whose declared shape is not static (or to override a declared one).
  std::vector<InputProfile> profiles;
  bool fp16 = false;                         ///< allow FP16 kernels where the backend has them
  bool bf16 = false;                         ///< allow BF16 kernels where the backend has them
  std::vector<std::string> disabled_passes;  ///< pass names, as `kiln passes` lists them
  std::vector<std::string> enabled_passes;   ///< passes off by default to run as well
  std::string timing_cache;                  ///< file of tactic timings to reuse and update
};

/// Optimizes the ONNX model at `onnx_path` and writes an engine file to `engine_path`. Returns
/// false and fills `error` on failure; no file is left at `engine_path` then.
bool build_engine(const std::string& onnx_path, const std::string& engine_path, const BuildConfig& config,
                  Error* error);

/// A model ready to run: an engine file, or an ONNX model (run as imported, node by node, or
/// optimized in memory when opened with a BuildConfig).
class Session {
 public:
  /// Loads and checks an engine file (.kiln) or an ONNX model. Returns nullptr and fills `error`
  /// when the file is unreadable, invalid, built for another device, or uses an operator Kiln
  /// cannot run.
  static std::unique_ptr<Session> open(const std::string& path, Error* error);
  /// Opens an ONNX model and builds it in memory with `config` (an engine file is loaded as is).
  static std::unique_ptr<Session> open(const std::string& path, const BuildConfig& config, Error* error);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  const std::vector<IoInfo>& inputs() const;
  const std::vector<IoInfo>& outputs() const;

  /// Runs the model. `inputs` follow inputs() order; on success `outputs` follow outputs() order.
  /// Returns false and fills `error` on a wrong input (dtype, shape, count) or a failure while
  /// running.
  bool run(std::span<const HostTensor> inputs, std::vector<HostTensor>* outputs, Error* error) const;

 private:
  struct Impl;
  explicit Session(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

/// The library version, "MAJOR.MINOR.PATCH".
const char* version();

}  // namespace kiln
