#include "cli_inputs.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <set>

#include "cli_util.h"
#include "core/npy.h"
#include "engine/engine.h"
#include "onnx/importer.h"

namespace kiln::cli {
namespace {

// "batch x sequence", "batch x 3 x 224 x 224": spaced so symbols stay readable.
std::string spaced_shape(const Shape& s) {
  std::string out;
  for (size_t i = 0; i < s.dims.size(); ++i) {
    if (i) out += " x ";
    const Dim& d = s.dims[i];
    out += d.known() ? std::to_string(d.value) : (d.symbol.empty() ? "?" : d.symbol);
  }
  return out;
}

std::string shape_flags_hint(ShapeFlags flags, const std::string& name) {
  if (flags == ShapeFlags::kRun) return fmt::format("--shape {}=DIMS or --input {}=FILE.npy", name, name);
  return fmt::format("--shapes {}:DIMS or --min-shapes/--max-shapes", name);
}

struct SymbolSize {
  int64_t min, opt, max;
};

// Sizes the given shapes bind to the model's dim symbols ("batch" -> 8), so that an input left
// without shapes agrees with the others on the dims the model declares equal.
std::map<std::string, SymbolSize> bound_symbols(const Graph& g, const BuildOptions& o) {
  std::map<std::string, SymbolSize> bound;
  for (const Value* v : g.inputs) {
    const std::string& n = v->name;
    Dims mn, op, mx;
    if (auto f = o.shapes.find(n); f != o.shapes.end()) {
      mn = op = mx = f->second;
    } else if (o.min_shapes.count(n) && o.max_shapes.count(n)) {
      mn = o.min_shapes.at(n);
      mx = o.max_shapes.at(n);
      op = o.opt_shapes.count(n) ? o.opt_shapes.at(n) : mx;
    } else {
      continue;
    }
    const Shape& s = v->type.shape;
    // A rank mismatch is the builder's error to report.
    if (!s.rank_known || s.dims.size() != mx.size() || mn.size() != mx.size() || op.size() != mx.size()) continue;
    for (size_t i = 0; i < s.dims.size(); ++i) {
      if (!s.dims[i].known() && !s.dims[i].symbol.empty())
        bound.emplace(s.dims[i].symbol, SymbolSize{mn[i], op[i], mx[i]});
    }
  }
  return bound;
}

}  // namespace

Result<IntRange> parse_int_range(const std::string& s) {
  auto bad = [&]() { return usage_error("--int-range expects LO,HI (two integers, LO <= HI), got '{}'", s); };
  auto comma = s.find(',');
  if (comma == std::string::npos) return bad();
  auto parse = [](const std::string& part, int64_t* v) {
    if (part.empty()) return false;
    char* end = nullptr;
    errno = 0;
    long long x = std::strtoll(part.c_str(), &end, 10);
    if (*end != '\0' || errno == ERANGE) return false;
    *v = x;
    return true;
  };
  IntRange r;
  if (!parse(s.substr(0, comma), &r.lo) || !parse(s.substr(comma + 1), &r.hi)) return bad();
  if (r.lo > r.hi) return usage_error("--int-range {}: LO ({}) is above HI ({})", s, r.lo, r.hi);
  return r;
}

Status default_dynamic_shapes(const Graph& g, BuildOptions& o, ShapeFlags flags) {
  const std::map<std::string, SymbolSize> bound = bound_symbols(g, o);
  for (const Value* v : g.inputs) {
    const std::string& n = v->name;
    if (v->type.kind != TypeInfo::Kind::kTensor) continue;
    if (o.shapes.count(n) || o.min_shapes.count(n) || o.opt_shapes.count(n) || o.max_shapes.count(n)) continue;
    const Shape& s = v->type.shape;
    if (!s.rank_known) {
      return usage_error("input '{}' has no declared shape, not even a rank, so none can be chosen for it: give {}", n,
                         shape_flags_hint(flags, n));
    }
    if (s.fully_known()) continue;
    Dims mn, op, mx;
    for (const Dim& d : s.dims) {
      SymbolSize size{1, 1, 1};
      if (d.known()) {
        size = {d.value, d.value, d.value};
      } else if (auto b = bound.find(d.symbol); !d.symbol.empty() && b != bound.end()) {
        size = b->second;
      }
      mn.push_back(size.min);
      op.push_back(size.opt);
      mx.push_back(size.max);
    }
    std::string chosen;
    if (mn == mx) {
      chosen = shape_to_string(mx);
      o.shapes[n] = mx;
    } else {
      chosen = fmt::format("min {}, opt {}, max {}", shape_to_string(mn), shape_to_string(op), shape_to_string(mx));
      o.min_shapes[n] = mn;
      o.opt_shapes[n] = op;
      o.max_shapes[n] = mx;
    }
    std::fprintf(stderr, "kiln: input '%s' has dynamic shape %s; %s %s (give %s to choose)\n", n.c_str(),
                 spaced_shape(s).c_str(), flags == ShapeFlags::kRun ? "running with" : "building for", chosen.c_str(),
                 shape_flags_hint(flags, n).c_str());
  }
  return {};
}

Result<std::map<std::string, Tensor>> read_input_files(const std::vector<std::string>& assignments) {
  std::map<std::string, Tensor> out;
  for (const std::string& a : assignments) {
    KILN_ASSIGN_OR_RETURN(auto kv, split_assignment(a, "--input"));
    const std::string& name = kv.first;
    if (out.count(name)) return usage_error("--input gives input '{}' twice", name);
    auto t = read_npy(kv.second);
    if (!t.ok()) return t.status().with_context("input '" + name + "'");
    out.emplace(name, std::move(t).value());
  }
  return out;
}

Result<OpenedPlan> open_plan_with_defaults(const std::string& path, BuildOptions options,
                                           const std::map<std::string, Dims>& given, ShapeFlags flags) {
  std::error_code ec;
  bool is_model =
      std::filesystem::exists(path, ec) && std::filesystem::path(path).extension() != ".kiln" && !is_engine_file(path);
  // Engines carry their shapes; missing files and damaged engines get open_plan's messages.
  if (!is_model) return open_plan(path, options);
  KILN_ASSIGN_OR_RETURN(Model model, import_onnx_file(path));
  std::set<std::string> names;
  std::string listing;
  for (const Value* v : model.graph->inputs) {
    names.insert(v->name);
    listing += (listing.empty() ? "" : ", ") + v->name;
  }
  for (const auto& [name, dims] : given) {
    if (!names.count(name)) {
      return usage_error("input '{}' is given on the command line but is not an input of the model (inputs: {})", name,
                         listing);
    }
    bool shaped = options.shapes.count(name) || options.min_shapes.count(name) || options.opt_shapes.count(name) ||
                  options.max_shapes.count(name);
    if (!shaped) options.shapes[name] = dims;
  }
  KILN_RETURN_IF_ERROR(default_dynamic_shapes(*model.graph, options, flags));
  OpenedPlan out;
  KILN_ASSIGN_OR_RETURN(out.plan, build_plan(model, options));
  return out;
}

void RandomInputs::add(const std::string& name, DataType dt) {
  if (is_integer(dt)) {
    ints_.push_back(name);
  } else if (dt == DataType::kBool) {
    bools_.push_back(name);
  } else {
    floats_.push_back(name);
  }
}

Status RandomInputs::explain(const Status& s, const IntRange& range) const {
  if (s.ok() || empty()) return s;
  std::vector<std::string> parts;
  auto part = [&](const std::vector<std::string>& names, const std::string& what) {
    if (names.empty()) return;
    std::string list;
    for (const std::string& n : names) list += (list.empty() ? "'" : ", '") + n + "'";
    parts.push_back(fmt::format("{} {} held random {}", names.size() == 1 ? "input" : "inputs", list, what));
  };
  part(ints_, fmt::format("integers in {}..{}", range.lo, range.hi));
  part(floats_, "floats in [-1, 1)");
  part(bools_, "bools");
  std::string note;
  for (const std::string& p : parts) note += (note.empty() ? "" : ", ") + p;
  note += "; give real data with --input NAME=FILE.npy";
  if (!ints_.empty()) note += " or choose --int-range";
  return Status(s.code(), s.message() + " (" + note + ")");
}

Result<Tensor> random_tensor(const std::string& name, DataType dt, const Dims& dims, const IntRange& range,
                             std::mt19937_64& rng) {
  if (is_integer(dt)) {
    const int bits = dtype_file_bits(dt);
    int64_t lo = 0, hi = std::numeric_limits<int64_t>::max();
    if (is_signed_int(dt) && bits < 64) {
      lo = -(int64_t{1} << (bits - 1));
      hi = (int64_t{1} << (bits - 1)) - 1;
    } else if (is_signed_int(dt)) {
      lo = std::numeric_limits<int64_t>::min();
    } else if (bits < 63) {
      hi = (int64_t{1} << bits) - 1;
    }
    if (range.lo < lo || range.hi > hi) {
      return usage_error("--int-range {},{} does not fit input '{}' ({} holds {}..{})", range.lo, range.hi, name,
                         dtype_name(dt), lo, hi);
    }
  }
  auto created = Tensor::create(dt, dims);
  if (!created.ok()) return created.status().with_context("input '" + name + "'");
  Tensor t = std::move(created).value();
  std::uniform_real_distribution<double> uf(-1.0, 1.0);
  std::uniform_int_distribution<int64_t> ui(range.lo, range.hi);
  std::bernoulli_distribution fair(0.5);
  for (int64_t i = 0; i < t.numel(); ++i) {
    if (dt == DataType::kInt64) {
      t.data<int64_t>()[i] = ui(rng);
    } else if (dt == DataType::kUInt64) {
      t.data<uint64_t>()[i] = static_cast<uint64_t>(ui(rng));
    } else if (is_integer(dt)) {
      // At most 32 bits: exact through a double.
      t.set_double(i, static_cast<double>(ui(rng)));
    } else if (dt == DataType::kBool) {
      t.set_double(i, fair(rng) ? 1.0 : 0.0);
    } else {
      t.set_double(i, uf(rng));
    }
  }
  return t;
}

Result<std::vector<RValue>> make_inputs(const std::vector<InputDecl>& decls, std::map<std::string, Tensor> files,
                                        const std::map<std::string, Dims>& dims, uint64_t seed, const IntRange& range,
                                        ShapeFlags flags, RandomInputs* random) {
  auto is_input = [&](const std::string& n) {
    return std::any_of(decls.begin(), decls.end(), [&](const InputDecl& d) { return d.name == n; });
  };
  for (const auto& [name, t] : files) {
    if (!is_input(name)) return usage_error("--input names '{}', which is not an input of the model", name);
  }
  for (const auto& [name, d] : dims) {
    if (!is_input(name)) return usage_error("a shape is given for '{}', which is not an input of the model", name);
  }
  std::mt19937_64 rng(seed);
  std::vector<RValue> inputs;
  for (const InputDecl& in : decls) {
    if (auto f = files.find(in.name); f != files.end()) {
      inputs.push_back(RValue::of(std::move(f->second)));
      continue;
    }
    if (in.type.kind != TypeInfo::Kind::kTensor || in.type.dtype == DataType::kString) {
      return usage_error("input '{}' is a {}: give it with --input {}=FILE.npy", in.name, in.type.to_string(), in.name);
    }
    Dims d;
    if (auto s = dims.find(in.name); s != dims.end()) {
      d = s->second;
    } else if (in.type.shape.fully_known()) {
      d = in.type.shape.static_dims();
    } else {
      return usage_error("input '{}' has dynamic shape {}: give {}", in.name, in.type.shape.to_string(),
                         shape_flags_hint(flags, in.name));
    }
    KILN_ASSIGN_OR_RETURN(Tensor t, random_tensor(in.name, in.type.dtype, d, range, rng));
    if (random) random->add(in.name, in.type.dtype);
    inputs.push_back(RValue::of(std::move(t)));
  }
  return inputs;
}

Result<std::vector<RValue>> plan_inputs(const Plan& plan, std::map<std::string, Tensor> files,
                                        std::map<std::string, Dims> shapes, uint64_t seed, const IntRange& range,
                                        RandomInputs* random) {
  std::vector<InputDecl> decls;
  for (int id : plan.inputs) {
    const Slot& slot = plan.slots[static_cast<size_t>(id)];
    decls.push_back({slot.name, slot.type});
  }
  // Shapes given for random inputs win over the profile's opt shape.
  for (const Profile& p : plan.profiles) {
    for (const ShapeRange& r : p.ranges) shapes.emplace(r.input, r.opt);
  }
  return make_inputs(decls, std::move(files), shapes, seed, range, ShapeFlags::kBuild, random);
}

}  // namespace kiln::cli
