// NVRTC is opened at run time (dlopen), so Kiln's binaries start where it is not installed; only
// compiling generated kernels then fails, and the builder keeps the kernels it has.
#include "backends/cuda/nvrtc_compile.h"

#include <dlfcn.h>
#include <nvrtc.h>

#include <map>
#include <mutex>
#include <string>
#include <type_traits>
#include <utility>

namespace kiln::cuda {
namespace {

struct Nvrtc {
  decltype(&nvrtcCreateProgram) create = nullptr;
  decltype(&nvrtcCompileProgram) compile = nullptr;
  decltype(&nvrtcDestroyProgram) destroy = nullptr;
  decltype(&nvrtcGetProgramLogSize) log_size = nullptr;
  decltype(&nvrtcGetProgramLog) log = nullptr;
  decltype(&nvrtcGetCUBINSize) cubin_size = nullptr;
  decltype(&nvrtcGetCUBIN) cubin = nullptr;
  decltype(&nvrtcGetErrorString) error = nullptr;
  decltype(&nvrtcVersion) version = nullptr;
  std::string missing;  // why it could not be opened ("" when it was)
};

const Nvrtc& nvrtc() {
  static const Nvrtc lib = [] {
    Nvrtc n;
    void* h = nullptr;
    for (const char* name : {"libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"}) {
      h = dlopen(name, RTLD_NOW | RTLD_LOCAL);
      if (h) break;
    }
    if (!h) {
      n.missing = "NVRTC (libnvrtc.so) is not installed or not on the library path";
      return n;
    }
    auto sym = [&](auto& f, const char* name) {
      f = reinterpret_cast<std::remove_reference_t<decltype(f)>>(dlsym(h, name));
      if (!f && n.missing.empty()) n.missing = std::string("NVRTC lacks ") + name;
    };
    sym(n.create, "nvrtcCreateProgram");
    sym(n.compile, "nvrtcCompileProgram");
    sym(n.destroy, "nvrtcDestroyProgram");
    sym(n.log_size, "nvrtcGetProgramLogSize");
    sym(n.log, "nvrtcGetProgramLog");
    sym(n.cubin_size, "nvrtcGetCUBINSize");
    sym(n.cubin, "nvrtcGetCUBIN");
    sym(n.error, "nvrtcGetErrorString");
    sym(n.version, "nvrtcVersion");
    return n;
  }();
  return lib;
}

Result<std::string> compile_uncached(const std::string& source, const std::string& name, const std::string& arch);

}  // namespace

Result<std::string> compile_to_cubin(const std::string& source, const std::string& name, const std::string& arch) {
  static std::mutex mu;
  static std::map<std::pair<std::string, std::string>, std::string> compiled;
  {
    std::lock_guard<std::mutex> lock(mu);
    auto it = compiled.find({arch, source});
    if (it != compiled.end()) return it->second;
  }
  KILN_ASSIGN_OR_RETURN(std::string cubin, compile_uncached(source, name, arch));
  std::lock_guard<std::mutex> lock(mu);
  compiled[{arch, source}] = cubin;
  return cubin;
}

bool nvrtc_available() {
  return nvrtc().missing.empty();
}

namespace {

Result<std::string> compile_uncached(const std::string& source, const std::string& name, const std::string& arch) {
  const Nvrtc& n = nvrtc();
  if (!n.missing.empty()) return runtime_error("cannot compile {}: {}", name, n.missing);
  nvrtcProgram p = nullptr;
  nvrtcResult r = n.create(&p, source.c_str(), name.c_str(), 0, nullptr, nullptr);
  if (r != NVRTC_SUCCESS) return runtime_error("nvrtcCreateProgram for {} failed: {}", name, n.error(r));
  struct Destroy {
    const Nvrtc& n;
    nvrtcProgram& p;
    ~Destroy() { n.destroy(&p); }
  } destroy{n, p};
  const std::string gpu = "--gpu-architecture=" + arch;
  const char* options[] = {gpu.c_str(), "--std=c++17"};
  r = n.compile(p, 2, options);
  if (r != NVRTC_SUCCESS) {
    size_t size = 0;
    n.log_size(p, &size);
    std::string log(size, '\0');
    if (size) n.log(p, log.data());
    return runtime_error("compiling {} for {} with NVRTC failed: {}: {}", name, arch, n.error(r), log);
  }
  size_t size = 0;
  r = n.cubin_size(p, &size);
  if (r != NVRTC_SUCCESS) return runtime_error("nvrtcGetCUBINSize for {} failed: {}", name, n.error(r));
  std::string cubin(size, '\0');
  r = n.cubin(p, cubin.data());
  if (r != NVRTC_SUCCESS) return runtime_error("nvrtcGetCUBIN for {} failed: {}", name, n.error(r));
  return cubin;
}

}  // namespace

std::string nvrtc_version() {
  const Nvrtc& n = nvrtc();
  int major = 0, minor = 0;
  if (!n.missing.empty() || n.version(&major, &minor) != NVRTC_SUCCESS) return "none";
  return std::to_string(major) + "." + std::to_string(minor);
}

}  // namespace kiln::cuda
