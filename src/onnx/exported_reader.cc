#include "onnx/exported_reader.h"

#include <charconv>
#include <climits>
#include <set>

#include <google/protobuf/io/coded_stream.h>

#include "onnx/exporter.h"
#include "onnx/onnx-ml.pb.h"
#include "onnx/schema.h"
#include "onnx/tensor_proto.h"

namespace kiln {

namespace {

std::string canon(const std::string& d) {
  return d == "ai.onnx" ? std::string() : d;
}

// A non-negative decimal integer that fits `limit`, nothing else.
bool parse_count(const std::string& s, int64_t limit, int64_t* out) {
  if (s.empty() || s.size() > 18) return false;
  int64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || v < 0 || v > limit) return false;
  *out = v;
  return true;
}

// Types from the file feed shape arithmetic downstream; refuse what no Kiln writes.
Status check_type(const TypeInfo& t) {
  auto check_dtype = [](DataType dt, bool allow_undefined) -> Status {
    if (dt == DataType::kUndefined && allow_undefined) return {};
    if (!dtype_valid(static_cast<int32_t>(dt))) return invalid("unknown element type {}", static_cast<int32_t>(dt));
    return {};
  };
  switch (t.kind) {
    case TypeInfo::Kind::kTensor:
    case TypeInfo::Kind::kSparseTensor: KILN_RETURN_IF_ERROR(check_dtype(t.dtype, true)); break;
    case TypeInfo::Kind::kMap:
      KILN_RETURN_IF_ERROR(check_dtype(t.key_type, false));
      if (t.key_type != DataType::kString && !is_integer(t.key_type)) {
        return invalid("map key type {} is neither an integer nor a string", dtype_name(t.key_type));
      }
      break;
    default: break;
  }
  if (t.elem) KILN_RETURN_IF_ERROR(check_type(*t.elem));
  return {};
}

Result<TypeInfo> read_type(const onnx::TypeProto& p) {
  // type_from_proto reads a negative dim_value as a known-looking negative size.
  std::function<Status(const onnx::TypeProto&)> check_dims = [&](const onnx::TypeProto& q) -> Status {
    const onnx::TensorShapeProto* sp = nullptr;
    if (q.has_tensor_type() && q.tensor_type().has_shape()) sp = &q.tensor_type().shape();
    if (q.has_sparse_tensor_type() && q.sparse_tensor_type().has_shape()) sp = &q.sparse_tensor_type().shape();
    if (sp) {
      for (const auto& d : sp->dim()) {
        if (d.has_dim_value() && d.dim_value() < 0) return invalid("negative dimension {}", d.dim_value());
      }
    }
    if (q.has_sequence_type() && q.sequence_type().has_elem_type()) return check_dims(q.sequence_type().elem_type());
    if (q.has_optional_type() && q.optional_type().has_elem_type()) return check_dims(q.optional_type().elem_type());
    if (q.has_map_type() && q.map_type().has_value_type()) return check_dims(q.map_type().value_type());
    return {};
  };
  KILN_RETURN_IF_ERROR(check_dims(p));
  KILN_ASSIGN_OR_RETURN(TypeInfo t, type_from_proto(p));
  KILN_RETURN_IF_ERROR(check_type(t));
  return t;
}

class Reader {
 public:
  Reader(std::string source, const ExportedReadOptions& options) : source_(std::move(source)), options_(options) {}

  Result<Model> run(const onnx::ModelProto& mp) {
    Model m;
    m.ir_version = mp.ir_version();
    m.producer_name = mp.producer_name();
    m.producer_version = mp.producer_version();
    m.domain = mp.domain();
    m.model_version = mp.model_version();
    m.doc_string = mp.doc_string();
    for (const auto& kv : mp.metadata_props()) m.metadata[kv.key()] = kv.value();
    if (!mp.has_graph()) return fail("the model has no graph");
    for (const auto& os : mp.opset_import()) {
      if (os.version() <= 0 || os.version() > INT_MAX) {
        return fail(fmt::format("opset import of domain '{}' has version {}", os.domain(), os.version()));
      }
      if (!opsets_.emplace(canon(os.domain()), static_cast<int>(os.version())).second) {
        return fail(fmt::format("domain '{}' is imported twice", os.domain()));
      }
    }
    if (mp.functions_size() > 0) return fail("model-local functions are not expected in an exported model");
    auto g = std::make_shared<Graph>();
    KILN_RETURN_IF_ERROR(read_graph(mp.graph(), *g, nullptr));
    KILN_RETURN_IF_ERROR(g->verify().with_context(source_));
    m.graph = std::move(g);
    return m;
  }

 private:
  Status fail(const std::string& msg) const { return invalid("{}: {}", source_, msg); }

  Status read_graph(const onnx::GraphProto& gp, Graph& g, Graph* parent) {
    const bool top_level = parent == nullptr;
    g.name = gp.name();
    g.parent = parent;
    g.opsets = opsets_;
    auto where = [&](const std::string& what) { return fmt::format("graph '{}': {}", g.name, what); };
    if (gp.sparse_initializer_size() > 0) return fail(where("sparse initializers are not expected"));
    std::set<std::string> init_names;
    for (const auto& tp : gp.initializer()) {
      if (tp.name().empty()) return fail(where("an initializer has no name"));
      if (g.find_value(tp.name())) return fail(where(fmt::format("initializer '{}' is defined twice", tp.name())));
      std::shared_ptr<Tensor> t;
      if (top_level && options_.initializer_data) {
        KILN_ASSIGN_OR_RETURN(t, declared_initializer(tp, g));
      } else {
        auto r = tensor_from_proto(tp, {});
        if (!r.ok()) return fail(where("initializer " + r.status().message()));
        t = std::make_shared<Tensor>(std::move(r).value());
      }
      Value* v = g.add_value(tp.name());
      v->type = TypeInfo::tensor(t->dtype(), Shape::of(t->dims()));
      v->initializer = std::move(t);
      g.initializers.push_back(v);
      init_names.insert(tp.name());
    }
    for (const auto& vi : gp.input()) {
      if (init_names.count(vi.name())) continue;  // IR < 4 lists initializers as inputs too
      if (vi.name().empty()) return fail(where("an input has no name"));
      if (g.find_value(vi.name())) return fail(where(fmt::format("input '{}' is defined twice", vi.name())));
      auto type = read_type(vi.type());
      if (!type.ok()) return fail(where(fmt::format("input '{}': {}", vi.name(), type.status().message())));
      Value* v = g.add_value(vi.name());
      v->type = std::move(type).value();
      g.inputs.push_back(v);
    }
    // Outputs first, so that subgraphs may refer to any value of this graph by name; the
    // verifier checks the order afterwards.
    std::vector<Node*> nodes;
    for (const auto& np : gp.node()) {
      Node* n = g.add_node(np.op_type(), np.name());
      n->domain = canon(np.domain());
      for (const auto& out : np.output()) {
        if (out.empty()) {
          n->outputs.push_back(nullptr);
          continue;
        }
        if (g.find_value(out)) {
          return fail(fmt::format("node {}: output '{}' is already defined", n->describe(), out));
        }
        Value* v = g.add_value(out);
        v->producer = n;
        n->outputs.push_back(v);
      }
      nodes.push_back(n);
    }
    for (const auto& vi : gp.value_info()) {
      Value* v = g.find_value(vi.name());
      if (!v || !v->producer) return fail(where(fmt::format("value_info for '{}', which no node produces", vi.name())));
      auto type = read_type(vi.type());
      if (!type.ok()) return fail(where(fmt::format("value '{}': {}", vi.name(), type.status().message())));
      v->type = std::move(type).value();
    }
    for (int i = 0; i < gp.node_size(); ++i) KILN_RETURN_IF_ERROR(read_node(gp.node(i), g, *nodes[i]));
    for (const auto& vi : gp.output()) {
      Value* v = resolve(g, vi.name());
      if (!v) return fail(where(fmt::format("output '{}' is not produced by any node or input", vi.name())));
      if (v->producer && vi.has_type()) {
        auto type = read_type(vi.type());
        if (!type.ok()) return fail(where(fmt::format("output '{}': {}", vi.name(), type.status().message())));
        v->type = std::move(type).value();
      }
      g.outputs.push_back(v);
    }
    return {};
  }

  Result<std::shared_ptr<Tensor>> declared_initializer(const onnx::TensorProto& tp, const Graph& g) {
    if (!dtype_valid(tp.data_type())) {
      return fail(
          fmt::format("graph '{}': initializer '{}' has unknown data type {}", g.name, tp.name(), tp.data_type()));
    }
    DataType dt = static_cast<DataType>(tp.data_type());
    Dims dims(tp.dims().begin(), tp.dims().end());
    if (shape_numel(dims) < 0) {
      return fail(fmt::format("graph '{}': initializer '{}' has a negative or overflowing shape", g.name, tp.name()));
    }
    auto t = options_.initializer_data(tp.name(), dt, dims);
    if (!t.ok()) return t.status();
    if (!*t || (*t)->dtype() != dt || (*t)->dims() != dims) {
      return fail(fmt::format("graph '{}': the data given for initializer '{}' is not {}[{}]", g.name, tp.name(),
                              dtype_name(dt), shape_to_string(dims)));
    }
    return std::move(t).value();
  }

  Status read_node(const onnx::NodeProto& np, Graph& g, Node& n) {
    auto node_fail = [&](const std::string& what) { return fail(fmt::format("node {}: {}", n.describe(), what)); };
    bool has_opset = false;
    std::map<int64_t, std::string> fused;
    const std::string prefix = kNodeFusedFromPrefix;
    for (const auto& kv : np.metadata_props()) {
      if (kv.key() == kNodeOpsetKey) {
        int64_t v = 0;
        if (!parse_count(kv.value(), INT_MAX, &v))
          return node_fail(fmt::format("bad {} '{}'", kNodeOpsetKey, kv.value()));
        n.opset = static_cast<int>(v);
        has_opset = true;
      } else if (kv.key().compare(0, prefix.size(), prefix) == 0) {
        int64_t i = 0;
        if (!parse_count(kv.key().substr(prefix.size()), np.metadata_props_size(), &i) ||
            !fused.emplace(i, kv.value()).second) {
          return node_fail(fmt::format("bad metadata key '{}'", kv.key()));
        }
      }
    }
    for (const auto& [i, name] : fused) {
      if (i != static_cast<int64_t>(n.fused_from.size()))
        return node_fail("fused_from entries are not numbered 0..n-1");
      n.fused_from.push_back(name);
    }
    if (!has_opset) {
      auto it = opsets_.find(n.domain);
      if (it == opsets_.end()) return node_fail(fmt::format("domain '{}' is not imported by the model", n.domain));
      n.opset = it->second;
    }
    for (const auto& ap : np.attribute()) {
      if (n.attrs.count(ap.name())) return node_fail(fmt::format("attribute '{}' is given twice", ap.name()));
      auto a = read_attribute(ap, g, n);
      if (!a.ok()) return a.status();
      n.attrs[ap.name()] = std::move(a).value();
    }
    for (const auto& in : np.input()) {
      if (in.empty()) {
        n.inputs.push_back(nullptr);
        continue;
      }
      Value* v = resolve(g, in);
      if (!v) return node_fail(fmt::format("input '{}' is not defined", in));
      n.inputs.push_back(v);
    }
    if (const SchemaRow* row = find_schema(n.domain, n.op_type, n.opset)) {
      Status s = check_node_against_schema(n, *row);
      if (!s.ok()) return fail(s.message());
    } else if (schema_exists(n.domain, n.op_type)) {
      return node_fail(fmt::format("operator {} does not exist at opset {}", n.op_type, n.opset));
    }
    return {};
  }

  // Looks a name up in this graph, then in enclosing graphs (creating an outer-scope reference).
  static Value* resolve(Graph& g, const std::string& name) {
    if (Value* v = g.find_value(name)) return v;
    for (Graph* p = g.parent; p; p = p->parent) {
      if (Value* outer = p->find_value(name)) {
        Value* ref = g.add_value(name);
        ref->outer_scope = true;
        ref->type = outer->type;
        return ref;
      }
    }
    return nullptr;
  }

  Result<Attribute> read_attribute(const onnx::AttributeProto& ap, Graph& g, const Node& n) {
    Attribute a;
    auto attr_fail = [&](const std::string& m) {
      return fail(fmt::format("node {}: attribute '{}': {}", n.describe(), ap.name(), m));
    };
    auto tensor = [&](const onnx::TensorProto& tp) -> Result<Tensor> {
      auto t = tensor_from_proto(tp, {});
      if (!t.ok()) return attr_fail(t.status().message());
      return t;
    };
    auto subgraph = [&](const onnx::GraphProto& gp) -> Result<std::shared_ptr<Graph>> {
      auto sg = std::make_shared<Graph>();
      KILN_RETURN_IF_ERROR(read_graph(gp, *sg, &g));
      return sg;
    };
    auto type = [&](const onnx::TypeProto& tp) -> Result<TypeInfo> {
      auto t = read_type(tp);
      if (!t.ok()) return attr_fail(t.status().message());
      return t;
    };
    switch (ap.type()) {
      case onnx::AttributeProto::FLOAT:
      case onnx::AttributeProto::INT:
      case onnx::AttributeProto::STRING:
      case onnx::AttributeProto::FLOATS:
      case onnx::AttributeProto::INTS:
      case onnx::AttributeProto::STRINGS: plain_attribute_from_proto(ap, ap.type(), &a); break;
      case onnx::AttributeProto::TENSOR: {
        a.type = AttrType::kTensor;
        KILN_ASSIGN_OR_RETURN(a.t, tensor(ap.t()));
        break;
      }
      case onnx::AttributeProto::TENSORS: {
        a.type = AttrType::kTensors;
        for (const auto& tp : ap.tensors()) {
          KILN_ASSIGN_OR_RETURN(Tensor t, tensor(tp));
          a.tensors.push_back(std::move(t));
        }
        break;
      }
      case onnx::AttributeProto::GRAPH: {
        a.type = AttrType::kGraph;
        KILN_ASSIGN_OR_RETURN(a.g, subgraph(ap.g()));
        break;
      }
      case onnx::AttributeProto::GRAPHS: {
        a.type = AttrType::kGraphs;
        for (const auto& gp : ap.graphs()) {
          KILN_ASSIGN_OR_RETURN(auto sg, subgraph(gp));
          a.graphs.push_back(std::move(sg));
        }
        break;
      }
      case onnx::AttributeProto::TYPE_PROTO: {
        a.type = AttrType::kTypeProto;
        KILN_ASSIGN_OR_RETURN(a.tp, type(ap.tp()));
        break;
      }
      case onnx::AttributeProto::TYPE_PROTOS: {
        a.type = AttrType::kTypeProtos;
        for (const auto& tp : ap.type_protos()) {
          KILN_ASSIGN_OR_RETURN(TypeInfo t, type(tp));
          a.tps.push_back(std::move(t));
        }
        break;
      }
      default: return attr_fail(fmt::format("unexpected attribute type {}", static_cast<int>(ap.type())));
    }
    return a;
  }

  std::string source_;
  const ExportedReadOptions& options_;
  std::map<std::string, int> opsets_;
};

}  // namespace

Result<Model> read_exported_onnx(std::span<const uint8_t> bytes, const std::string& source,
                                 const ExportedReadOptions& options) {
  if (bytes.size() > static_cast<size_t>(INT_MAX)) return invalid("{}: the graph is larger than 2 GiB", source);
  onnx::ModelProto mp;
  google::protobuf::io::CodedInputStream stream(bytes.data(), static_cast<int>(bytes.size()));
  stream.SetTotalBytesLimit(INT_MAX);
  stream.SetRecursionLimit(200);
  if (!mp.ParseFromCodedStream(&stream) || !stream.ConsumedEntireMessage()) {
    return invalid("{}: the graph is not a valid ONNX model (truncated or corrupt protobuf data)", source);
  }
  Reader reader(source, options);
  return reader.run(mp);
}

}  // namespace kiln
