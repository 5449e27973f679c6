#include "core/cpu_isa.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>

namespace kiln {
namespace {

CpuIsa env_cap() {
  const char* env = std::getenv("KILN_CPU_ISA");
  if (!env) return CpuIsa::kAvx512;
  for (CpuIsa isa : {CpuIsa::kGeneric, CpuIsa::kAvx2, CpuIsa::kAvx512}) {
    if (cpu_isa_name(isa) == env) return isa;
  }
  return CpuIsa::kAvx512;
}

std::atomic<int>& cap() {
  static std::atomic<int> c{static_cast<int>(env_cap())};
  return c;
}

}  // namespace

std::string_view cpu_isa_name(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kGeneric: return "generic";
    case CpuIsa::kAvx2: return "avx2";
    case CpuIsa::kAvx512: return "avx512";
  }
  return "generic";
}

CpuIsa detected_cpu_isa() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  static const CpuIsa isa = [] {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512vl")) {
      return CpuIsa::kAvx512;
    }
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return CpuIsa::kAvx2;
    return CpuIsa::kGeneric;
  }();
  return isa;
#else
  return CpuIsa::kGeneric;
#endif
}

CpuIsa cpu_isa() {
  return static_cast<CpuIsa>(std::min(static_cast<int>(detected_cpu_isa()), cap().load(std::memory_order_relaxed)));
}

std::string cpu_isa_env_error() {
  const char* env = std::getenv("KILN_CPU_ISA");
  if (!env) return "";
  for (CpuIsa isa : {CpuIsa::kGeneric, CpuIsa::kAvx2, CpuIsa::kAvx512}) {
    if (cpu_isa_name(isa) == env) return "";
  }
  return std::string("KILN_CPU_ISA is '") + env + "'; expected generic, avx2 or avx512";
}

void set_cpu_isa_cap(CpuIsa c) {
  cap().store(static_cast<int>(c), std::memory_order_relaxed);
}

}  // namespace kiln
