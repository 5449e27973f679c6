#pragma once
// Threads for CPU execution: one OpenMP pool, shared by oneDNN (built on OpenMP) and Kiln's own
// kernels, so the two never oversubscribe the cores. The default is one thread per physical core
// this process may run on (SMT siblings share a core's vector units, so a second thread per core
// slows dense kernels), unless OMP_NUM_THREADS says otherwise.
#include <filesystem>
#include <set>

namespace kiln {

// The physical cores among `cpus` (logical CPU numbers; empty: all that `sys_cpu` lists), from a
// sysfs CPU folder (/sys/devices/system/cpu): distinct (package, core) pairs. 0 when the folder
// has no topology to read.
int physical_cores_in(const std::filesystem::path& sys_cpu, const std::set<int>& cpus = {});

// This process's physical cores (its CPU affinity on this machine's topology), at least 1.
int physical_cores();

// The thread count CPU runs use by default: OMP_NUM_THREADS where set, else physical_cores().
int default_cpu_threads();

// Sets the threads of CPU runs started from the calling thread (and threads started after it
// without a setting of their own). n >= 1.
void set_cpu_threads(int n);
int cpu_threads();

}  // namespace kiln
