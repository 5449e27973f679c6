// `kiln conformance DIR [--filter REGEX] [--exclude FILE] [--json]`: runs ONNX backend test
// folders (model.onnx + test_data_set_*/input_*.pb, output_*.pb) and compares the outputs with
// the tolerances of the ONNX backend test runner (rtol 1e-3, atol 1e-7; bfloat16 rtol 2^-6).
// Each test runs in a child process, so a crash or a hang fails that test alone.
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>

#include <nlohmann/json.hpp>

#include "cli_util.h"
#include "commands.h"
#include "ir/clone.h"
#include "lower/builder.h"
#include "onnx/importer.h"
#include "onnx/tensor_proto.h"
#include "runtime/executor.h"
#include "runtime/plan_executor.h"

namespace kiln::cli {
namespace fs = std::filesystem;
namespace {

struct ConfArgs {
  std::vector<std::string> dirs;
  std::string filter;
  std::string exclude_file;
  bool json = false;
  int jobs = 1;
  double timeout_s = 60;
  bool verbose = false;
};

struct Outcome {
  enum Kind { kPass, kFail, kSkip } kind = kFail;
  std::string reason;
};

constexpr double kRtol = 1e-3;
constexpr double kAtol = 1e-7;

std::string compare_tensor(const Tensor& got, const Tensor& want, const std::string& what) {
  if (got.dtype() != want.dtype()) {
    return fmt::format("{}: dtype {} expected {}", what, dtype_name(got.dtype()), dtype_name(want.dtype()));
  }
  if (got.dims() != want.dims()) {
    return fmt::format("{}: shape {} expected {}", what, shape_to_string(got.dims()), shape_to_string(want.dims()));
  }
  if (want.dtype() == DataType::kString) {
    for (int64_t i = 0; i < want.numel(); ++i) {
      if (got.strings()[static_cast<size_t>(i)] != want.strings()[static_cast<size_t>(i)]) {
        return fmt::format("{}: element {} is '{}', expected '{}'", what, i, got.strings()[static_cast<size_t>(i)],
                           want.strings()[static_cast<size_t>(i)]);
      }
    }
    return {};
  }
  if (want.dtype() == DataType::kComplex64 || want.dtype() == DataType::kComplex128) {
    Tensor g2 = got.reshaped({got.numel() * 2}), w2 = want.reshaped({want.numel() * 2});
    (void)g2;
    (void)w2;
    int64_t n = want.numel() * 2;
    for (int64_t i = 0; i < n; ++i) {
      double a = want.dtype() == DataType::kComplex64 ? got.data<float>()[i] : got.data<double>()[i];
      double b = want.dtype() == DataType::kComplex64 ? want.data<float>()[i] : want.data<double>()[i];
      if (!(std::fabs(a - b) <= kAtol + kRtol * std::fabs(b))) {
        return fmt::format("{}: component {} is {}, expected {}", what, i, a, b);
      }
    }
    return {};
  }
  const double rtol = want.dtype() == DataType::kBFloat16 ? std::max(kRtol, 1.0 / 64) : kRtol;
  int64_t bad = 0, first = -1;
  for (int64_t i = 0; i < want.numel(); ++i) {
    double a = got.get_double(i), b = want.get_double(i);
    bool ok;
    if (std::isnan(b)) {
      ok = std::isnan(a);
    } else if (std::isinf(b)) {
      ok = a == b;
    } else {
      ok = std::fabs(a - b) <= kAtol + rtol * std::fabs(b);
    }
    if (!ok) {
      if (first < 0) first = i;
      ++bad;
    }
  }
  if (bad) {
    return fmt::format("{}: {} of {} elements differ; first at {}: {} expected {}", what, bad, want.numel(), first,
                       got.get_double(first), want.get_double(first));
  }
  return {};
}

std::string compare_value(const RValue& got, const RValue& want, const std::string& what) {
  if (want.is_none()) return got.is_none() ? std::string() : what + ": expected an empty optional";
  if (got.is_none()) return what + ": got an empty optional";
  if (want.is_sequence()) {
    if (!got.is_sequence()) return what + ": expected a sequence";
    if (got.sequence.size() != want.sequence.size()) {
      return fmt::format("{}: sequence of {} tensors, expected {}", what, got.sequence.size(), want.sequence.size());
    }
    for (size_t i = 0; i < want.sequence.size(); ++i) {
      std::string r = compare_tensor(got.sequence[i], want.sequence[i], fmt::format("{}[{}]", what, i));
      if (!r.empty()) return r;
    }
    return {};
  }
  if (!got.is_tensor()) return what + ": expected a tensor";
  return compare_tensor(got.tensor, want.tensor, what);
}

std::vector<fs::path> sorted_files(const fs::path& dir, const std::string& prefix) {
  std::vector<fs::path> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    std::string n = e.path().filename().string();
    if (n.rfind(prefix, 0) == 0) out.push_back(e.path());
  }
  // input_10.pb sorts after input_9.pb: order by the number after the prefix.
  std::sort(out.begin(), out.end(), [&](const fs::path& a, const fs::path& b) {
    auto num = [&](const fs::path& p) { return std::atoi(p.filename().string().c_str() + prefix.size()); };
    return num(a) < num(b);
  });
  return out;
}

// With --optimize each test's model is built into a plan (passes, lowering, memory plan) for the
// shapes of its inputs and run by the plan executor instead of node by node.
bool g_optimize = false;
// With --device cuda the plans are built for the GPU (strict FP32, so that the runner's tolerances
// hold; ops without a CUDA kernel fall back to the CPU) and run there.
std::string g_device = "cpu";

void set_device(BuildOptions& options) {
  options.device = g_device;
  options.tf32 = false;
}

Result<std::vector<RValue>> run_optimized(const Model& m, std::vector<RValue> inputs) {
  BuildOptions options;
  set_device(options);
  const Graph& g = *m.graph;
  for (size_t i = 0; i < inputs.size() && i < g.inputs.size(); ++i) {
    if (inputs[i].is_tensor() && g.inputs[i]->type.kind == TypeInfo::Kind::kTensor) {
      options.shapes[g.inputs[i]->name] = inputs[i].tensor.dims();
    }
  }
  KILN_ASSIGN_OR_RETURN(std::shared_ptr<Plan> plan, build_plan(m, options));
  KILN_ASSIGN_OR_RETURN(std::shared_ptr<Backend> backend, make_backend(plan->info.device));
  KILN_ASSIGN_OR_RETURN(auto exec, PlanExecutor::create(plan, backend));
  return exec->run(std::move(inputs));
}

// With --profile each test's model is built with a shape profile around its inputs' shapes, every
// input dimension made symbolic: the passes see symbolic shapes, slots are sized at the profile's
// largest shapes, and the test runs below them. Not every model accepts every shape (a Conv's
// channels must match its weights), so the widest profile that builds is used: every dimension
// in 1..2d, else the first dimension only in 1..2d, else every dimension in 1..d.
bool g_profile = false;

enum class ProfileTier { kAllDoubled, kFirstDoubled, kAllUpToTest };
const char* tier_name(ProfileTier t) {
  switch (t) {
    case ProfileTier::kAllDoubled: return "every dim 1..2d";
    case ProfileTier::kFirstDoubled: return "first dim 1..2d";
    case ProfileTier::kAllUpToTest: return "every dim 1..d";
  }
  return "";
}

// The model with every tensor input's dims symbolic (a declared symbol is kept).
Model with_symbolic_inputs(const Model& m) {
  Model out = m;
  out.graph = clone_graph(*m.graph);
  for (Value* v : out.graph->inputs) {
    if (v->type.kind != TypeInfo::Kind::kTensor || !v->type.shape.rank_known) continue;
    for (size_t k = 0; k < v->type.shape.dims.size(); ++k) {
      Dim& d = v->type.shape.dims[k];
      if (d.known() || d.symbol.empty()) d = Dim::sym(v->name + "_d" + std::to_string(k));
    }
  }
  return out;
}

Result<std::vector<RValue>> run_profiled(const Model& m, std::vector<RValue> inputs, ProfileTier* used) {
  const Model sym = with_symbolic_inputs(m);
  const Graph& g = *sym.graph;
  Status first_error;
  for (ProfileTier tier : {ProfileTier::kAllDoubled, ProfileTier::kFirstDoubled, ProfileTier::kAllUpToTest}) {
    BuildOptions options;
    set_device(options);
    for (size_t i = 0; i < inputs.size() && i < g.inputs.size(); ++i) {
      if (!inputs[i].is_tensor() || g.inputs[i]->type.kind != TypeInfo::Kind::kTensor) continue;
      const Dims& d = inputs[i].tensor.dims();
      Dims lo = d, hi = d;
      for (size_t k = 0; k < d.size(); ++k) {
        if (d[k] == 0) continue;  // a zero-size dimension stays what it is
        const bool vary = tier != ProfileTier::kFirstDoubled || k == 0;
        if (!vary) continue;
        lo[k] = 1;
        hi[k] = tier == ProfileTier::kAllUpToTest ? d[k] : 2 * d[k];
      }
      options.min_shapes[g.inputs[i]->name] = lo;
      options.max_shapes[g.inputs[i]->name] = hi;
    }
    auto plan = build_plan(sym, options);
    if (!plan.ok()) {
      if (first_error.ok()) first_error = plan.status();
      continue;
    }
    *used = tier;
    KILN_ASSIGN_OR_RETURN(std::shared_ptr<Backend> backend, make_backend((*plan)->info.device));
    KILN_ASSIGN_OR_RETURN(auto exec, PlanExecutor::create(*plan, backend));
    return exec->run(std::move(inputs));
  }
  return first_error.with_context("building with a profile");
}

Outcome run_one(const fs::path& test_dir) {
  auto m = import_onnx_file(test_dir / "model.onnx");
  if (!m.ok()) return {Outcome::kFail, m.status().message()};
  const Graph& g = *m->graph;
  auto sets = sorted_files(test_dir, "test_data_set_");
  if (sets.empty()) return {Outcome::kSkip, "no test_data_set_* folder"};
  Executor exec(g);
  std::string profile_note;  // with --profile, the profile a passing test was built with
  for (const auto& set : sets) {
    auto in_files = sorted_files(set, "input_");
    auto out_files = sorted_files(set, "output_");
    std::vector<RValue> inputs;
    if (in_files.size() > g.inputs.size()) {
      return {Outcome::kFail, fmt::format("{} input files for {} model inputs", in_files.size(), g.inputs.size())};
    }
    for (size_t i = 0; i < in_files.size(); ++i) {
      auto v = read_value_file(in_files[i], g.inputs[i]->type);
      if (!v.ok()) return {Outcome::kFail, v.status().message()};
      inputs.push_back(std::move(v).value());
    }
    // Inputs not given (trailing optional graph inputs) are empty optionals.
    while (inputs.size() < g.inputs.size()) inputs.push_back(RValue::none());
    ProfileTier tier = ProfileTier::kAllDoubled;
    auto outs = g_profile                         ? run_profiled(*m, std::move(inputs), &tier)
                : g_optimize || g_device != "cpu" ? run_optimized(*m, std::move(inputs))
                                                  : exec.run(std::move(inputs));
    if (g_profile) profile_note = tier_name(tier);
    if (!outs.ok()) return {Outcome::kFail, outs.status().message()};
    if (out_files.size() != g.outputs.size()) {
      return {Outcome::kFail, fmt::format("{} output files for {} model outputs", out_files.size(), g.outputs.size())};
    }
    for (size_t i = 0; i < out_files.size(); ++i) {
      auto want = read_value_file(out_files[i], g.outputs[i]->type);
      if (!want.ok()) return {Outcome::kFail, want.status().message()};
      std::string r =
          compare_value((*outs)[i], *want, fmt::format("{} output '{}'", set.filename().string(), g.outputs[i]->name));
      if (!r.empty()) return {Outcome::kFail, r};
    }
  }
  return {Outcome::kPass, profile_note};
}

// Runs run_one in a child process; the child writes "<kind>\n<reason>" to a pipe.
struct Child {
  pid_t pid = -1;
  int fd = -1;
  std::string name;
  std::string buffer;
  std::chrono::steady_clock::time_point start;
};

Child spawn(const fs::path& test_dir, const std::string& name) {
  int fds[2];
  Child c;
  c.name = name;
  if (pipe(fds) != 0) return c;
  pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    Outcome o = run_one(test_dir);
    std::string msg = std::to_string(static_cast<int>(o.kind)) + "\n" + o.reason;
    size_t off = 0;
    while (off < msg.size()) {
      ssize_t w = write(fds[1], msg.data() + off, msg.size() - off);
      if (w <= 0) break;
      off += static_cast<size_t>(w);
    }
    close(fds[1]);
    _exit(0);
  }
  close(fds[1]);
  c.pid = pid;
  c.fd = fds[0];
  c.start = std::chrono::steady_clock::now();
  return c;
}

Outcome finish(Child& c, bool timed_out) {
  if (timed_out) kill(c.pid, SIGKILL);
  int status = 0;
  waitpid(c.pid, &status, 0);
  close(c.fd);
  if (timed_out) return {Outcome::kFail, "timed out"};
  if (WIFSIGNALED(status))
    return {Outcome::kFail, fmt::format("crashed with signal {} ({})", WTERMSIG(status), strsignal(WTERMSIG(status)))};
  auto nl = c.buffer.find('\n');
  if (nl == std::string::npos) return {Outcome::kFail, "the test process ended without a result"};
  Outcome o;
  o.kind = static_cast<Outcome::Kind>(std::atoi(c.buffer.substr(0, nl).c_str()));
  o.reason = c.buffer.substr(nl + 1);
  // One line per failure: multi-line importer messages are joined.
  for (size_t p = o.reason.find("\n"); p != std::string::npos; p = o.reason.find("\n", p)) {
    size_t end = o.reason.find_first_not_of(" ", p + 1);
    o.reason.replace(p, (end == std::string::npos ? o.reason.size() : end) - p, " ");
  }
  return o;
}

Result<std::map<std::string, std::string>> read_exclusions(const std::string& file) {
  std::map<std::string, std::string> ex;
  if (file.empty()) return ex;
  std::ifstream in(file);
  if (!in) return usage_error("cannot open exclusion file '{}'", file);
  std::string line;
  int lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    auto start = line.find_first_not_of(" \t");
    if (start == std::string::npos || line[start] == '#') continue;
    auto end = line.find_first_of(" \t", start);
    std::string name = line.substr(start, end == std::string::npos ? std::string::npos : end - start);
    std::string reason;
    if (end != std::string::npos) {
      reason = line.substr(end);
      reason.erase(0, reason.find_first_not_of(" \t#"));
    }
    if (reason.empty()) return usage_error("{}:{}: exclusion of '{}' gives no reason", file, lineno, name);
    ex[name] = reason;
  }
  return ex;
}

int run(const ConfArgs& a) {
  if (g_device != "cpu") {
    // A device that is not there is one error, not one per test. Asked in a child process: CUDA
    // initialized in this one would not work in the per-test children forked from it.
    const pid_t probe = fork();
    if (probe == 0) {
      auto b = make_backend(g_device);
      if (!b.ok()) std::fprintf(stderr, "kiln: error: %s\n", b.status().message().c_str());
      _exit(b.ok() ? 0 : 1);
    }
    int st = 0;
    if (probe < 0 || waitpid(probe, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) return kExitRuntime;
  }
  std::error_code ec;
  std::vector<std::pair<std::string, fs::path>> tests;
  auto collect = [&](const fs::path& d) {
    std::vector<fs::path> subs;
    for (const auto& e : fs::directory_iterator(d, ec)) {
      if (e.is_directory() && fs::exists(e.path() / "model.onnx")) subs.push_back(e.path());
    }
    std::sort(subs.begin(), subs.end());
    for (const auto& s : subs) tests.push_back({s.filename().string(), s});
  };
  for (const std::string& dir : a.dirs) {
    if (!fs::is_directory(dir, ec)) return report_error(usage_error("'{}' is not a folder", dir));
    size_t before = tests.size();
    if (fs::exists(fs::path(dir) / "model.onnx")) {
      tests.push_back({fs::path(dir).filename().string(), dir});
      continue;
    }
    collect(dir);
    if (tests.size() == before) {  // a root holding node/, simple/ ...
      std::vector<fs::path> roots;
      for (const auto& e : fs::directory_iterator(dir, ec)) {
        if (e.is_directory()) roots.push_back(e.path());
      }
      std::sort(roots.begin(), roots.end());
      for (const auto& r : roots) collect(r);
    }
  }
  std::regex re;
  if (!a.filter.empty()) {
    try {
      re = std::regex(a.filter, std::regex::ECMAScript);
    } catch (const std::regex_error& e) {
      return report_error(usage_error("--filter '{}' is not a valid regular expression: {}", a.filter, e.what()));
    }
    std::erase_if(tests, [&](const auto& t) { return !std::regex_search(t.first, re); });
  }
  auto excl = read_exclusions(a.exclude_file);
  if (!excl.ok()) return report_error(excl.status());

  std::map<std::string, Outcome> results;
  std::vector<Child> running;
  size_t next = 0;
  const int jobs = std::max(1, a.jobs);
  while (next < tests.size() || !running.empty()) {
    while (next < tests.size() && static_cast<int>(running.size()) < jobs) {
      const auto& [name, path] = tests[next++];
      auto it = excl->find(name);
      if (it != excl->end()) {
        results[name] = {Outcome::kSkip, "excluded: " + it->second};
        continue;
      }
      Child c = spawn(path, name);
      if (c.pid < 0) {
        results[name] = {Outcome::kFail, "could not start the test process"};
        continue;
      }
      running.push_back(std::move(c));
    }
    if (running.empty()) continue;
    std::vector<pollfd> pfds;
    for (const Child& c : running) pfds.push_back({c.fd, POLLIN, 0});
    poll(pfds.data(), pfds.size(), 100);
    for (size_t i = running.size(); i-- > 0;) {
      Child& c = running[i];
      bool done = false;
      if (pfds[i].revents & (POLLIN | POLLHUP | POLLERR)) {
        char buf[4096];
        ssize_t r = read(c.fd, buf, sizeof buf);
        if (r > 0) {
          c.buffer.append(buf, static_cast<size_t>(r));
        } else {
          done = true;
        }
      }
      double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - c.start).count();
      bool timed_out = !done && elapsed > a.timeout_s;
      if (done || timed_out) {
        results[c.name] = finish(c, timed_out);
        if (a.verbose && !a.json) {
          std::fprintf(stderr, "%s %s\n", results[c.name].kind == Outcome::kPass ? "PASS" : "FAIL", c.name.c_str());
        }
        running.erase(running.begin() + static_cast<long>(i));
      }
    }
  }

  int passed = 0, failed = 0, skipped = 0;
  nlohmann::json failures = nlohmann::json::array();
  nlohmann::json skips = nlohmann::json::array();
  std::map<std::string, int> profiles;  // --profile: passing tests per profile kind
  for (const auto& [name, o] : results) {
    switch (o.kind) {
      case Outcome::kPass:
        ++passed;
        if (g_profile) ++profiles[o.reason];
        break;
      case Outcome::kFail:
        ++failed;
        failures.push_back({{"test", name}, {"reason", o.reason}});
        break;
      case Outcome::kSkip:
        ++skipped;
        skips.push_back({{"test", name}, {"reason", o.reason}});
        break;
    }
  }
  const int total = static_cast<int>(results.size());
  if (a.json) {
    nlohmann::json j{{"passed", passed}, {"failed", failed},     {"skipped", skipped},
                     {"total", total},   {"failures", failures}, {"skips", skips}};
    if (g_profile) j["profiles"] = profiles;
    std::printf("%s\n", j.dump(1).c_str());
  } else {
    for (const auto& f : failures) {
      std::printf("FAIL %s: %s\n", f["test"].get<std::string>().c_str(), f["reason"].get<std::string>().c_str());
    }
    if (a.verbose) {
      for (const auto& s : skips) {
        std::printf("SKIP %s: %s\n", s["test"].get<std::string>().c_str(), s["reason"].get<std::string>().c_str());
      }
    }
    std::printf("%d passed, %d failed, %d skipped, %d total (%.1f%% passed)\n", passed, failed, skipped, total,
                total ? 100.0 * passed / total : 0.0);
    for (const auto& [kind, n] : profiles) std::printf("  %d passed with a profile of %s\n", n, kind.c_str());
  }
  return failed == 0 ? kExitOk : kExitRuntime;
}

}  // namespace

Action add_conformance_command(CLI::App& app) {
  auto* cmd =
      app.add_subcommand("conformance", "Run ONNX backend test folders and compare against their expected outputs");
  auto a = std::make_shared<ConfArgs>();
  cmd->add_option("DIR", a->dirs, "Test folders, folders of test folders, or roots holding such folders")->required();
  cmd->add_option("--filter", a->filter, "Only tests whose folder name matches this regular expression");
  cmd->add_option("--exclude", a->exclude_file, "File of excluded tests: one 'test_name reason' per line");
  cmd->add_option("--jobs,-j", a->jobs, "Tests run in parallel (default 1)");
  cmd->add_option("--timeout", a->timeout_s, "Seconds before a test counts as hung (default 60)");
  cmd->add_flag("--verbose,-v", a->verbose, "Print every test as it finishes, and the skipped ones");
  cmd->add_flag("--json", a->json, "Print machine-readable JSON");
  cmd->add_flag("--optimize", g_optimize, "Build each model into an optimized plan and run that");
  cmd->add_option("--device", g_device,
                  "Build the plans for this device (cpu, cuda or cuda:N; implies --optimize; on a GPU in strict FP32)")
      ->check(device_validator());
  cmd->add_flag("--profile", g_profile,
                "Build each model with a shape profile around its inputs' shapes (symbolic dims) and run that");
  return [a]() { return run(*a); };
}

}  // namespace kiln::cli
