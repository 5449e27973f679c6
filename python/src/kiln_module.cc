// kiln._kiln: the Python module's native half. The Python package (python/kiln) wraps it with the
// public API; this file turns Python values into Kiln's and back, releases the GIL around builds
// and runs, and raises Kiln's errors as kiln.KilnError subclasses (python/kiln/_errors.py).
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/function.h>
#include <nanobind/stl/map.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/unique_ptr.h>
#include <nanobind/stl/vector.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <mutex>

#include "bench_runner.h"
#include "cli_inputs.h"
#include "engine/engine.h"
#include "onnx/importer.h"
#include "passes/pipeline.h"
#include "plan_report.h"
#include "runtime/open_plan.h"
#include "runtime/plan_executor.h"

namespace nb = nanobind;

namespace kiln::python {
namespace {

// Raises `s` as the kiln._errors class `kind` ("InvalidModel" ...).
[[noreturn]] void raise_as(const char* kind, const std::string& message) {
  nb::object cls = nb::module_::import_("kiln._errors").attr(kind);
  PyErr_SetString(cls.ptr(), message.c_str());
  throw nb::python_error();
}

// A failed Status as the error class its code means; `input_stage`: while checking or running
// inputs, where an invalid value is the caller's input rather than the model.
[[noreturn]] void raise_status(const Status& s, bool input_stage = false) {
  const std::string& m = s.message();
  switch (s.code()) {
    case StatusCode::kUsage: raise_as("UsageError", m);
    case StatusCode::kInvalidModel:
      if (m.find("is not supported by Kiln") != std::string::npos || m.find("no reference kernel") != std::string::npos)
        raise_as("UnsupportedOp", m);
      raise_as(input_stage ? "InvalidInput" : "InvalidModel", m);
    default: raise_as("RuntimeFailure", m);
  }
}

template <typename T>
T value_or_raise(Result<T> r, bool input_stage = false) {
  if (!r.ok()) raise_status(r.status(), input_stage);
  return std::move(r).value();
}

// ---- dtypes ---------------------------------------------------------------------------------

bool dtype_of(const nb::dlpack::dtype& d, DataType* out) {
  using nb::dlpack::dtype_code;
  const auto code = static_cast<dtype_code>(d.code);
  if (d.lanes != 1) return false;
  struct Entry {
    dtype_code code;
    uint8_t bits;
    DataType dt;
  };
  static const Entry table[] = {
      {dtype_code::Float, 32, DataType::kFloat},
      {dtype_code::Float, 16, DataType::kFloat16},
      {dtype_code::Float, 64, DataType::kDouble},
      {dtype_code::Bfloat, 16, DataType::kBFloat16},
      {dtype_code::Int, 8, DataType::kInt8},
      {dtype_code::Int, 16, DataType::kInt16},
      {dtype_code::Int, 32, DataType::kInt32},
      {dtype_code::Int, 64, DataType::kInt64},
      {dtype_code::UInt, 8, DataType::kUInt8},
      {dtype_code::UInt, 16, DataType::kUInt16},
      {dtype_code::UInt, 32, DataType::kUInt32},
      {dtype_code::UInt, 64, DataType::kUInt64},
      {dtype_code::Bool, 8, DataType::kBool},
      {dtype_code::Complex, 64, DataType::kComplex64},
      {dtype_code::Complex, 128, DataType::kComplex128},
  };
  for (const Entry& e : table) {
    if (e.code == code && e.bits == d.bits) {
      *out = e.dt;
      return true;
    }
  }
  return false;
}

bool dlpack_of(DataType dt, nb::dlpack::dtype* out) {
  using nb::dlpack::dtype_code;
  auto make = [&](dtype_code c, uint8_t bits) {
    *out = nb::dlpack::dtype{static_cast<uint8_t>(c), bits, 1};
    return true;
  };
  switch (dt) {
    case DataType::kFloat: return make(dtype_code::Float, 32);
    case DataType::kFloat16: return make(dtype_code::Float, 16);
    case DataType::kDouble: return make(dtype_code::Float, 64);
    case DataType::kBFloat16: return make(dtype_code::Bfloat, 16);
    case DataType::kInt8: return make(dtype_code::Int, 8);
    case DataType::kInt16: return make(dtype_code::Int, 16);
    case DataType::kInt32: return make(dtype_code::Int, 32);
    case DataType::kInt64: return make(dtype_code::Int, 64);
    case DataType::kUInt8: return make(dtype_code::UInt, 8);
    case DataType::kUInt16: return make(dtype_code::UInt, 16);
    case DataType::kUInt32: return make(dtype_code::UInt, 32);
    case DataType::kUInt64: return make(dtype_code::UInt, 64);
    case DataType::kBool: return make(dtype_code::Bool, 8);
    case DataType::kComplex64: return make(dtype_code::Complex, 64);
    case DataType::kComplex128: return make(dtype_code::Complex, 128);
    default: return false;
  }
}

// ---- engines --------------------------------------------------------------------------------

// A built or loaded engine: the plan, shared by its sessions.
struct PyEngine {
  std::shared_ptr<Plan> plan;
};

// One declared input or output: name, element type name, dims (an int, or the symbol's name / ""
// for a dim that varies).
using IoTuple = std::tuple<std::string, std::string, std::vector<nb::object>>;

std::vector<IoTuple> io_of(const Plan& plan, const std::vector<int>& ids, bool inputs) {
  std::vector<IoTuple> out;
  for (int id : ids) {
    const Slot& slot = plan.slots[static_cast<size_t>(id)];
    std::vector<nb::object> dims;
    const Shape& s = slot.type.shape;
    for (size_t d = 0; d < s.dims.size(); ++d) {
      bool varies = !s.dims[d].known();
      if (inputs) {
        for (const Profile& p : plan.profiles) {
          for (const ShapeRange& r : p.ranges) {
            if (r.input == slot.name && d < r.min.size() && d < r.max.size() && r.min[d] != r.max[d]) varies = true;
          }
        }
      }
      if (varies) {
        // The model's name for the dim (the optimized graph keeps its inputs' declared types).
        std::string symbol = s.dims[d].symbol;
        for (const Value* v : plan.graph->inputs) {
          if (v->name == slot.name && d < v->type.shape.dims.size()) symbol = v->type.shape.dims[d].symbol;
        }
        dims.push_back(nb::str(symbol.c_str()));
      } else {
        dims.push_back(nb::int_(s.dims[d].value));
      }
    }
    out.emplace_back(slot.name, std::string(dtype_name(slot.type.dtype)), std::move(dims));
  }
  return out;
}

Result<Model> import_model(nb::object model) {
  if (nb::isinstance<nb::bytes>(model)) {
    nb::bytes b = nb::cast<nb::bytes>(model);
    std::string bytes(b.c_str(), b.size());
    nb::gil_scoped_release release;
    return import_onnx_bytes(bytes, std::filesystem::current_path(), "<bytes>");
  }
  const std::string path = nb::cast<std::string>(model);
  nb::gil_scoped_release release;
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return invalid("cannot open '{}': no such file", path);
  return import_onnx_file(path);
}

// The engine, and notices about shapes chosen for the caller.
std::pair<PyEngine, std::vector<std::string>> build(
    nb::object model, const std::string& device, bool fp16, bool bf16,
    const std::map<std::string, std::vector<int64_t>>& shapes,
    const std::map<std::string, std::tuple<std::vector<int64_t>, std::vector<int64_t>, std::vector<int64_t>>>& profiles,
    const std::string& timing_cache, const std::vector<std::string>& disable_passes,
    const std::vector<std::string>& enable_passes, nb::object progress) {
  BuildOptions o;
  o.device = device;
  o.fp16 = fp16;
  o.bf16 = bf16;
  o.timing_cache = timing_cache;
  for (const auto& [name, dims] : shapes) o.shapes[name] = dims;
  for (const auto& [name, p] : profiles) {
    o.min_shapes[name] = std::get<0>(p);
    o.opt_shapes[name] = std::get<1>(p);
    o.max_shapes[name] = std::get<2>(p);
  }
  if (Status s = check_pass_names(disable_passes); !s.ok()) raise_status(s);
  if (Status s = check_pass_names(enable_passes); !s.ok()) raise_status(s);
  o.pipeline.disabled.insert(disable_passes.begin(), disable_passes.end());
  o.pipeline.enabled.insert(enable_passes.begin(), enable_passes.end());
  if (!progress.is_none()) {
    // A borrowed handle: the builder may copy its options while the GIL is released, and copying
    // an owning reference would touch the reference count without it. `progress` outlives the build.
    nb::handle callback = progress;
    o.progress = [callback](const std::string& phase, double fraction) {
      nb::gil_scoped_acquire acquire;
      try {
        callback(phase, fraction);
      } catch (nb::python_error& e) {
        e.discard_as_unraisable("kiln.build's progress callback");
      }
    };
  }
  Model m = value_or_raise(import_model(model));
  // An input with dynamic dims that no shape or profile names is built with those dims at 1, as
  // `kiln build` does; the caller is told.
  std::vector<std::string> notices;
  for (const Value* v : m.graph->inputs) {
    if (v->initializer || o.shapes.count(v->name) || o.min_shapes.count(v->name) || o.max_shapes.count(v->name)) {
      continue;
    }
    const Shape& decl = v->type.shape;
    if (v->type.kind != TypeInfo::Kind::kTensor || !decl.rank_known || decl.fully_known()) continue;
    Dims dims = decl.static_dims();
    for (int64_t& d : dims) d = d < 0 ? 1 : d;
    notices.push_back(
        fmt::format("input '{}' has dynamic shape {}; building for {} (give shapes= or profiles= to "
                    "choose)",
                    v->name, decl.to_string(), shape_to_string(dims)));
    o.shapes[v->name] = dims;
  }
  Result<std::shared_ptr<Plan>> plan = std::shared_ptr<Plan>();
  {
    nb::gil_scoped_release release;
    plan = build_plan(m, o);
  }
  return {PyEngine{value_or_raise(std::move(plan))}, notices};
}

PyEngine load(const std::string& path) {
  Result<std::shared_ptr<Plan>> plan = std::shared_ptr<Plan>();
  {
    nb::gil_scoped_release release;
    std::error_code ec;
    if (!std::filesystem::exists(path, ec)) {
      plan = invalid("cannot open '{}': no such file", path);
    } else {
      plan = load_engine(path, this_machine_load_options());
    }
  }
  return PyEngine{value_or_raise(std::move(plan))};
}

// ---- sessions -------------------------------------------------------------------------------

// One execution context on an engine. Runs on one session are serialized; sessions run in
// parallel.
struct PySession {
  std::shared_ptr<const Plan> plan;
  std::unique_ptr<PlanExecutor> exec;
  std::mutex mu;
};

std::unique_ptr<PySession> make_session(const PyEngine& e) {
  auto s = std::make_unique<PySession>();
  s->plan = e.plan;
  Result<std::unique_ptr<PlanExecutor>> exec = std::unique_ptr<PlanExecutor>();
  {
    nb::gil_scoped_release release;
    auto backend = make_backend(e.plan->info.device);
    exec =
        backend.ok() ? PlanExecutor::create(e.plan, *backend) : Result<std::unique_ptr<PlanExecutor>>(backend.status());
  }
  s->exec = value_or_raise(std::move(exec));
  return s;
}

using HostArray = nb::ndarray<nb::ro, nb::device::cpu>;  // read-only arrays too: inputs are never written

// The array's bytes as a tensor of the input's type, in place: the caller keeps them alive and
// unchanged for the run. Wrong element types and layouts are the caller's input.
template <typename Array>
Tensor wrap_array(const std::string& name, DataType want, const Array& a) {
  DataType dt;
  if (!dtype_of(a.dtype(), &dt)) raise_as("InvalidInput", fmt::format("input '{}': unsupported element type", name));
  if (dt != want) {
    raise_as("InvalidInput",
             fmt::format("input '{}': the model takes {}, got {}", name, dtype_name(want), dtype_name(dt)));
  }
  Dims dims(a.shape_ptr(), a.shape_ptr() + a.ndim());
  int64_t expect = 1;
  const bool empty = std::find(dims.begin(), dims.end(), 0) != dims.end();  // any strides: no elements
  for (size_t d = dims.size(); !empty && d-- > 0;) {
    if (dims[d] != 1 && a.stride(d) != expect) {
      raise_as("InvalidInput", fmt::format("input '{}': the array is not C-contiguous", name));
    }
    expect *= dims[d];
  }
  // The bytes stay the caller's: no deleter.
  std::shared_ptr<uint8_t[]> bytes(static_cast<uint8_t*>(const_cast<void*>(a.data())), [](uint8_t*) {});
  return Tensor::wrap(dt, std::move(dims), std::move(bytes));
}

// An input as a tensor: a C-contiguous host array is wrapped in place (the caller keeps it alive
// for the run); a (list of str, shape) pair is a string tensor.
Tensor to_tensor(const std::string& name, DataType want, nb::handle h) {
  if (nb::isinstance<nb::tuple>(h)) {
    auto [items, dims] = nb::cast<std::pair<std::vector<std::string>, std::vector<int64_t>>>(h);
    if (want != DataType::kString) {
      raise_as("InvalidInput", fmt::format("input '{}': strings given, the model takes {}", name, dtype_name(want)));
    }
    Result<Tensor> t = Tensor::create(DataType::kString, dims);
    if (!t.ok()) raise_status(t.status(), true);
    if (static_cast<int64_t>(items.size()) != t->numel()) {
      raise_as("InvalidInput", fmt::format("input '{}': {} strings for shape {}", name, items.size(),
                                           shape_to_string(Dims(dims.begin(), dims.end()))));
    }
    t->strings() = std::move(items);
    return std::move(t).value();
  }
  HostArray a;
  if (!nb::try_cast(h, a)) {
    raise_as("InvalidInput", fmt::format("input '{}': expected an array in host memory", name));
  }
  return wrap_array(name, want, a);
}

// An output as a NumPy array (strings: a list and the shape, which the Python side turns into an
// object array).
nb::object to_python(const Tensor& produced, bool owned) {
  if (produced.dtype() == DataType::kString) {
    nb::list items;
    for (const std::string& s : produced.strings()) items.append(nb::str(s.c_str(), s.size()));
    nb::list dims;
    for (int64_t d : produced.dims()) dims.append(d);
    return nb::make_tuple(items, dims);
  }
  nb::dlpack::dtype dt;
  if (!dlpack_of(produced.dtype(), &dt)) {
    raise_as("RuntimeFailure", fmt::format("an output of type {} has no NumPy type", dtype_name(produced.dtype())));
  }
  // The array owns a tensor holding the bytes: the run's own result when it is the caller's
  // alone, else a copy.
  auto* keep = new Tensor(owned ? produced : produced.clone());
  nb::capsule owner(keep, [](void* p) noexcept { delete static_cast<Tensor*>(p); });
  std::vector<size_t> shape(keep->dims().begin(), keep->dims().end());
  return nb::cast(nb::ndarray<nb::numpy>(keep->raw(), shape.size(), shape.data(), owner, nullptr, dt));
}

// Runs with `inputs` in Plan::inputs order; returns the outputs in Plan::outputs order.
nb::list run(PySession& s, const std::vector<nb::object>& inputs) {
  const Plan& plan = *s.plan;
  if (inputs.size() != plan.inputs.size()) {
    raise_as("InvalidInput", fmt::format("{} inputs given, the model takes {}", inputs.size(), plan.inputs.size()));
  }
  std::vector<RValue> in;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Slot& slot = plan.slots[static_cast<size_t>(plan.inputs[i])];
    in.push_back(RValue::of(to_tensor(slot.name, slot.type.dtype, inputs[i])));
  }
  Result<std::vector<RValue>> out = std::vector<RValue>{};
  {
    nb::gil_scoped_release release;
    std::lock_guard<std::mutex> lock(s.mu);
    out = s.exec->run(std::move(in));
  }
  if (!out.ok()) raise_status(out.status(), true);
  nb::list result;
  const bool on_host = plan.info.device == "cpu";
  for (size_t i = 0; i < out->size(); ++i) {
    const RValue& r = (*out)[i];
    const Slot& slot = plan.slots[static_cast<size_t>(plan.outputs[i])];
    if (!r.is_tensor()) {
      raise_as("RuntimeFailure",
               fmt::format("output '{}' is not a tensor (sequences and optionals are not returned yet)", slot.name));
    }
    // A CPU run's outputs are its own copies; a weight returned as an output lies in the engine's
    // read-only mapping, and a device run's may lie in staging buffers the next run reuses.
    result.append(to_python(r.tensor, on_host && slot.kind != SlotKind::kWeight));
  }
  return result;
}

using DeviceArray = nb::ndarray<nb::ro, nb::device::cuda>;

// An output in device memory as an array of `framework` ("cupy"; "capsule": a DLPack capsule; ""
// for a DLPack array of nanobind's that any framework takes with from_dlpack) on device
// `device_id`. The array owns the output's memory.
nb::object device_output(const Tensor& t, const std::string& framework, int device_id) {
  nb::dlpack::dtype dt;
  if (!dlpack_of(t.dtype(), &dt)) {
    raise_as("RuntimeFailure", fmt::format("an output of type {} has no DLPack type", dtype_name(t.dtype())));
  }
  auto* keep = new Tensor(t);
  nb::capsule owner(keep, [](void* p) noexcept { delete static_cast<Tensor*>(p); });
  std::vector<size_t> shape(keep->dims().begin(), keep->dims().end());
  const int32_t cuda = nb::device::cuda::value;
  if (framework == "cupy") {
    return nb::cast(
        nb::ndarray<nb::cupy>(keep->raw(), shape.size(), shape.data(), owner, nullptr, dt, cuda, device_id));
  }
  if (framework == "capsule") {  // the Python side hands it to torch
    return nb::cast(nb::ndarray<>(keep->raw(), shape.size(), shape.data(), owner, nullptr, dt, cuda, device_id));
  }
  return nb::cast(
      nb::ndarray<nb::array_api>(keep->raw(), shape.size(), shape.data(), owner, nullptr, dt, cuda, device_id));
}

// A run on inputs in CUDA memory (DLPack), enqueued on the caller's `stream` and not waited for;
// the outputs stay on the device, as arrays of `framework`.
nb::list run_device(PySession& s, const std::vector<nb::object>& inputs, uintptr_t stream,
                    const std::string& framework) {
  const Plan& plan = *s.plan;
  if (inputs.size() != plan.inputs.size()) {
    raise_as("InvalidInput", fmt::format("{} inputs given, the model takes {}", inputs.size(), plan.inputs.size()));
  }
  std::vector<RValue> in;
  int device_id = -1;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Slot& slot = plan.slots[static_cast<size_t>(plan.inputs[i])];
    if (nb::isinstance<nb::tuple>(inputs[i])) {  // a torch tensor's (address, shape, element type, GPU)
      auto [address, dims, dtype, device] =
          nb::cast<std::tuple<uintptr_t, std::vector<int64_t>, std::string, int>>(inputs[i]);
      if (dtype != dtype_name(slot.type.dtype)) {
        raise_as("InvalidInput",
                 fmt::format("input '{}': the model takes {}, got {}", slot.name, dtype_name(slot.type.dtype), dtype));
      }
      if (device_id >= 0 && device != device_id) {
        raise_as("InvalidInput",
                 fmt::format("input '{}' is on GPU {}, another input on GPU {}", slot.name, device, device_id));
      }
      device_id = device;
      std::shared_ptr<uint8_t[]> bytes(reinterpret_cast<uint8_t*>(address), [](uint8_t*) {});
      in.push_back(RValue::of(Tensor::wrap(slot.type.dtype, Dims(dims.begin(), dims.end()), std::move(bytes))));
      continue;
    }
    DeviceArray a;
    if (!nb::try_cast(inputs[i], a)) {
      raise_as("InvalidInput", fmt::format("input '{}': expected a tensor in CUDA memory (when one input of a run is "
                                           "on the GPU, all must be)",
                                           slot.name));
    }
    if (device_id >= 0 && a.device_id() != device_id) {
      raise_as("InvalidInput",
               fmt::format("input '{}' is on GPU {}, another input on GPU {}", slot.name, a.device_id(), device_id));
    }
    device_id = a.device_id();
    in.push_back(RValue::of(wrap_array(slot.name, slot.type.dtype, a)));
  }
  Result<std::vector<RValue>> out = std::vector<RValue>{};
  {
    nb::gil_scoped_release release;
    std::lock_guard<std::mutex> lock(s.mu);
    out = s.exec->run_on_device(std::move(in), reinterpret_cast<void*>(stream));
  }
  if (!out.ok()) raise_status(out.status(), true);
  nb::list result;
  for (const RValue& r : *out) result.append(device_output(r.tensor, framework, std::max(device_id, 0)));
  return result;
}

// kiln.bench: `kiln bench --json` of the engine, as a JSON string. `given` inputs are host
// arrays; the others get random data of `shapes` (or the profile's opt shape).
std::string bench(const PyEngine& e, const std::vector<std::pair<std::string, nb::object>>& given,
                  const std::map<std::string, std::vector<int64_t>>& shapes, int warmup, int iterations,
                  double duration, int threads, bool profile, bool transfers, bool graphs, int streams, uint64_t seed,
                  int64_t lo, int64_t hi) {
  const Plan& plan = *e.plan;
  std::map<std::string, Tensor> files;
  for (const auto& [name, value] : given) {
    DataType want = DataType::kUndefined;
    for (int id : plan.inputs) {
      if (plan.slots[static_cast<size_t>(id)].name == name) want = plan.slots[static_cast<size_t>(id)].type.dtype;
    }
    if (want == DataType::kUndefined) raise_as("InvalidInput", fmt::format("unknown input '{}'", name));
    files[name] = to_tensor(name, want, value).clone();  // bench keeps its own copy
  }
  std::map<std::string, Dims> dims;
  for (const auto& [name, d] : shapes) dims[name] = Dims(d.begin(), d.end());
  cli::BenchSettings o;
  o.warmup = warmup;
  o.iterations = iterations;
  o.duration = duration;
  o.threads = threads;
  o.profile = profile;
  o.no_transfers = !transfers;
  o.no_graphs = !graphs;
  o.streams = streams;
  o.seed = seed;
  o.range = {lo, hi};
  if (lo > hi) raise_as("UsageError", fmt::format("int_range: {} is more than {}", lo, hi));
  Result<nlohmann::json> out = nlohmann::json();
  {
    nb::gil_scoped_release release;
    cli::RandomInputs random;
    auto inputs = cli::plan_inputs(plan, std::move(files), dims, seed, o.range, &random);
    out = inputs.ok() ? cli::bench_plan(e.plan, *inputs, o, random) : Result<nlohmann::json>(inputs.status());
  }
  return value_or_raise(std::move(out), true).dump();
}

}  // namespace
}  // namespace kiln::python

NB_MODULE(_kiln, m) {
  using namespace kiln;
  using namespace kiln::python;
  m.doc() = "Kiln's native module; use the kiln package.";
  m.def("version", [] { return std::string(KILN_VERSION); });
  m.def("cuda_available", [] { return make_backend("cuda").ok(); });

  nb::class_<PyEngine>(m, "Engine")
      .def("save",
           [](const PyEngine& e, const std::string& path) {
             Status s;
             {
               nb::gil_scoped_release release;
               s = save_engine(*e.plan, path);
             }
             if (!s.ok()) raise_status(s);
           })
      .def_prop_ro("inputs", [](const PyEngine& e) { return io_of(*e.plan, e.plan->inputs, true); })
      .def_prop_ro("outputs", [](const PyEngine& e) { return io_of(*e.plan, e.plan->outputs, false); })
      .def_prop_ro("device", [](const PyEngine& e) { return e.plan->info.device; })
      .def("inspect_json", [](const PyEngine& e) { return cli::plan_json(*e.plan).dump(); })
      .def("session", &make_session);

  nb::class_<PySession>(m, "Session").def("run", &run).def("run_device", &run_device);

  m.def("build", &build, nb::arg("model"), nb::arg("device"), nb::arg("fp16"), nb::arg("bf16"), nb::arg("shapes"),
        nb::arg("profiles"), nb::arg("timing_cache"), nb::arg("disable_passes"), nb::arg("enable_passes"),
        nb::arg("progress").none());
  m.def("load", &load, nb::arg("path"));
  m.def("bench", &bench, nb::arg("engine"), nb::arg("given"), nb::arg("shapes"), nb::arg("warmup"),
        nb::arg("iterations"), nb::arg("duration"), nb::arg("threads"), nb::arg("profile"), nb::arg("transfers"),
        nb::arg("graphs"), nb::arg("streams"), nb::arg("seed"), nb::arg("lo"), nb::arg("hi"));
}
