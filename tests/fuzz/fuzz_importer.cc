// libFuzzer target: feeds arbitrary bytes to the ONNX importer and, when a model imports, runs it
// on small zero inputs. Any crash, sanitizer report, leak or hang is a bug; errors are fine.
#include <cstddef>
#include <cstdint>
#include <string>

#include "onnx/importer.h"
#include "runtime/executor.h"

using namespace kiln;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string bytes(reinterpret_cast<const char*>(data), size);
  auto m = import_onnx_bytes(bytes, {}, "fuzz.onnx");
  if (!m.ok()) return 0;
  const Graph& g = *m->graph;
  std::vector<RValue> inputs;
  for (const Value* v : g.inputs) {
    if (v->type.kind != TypeInfo::Kind::kTensor || !v->type.shape.fully_known() ||
        v->type.dtype == DataType::kUndefined) {
      return 0;
    }
    Dims dims = v->type.shape.static_dims();
    int64_t n = shape_numel(dims);
    if (n < 0 || n > 4096) return 0;  // keep each run small
    auto t = Tensor::create(v->type.dtype, dims);
    if (!t.ok()) return 0;
    inputs.push_back(RValue::of(std::move(t).value()));
  }
  Executor exec(g);
  if (!exec.check_inputs(inputs).ok()) return 0;
  auto out = exec.run(std::move(inputs));
  (void)out;
  return 0;
}
