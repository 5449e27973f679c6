#pragma once
// oneDNN on the CPU backend: the process's CPU engine, a Status from a dnnl::error, and how a
// fused op's activation maps onto oneDNN post-ops. Only src/backends/cpu includes this header.
#include <dnnl.hpp>
#include <string>
#include <vector>

#include "core/status.h"
#include "ir/graph.h"

namespace kiln::cpu {

// One CPU engine for the process (oneDNN's primitives are created against it).
const dnnl::engine& cpu_engine();

// oneDNN's version as "major.minor.patch".
std::string onednn_version();

// Appends the post-ops of a fused op's `activation` (with `activation_params`, as in ops/fused.h)
// to `ops`; false when oneDNN has no equivalent (the step then stays on the reference kernel).
bool append_activation(const Node& n, dnnl::post_ops* ops);
// Whether append_activation would succeed for `n`.
bool activation_supported(const Node& n);

// A Status naming `what` for a oneDNN exception.
Status onednn_error(const std::string& what, const dnnl::error& e);

}  // namespace kiln::cpu
