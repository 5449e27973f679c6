#include "backends/cuda/kernel_family.h"

namespace kiln::cuda {

const std::vector<KernelFamily>& kernel_families() {
  static const std::vector<KernelFamily> families = {
      view_family(),        fused_elementwise_family(),
      movement_family(),    pool_family(),
      reduce_family(),      resize_family(),
      norm_family(),        conv_transpose_family(),
      channel_mlp_family(), attention_family(),
      cast_family(),        compare_family(),
      embed_norm_family(),
  };
  return families;
}

Status bind_weights(DeviceKernel& k, const Plan& plan, const Step& step, WeightCache& weights,
                    bool (*reads_on_host)(const Node&, size_t), WeightCache::Packing filter) {
  std::vector<const void*> w(step.inputs.size(), nullptr);
  for (size_t i = 0; i < step.inputs.size(); ++i) {
    if (step.inputs[i] < 0 || (reads_on_host && reads_on_host(*step.node, i))) continue;
    const Slot& s = plan.slots[static_cast<size_t>(step.inputs[i])];
    if (s.kind != SlotKind::kWeight) continue;
    const auto& t = plan.weights[static_cast<size_t>(s.weight)];
    const DataType as = is_float(t->dtype()) && is_float(step.precision) ? step.precision : t->dtype();
    KILN_ASSIGN_OR_RETURN(w[i], weights.get(t, as, 1.0f, i == 1 ? filter : WeightCache::Packing::kAsIs));
  }
  k.set_weights(std::move(w));
  return {};
}

}  // namespace kiln::cuda
