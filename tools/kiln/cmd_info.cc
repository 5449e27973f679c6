// `kiln info MODEL.onnx [--json]`: what a model is made of and what Kiln cannot run in it.
#include <map>

#include <nlohmann/json.hpp>

#include "commands.h"
#include "onnx/importer.h"

namespace kiln::cli {
namespace {

struct Params {
  int64_t count = 0;
  int64_t bytes = 0;
};

void histogram(const Graph& g, std::map<std::string, int64_t>& h, Params& p) {
  for (const Value* v : g.initializers) {
    p.count += v->initializer->numel();
    p.bytes += static_cast<int64_t>(v->initializer->nbytes());
  }
  for (const auto& n : g.nodes()) {
    h[n->domain.empty() ? n->op_type : n->domain + "." + n->op_type]++;
    for (const auto& [k, a] : n->attrs) {
      if (a.type == AttrType::kTensor) {
        p.count += a.t.numel();
        p.bytes += static_cast<int64_t>(a.t.nbytes());
      }
      if (a.g) histogram(*a.g, h, p);
      for (const auto& sg : a.graphs) histogram(*sg, h, p);
    }
  }
}

nlohmann::json io_json(const std::vector<Value*>& vs) {
  nlohmann::json arr = nlohmann::json::array();
  for (const Value* v : vs) {
    nlohmann::json j;
    j["name"] = v->name;
    j["type"] = v->type.to_string();
    if (v->type.kind == TypeInfo::Kind::kTensor) {
      j["dtype"] = std::string(dtype_name(v->type.dtype));
      nlohmann::json shape = nlohmann::json::array();
      for (const Dim& d : v->type.shape.dims) {
        if (d.known()) {
          shape.push_back(d.value);
        } else if (!d.symbol.empty()) {
          shape.push_back(d.symbol);
        } else {
          shape.push_back(nullptr);
        }
      }
      j["shape"] = v->type.shape.rank_known ? shape : nlohmann::json(nullptr);
    }
    arr.push_back(j);
  }
  return arr;
}

}  // namespace

Action add_info_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("info", "Describe a model: inputs, outputs, operators, parameters, unsupported ops");
  auto model = std::make_shared<std::string>();
  auto json = std::make_shared<bool>(false);
  cmd->add_option("MODEL", *model, "ONNX model file")->required();
  cmd->add_flag("--json", *json, "Print machine-readable JSON");
  return [model, json]() -> int {
    ImportOptions opts;
    opts.allow_unsupported = true;
    auto m = import_onnx_file(*model, opts);
    if (!m.ok()) return report_error(m.status());
    const Graph& g = *m->graph;
    std::map<std::string, int64_t> hist;
    Params params;
    histogram(g, hist, params);
    auto unsupported = find_unsupported_ops(g);
    nlohmann::json j;
    j["model"] = *model;
    j["ir_version"] = m->ir_version;
    j["producer"] = m->producer_name + (m->producer_version.empty() ? "" : " " + m->producer_version);
    nlohmann::json opsets = nlohmann::json::object();
    for (const auto& [d, v] : g.opsets) opsets[d.empty() ? "ai.onnx" : d] = v;
    j["opsets"] = opsets;
    j["inputs"] = io_json(g.inputs);
    j["outputs"] = io_json(g.outputs);
    j["node_count"] = g.total_node_count();
    j["ops"] = hist;
    j["parameters"] = {{"count", params.count}, {"bytes", params.bytes}};
    nlohmann::json un = nlohmann::json::array();
    for (const auto& u : unsupported) un.push_back({{"node", u.node}, {"op", u.op}, {"reason", u.reason}});
    j["unsupported"] = un;
    if (*json) {
      std::printf("%s\n", j.dump(2).c_str());
      return kExitOk;
    }
    std::printf("model:      %s\n", model->c_str());
    std::printf("producer:   %s\n", j["producer"].get<std::string>().c_str());
    std::printf("ir version: %lld\n", static_cast<long long>(m->ir_version));
    std::printf("opsets:    ");
    for (const auto& [d, v] : g.opsets) std::printf(" %s=%d", d.empty() ? "ai.onnx" : d.c_str(), v);
    std::printf("\ninputs:\n");
    for (const Value* v : g.inputs) std::printf("  %-30s %s\n", v->name.c_str(), v->type.to_string().c_str());
    std::printf("outputs:\n");
    for (const Value* v : g.outputs) std::printf("  %-30s %s\n", v->name.c_str(), v->type.to_string().c_str());
    std::printf("parameters: %lld (%lld bytes)\n", static_cast<long long>(params.count),
                static_cast<long long>(params.bytes));
    std::printf("nodes:      %lld\n", static_cast<long long>(g.total_node_count()));
    std::vector<std::pair<std::string, int64_t>> sorted(hist.begin(), hist.end());
    std::stable_sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
    for (const auto& [op, c] : sorted) std::printf("  %-30s %lld\n", op.c_str(), static_cast<long long>(c));
    if (unsupported.empty()) {
      std::printf("unsupported: none\n");
    } else {
      std::printf("unsupported: %zu node(s)\n", unsupported.size());
      for (const auto& u : unsupported) std::printf("  %s (%s): %s\n", u.node.c_str(), u.op.c_str(), u.reason.c_str());
    }
    return kExitOk;
  };
}

}  // namespace kiln::cli
