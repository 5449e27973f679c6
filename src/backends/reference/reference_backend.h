#pragma once
// The reference backend: every registered op, FP32 (and whatever dtype the model uses), plain
// layout, one tactic ("reference") that calls the op's reference kernel. The oracle the other
// backends are tested against, and the backend of `--device cpu` until a faster CPU backend exists.
#include <memory>

#include "backends/backend.h"

namespace kiln {

std::shared_ptr<Backend> make_reference_backend();

}  // namespace kiln
