#include "runtime/open_plan.h"

#include <filesystem>

#include "onnx/importer.h"

namespace kiln {

LoadOptions this_machine_load_options() {
  LoadOptions o;
  o.devices = {"cpu"};
  // Checked where the CPU backend is built (with oneDNN); elsewhere "cpu" is the reference
  // backend, which runs no BF16 step natively whatever the CPU has.
  if (auto cpu = make_backend("cpu"); cpu.ok() && (*cpu)->name() == "cpu") o.cpu_isa = (*cpu)->available_isa();
  if (auto cuda = make_backend("cuda"); cuda.ok()) {
    o.devices.push_back("cuda");
    o.cuda_arch = (*cuda)->device().arch;
  }
  return o;
}

Result<OpenedPlan> open_plan(const std::string& path, const BuildOptions& options) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return invalid("cannot open '{}': no such file", path);
  OpenedPlan out;
  // A .kiln file is always read as an engine, so a damaged one is reported as a damaged engine
  // rather than as an unreadable ONNX model.
  bool kiln_ext = std::filesystem::path(path).extension() == ".kiln";
  if (kiln_ext || is_engine_file(path)) {
    KILN_ASSIGN_OR_RETURN(out.plan, load_engine(path, this_machine_load_options()));
    out.from_engine = true;
    return out;
  }
  KILN_ASSIGN_OR_RETURN(Model model, import_onnx_file(path));
  KILN_ASSIGN_OR_RETURN(out.plan, build_plan(model, options));
  return out;
}

}  // namespace kiln
