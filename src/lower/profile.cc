#include <map>
#include <set>

#include "lower/stages.h"

namespace kiln {
namespace {

std::string dims_str(const Dims& d) {
  return shape_to_string(d);
}

}  // namespace

// Resolves the shape options into one range per tensor input, checking them against the model.
Result<Profile> resolve_profile(const Graph& g, const BuildOptions& o) {
  std::set<std::string> names;
  std::string listing;
  for (const Value* v : g.inputs) {
    names.insert(v->name);
    listing += (listing.empty() ? "" : ", ") + v->name;
  }
  for (const auto* m : {&o.shapes, &o.min_shapes, &o.opt_shapes, &o.max_shapes}) {
    for (const auto& [name, d] : *m) {
      if (!names.count(name))
        return usage_error("shapes given for '{}', which is not an input (inputs: {})", name, listing);
    }
  }
  Profile p;
  for (const Value* v : g.inputs) {
    const std::string& n = v->name;
    bool fixed = o.shapes.count(n) > 0;
    bool ranged = o.min_shapes.count(n) || o.opt_shapes.count(n) || o.max_shapes.count(n);
    if (fixed && ranged) return usage_error("input '{}': give either a fixed shape or min/opt/max shapes, not both", n);
    if (v->type.kind != TypeInfo::Kind::kTensor) {
      if (fixed || ranged)
        return usage_error("input '{}' is a {}, not a tensor: it takes no shape", n, v->type.to_string());
      continue;
    }
    ShapeRange r;
    r.input = n;
    if (fixed) {
      r.min = r.opt = r.max = o.shapes.at(n);
    } else if (ranged) {
      if (!o.min_shapes.count(n) || !o.max_shapes.count(n)) {
        return usage_error("input '{}': a profile needs both --min-shapes and --max-shapes", n);
      }
      r.min = o.min_shapes.at(n);
      r.max = o.max_shapes.at(n);
      r.opt = o.opt_shapes.count(n) ? o.opt_shapes.at(n) : r.max;
      if (r.min.size() != r.max.size() || r.opt.size() != r.max.size()) {
        return usage_error("input '{}': min {}, opt {} and max {} shapes differ in rank", n, dims_str(r.min),
                           dims_str(r.opt), dims_str(r.max));
      }
      for (size_t i = 0; i < r.min.size(); ++i) {
        if (r.min[i] > r.opt[i] || r.opt[i] > r.max[i]) {
          return usage_error("input '{}': dimension {} must satisfy min <= opt <= max (min {}, opt {}, max {})", n, i,
                             dims_str(r.min), dims_str(r.opt), dims_str(r.max));
        }
      }
    } else {
      if (!v->type.shape.fully_known()) {
        return usage_error("input '{}' has dynamic shape {}: give --shapes {}:... or --min-shapes/--max-shapes", n,
                           v->type.shape.to_string(), n);
      }
      r.min = r.opt = r.max = v->type.shape.static_dims();
    }
    const Shape& decl = v->type.shape;
    if (decl.rank_known) {
      if (decl.rank() != static_cast<int64_t>(r.max.size())) {
        return usage_error("input '{}': shape {} has rank {}, the model declares {} (rank {})", n, dims_str(r.max),
                           r.max.size(), decl.to_string(), decl.rank());
      }
      for (size_t i = 0; i < r.max.size(); ++i) {
        const Dim& d = decl.dims[i];
        if (d.known() && (r.min[i] != d.value || r.max[i] != d.value)) {
          return usage_error("input '{}': dimension {} is fixed to {} by the model, the shapes give {}..{}", n, i,
                             d.value, r.min[i], r.max[i]);
        }
      }
    }
    p.ranges.push_back(std::move(r));
  }
  return p;
}

void apply_profile(Graph& g, const Profile& p, bool at_max) {
  for (Value* v : g.inputs) {
    for (const ShapeRange& r : p.ranges) {
      if (r.input != v->name) continue;
      Shape s;
      s.rank_known = true;
      for (size_t i = 0; i < r.max.size(); ++i) {
        if (at_max || r.min[i] == r.max[i]) {
          s.dims.push_back(Dim::of(r.max[i]));
        } else {
          const Shape& old = v->type.shape;
          std::string sym = old.rank_known && i < old.dims.size() && !old.dims[i].symbol.empty()
                                ? old.dims[i].symbol
                                : v->name + "_dim" + std::to_string(i);
          s.dims.push_back(Dim::sym(sym));
        }
      }
      v->type.shape = std::move(s);
    }
  }
}

// Inferred values keep declared symbolic dims where inference cannot decide, so intermediate
// types are cleared before inference derives them from the inputs.
void clear_intermediate_types(Graph& g) {
  std::set<const Value*> keep(g.inputs.begin(), g.inputs.end());
  keep.insert(g.initializers.begin(), g.initializers.end());
  for (const auto& v : g.values()) {
    if (!keep.count(v.get()) && !v->outer_scope && v->producer) {
      TypeInfo::Kind k = v->type.kind;
      DataType dt = v->type.dtype;
      if (k == TypeInfo::Kind::kTensor) v->type = TypeInfo::tensor(dt);
    }
  }
}

Result<DimRanges> symbol_ranges(const Graph& g, const Profile& profile) {
  DimRanges ranges;
  std::map<std::string, std::string> first_input;
  for (const Value* v : g.inputs) {
    if (v->type.kind != TypeInfo::Kind::kTensor || !v->type.shape.rank_known) continue;
    for (const ShapeRange& r : profile.ranges) {
      if (r.input != v->name) continue;
      for (size_t i = 0; i < v->type.shape.dims.size() && i < r.min.size(); ++i) {
        const Dim& d = v->type.shape.dims[i];
        if (d.known() || d.symbol.empty()) continue;
        auto [it, fresh] = ranges.emplace(d.symbol, std::make_pair(r.min[i], r.max[i]));
        first_input.emplace(d.symbol, v->name);
        if (fresh) continue;
        it->second = {std::max(it->second.first, r.min[i]), std::min(it->second.second, r.max[i])};
        if (it->second.first > it->second.second) {
          return usage_error(
              "inputs '{}' and '{}' name a dimension '{}' alike, so it must be equal in both, but their shape ranges "
              "for it do not overlap",
              first_input[d.symbol], v->name, d.symbol);
        }
      }
    }
  }
  return ranges;
}

}  // namespace kiln
