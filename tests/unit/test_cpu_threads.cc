#include <gtest/gtest.h>
#include <omp.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "core/cpu_threads.h"

namespace kiln {
namespace {

namespace fs = std::filesystem;

// A sysfs CPU folder: logical CPU i on (package, core) = layout[i].
fs::path fake_sysfs(const std::vector<std::pair<int, int>>& layout) {
  fs::path root = fs::temp_directory_path() / "kiln_fake_sys_cpu";
  fs::remove_all(root);
  for (size_t i = 0; i < layout.size(); ++i) {
    fs::path topo = root / ("cpu" + std::to_string(i)) / "topology";
    fs::create_directories(topo);
    std::ofstream(topo / "physical_package_id") << layout[i].first << "\n";
    std::ofstream(topo / "core_id") << layout[i].second << "\n";
  }
  fs::create_directories(root / "cpufreq");  // not a CPU
  std::ofstream(root / "online") << "0-" << layout.size() - 1 << "\n";
  return root;
}

// SMT siblings count once; cores of two packages with the same core id count apart; only the
// CPUs a process may run on count when given.
TEST(CpuThreads, CountsPhysicalCoresFromTheTopology) {
  const fs::path root = fake_sysfs({{0, 0}, {0, 1}, {1, 0}, {1, 1}, {0, 0}, {0, 1}, {1, 0}, {1, 1}});
  EXPECT_EQ(physical_cores_in(root), 4);
  EXPECT_EQ(physical_cores_in(root, {0, 4}), 1);     // one core's two threads
  EXPECT_EQ(physical_cores_in(root, {0, 2, 5}), 3);  // package 0 core 0, package 1 core 0, package 0 core 1
  EXPECT_EQ(physical_cores_in(root, {9}), 0);        // no such CPU
  EXPECT_EQ(physical_cores_in(root / "missing"), 0);
  fs::remove_all(root);
}

TEST(CpuThreads, ThisMachineHasAtLeastOneCoreAndAtMostItsLogicalCpus) {
  const int cores = physical_cores();
  EXPECT_GE(cores, 1);
  if (std::thread::hardware_concurrency() > 0) EXPECT_LE(cores, static_cast<int>(std::thread::hardware_concurrency()));
}

TEST(CpuThreads, SettingTheThreadsIsWhatOpenMpRegionsGet) {
  const int before = cpu_threads();
  set_cpu_threads(3);
  EXPECT_EQ(cpu_threads(), 3);
  int team = 0;
#pragma omp parallel
  {
#pragma omp single
    team = omp_get_num_threads();
  }
  EXPECT_LE(team, 3);
  set_cpu_threads(0);  // clamped to one
  EXPECT_EQ(cpu_threads(), 1);
  set_cpu_threads(before);
}

}  // namespace
}  // namespace kiln
