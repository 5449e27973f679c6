#include "onnx/exporter.h"

#include <climits>
#include <set>

#include "core/file_mapping.h"
#include "onnx/onnx-ml.pb.h"
#include "onnx/tensor_proto.h"

namespace kiln {

namespace {

constexpr int64_t kDefaultIrVersion = 10;

// Highest opset per domain over the graph's imports and every node (subgraphs included).
void collect_opsets(const Graph& g, std::map<std::string, int>& out) {
  for (const auto& [domain, version] : g.opsets) out[domain] = std::max(out[domain], version);
  for (const auto& n : g.nodes()) {
    int& v = out[n->domain];
    v = std::max(v, n->opset);
    for (const auto& [key, a] : n->attrs) {
      if (a.g) collect_opsets(*a.g, out);
      for (const auto& sg : a.graphs) collect_opsets(*sg, out);
    }
  }
}

class Exporter {
 public:
  Exporter(const ExportOptions& options, std::map<std::string, int> opsets, int64_t ir_version)
      : options_(options), opsets_(std::move(opsets)), ir_version_(ir_version) {}

  Status write_graph(const Graph& g, onnx::GraphProto* gp, bool top_level) {
    gp->set_name(g.name);
    for (const Value* v : g.initializers) {
      if (!v) return invalid("graph '{}': a null initializer", g.name);
      onnx::TensorProto* tp = gp->add_initializer();
      if (top_level && options_.omit_initializer_data) {
        DataType dt = v->initializer ? v->initializer->dtype() : v->type.dtype;
        Dims dims = v->initializer ? v->initializer->dims() : v->type.shape.static_dims();
        tp->set_name(v->name);
        tp->set_data_type(static_cast<int32_t>(dt));
        for (int64_t d : dims) tp->add_dims(d);
        continue;
      }
      if (!v->initializer || !v->initializer->defined()) {
        return invalid("graph '{}': initializer '{}' has no data", g.name, v->name);
      }
      if (v->initializer->packed()) {
        return invalid("graph '{}': initializer '{}' is packed for a kernel; its bytes are not the ONNX tensor's",
                       g.name, v->name);
      }
      tensor_to_proto(*v->initializer, v->name, tp);
    }
    // IR versions before 4 require every initializer of the main graph to be a graph input as
    // well (not in subgraphs, whose inputs are positional: a Loop body's are its loop variables).
    if (ir_version_ < 4 && top_level) {
      for (const Value* v : g.initializers) write_value_info(*v, gp->add_input());
    }
    for (const Value* v : g.inputs) {
      if (!v) return invalid("graph '{}': a null input", g.name);
      write_value_info(*v, gp->add_input());
    }
    std::set<const Value*> outputs(g.outputs.begin(), g.outputs.end());
    for (const auto& n : g.nodes()) {
      KILN_RETURN_IF_ERROR(write_node(*n, gp->add_node()));
      for (const Value* v : n->outputs) {
        if (v && !outputs.count(v) && v->type.kind != TypeInfo::Kind::kUnknown) {
          write_value_info(*v, gp->add_value_info());
        }
      }
    }
    for (const Value* v : g.outputs) {
      if (!v) return invalid("graph '{}': a null output", g.name);
      write_value_info(*v, gp->add_output());
    }
    return {};
  }

 private:
  static void write_value_info(const Value& v, onnx::ValueInfoProto* vi) {
    vi->set_name(v.name);
    if (v.type.kind != TypeInfo::Kind::kUnknown) type_to_proto(v.type, vi->mutable_type());
  }

  Status write_node(const Node& n, onnx::NodeProto* np) {
    np->set_name(n.name);
    np->set_op_type(n.op_type);
    np->set_domain(n.domain);
    for (const Value* v : n.inputs) np->add_input(v ? v->name : std::string());
    for (const Value* v : n.outputs) np->add_output(v ? v->name : std::string());
    for (const auto& [key, a] : n.attrs) {
      onnx::AttributeProto* ap = np->add_attribute();
      ap->set_name(key);
      KILN_RETURN_IF_ERROR(write_attribute(a, ap).with_context("node " + n.describe() + ": attribute '" + key + "'"));
    }
    auto it = opsets_.find(n.domain);
    if (it == opsets_.end() || it->second != n.opset) {
      auto* kv = np->add_metadata_props();
      kv->set_key(kNodeOpsetKey);
      kv->set_value(std::to_string(n.opset));
    }
    for (size_t i = 0; i < n.fused_from.size(); ++i) {
      auto* kv = np->add_metadata_props();
      kv->set_key(kNodeFusedFromPrefix + std::to_string(i));
      kv->set_value(n.fused_from[i]);
    }
    return {};
  }

  static Status write_tensor(const Tensor& t, onnx::TensorProto* tp) {
    if (!t.defined()) return invalid("the tensor is undefined");
    tensor_to_proto(t, "", tp);
    return {};
  }

  Status write_attribute(const Attribute& a, onnx::AttributeProto* ap) {
    switch (a.type) {
      case AttrType::kFloat:
        ap->set_type(onnx::AttributeProto::FLOAT);
        ap->set_f(a.f);
        break;
      case AttrType::kInt:
        ap->set_type(onnx::AttributeProto::INT);
        ap->set_i(a.i);
        break;
      case AttrType::kString:
        ap->set_type(onnx::AttributeProto::STRING);
        ap->set_s(a.s);
        break;
      case AttrType::kTensor:
        ap->set_type(onnx::AttributeProto::TENSOR);
        KILN_RETURN_IF_ERROR(write_tensor(a.t, ap->mutable_t()));
        break;
      case AttrType::kGraph:
        ap->set_type(onnx::AttributeProto::GRAPH);
        if (!a.g) return invalid("the graph attribute has no graph");
        KILN_RETURN_IF_ERROR(write_graph(*a.g, ap->mutable_g(), false));
        break;
      case AttrType::kFloats:
        ap->set_type(onnx::AttributeProto::FLOATS);
        for (float f : a.floats) ap->add_floats(f);
        break;
      case AttrType::kInts:
        ap->set_type(onnx::AttributeProto::INTS);
        for (int64_t i : a.ints) ap->add_ints(i);
        break;
      case AttrType::kStrings:
        ap->set_type(onnx::AttributeProto::STRINGS);
        for (const auto& s : a.strings) ap->add_strings(s);
        break;
      case AttrType::kTensors:
        ap->set_type(onnx::AttributeProto::TENSORS);
        for (const Tensor& t : a.tensors) KILN_RETURN_IF_ERROR(write_tensor(t, ap->add_tensors()));
        break;
      case AttrType::kGraphs:
        ap->set_type(onnx::AttributeProto::GRAPHS);
        for (const auto& g : a.graphs) {
          if (!g) return invalid("a graphs attribute holds no graph");
          KILN_RETURN_IF_ERROR(write_graph(*g, ap->add_graphs(), false));
        }
        break;
      case AttrType::kTypeProto:
        ap->set_type(onnx::AttributeProto::TYPE_PROTO);
        type_to_proto(a.tp, ap->mutable_tp());
        break;
      case AttrType::kTypeProtos:
        ap->set_type(onnx::AttributeProto::TYPE_PROTOS);
        for (const TypeInfo& t : a.tps) type_to_proto(t, ap->add_type_protos());
        break;
      case AttrType::kUndefined: return invalid("the attribute has no type");
    }
    return {};
  }

  const ExportOptions& options_;
  std::map<std::string, int> opsets_;
  int64_t ir_version_;
};

}  // namespace

Result<std::string> export_onnx(const Model& model, const ExportOptions& options) {
  if (!model.graph) return invalid("cannot export a model without a graph");
  onnx::ModelProto mp;
  const int64_t ir_version = model.ir_version > 0 ? model.ir_version : kDefaultIrVersion;
  mp.set_ir_version(ir_version);
  mp.set_producer_name(model.producer_name);
  mp.set_producer_version(model.producer_version);
  mp.set_domain(model.domain);
  mp.set_model_version(model.model_version);
  mp.set_doc_string(model.doc_string);
  for (const auto& [k, v] : model.metadata) {
    auto* kv = mp.add_metadata_props();
    kv->set_key(k);
    kv->set_value(v);
  }
  std::map<std::string, int> opsets;
  collect_opsets(*model.graph, opsets);
  // A domain whose nodes carry no opset (0) is still imported, as version 1: ONNX requires a
  // positive version. The nodes keep their 0 through kiln.opset.
  for (auto& [domain, version] : opsets) version = std::max(version, 1);
  for (const auto& [domain, version] : opsets) {
    auto* os = mp.add_opset_import();
    os->set_domain(domain);
    os->set_version(version);
  }
  Exporter exporter(options, opsets, ir_version);
  KILN_RETURN_IF_ERROR(exporter.write_graph(*model.graph, mp.mutable_graph(), true));
  const size_t size = mp.ByteSizeLong();
  if (size > static_cast<size_t>(INT_MAX)) {
    return invalid("the model is {} bytes, above protobuf's 2 GiB limit for one message", size);
  }
  std::string out;
  if (!mp.SerializeToString(&out)) return runtime_error("serializing the ONNX model failed");
  return out;
}

Status save_onnx(const Model& model, const std::string& path, const ExportOptions& options) {
  auto bytes = export_onnx(model, options);
  if (!bytes.ok()) return bytes.status().with_context(path);
  return write_file_atomically(path, {reinterpret_cast<const uint8_t*>(bytes->data()), bytes->size()});
}

}  // namespace kiln
