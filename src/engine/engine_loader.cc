// Loading an engine file: every byte is checked before anything is built from it, in the order
// that gives the most useful message (a newer format before a checksum, a device mismatch before
// the plan's details).
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <set>

#include "core/file_mapping.h"
#include "engine/engine.h"
#include "engine/engine_format.h"
#include "engine/engine_json.h"
#include "onnx/exported_reader.h"

namespace kiln {

namespace ef = engine_format;
using engine_detail::PlanSection;
using engine_detail::WeightEntry;

namespace {

std::string section_name(uint32_t kind) {
  std::string s(4, ' ');
  for (int i = 0; i < 4; ++i) {
    char c = static_cast<char>((kind >> (8 * i)) & 0xff);
    s[static_cast<size_t>(i)] = (c >= 0x20 && c < 0x7f) ? c : '?';
  }
  return s;
}

// How an instruction-set extension recorded in BuildInfo::requires_isa reads in a message:
// "AVX-512 BF16 (avx512_bf16)".
std::string isa_display_name(const std::string& flag) {
  static const std::map<std::string, std::string> kNames = {
      {"avx2", "AVX2"},
      {"fma", "FMA"},
      {"avx512f", "AVX-512"},
      {"avx512bw", "AVX-512 BW"},
      {"avx512_bf16", "AVX-512 BF16"},
      {"avx512_vnni", "AVX-512 VNNI"},
      {"amx_tile", "AMX"},
      {"amx_bf16", "AMX BF16"},
  };
  auto it = kNames.find(flag);
  return it == kNames.end() ? flag : fmt::format("{} ({})", it->second, flag);
}

// The machine name as engines record it (first part of BuildInfo::device_arch for CPUs).
std::string_view host_machine() {
#if defined(__x86_64__)
  return "x86_64";
#elif defined(__aarch64__)
  return "aarch64";
#elif defined(__powerpc64__)
  return "ppc64le";
#elif defined(__riscv)
  return "riscv64";
#else
  return "";
#endif
}

struct Section {
  uint64_t offset = 0, size = 0;
};

class Loader {
 public:
  Loader(std::shared_ptr<const void> owner, std::span<const uint8_t> bytes, std::string source,
         const LoadOptions& options)
      : owner_(std::move(owner)), bytes_(bytes), source_(std::move(source)), options_(options) {}

  Result<std::shared_ptr<Plan>> run() {
    KILN_RETURN_IF_ERROR(check_header());
    KILN_RETURN_IF_ERROR(read_section_table());
    plan_ = std::make_shared<Plan>();
    Status meta = engine_detail::read_meta(section(ef::kMeta), *plan_);
    if (!meta.ok()) return meta.with_context(source_);
    KILN_RETURN_IF_ERROR(check_device());
    auto ps = engine_detail::read_plan(section(ef::kPlan));
    if (!ps.ok()) return ps.status().with_context(source_);
    PlanSection p = std::move(ps).value();
    KILN_RETURN_IF_ERROR(read_weights(p.weights));
    KILN_RETURN_IF_ERROR(read_graph(p.weights));
    KILN_RETURN_IF_ERROR(link(p));
    return plan_;
  }

 private:
  template <typename... Args>
  Status fail(fmt::format_string<Args...> f, Args&&... args) const {
    return invalid("{}: {}", source_, fmt::format(f, std::forward<Args>(args)...));
  }

  std::span<const uint8_t> section(uint32_t kind) const {
    const Section& s = sections_.at(kind);
    return bytes_.subspan(s.offset, s.size);
  }

  Status check_header() {
    const size_t n = bytes_.size();
    if (n == 0) return fail("the file is empty, not a Kiln engine file");
    if (std::memcmp(bytes_.data(), ef::kMagic, std::min(n, sizeof(ef::kMagic))) != 0) {
      return fail("not a Kiln engine file (no KILNENG magic at the start)");
    }
    if (n < ef::kVersionOffset + 4) return fail("truncated: expected {} bytes, file has {}", ef::kHeaderSize, n);
    const uint32_t version = ef::load32(bytes_.data() + ef::kVersionOffset);
    if (version > ef::kFormatVersion) {
      return fail("built by a newer Kiln: format version {}, this Kiln reads up to {}", version, ef::kFormatVersion);
    }
    if (version == 0) return fail("corrupt: format version 0");
    if (version < ef::kFormatVersion) {
      return fail("built by an older Kiln: format version {}, this Kiln reads version {}; rebuild the engine", version,
                  ef::kFormatVersion);
    }
    if (n < ef::kHeaderSize) return fail("truncated: expected {} bytes, file has {}", ef::kHeaderSize, n);
    const uint8_t* h = bytes_.data();
    if (ef::load64(h + ef::kHeaderChecksumOffset) != ef::hash64(bytes_.first(ef::kHeaderChecksumOffset))) {
      return fail("corrupt: header checksum mismatch");
    }
    if (ef::load32(h + ef::kHeaderSizeOffset) != ef::kHeaderSize) {
      return fail("corrupt: header size {} (format version 1 has {})", ef::load32(h + ef::kHeaderSizeOffset),
                  ef::kHeaderSize);
    }
    const uint64_t file_size = ef::load64(h + ef::kFileSizeOffset);
    if (n < file_size) return fail("truncated: expected {} bytes, file has {}", file_size, n);
    if (n > file_size) return fail("corrupt: the file has {} bytes but its header says {}", n, file_size);
    if (ef::load64(h + ef::kBodyChecksumOffset) != ef::hash64(bytes_.subspan(ef::kHeaderSize))) {
      return fail("corrupt: checksum mismatch");
    }
    const uint32_t flags = ef::load32(h + ef::kFlagsOffset);
    if ((flags & ~ef::kKnownFlags) != 0) {
      return fail("uses features this Kiln does not know (flags 0x{:x}); rebuild it", flags & ~ef::kKnownFlags);
    }
    flags_ = flags;
    if (ef::load64(h + ef::kReservedOffset) != 0) return fail("corrupt: reserved header bytes are not zero");
    return {};
  }

  Status read_section_table() {
    const uint64_t size = bytes_.size();
    const uint64_t table = ef::load64(bytes_.data() + ef::kTableOffsetOffset);
    const uint32_t count = ef::load32(bytes_.data() + ef::kSectionCountOffset);
    if (count == 0 || count > kMaxSections) return fail("corrupt: {} sections", count);
    if (table < ef::kHeaderSize || table % 8 != 0 || table > size || count * ef::kSectionEntrySize > size - table) {
      return fail("corrupt: the section table [{}, +{} entries) lies outside the file", table, count);
    }
    const uint64_t table_end = table + count * ef::kSectionEntrySize;
    std::vector<std::pair<uint64_t, uint64_t>> ranges;  // [offset, end)
    for (uint32_t i = 0; i < count; ++i) {
      const uint8_t* e = bytes_.data() + table + i * ef::kSectionEntrySize;
      const uint32_t kind = ef::load32(e);
      const std::string name = section_name(kind);
      Section s{ef::load64(e + 8), ef::load64(e + 16)};
      if (kind != ef::kMeta && kind != ef::kGraph && kind != ef::kPlan && kind != ef::kWeights) {
        return fail("corrupt: unknown section '{}'", name);
      }
      if (ef::load32(e + 4) != 0 || ef::load64(e + 24) != 0)
        return fail("corrupt: section {}: reserved fields are not zero", name);
      if (sections_.count(kind)) return fail("corrupt: section {} appears twice", name);
      const uint64_t alignment = kind == ef::kWeights ? ef::kWeightsAlignment : ef::kSectionAlignment;
      if (s.offset % alignment != 0) return fail("corrupt: section {} at offset {} is not aligned", name, s.offset);
      if (s.offset < table_end || s.offset > size || s.size > size - s.offset) {
        return fail("corrupt: section {} [{}, {}) lies outside the file's data ({} bytes)", name, s.offset,
                    s.offset + std::min(s.size, size), size);
      }
      sections_[kind] = s;
      ranges.emplace_back(s.offset, s.offset + s.size);
    }
    std::sort(ranges.begin(), ranges.end());
    for (size_t i = 1; i < ranges.size(); ++i) {
      if (ranges[i].first < ranges[i - 1].second)
        return fail("corrupt: sections overlap at offset {}", ranges[i].first);
    }
    for (uint32_t kind : {ef::kMeta, ef::kPlan, ef::kGraph, ef::kWeights}) {
      if (!sections_.count(kind)) return fail("corrupt: no {} section", section_name(kind));
    }
    return {};
  }

  Status check_device() {
    const BuildInfo& b = plan_->info;
    const auto& devices = options_.devices;
    const std::string built_for = b.device_arch.empty() ? b.device : b.device + " " + b.device_arch;
    if (std::find(devices.begin(), devices.end(), b.device) == devices.end()) {
      return fail("built for {}; this machine has no {} device", built_for,
                  b.device == "cuda" ? std::string("CUDA") : b.device);
    }
    if (b.device == "cuda" && !b.device_arch.empty() && !options_.cuda_arch.empty() &&
        b.device_arch != options_.cuda_arch) {
      return fail("built for {}; this machine's GPU is {}", built_for, options_.cuda_arch);
    }
    if (b.device == "cpu" && !b.device_arch.empty()) {
      // CPU engines record "<machine>+<isa extensions>"; only the machine is checked here, the
      // backend picks kernels for the features present.
      static const std::set<std::string> kMachines = {"x86_64", "aarch64", "ppc64le", "riscv64", "s390x"};
      const std::string machine = b.device_arch.substr(0, b.device_arch.find('+'));
      if (kMachines.count(machine) && machine != host_machine()) {
        return fail("built for {}; this machine is {}", built_for, host_machine());
      }
    }
    if (options_.cpu_isa) {
      std::string missing;
      for (const std::string& need : b.requires_isa) {
        const auto& have = *options_.cpu_isa;
        if (std::find(have.begin(), have.end(), need) == have.end()) {
          missing += (missing.empty() ? "" : ", ") + isa_display_name(need);
        }
      }
      if (!missing.empty()) {
        return fail(
            "needs CPU instructions this CPU lacks, or that KILN_CPU_ISA caps: {} (built on {}); rebuild the engine "
            "on this machine",
            missing, b.device_name.empty() ? built_for : b.device_name);
      }
    }
    return {};
  }

  Status read_weights(const std::vector<WeightEntry>& entries) {
    const std::span<const uint8_t> blob = section(ef::kWeights);
    std::vector<std::pair<int64_t, int64_t>> ranges;
    for (size_t i = 0; i < entries.size(); ++i) {
      const WeightEntry& e = entries[i];
      if (e.name.empty()) return fail("corrupt: weight {} has no name", i);
      if (!weight_index_.emplace(e.name, i).second) return fail("corrupt: two weights are named '{}'", e.name);
      const uint64_t off = static_cast<uint64_t>(e.offset), size = static_cast<uint64_t>(e.size);
      if (off % ef::kBlobAlignment != 0) return fail("corrupt: weight '{}' at offset {} is not aligned", e.name, off);
      if (off > blob.size() || size > blob.size() - off) {
        return fail("corrupt: weight '{}' [{}, +{}) lies outside the weights section ({} bytes)", e.name, off, size,
                    blob.size());
      }
      if (size) ranges.emplace_back(e.offset, e.offset + e.size);
      const int64_t numel = shape_numel(e.dims);
      if (numel < 0) return fail("corrupt: weight '{}' has an overflowing shape", e.name);
      const uint8_t* data = blob.data() + off;
      std::shared_ptr<Tensor> t;
      if (!e.packing.empty()) {
        // Packed for its kernel: the bytes are that kernel's to read (it checks the packing).
        if (!(flags_ & ef::kFlagPackedWeights))
          return fail("corrupt: weight '{}' is packed, the header says none is", e.name);
        if (e.dtype == DataType::kString || size == 0)
          return fail("corrupt: weight '{}' is packed but {}", e.name, size == 0 ? "empty" : "a string tensor");
        std::shared_ptr<uint8_t[]> view(owner_, const_cast<uint8_t*>(data));
        t = std::make_shared<Tensor>(Tensor::wrap_packed(e.dtype, e.dims, std::move(view), size, e.packing));
      } else if (e.dtype == DataType::kString) {
        KILN_ASSIGN_OR_RETURN(t, decode_strings(e, numel, data));
      } else {
        const int64_t elem = static_cast<int64_t>(dtype_size(e.dtype));
        if (numel > std::numeric_limits<int64_t>::max() / elem || numel * elem != e.size) {
          return fail("corrupt: weight '{}' has {} bytes, {}[{}] needs {}", e.name, e.size, dtype_name(e.dtype),
                      shape_to_string(e.dims), numel > std::numeric_limits<int64_t>::max() / elem ? -1 : numel * elem);
        }
        // Reading a bool that is neither 0 nor 1 is undefined behaviour.
        if (e.dtype == DataType::kBool) {
          for (uint64_t k = 0; k < size; ++k) {
            if (data[k] > 1) return fail("corrupt: bool weight '{}' holds the byte {}", e.name, data[k]);
          }
        }
        // The weight aliases the mapping and keeps it alive.
        std::shared_ptr<uint8_t[]> view(owner_, const_cast<uint8_t*>(data));
        t = std::make_shared<Tensor>(Tensor::wrap(e.dtype, e.dims, std::move(view)));
      }
      plan_->weights.push_back(std::move(t));
    }
    std::sort(ranges.begin(), ranges.end());
    for (size_t i = 1; i < ranges.size(); ++i) {
      if (ranges[i].first < ranges[i - 1].second) return fail("corrupt: weights overlap at offset {}", ranges[i].first);
    }
    return {};
  }

  Result<std::shared_ptr<Tensor>> decode_strings(const WeightEntry& e, int64_t numel, const uint8_t* data) {
    // Each element takes at least its 8-byte length: bounds the allocation by the file's size.
    if (numel > e.size / 8) return fail("corrupt: string weight '{}' is too short for {} strings", e.name, numel);
    auto t = Tensor::create(DataType::kString, e.dims);
    if (!t.ok()) return t.status().with_context(source_ + ": weight '" + e.name + "'");
    uint64_t at = 0;
    const uint64_t size = static_cast<uint64_t>(e.size);
    for (std::string& s : t->strings()) {
      if (size - at < 8) return fail("corrupt: string weight '{}' is truncated", e.name);
      const uint64_t len = ef::load64(data + at);
      at += 8;
      if (len > size - at) return fail("corrupt: string weight '{}' is truncated", e.name);
      s.assign(reinterpret_cast<const char*>(data + at), len);
      at += len;
    }
    if (at != size) return fail("corrupt: string weight '{}' has {} stray bytes", e.name, size - at);
    return std::make_shared<Tensor>(std::move(t).value());
  }

  Status read_graph(const std::vector<WeightEntry>& entries) {
    std::vector<bool> bound(entries.size(), false);
    ExportedReadOptions ro;
    ro.initializer_data = [&](const std::string& name, DataType dt,
                              const Dims& dims) -> Result<std::shared_ptr<Tensor>> {
      auto it = weight_index_.find(name);
      if (it == weight_index_.end()) return fail("corrupt: initializer '{}' has no weight", name);
      const WeightEntry& e = entries[it->second];
      if (e.dtype != dt || e.dims != dims) {
        return fail("corrupt: weight '{}' is {}[{}] but the graph's initializer is {}[{}]", name, dtype_name(e.dtype),
                    shape_to_string(e.dims), dtype_name(dt), shape_to_string(dims));
      }
      bound[it->second] = true;
      return plan_->weights[it->second];
    };
    auto model = read_exported_onnx(section(ef::kGraph), source_ + ": graph section", ro);
    if (!model.ok()) return model.status();
    plan_->graph = model->graph;
    for (size_t i = 0; i < entries.size(); ++i) {
      if (!bound[i]) return fail("corrupt: weight '{}' is not an initializer of the graph", entries[i].name);
    }
    return {};
  }

  // Checks every index of the plan against the graph and the weights, then points steps at nodes.
  Status link(PlanSection& p) {
    const Graph& g = *plan_->graph;
    const int64_t nslots = static_cast<int64_t>(p.slots.size());
    std::set<std::string> names;
    std::vector<int> weight_slot(plan_->weights.size(), -1);
    for (int64_t i = 0; i < nslots; ++i) {
      const Slot& s = p.slots[static_cast<size_t>(i)];
      if (!names.insert(s.name).second) return fail("corrupt: two slots are named '{}'", s.name);
      const Value* v = g.find_value(s.name);
      if (!v || v->outer_scope)
        return fail("corrupt: slot {} names '{}', which is not a value of the graph", i, s.name);
      if ((s.kind == SlotKind::kWeight) != (s.weight >= 0)) {
        return fail("corrupt: slot '{}' is of kind {} with weight {}", s.name, slot_kind_name(s.kind), s.weight);
      }
      if (s.weight >= 0) {
        int& owner = weight_slot[static_cast<size_t>(s.weight)];
        if (owner >= 0) return fail("corrupt: weight {} belongs to two slots", s.weight);
        owner = static_cast<int>(i);
        if (p.weights[static_cast<size_t>(s.weight)].name != s.name || !v->initializer) {
          return fail("corrupt: slot '{}' refers to weight '{}'", s.name,
                      p.weights[static_cast<size_t>(s.weight)].name);
        }
      }
      if (s.in_place_of == i) return fail("corrupt: slot '{}' is in place of itself", s.name);
      if (s.storage.device != "cpu" && s.storage.device != plan_->info.device) {
        return fail("corrupt: slot '{}' is stored on {} in an engine for {}", s.name, s.storage.device,
                    plan_->info.device);
      }
      if (s.offset >= 0) {
        // A device plan's host slots live in the host arena, the others in the device's.
        const bool host = s.storage.device == "cpu" && plan_->info.device != "cpu";
        const int64_t arena = host ? plan_->memory.host_arena : plan_->memory.arena;
        if (s.bytes < 0 || s.bytes > arena || s.offset > arena - s.bytes) {
          return fail("corrupt: slot '{}' [{}, +{}) lies outside the {} byte {}arena", s.name, s.offset, s.bytes, arena,
                      host ? "host " : "");
        }
      }
    }
    for (size_t w = 0; w < weight_slot.size(); ++w) {
      if (weight_slot[w] < 0) return fail("corrupt: weight '{}' belongs to no slot", p.weights[w].name);
    }
    const auto& nodes = g.nodes();
    for (size_t i = 0; i < p.steps.size(); ++i) {
      Step& s = p.steps[i];
      const int64_t idx = p.step_nodes[i];
      if (idx < 0 || static_cast<size_t>(idx) >= nodes.size()) {
        return fail("corrupt: step {} ('{}') runs node {}, but the graph has {} nodes", i, s.name, idx, nodes.size());
      }
      s.node = nodes[static_cast<size_t>(idx)].get();
      KILN_RETURN_IF_ERROR(match(s, s.inputs, s.node->inputs, "input", p.slots));
      KILN_RETURN_IF_ERROR(match(s, s.outputs, s.node->outputs, "output", p.slots));
    }
    KILN_RETURN_IF_ERROR(match_io(p.inputs, g.inputs, "input", p.slots));
    KILN_RETURN_IF_ERROR(match_io(p.outputs, g.outputs, "output", p.slots));
    plan_->slots = std::move(p.slots);
    plan_->steps = std::move(p.steps);
    plan_->inputs = std::move(p.inputs);
    plan_->outputs = std::move(p.outputs);
    plan_->binaries = std::move(p.binaries);
    return {};
  }

  Status match(const Step& s, const std::vector<int>& ids, const std::vector<Value*>& values, const char* what,
               const std::vector<Slot>& slots) const {
    if (ids.size() != values.size()) {
      return fail("corrupt: step '{}' has {} {}s, its node {} has {}", s.name, ids.size(), what, s.node->describe(),
                  values.size());
    }
    for (size_t k = 0; k < ids.size(); ++k) {
      const Value* v = values[k];
      const int id = ids[k];
      if ((id < 0) != (v == nullptr) || (v && slots[static_cast<size_t>(id)].name != v->name)) {
        return fail("corrupt: step '{}' {} {} is slot {}, which is not its node's {} '{}'", s.name, what, k, id, what,
                    v ? v->name : std::string());
      }
    }
    return {};
  }

  Status match_io(const std::vector<int>& ids, const std::vector<Value*>& values, const char* what,
                  const std::vector<Slot>& slots) const {
    if (ids.size() != values.size()) {
      return fail("corrupt: the plan has {} {}s, its graph {}", ids.size(), what, values.size());
    }
    for (size_t k = 0; k < ids.size(); ++k) {
      if (slots[static_cast<size_t>(ids[k])].name != values[k]->name) {
        return fail("corrupt: plan {} {} is slot '{}', the graph's is '{}'", what, k,
                    slots[static_cast<size_t>(ids[k])].name, values[k]->name);
      }
    }
    return {};
  }

  static constexpr uint32_t kMaxSections = 64;

  std::shared_ptr<const void> owner_;
  std::span<const uint8_t> bytes_;
  std::string source_;
  const LoadOptions& options_;
  std::map<uint32_t, Section> sections_;
  std::map<std::string, size_t> weight_index_;
  uint32_t flags_ = 0;
  std::shared_ptr<Plan> plan_;
};

}  // namespace

Result<std::shared_ptr<Plan>> load_engine(const std::string& path, const LoadOptions& options) {
  KILN_ASSIGN_OR_RETURN(std::shared_ptr<FileMapping> mapping, FileMapping::open(path));
  std::span<const uint8_t> bytes = mapping->bytes();
  return Loader(std::move(mapping), bytes, path, options).run();
}

Result<std::shared_ptr<Plan>> load_engine_bytes(std::span<const uint8_t> bytes, const LoadOptions& options) {
  // Weights become views into the image, so the caller's bytes are copied into a buffer the plan
  // owns, page-aligned like a mapping so that blob alignment carries over.
  const size_t capacity =
      std::max<size_t>(1, (bytes.size() + ef::kWeightsAlignment - 1) / ef::kWeightsAlignment) * ef::kWeightsAlignment;
  void* buffer = std::aligned_alloc(ef::kWeightsAlignment, capacity);
  if (!buffer) return runtime_error("out of memory copying a {} byte engine", bytes.size());
  std::shared_ptr<uint8_t> owner(static_cast<uint8_t*>(buffer), [](uint8_t* q) { std::free(q); });
  if (!bytes.empty()) std::memcpy(owner.get(), bytes.data(), bytes.size());
  std::span<const uint8_t> copy(owner.get(), bytes.size());
  return Loader(std::move(owner), copy, "engine", options).run();
}

}  // namespace kiln
