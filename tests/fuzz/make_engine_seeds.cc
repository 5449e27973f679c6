// Writes the seed corpus for fuzz_engine: an engine for each small ONNX node test model that
// imports — built by the real builder where the model's shapes are static (the expanded function
// tests give fused and recognized ops, FusedElementwise bodies included), else with the plan made
// by hand as the engine unit tests make it — and for the engine unit tests' own model built for
// the CPU and for CUDA.
// Usage: make_engine_seeds NODE_DIR OUT_DIR
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "engine/engine.h"
#include "engine_test_util.h"
#include "lower/builder.h"
#include "onnx/importer.h"
#include "plan_test_util.h"

namespace fs = std::filesystem;
using namespace kiln;

namespace {

bool write(const Plan& plan, const fs::path& file) {
  auto bytes = serialize_engine(plan);
  if (!bytes.ok()) return false;
  std::ofstream out(file, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes->data()), static_cast<std::streamsize>(bytes->size()));
  return static_cast<bool>(out);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s NODE_DIR OUT_DIR\n", argv[0]);
    return 2;
  }
  const fs::path node_dir = argv[1], out = argv[2];
  fs::create_directories(out);
  std::vector<fs::path> tests;
  for (const auto& e : fs::directory_iterator(node_dir)) tests.push_back(e.path());
  std::sort(tests.begin(), tests.end());
  int written = 0;
  for (const fs::path& t : tests) {
    const fs::path model = t / "model.onnx";
    std::error_code ec;
    if (!fs::exists(model, ec) || fs::file_size(model, ec) >= 4096) continue;
    auto m = import_onnx_file(model);
    if (!m.ok()) continue;
    auto built = build_plan(*m, BuildOptions{});
    written += write(built.ok() ? **built : *testing::plan_by_hand(*m), out / (t.filename().string() + ".kiln"));
  }
  Model own = testing::engine_test_model();
  if (own.graph) {
    auto plan = testing::plan_by_hand(own);
    written += write(*plan, out / "engine_test_cpu.kiln");
    plan->info.device = "cuda";
    plan->info.device_arch = "sm_90";
    written += write(*plan, out / "engine_test_cuda.kiln");
  }
  std::printf("%d seed engines in %s\n", written, out.string().c_str());
  return written > 0 ? 0 : 1;
}
