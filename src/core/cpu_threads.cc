#include "core/cpu_threads.h"

#include <omp.h>
#include <sched.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>
#include <utility>

namespace kiln {

namespace {

bool read_int(const std::filesystem::path& file, int* out) {
  std::ifstream in(file);
  return static_cast<bool>(in >> *out);
}

}  // namespace

int physical_cores_in(const std::filesystem::path& sys_cpu, const std::set<int>& cpus) {
  std::set<int> which = cpus;
  if (which.empty()) {
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(sys_cpu, ec)) {
      const std::string name = e.path().filename().string();
      if (name.size() > 3 && name.compare(0, 3, "cpu") == 0 &&
          name.find_first_not_of("0123456789", 3) == std::string::npos) {
        which.insert(std::stoi(name.substr(3)));
      }
    }
  }
  std::set<std::pair<int, int>> cores;
  for (int cpu : which) {
    const std::filesystem::path topo = sys_cpu / ("cpu" + std::to_string(cpu)) / "topology";
    int package = 0, core = 0;
    if (!read_int(topo / "core_id", &core)) continue;
    if (!read_int(topo / "physical_package_id", &package)) package = 0;
    cores.emplace(package, core);
  }
  return static_cast<int>(cores.size());
}

int physical_cores() {
  std::set<int> allowed;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    for (int c = 0; c < CPU_SETSIZE; ++c) {
      if (CPU_ISSET(c, &set)) allowed.insert(c);
    }
  }
  const int cores = physical_cores_in("/sys/devices/system/cpu", allowed);
  if (cores > 0) return cores;
  if (!allowed.empty()) return static_cast<int>(allowed.size());
  return std::max(1u, std::thread::hardware_concurrency());
}

int default_cpu_threads() {
  const char* env = std::getenv("OMP_NUM_THREADS");
  if (env && std::atoi(env) > 0) return omp_get_max_threads();
  return physical_cores();
}

void set_cpu_threads(int n) {
  omp_set_num_threads(n < 1 ? 1 : n);
}

int cpu_threads() {
  return omp_get_max_threads();
}

}  // namespace kiln
