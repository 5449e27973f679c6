#include "onnx/importer.h"

#include <fstream>
#include <set>

#include <google/protobuf/io/coded_stream.h>

#include "onnx/onnx-ml.pb.h"
#include "onnx/schema.h"
#include "onnx/tensor_proto.h"
#include "ops/infer.h"
#include "ops/registry.h"

namespace kiln {
namespace fs = std::filesystem;

namespace {

using OpsetMap = std::map<std::string, int>;
constexpr int kMaxFunctionDepth = 32;

std::string canon(const std::string& d) {
  return d == "ai.onnx" ? std::string() : d;
}

struct FunctionKey {
  std::string domain, name;
  bool operator<(const FunctionKey& o) const { return std::tie(domain, name) < std::tie(o.domain, o.name); }
};

// A node after function inlining, with the opsets it was written against.
struct FlatNode {
  onnx::NodeProto proto;
  const OpsetMap* opsets;
};

class Importer {
 public:
  Importer(fs::path base_dir, std::string source, const ImportOptions& options)
      : base_dir_(std::move(base_dir)), source_(std::move(source)), options_(options) {}

  Result<Model> run(const onnx::ModelProto& mp) {
    Model m;
    m.ir_version = mp.ir_version();
    m.producer_name = mp.producer_name();
    m.producer_version = mp.producer_version();
    m.domain = mp.domain();
    m.model_version = mp.model_version();
    m.doc_string = mp.doc_string();
    for (const auto& kv : mp.metadata_props()) m.metadata[kv.key()] = kv.value();
    if (!mp.has_graph()) return invalid("{}: the model has no graph", source_);

    for (const auto& os : mp.opset_import()) {
      std::string d = canon(os.domain());
      if (os.version() <= 0)
        return invalid("{}: opset import for domain '{}' has version {}", source_, os.domain(), os.version());
      int newest = newest_opset(d);
      if (newest > 0 && os.version() > newest) {
        return invalid("{}: opset {} of domain '{}' is newer than this Kiln supports (newest {})", source_,
                       os.version(), d.empty() ? "ai.onnx" : d, newest);
      }
      opsets_[d] = static_cast<int>(os.version());
    }
    if (mp.opset_import_size() == 0) {
      // IR version 1/2 models predate opset imports; they mean ai.onnx version 1.
      if (mp.ir_version() >= 3) return invalid("{}: the model imports no opset", source_);
      opsets_[""] = 1;
    }
    for (const auto& f : mp.functions()) {
      functions_[{canon(f.domain()), f.name()}] = &f;
      OpsetMap fo;
      for (const auto& os : f.opset_import()) fo[canon(os.domain())] = static_cast<int>(os.version());
      function_opsets_[&f] = std::move(fo);
    }
    auto g = std::make_shared<Graph>();
    g->opsets = opsets_;
    Status s = convert_graph(mp.graph(), *g, nullptr);
    if (!s.ok()) return s;
    if (!errors_.empty()) {
      std::string msg = source_ + ": the model is invalid:";
      for (const auto& e : errors_) msg += "\n  " + e;
      return Status(StatusCode::kInvalidModel, msg);
    }
    KILN_RETURN_IF_ERROR(infer_graph_types(*g).with_context(source_));
    m.graph = std::move(g);
    return m;
  }

 private:
  void error(std::string msg) {
    if (errors_.size() < 50) errors_.push_back(std::move(msg));
  }

  Status convert_graph(const onnx::GraphProto& gp, Graph& g, Graph* parent) {
    g.name = gp.name();
    g.parent = parent;
    std::set<std::string> init_names;
    for (const auto& tp : gp.initializer()) {
      if (g.find_value(tp.name())) {
        error(fmt::format("graph '{}': initializer '{}' is defined twice", g.name, tp.name()));
        continue;
      }
      auto t = tensor_from_proto(tp, base_dir_);
      if (!t.ok()) {
        error(fmt::format("graph '{}': initializer {}", g.name, t.status().message()));
        continue;
      }
      Value* v = g.add_value(tp.name());
      v->initializer = std::make_shared<Tensor>(std::move(t).value());
      v->type = TypeInfo::tensor(v->initializer->dtype(), Shape::of(v->initializer->dims()));
      g.initializers.push_back(v);
      init_names.insert(tp.name());
    }
    for (const auto& sp : gp.sparse_initializer()) {
      auto t = densify(sp);
      if (!t.ok()) {
        error(fmt::format("graph '{}': sparse initializer {}", g.name, t.status().message()));
        continue;
      }
      Value* v = g.add_value(sp.values().name());
      v->initializer = std::make_shared<Tensor>(std::move(t).value());
      v->type = TypeInfo::tensor(v->initializer->dtype(), Shape::of(v->initializer->dims()));
      g.initializers.push_back(v);
      init_names.insert(sp.values().name());
    }
    for (const auto& vi : gp.input()) {
      auto type = type_from_proto(vi.type());
      if (!type.ok()) {
        error(fmt::format("graph '{}': input '{}': {}", g.name, vi.name(), type.status().message()));
        continue;
      }
      if (init_names.count(vi.name())) continue;  // an initializer listed as input (IR < 4): a constant
      if (g.find_value(vi.name())) {
        error(fmt::format("graph '{}': input '{}' is declared twice", g.name, vi.name()));
        continue;
      }
      Value* v = g.add_value(vi.name());
      v->type = std::move(type).value();
      g.inputs.push_back(v);
    }

    // Inline model-local functions, then create every node's outputs before resolving inputs
    // so that a node listed before its producer still finds it (the sort fixes the order).
    std::vector<FlatNode> flat;
    for (const auto& np : gp.node()) {
      KILN_RETURN_IF_ERROR(expand_node(np, g.parent ? g.opsets : opsets_, flat, 0));
    }
    std::vector<Node*> nodes;
    for (const FlatNode& fn : flat) {
      const onnx::NodeProto& np = fn.proto;
      Node* n = g.add_node(np.op_type(), np.name());
      n->domain = canon(np.domain());
      auto it = fn.opsets->find(n->domain);
      if (it == fn.opsets->end()) {
        error(fmt::format("node {}: domain '{}' is not imported by the model", n->describe(), np.domain()));
        n->opset = 0;
      } else {
        n->opset = it->second;
      }
      for (const auto& out : np.output()) {
        if (out.empty()) {
          n->outputs.push_back(nullptr);
          continue;
        }
        Value* existing = g.find_value(out);
        if (existing) {
          error(fmt::format("node {}: output '{}' is already defined{}", n->describe(), out,
                            existing->producer ? " by node " + existing->producer->describe() : std::string()));
          n->outputs.push_back(nullptr);
          continue;
        }
        Value* v = g.add_value(out);
        v->producer = n;
        n->outputs.push_back(v);
      }
      nodes.push_back(n);
    }
    for (const auto& vi : gp.value_info()) {
      if (Value* v = g.find_value(vi.name())) {
        auto type = type_from_proto(vi.type());
        if (type.ok() && v->producer) v->type = std::move(type).value();
      }
    }
    for (size_t i = 0; i < flat.size(); ++i) {
      const onnx::NodeProto& np = flat[i].proto;
      Node* n = nodes[i];
      for (const auto& ap : np.attribute()) {
        auto a = convert_attribute(ap, g, n);
        if (!a.ok()) {
          error(a.status().message());
          continue;
        }
        n->attrs[ap.name()] = std::move(a).value();
      }
      for (const auto& in : np.input()) {
        if (in.empty()) {
          n->inputs.push_back(nullptr);
          continue;
        }
        Value* v = resolve(g, in);
        if (!v) {
          error(fmt::format("node {}: input '{}' is not a graph input, initializer or output of any node",
                            n->describe(), in));
        }
        n->inputs.push_back(v);
      }
      check_op(*n);
    }
    for (const auto& vi : gp.output()) {
      Value* v = resolve(g, vi.name());
      if (!v) {
        error(fmt::format("graph '{}': output '{}' is not produced by any node or input", g.name, vi.name()));
        continue;
      }
      auto type = type_from_proto(vi.type());
      if (type.ok() && type->kind != TypeInfo::Kind::kUnknown && v->type.kind == TypeInfo::Kind::kUnknown) {
        v->type = std::move(type).value();
      }
      g.outputs.push_back(v);
    }
    if (!errors_.empty()) return {};
    KILN_RETURN_IF_ERROR(g.topological_sort().with_context(source_));
    return {};
  }

  // Looks a name up in this graph, then in enclosing graphs (creating an outer-scope reference).
  Value* resolve(Graph& g, const std::string& name) {
    if (Value* v = g.find_value(name)) return v;
    for (Graph* p = g.parent; p; p = p->parent) {
      if (p->find_value(name)) {
        Value* ref = g.add_value(name);
        ref->outer_scope = true;
        ref->type = p->find_value(name)->type;
        return ref;
      }
    }
    return nullptr;
  }

  void check_op(const Node& n) {
    if (n.opset == 0) return;
    const OpDef* def = OpRegistry::global().find(n.domain, n.op_type);
    const SchemaRow* row = find_schema(n.domain, n.op_type, n.opset);
    if (!row && schema_exists(n.domain, n.op_type)) {
      error(fmt::format("node {}: operator {} does not exist at opset {} of domain '{}'", n.describe(), n.op_type,
                        n.opset, n.domain.empty() ? "ai.onnx" : n.domain));
      return;
    }
    if (!row && !def) {
      if (schema_exists(n.domain, n.op_type)) {
        error(fmt::format("node {}: operator {} does not exist at opset {} of domain '{}'", n.describe(), n.op_type,
                          n.opset, n.domain.empty() ? "ai.onnx" : n.domain));
      } else if (!options_.allow_unsupported) {
        error(fmt::format("node {}: unknown operator '{}' in domain '{}'", n.describe(), n.op_type,
                          n.domain.empty() ? "ai.onnx" : n.domain));
      }
      return;
    }
    if (row) {
      Status s = check_node_against_schema(n, *row);
      if (!s.ok()) error(s.message());
    }
    if (!def && !options_.allow_unsupported) {
      error(fmt::format("node {}: operator {} (opset {}) is not supported by Kiln yet", n.describe(),
                        n.domain.empty() ? n.op_type : n.domain + "." + n.op_type, n.opset));
    }
  }

  // Appends `np` to `out`, replacing calls of model-local functions by their bodies.
  Status expand_node(const onnx::NodeProto& np, const OpsetMap& opsets, std::vector<FlatNode>& out, int depth) {
    auto it = functions_.find({canon(np.domain()), np.op_type()});
    if (it == functions_.end()) {
      out.push_back({np, &opsets});
      return {};
    }
    if (depth > kMaxFunctionDepth) {
      return invalid("{}: node '{}': model-local functions nest deeper than {} (recursive function?)", source_,
                     np.name(), kMaxFunctionDepth);
    }
    const onnx::FunctionProto& f = *it->second;
    const OpsetMap& fopsets = function_opsets_[&f];
    std::map<std::string, std::string> rename;
    for (int i = 0; i < f.input_size(); ++i) rename[f.input(i)] = i < np.input_size() ? np.input(i) : std::string();
    for (int i = 0; i < f.output_size(); ++i) rename[f.output(i)] = i < np.output_size() ? np.output(i) : std::string();
    std::map<std::string, const onnx::AttributeProto*> attr_values;
    for (const auto& a : f.attribute_proto()) attr_values[a.name()] = &a;  // defaults
    for (const auto& a : np.attribute()) attr_values[a.name()] = &a;
    const std::string prefix =
        fmt::format("{}::{}#{}::", np.name().empty() ? np.op_type() : np.name(), f.name(), counter_++);
    auto mapped = [&](const std::string& name) -> std::string {
      if (name.empty()) return name;
      auto r = rename.find(name);
      return r != rename.end() ? r->second : prefix + name;
    };
    for (const auto& body : f.node()) {
      onnx::NodeProto copy = body;
      for (auto& s : *copy.mutable_input()) s = mapped(s);
      for (auto& s : *copy.mutable_output()) s = mapped(s);
      copy.set_name(prefix + body.name());
      copy.clear_attribute();
      for (const auto& a : body.attribute()) {
        if (!a.ref_attr_name().empty()) {
          auto v = attr_values.find(a.ref_attr_name());
          if (v == attr_values.end()) continue;  // not given and no default: the attribute is absent
          onnx::AttributeProto* na = copy.add_attribute();
          *na = *v->second;
          na->set_name(a.name());
        } else {
          *copy.add_attribute() = a;
        }
      }
      KILN_RETURN_IF_ERROR(expand_node(copy, fopsets, out, depth + 1));
    }
    return {};
  }

  Result<Tensor> densify(const onnx::SparseTensorProto& sp) {
    Dims dims(sp.dims().begin(), sp.dims().end());
    KILN_ASSIGN_OR_RETURN(Tensor values, tensor_from_proto(sp.values(), base_dir_));
    KILN_ASSIGN_OR_RETURN(Tensor indices, tensor_from_proto(sp.indices(), base_dir_));
    KILN_ASSIGN_OR_RETURN(Tensor dense, Tensor::create(values.dtype(), dims));
    const int64_t nnz = values.numel();
    const int64_t total = dense.numel();
    Dims strides(dims.size(), 1);
    for (size_t i = dims.size(); i-- > 1;) strides[i - 1] = strides[i] * dims[i];
    for (int64_t k = 0; k < nnz; ++k) {
      int64_t flat = 0;
      if (indices.rank() == 1) {
        flat = indices.get_int64(k);
      } else {
        for (size_t d = 0; d < dims.size(); ++d)
          flat += indices.get_int64(k * static_cast<int64_t>(dims.size()) + static_cast<int64_t>(d)) * strides[d];
      }
      if (flat < 0 || flat >= total) return invalid("'{}': sparse index {} out of range", sp.values().name(), flat);
      copy_elements(dense, flat, values, k, 1);
    }
    return dense;
  }

  Result<Attribute> convert_attribute(const onnx::AttributeProto& ap, Graph& g, Node* n) {
    Attribute a;
    auto ctx = [&](const std::string& m) {
      return invalid("node {}: attribute '{}': {}", n->describe(), ap.name(), m);
    };
    int type = ap.type();
    if (type == onnx::AttributeProto::UNDEFINED) {
      // Very old models leave the type out; infer it from the field that is set.
      if (ap.has_f())
        type = onnx::AttributeProto::FLOAT;
      else if (ap.has_i())
        type = onnx::AttributeProto::INT;
      else if (ap.has_s())
        type = onnx::AttributeProto::STRING;
      else if (ap.has_t())
        type = onnx::AttributeProto::TENSOR;
      else if (ap.has_g())
        type = onnx::AttributeProto::GRAPH;
      else if (ap.floats_size())
        type = onnx::AttributeProto::FLOATS;
      else if (ap.ints_size())
        type = onnx::AttributeProto::INTS;
      else if (ap.strings_size())
        type = onnx::AttributeProto::STRINGS;
      else
        return ctx("has no type and no value");
    }
    switch (type) {
      case onnx::AttributeProto::FLOAT:
      case onnx::AttributeProto::INT:
      case onnx::AttributeProto::STRING:
      case onnx::AttributeProto::FLOATS:
      case onnx::AttributeProto::INTS:
      case onnx::AttributeProto::STRINGS: plain_attribute_from_proto(ap, type, &a); break;
      case onnx::AttributeProto::TENSOR: {
        a.type = AttrType::kTensor;
        auto t = tensor_from_proto(ap.t(), base_dir_);
        if (!t.ok()) return ctx(t.status().message());
        a.t = std::move(t).value();
        break;
      }
      case onnx::AttributeProto::SPARSE_TENSOR: {
        a.type = AttrType::kTensor;
        auto t = densify(ap.sparse_tensor());
        if (!t.ok()) return ctx(t.status().message());
        a.t = std::move(t).value();
        break;
      }
      case onnx::AttributeProto::TENSORS:
        a.type = AttrType::kTensors;
        for (const auto& tp : ap.tensors()) {
          auto t = tensor_from_proto(tp, base_dir_);
          if (!t.ok()) return ctx(t.status().message());
          a.tensors.push_back(std::move(t).value());
        }
        break;
      case onnx::AttributeProto::GRAPH: {
        a.type = AttrType::kGraph;
        a.g = std::make_shared<Graph>();
        a.g->opsets = g.parent ? g.opsets : opsets_;
        a.g->parent = &g;
        KILN_RETURN_IF_ERROR(convert_graph(ap.g(), *a.g, &g));
        break;
      }
      case onnx::AttributeProto::GRAPHS:
        a.type = AttrType::kGraphs;
        for (const auto& gp : ap.graphs()) {
          auto sg = std::make_shared<Graph>();
          sg->opsets = g.parent ? g.opsets : opsets_;
          KILN_RETURN_IF_ERROR(convert_graph(gp, *sg, &g));
          a.graphs.push_back(std::move(sg));
        }
        break;
      case onnx::AttributeProto::TYPE_PROTO: {
        a.type = AttrType::kTypeProto;
        auto t = type_from_proto(ap.tp());
        if (!t.ok()) return ctx(t.status().message());
        a.tp = std::move(t).value();
        break;
      }
      case onnx::AttributeProto::TYPE_PROTOS:
        a.type = AttrType::kTypeProtos;
        for (const auto& tp : ap.type_protos()) {
          auto t = type_from_proto(tp);
          if (!t.ok()) return ctx(t.status().message());
          a.tps.push_back(std::move(t).value());
        }
        break;
      default: return ctx(fmt::format("unsupported attribute type {}", type));
    }
    return a;
  }

  fs::path base_dir_;
  std::string source_;
  ImportOptions options_;
  OpsetMap opsets_;
  std::map<FunctionKey, const onnx::FunctionProto*> functions_;
  std::map<const onnx::FunctionProto*, OpsetMap> function_opsets_;
  std::vector<std::string> errors_;
  int counter_ = 0;
};

void collect_unsupported(const Graph& g, std::vector<UnsupportedOp>& out) {
  for (const auto& n : g.nodes()) {
    if (!OpRegistry::global().find(n->domain, n->op_type)) {
      std::string op = n->domain.empty() ? n->op_type : n->domain + "." + n->op_type;
      bool known = schema_exists(n->domain, n->op_type);
      out.push_back(
          {n->name.empty() ? "#" + std::to_string(n->index) : n->name, op, known ? "no kernel" : "unknown operator"});
    }
    for (const auto& [k, a] : n->attrs) {
      if (a.g) collect_unsupported(*a.g, out);
      for (const auto& sg : a.graphs) collect_unsupported(*sg, out);
    }
  }
}

}  // namespace

Result<Model> import_onnx_bytes(const std::string& bytes, const fs::path& base_dir, const std::string& source,
                                const ImportOptions& options) {
  if (bytes.empty()) return invalid("{}: the file is empty", source);
  onnx::ModelProto mp;
  google::protobuf::io::CodedInputStream stream(reinterpret_cast<const uint8_t*>(bytes.data()),
                                                static_cast<int>(std::min<size_t>(bytes.size(), INT32_MAX)));
  stream.SetTotalBytesLimit(INT32_MAX);
  stream.SetRecursionLimit(200);
  if (!mp.ParseFromCodedStream(&stream) || !stream.ConsumedEntireMessage()) {
    return invalid("{}: not a valid ONNX model (the protobuf data is truncated or corrupt)", source);
  }
  if (!mp.has_graph() && mp.ir_version() == 0) {
    return invalid("{}: not an ONNX model (no IR version and no graph)", source);
  }
  Importer imp(base_dir, source, options);
  return imp.run(mp);
}

Result<Model> import_onnx_file(const fs::path& file, const ImportOptions& options) {
  std::error_code ec;
  if (!fs::exists(file, ec)) return invalid("{}: no such file", file.string());
  if (fs::is_directory(file, ec)) return invalid("{}: is a directory, not a model file", file.string());
  std::ifstream in(file, std::ios::binary);
  if (!in) return invalid("{}: cannot open the file", file.string());
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  // A file named without a folder lies in the working directory: its external data too.
  const fs::path dir = file.has_parent_path() ? file.parent_path() : fs::path(".");
  return import_onnx_bytes(bytes, dir, file.string(), options);
}

std::vector<UnsupportedOp> find_unsupported_ops(const Graph& g) {
  std::vector<UnsupportedOp> out;
  collect_unsupported(g, out);
  return out;
}

}  // namespace kiln
