#include "passes/pipeline.h"

#include <cstdlib>

#include "ops/infer.h"
#include "ops/registry.h"
#include "passes/passes.h"

namespace kiln {

// The order matters where one pass creates the pattern another looks for:
// - Constant folding first: exporters compute shapes at run time (Shape -> Gather -> Concat ->
//   Reshape); once they are constants, the structural passes see plain Reshapes.
// - Shape arithmetic right after it, for the shapes that stay symbolic under a profile: it turns
//   what it can into constants (which folding then finishes) and Reshapes into constant 0/-1
//   shapes, before the structural passes look for plain Reshapes.
// - Identity/no-op elimination and CSE next, so patterns are not hidden behind Identity nodes or
//   split across duplicate subexpressions (two copies of the same ReduceMean in a LayerNorm).
// - Transpose/reshape folding before attention recognition: attention is matched on the
//   simplified Transpose/Reshape chains. Head fusion after recognition: it takes the Attention
//   recognition made, with the head split and merge chains around it. Packing attention views
//   after head fusion, on what head fusion left: Q, K and V that are head views of one packed
//   projection (nn.MultiheadAttention's export); the Transposes it leaves around attention's
//   output cancel against the exporter's on the next sweep of Transpose/reshape folding.
// - BatchNorm folding before bias/activation fusion: the folded BN becomes the conv's bias, and
//   the activation after the BN is then adjacent to the conv.
// - GELU/SiLU recognition before bias/activation fusion, so MatMul+bias+GELU fuses as one step.
// - LayerNorm/RMSNorm and attention recognition before elementwise fusion, which would otherwise
//   swallow their Sub/Pow/Div/Mul pieces into generic fused chains.
// - Channel-scale folding after BatchNorm folding (whose MatMul bias Add it folds through) and the
//   recognition passes (a scale Mul a pattern reads, like attention's, is theirs first), and
//   before bias/activation fusion, which then takes the MatMul's new bias and the residual Add the
//   pass moved in front of the Transpose. The Transpose pairs that move leaves between consecutive
//   blocks (Transpose(Transpose(x, perm), perm^-1)) are cancelled by Transpose/reshape folding on
//   the next sweep.
// - Channel-MLP fusion after bias/activation fusion: it pairs the FusedConvs that pass made of a
//   squeeze-excite block's two pointwise convolutions, bias and activation included.
// - Elementwise fusion last: it takes whatever elementwise ops remain.
// - Dead-code elimination last in each sweep to drop what the rewrites left unused.
const std::vector<PassInfo>& all_passes() {
  static const std::vector<PassInfo> passes = {
      constant_folding_pass(),
      shape_arithmetic_pass(),
      identity_elimination_pass(),
      cse_pass(),
      transpose_reshape_pass(),
      reduce_to_global_pool_pass(),  // a spatial mean or max as the pool it is
      row_ops_hoisting_pass(),       // before attention recognition: projections read batch-first
      batchnorm_folding_pass(),
      patch_conv_to_matmul_pass(),  // after batch-norm folding, before bias fusion takes the Conv
      split_concat_conv_pass(),     // after batch-norm folding (final filters), before bias fusion
      gelu_recognition_pass(),
      silu_recognition_pass(),
      layernorm_recognition_pass(),
      attention_recognition_pass(),
      attention_heads_fusion_pass(),
      attention_views_packing_pass(),  // after head fusion: it keeps the forms that pass handles
      channel_scale_folding_pass(),    // before bias/activation fusion (above)
      bias_activation_fusion_pass(),
      qkv_merge_pass(),  // after bias/activation fusion: it takes the projections' biases
      channel_mlp_fusion_pass(),
      embed_layernorm_fusion_pass(),  // before elementwise fusion takes the embeddings' Adds
      channels_last_heads_pass(),
      elementwise_fusion_pass(),
      dead_code_pass(),
  };
  return passes;
}

Status check_pass_names(const std::vector<std::string>& names) {
  for (const std::string& name : names) {
    bool found = false;
    for (const PassInfo& p : all_passes()) found = found || p.name == name;
    if (!found) {
      std::string known;
      for (const PassInfo& p : all_passes()) known += (known.empty() ? "" : ", ") + p.name;
      return usage_error("unknown pass '{}' (passes: {})", name, known);
    }
  }
  return {};
}

PipelineOptions default_pipeline_options() {
  PipelineOptions o;
#ifdef KILN_VERIFY_PASSES
  o.verify = true;
#endif
  const char* env = std::getenv("KILN_VERIFY_PASSES");
  if (env) o.verify = env[0] == '1';
  return o;
}

static void collect_subgraphs(Graph& g, std::vector<Graph*>& out) {
  for (const auto& n : g.nodes()) {
    for (auto& [k, a] : n->attrs) {
      if (a.g) collect_subgraphs(*a.g, out);
      for (auto& sg : a.graphs) collect_subgraphs(*sg, out);
    }
  }
  out.push_back(&g);
}

// Runs one pass on every graph, innermost subgraphs first.
static Result<bool> run_pass_everywhere(const PassInfo& pass, Graph& g, PassContext& ctx, bool verify) {
  std::vector<Graph*> graphs;
  collect_subgraphs(g, graphs);
  bool changed = false;
  for (Graph* sg : graphs) {
    Result<bool> r = pass.run(*sg, ctx);
    if (!r.ok()) return r.status().with_context("pass " + pass.name);
    if (*r) {
      changed = true;
      sg->prune_values();
    }
    if (verify) {
      Status s = sg->verify();
      if (!s.ok()) return runtime_error("pass {} left an invalid graph: {}", pass.name, s.message());
    }
  }
  if (changed) {
    Status s = infer_graph_types(g);
    if (!s.ok()) return runtime_error("type inference after pass {} failed: {}", pass.name, s.message());
  }
  return changed;
}

Result<PipelineReport> run_pipeline(Graph& g, const PipelineOptions& options) {
  std::vector<std::string> named(options.disabled.begin(), options.disabled.end());
  named.insert(named.end(), options.enabled.begin(), options.enabled.end());
  named.insert(named.end(), options.dump_after.begin(), options.dump_after.end());
  KILN_RETURN_IF_ERROR(check_pass_names(named));

  PipelineReport report;
  report.nodes_before = g.total_node_count();
  PassContext ctx;
  ctx.registry = &OpRegistry::global();
  ctx.dim_ranges = options.dim_ranges;
  bool changed = true;
  while (changed) {
    if (report.iterations == options.max_iterations) {
      report.hit_limit = true;
      break;
    }
    changed = false;
    ++report.iterations;
    for (const PassInfo& pass : all_passes()) {
      if (options.disabled.count(pass.name) || (!pass.on_by_default && !options.enabled.count(pass.name))) continue;
      KILN_ASSIGN_OR_RETURN(bool c, run_pass_everywhere(pass, g, ctx, options.verify));
      if (c && options.dump && options.dump_after.count(pass.name)) {
        KILN_RETURN_IF_ERROR(options.dump(g, pass.name, report.iterations));
      }
      changed = changed || c;
    }
  }
  report.fired = ctx.fired;
  report.nodes_after = g.total_node_count();
  return report;
}

}  // namespace kiln
