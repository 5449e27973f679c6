// libFuzzer target: feeds arbitrary bytes to the engine loader. Each input is loaded twice: as
// given, which exercises the header, size and checksum checks, and with its file size and
// checksums made right, so that mutations reach the section parsers and the cross-checks behind
// them. A plan that loads must write back out and load again, and its graph is run on small zero
// inputs. Any crash, sanitizer report, leak or hang is a bug; errors are fine.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "engine/engine.h"
#include "engine/engine_format.h"
#include "runtime/executor.h"

using namespace kiln;

namespace {

void run_graph_on_zeros(const Graph& g) {
  std::vector<RValue> inputs;
  for (const Value* v : g.inputs) {
    if (v->type.kind != TypeInfo::Kind::kTensor || !v->type.shape.fully_known() ||
        v->type.dtype == DataType::kUndefined) {
      return;
    }
    Dims dims = v->type.shape.static_dims();
    int64_t n = shape_numel(dims);
    if (n < 0 || n > 4096) return;  // keep each run small
    auto t = Tensor::create(v->type.dtype, dims);
    if (!t.ok()) return;
    inputs.push_back(RValue::of(std::move(t).value()));
  }
  Executor exec(g);
  if (!exec.check_inputs(inputs).ok()) return;
  auto out = exec.run(std::move(inputs));
  (void)out;
}

void check_loaded(const Plan& plan) {
  // What the loader accepted is consistent, so it must serialize and load again.
  auto again = serialize_engine(plan);
  if (!again.ok()) {
    std::fprintf(stderr, "a loaded plan does not serialize: %s\n", again.status().message().c_str());
    std::abort();
  }
  auto reloaded = load_engine_bytes(*again);
  if (!reloaded.ok()) {
    std::fprintf(stderr, "a re-serialized plan does not load: %s\n", reloaded.status().message().c_str());
    std::abort();
  }
  run_graph_on_zeros(*plan.graph);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // Tensors above 256 MiB are refused with an error, so that a tiny input declaring a huge
  // tensor tests the refusal instead of exhausting the fuzzer's memory.
  set_max_tensor_bytes(int64_t{256} << 20);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto as_given = load_engine_bytes({data, size});
  if (as_given.ok()) check_loaded(**as_given);
  if (size < engine_format::kHeaderSize) return 0;
  std::vector<uint8_t> sealed(data, data + size);
  const uint64_t file_size = size;
  std::memcpy(sealed.data() + engine_format::kFileSizeOffset, &file_size, sizeof(file_size));
  engine_format::reseal(sealed);
  auto resealed = load_engine_bytes(sealed);
  if (resealed.ok()) check_loaded(**resealed);
  return 0;
}
