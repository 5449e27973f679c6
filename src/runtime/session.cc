// The public API (include/kiln/kiln.h) over the importer, the builder, the engine loader and the
// executors.
#include <cstring>

#include "engine/engine.h"
#include "kiln/kiln.h"
#include "onnx/importer.h"
#include "runtime/executor.h"
#include "runtime/open_plan.h"
#include "runtime/plan_executor.h"

namespace kiln {

struct Session::Impl {
  Model model;
  std::unique_ptr<Executor> exec;  // an ONNX model run as imported
  std::shared_ptr<Plan> plan;      // or a built / loaded plan
  std::unique_ptr<PlanExecutor> plan_exec;
  std::vector<IoInfo> inputs;
  std::vector<IoInfo> outputs;
};

namespace {

IoInfo io_info(const std::string& name, const TypeInfo& type) {
  IoInfo io;
  io.name = name;
  io.dtype = static_cast<int32_t>(type.dtype);
  io.shape_known = type.shape.rank_known;
  io.shape = type.shape.static_dims();
  return io;
}

Result<BuildOptions> to_options(const BuildConfig& c) {
  BuildOptions o;
  o.device = c.device;
  for (const InputProfile& p : c.profiles) {
    if (!p.min.empty()) o.min_shapes[p.name] = p.min;
    if (!p.opt.empty()) o.opt_shapes[p.name] = p.opt;
    if (!p.max.empty()) o.max_shapes[p.name] = p.max;
  }
  o.fp16 = c.fp16;
  o.bf16 = c.bf16;
  o.timing_cache = c.timing_cache;
  KILN_RETURN_IF_ERROR(check_pass_names(c.disabled_passes));
  o.pipeline.disabled.insert(c.disabled_passes.begin(), c.disabled_passes.end());
  KILN_RETURN_IF_ERROR(check_pass_names(c.enabled_passes));
  o.pipeline.enabled.insert(c.enabled_passes.begin(), c.enabled_passes.end());
  return o;
}

void fill_error(Error* error, const Status& s) {
  if (!error) return;
  switch (s.code()) {
    case StatusCode::kUsage: error->code = 2; break;
    case StatusCode::kInvalidModel: error->code = 3; break;
    default: error->code = 1; break;
  }
  error->message = s.message();
}

Result<Tensor> to_tensor(const HostTensor& h, const std::string& name) {
  if (!dtype_valid(h.dtype)) return invalid("input '{}': unknown dtype {}", name, h.dtype);
  KILN_ASSIGN_OR_RETURN(Tensor t, Tensor::create(static_cast<DataType>(h.dtype), h.shape));
  if (t.dtype() == DataType::kString) {
    if (h.strings.size() != static_cast<size_t>(t.numel())) {
      return invalid("input '{}': {} strings for shape {}", name, h.strings.size(), shape_to_string(h.shape));
    }
    t.strings() = h.strings;
  } else {
    if (h.data.size() != t.nbytes()) {
      return invalid("input '{}': {} bytes of data, shape {} of {} needs {}", name, h.data.size(),
                     shape_to_string(h.shape), dtype_name(t.dtype()), t.nbytes());
    }
    if (t.nbytes()) std::memcpy(t.raw(), h.data.data(), t.nbytes());
  }
  return t;
}

HostTensor to_host(const Tensor& t) {
  HostTensor h;
  h.dtype = static_cast<int32_t>(t.dtype());
  h.shape = t.dims();
  if (t.dtype() == DataType::kString) {
    h.strings = t.strings();
  } else {
    const auto* p = static_cast<const uint8_t*>(t.raw());
    h.data.assign(p, p + t.nbytes());
  }
  return h;
}

}  // namespace

Session::Session(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Session::~Session() = default;

bool build_engine(const std::string& onnx_path, const std::string& engine_path, const BuildConfig& config,
                  Error* error) {
  auto options = to_options(config);
  if (!options.ok()) {
    fill_error(error, options.status());
    return false;
  }
  auto m = import_onnx_file(onnx_path);
  if (!m.ok()) {
    fill_error(error, m.status());
    return false;
  }
  auto plan = build_plan(*m, *options);
  Status s = plan.ok() ? save_engine(**plan, engine_path) : plan.status();
  if (!s.ok()) fill_error(error, s);
  return s.ok();
}

std::unique_ptr<Session> Session::open(const std::string& path, const BuildConfig& config, Error* error) {
  auto options = to_options(config);
  if (!options.ok()) {
    fill_error(error, options.status());
    return nullptr;
  }
  auto opened = open_plan(path, *options);
  if (!opened.ok()) {
    fill_error(error, opened.status());
    return nullptr;
  }
  auto impl = std::make_unique<Impl>();
  impl->plan = opened->plan;
  auto backend = make_backend(impl->plan->info.device);
  auto exec = backend.ok() ? PlanExecutor::create(impl->plan, *backend)
                           : Result<std::unique_ptr<PlanExecutor>>(backend.status());
  if (!exec.ok()) {
    fill_error(error, exec.status());
    return nullptr;
  }
  impl->plan_exec = std::move(exec).value();
  for (int id : impl->plan->inputs) {
    const Slot& slot = impl->plan->slots[static_cast<size_t>(id)];
    IoInfo io = io_info(slot.name, slot.type);
    // Dims that vary within a profile are reported as unknown (-1), not as the profile's maximum.
    for (const Profile& p : impl->plan->profiles) {
      for (const ShapeRange& r : p.ranges) {
        if (r.input != slot.name) continue;
        for (size_t d = 0; d < io.shape.size() && d < r.min.size() && d < r.max.size(); ++d) {
          if (r.min[d] != r.max[d]) io.shape[d] = -1;
        }
      }
    }
    impl->inputs.push_back(std::move(io));
  }
  for (int id : impl->plan->outputs) {
    const Slot& slot = impl->plan->slots[static_cast<size_t>(id)];
    impl->outputs.push_back(io_info(slot.name, slot.type));
  }
  return std::unique_ptr<Session>(new Session(std::move(impl)));
}

std::unique_ptr<Session> Session::open(const std::string& onnx_path, Error* error) {
  if (is_engine_file(onnx_path)) return open(onnx_path, BuildConfig{}, error);
  auto m = import_onnx_file(onnx_path);
  if (!m.ok()) {
    fill_error(error, m.status());
    return nullptr;
  }
  auto impl = std::make_unique<Impl>();
  impl->model = std::move(m).value();
  impl->exec = std::make_unique<Executor>(*impl->model.graph);
  for (const Value* v : impl->model.graph->inputs) impl->inputs.push_back(io_info(v->name, v->type));
  for (const Value* v : impl->model.graph->outputs) impl->outputs.push_back(io_info(v->name, v->type));
  return std::unique_ptr<Session>(new Session(std::move(impl)));
}

const std::vector<IoInfo>& Session::inputs() const {
  return impl_->inputs;
}
const std::vector<IoInfo>& Session::outputs() const {
  return impl_->outputs;
}

bool Session::run(std::span<const HostTensor> inputs, std::vector<HostTensor>* outputs, Error* error) const {
  std::vector<RValue> in;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const std::string name = i < impl_->inputs.size() ? impl_->inputs[i].name : std::to_string(i);
    auto t = to_tensor(inputs[i], name);
    if (!t.ok()) {
      fill_error(error, t.status());
      return false;
    }
    in.push_back(RValue::of(std::move(t).value()));
  }
  Result<std::vector<RValue>> out = std::vector<RValue>{};
  if (impl_->plan_exec) {
    out = impl_->plan_exec->run(std::move(in));
  } else {
    Status s = impl_->exec->check_inputs(in);
    if (!s.ok()) {
      fill_error(error, s);
      return false;
    }
    out = impl_->exec->run(std::move(in));
  }
  if (!out.ok()) {
    fill_error(error, out.status());
    return false;
  }
  outputs->clear();
  for (size_t i = 0; i < out->size(); ++i) {
    const RValue& r = (*out)[i];
    if (!r.is_tensor()) {
      fill_error(error, runtime_error("output '{}' is not a tensor (sequences and optionals are not exposed yet)",
                                      impl_->outputs[i].name));
      return false;
    }
    outputs->push_back(to_host(r.tensor));
  }
  return true;
}

const char* version() {
  return KILN_VERSION;
}

}  // namespace kiln
