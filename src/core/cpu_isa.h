#pragma once
// The vector instruction sets Kiln's own CPU kernels pick from at run time: the widest this CPU
// has, capped by KILN_CPU_ISA (generic, avx2, avx512) or set_cpu_isa_cap(), so that tests and
// users can run the narrower variants on a wider CPU.
#include <string>
#include <string_view>

namespace kiln {

enum class CpuIsa { kGeneric = 0, kAvx2 = 1, kAvx512 = 2 };  // kAvx2 includes FMA

std::string_view cpu_isa_name(CpuIsa isa);  // "generic", "avx2", "avx512"
// The widest set this CPU runs (AVX-512 means F, BW, DQ and VL).
CpuIsa detected_cpu_isa();
// The set kernels use: the detected one, capped by KILN_CPU_ISA (read once; an unknown value is
// ignored) and by set_cpu_isa_cap.
CpuIsa cpu_isa();
// Caps the set for the whole process (tests); kAvx512 lifts the cap.
void set_cpu_isa_cap(CpuIsa cap);
// An empty string when KILN_CPU_ISA is unset or names a set, else the message saying what is
// wrong (the command-line tool refuses to run then; the library ignores the value).
std::string cpu_isa_env_error();

}  // namespace kiln
