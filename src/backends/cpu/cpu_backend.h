#pragma once
// The CPU backend: the steps it has fast kernels for run on them (convolutions on oneDNN, tactic
// "onednn"), every other op on its reference kernel inside the same backend (tactic "reference"),
// all in host memory and plain layout. Built where oneDNN is (KILN_HAVE_ONEDNN).
#include <memory>

#include "backends/backend.h"

namespace kiln {

std::shared_ptr<Backend> make_cpu_backend();

}  // namespace kiln
