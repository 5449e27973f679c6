// The public API (include/kiln/kiln.h) over the importer and the reference executor.
#include <cstring>

#include "kiln/kiln.h"
#include "onnx/importer.h"
#include "runtime/executor.h"

namespace kiln {

struct Session::Impl {
  Model model;
  std::unique_ptr<Executor> exec;
  std::vector<IoInfo> inputs;
  std::vector<IoInfo> outputs;
};

namespace {

IoInfo io_info(const Value& v) {
  IoInfo io;
  io.name = v.name;
  io.dtype = static_cast<int32_t>(v.type.dtype);
  io.shape_known = v.type.shape.rank_known;
  io.shape = v.type.shape.static_dims();
  return io;
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

std::unique_ptr<Session> Session::open(const std::string& onnx_path, Error* error) {
  auto m = import_onnx_file(onnx_path);
  if (!m.ok()) {
    fill_error(error, m.status());
    return nullptr;
  }
  auto impl = std::make_unique<Impl>();
  impl->model = std::move(m).value();
  impl->exec = std::make_unique<Executor>(*impl->model.graph);
  for (const Value* v : impl->model.graph->inputs) impl->inputs.push_back(io_info(*v));
  for (const Value* v : impl->model.graph->outputs) impl->outputs.push_back(io_info(*v));
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
  Status s = impl_->exec->check_inputs(in);
  if (!s.ok()) {
    fill_error(error, s);
    return false;
  }
  auto out = impl_->exec->run(std::move(in));
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
