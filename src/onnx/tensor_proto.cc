#include "onnx/tensor_proto.h"

#include <fstream>
#include <limits>

#include "onnx/onnx-data.pb.h"
#include "onnx/onnx-ml.pb.h"

namespace kiln {
namespace fs = std::filesystem;

namespace {

Result<std::string> read_external(const onnx::TensorProto& p, const fs::path& base_dir, size_t expected_bytes) {
  std::string location;
  int64_t offset = 0;
  int64_t length = -1;
  for (const auto& kv : p.external_data()) {
    if (kv.key() == "location") {
      location = kv.value();
    } else if (kv.key() == "offset") {
      offset = std::strtoll(kv.value().c_str(), nullptr, 10);
    } else if (kv.key() == "length") {
      length = std::strtoll(kv.value().c_str(), nullptr, 10);
    }
  }
  if (location.empty()) return invalid("tensor '{}': external data has no location", p.name());
  fs::path rel(location);
  if (rel.is_absolute() || location.find("..") != std::string::npos) {
    return invalid("tensor '{}': external data location '{}' must be a relative path inside the model folder", p.name(),
                   location);
  }
  if (base_dir.empty())
    return invalid("tensor '{}': external data '{}' but no model folder is known", p.name(), location);
  fs::path file = base_dir / rel;
  std::ifstream in(file, std::ios::binary);
  if (!in) return invalid("tensor '{}': cannot open external data file '{}'", p.name(), file.string());
  in.seekg(0, std::ios::end);
  int64_t file_size = static_cast<int64_t>(in.tellg());
  if (offset < 0 || offset > file_size) {
    return invalid("tensor '{}': external data offset {} is outside '{}' ({} bytes)", p.name(), offset, file.string(),
                   file_size);
  }
  if (length < 0) length = static_cast<int64_t>(expected_bytes);
  if (length != static_cast<int64_t>(expected_bytes)) {
    return invalid("tensor '{}': external data length {} does not match its shape ({} bytes expected)", p.name(),
                   length, expected_bytes);
  }
  if (offset + length > file_size) {
    return invalid("tensor '{}': external data [{}, {}) runs past the end of '{}' ({} bytes)", p.name(), offset,
                   offset + length, file.string(), file_size);
  }
  std::string data(static_cast<size_t>(length), '\0');
  in.seekg(offset);
  in.read(data.data(), length);
  if (!in) return invalid("tensor '{}': failed reading external data from '{}'", p.name(), file.string());
  return data;
}

// Sub-byte types are a little-endian bit stream: element i occupies bits [i*bits, (i+1)*bits),
// least significant bit first (4- and 2-bit values pack low nibble/pair first; 6-bit values
// straddle bytes). Signed values are sign-extended into their one-byte holder.
void unpack_bits(const uint8_t* src, int64_t n, int bits, bool is_signed, uint8_t* dst) {
  const uint32_t mask = (1u << bits) - 1;
  for (int64_t i = 0; i < n; ++i) {
    int64_t bit = i * bits;
    uint32_t window = src[bit / 8];
    if ((bit % 8) + bits > 8) window |= static_cast<uint32_t>(src[bit / 8 + 1]) << 8;
    uint8_t v = static_cast<uint8_t>((window >> (bit % 8)) & mask);
    if (is_signed && (v & (1u << (bits - 1)))) v |= static_cast<uint8_t>(~mask);
    dst[i] = v;
  }
}

void pack_bits(const uint8_t* src, int64_t n, int bits, std::string* out) {
  const uint32_t mask = (1u << bits) - 1;
  out->assign(static_cast<size_t>((n * bits + 7) / 8), '\0');
  for (int64_t i = 0; i < n; ++i) {
    int64_t bit = i * bits;
    uint32_t v = (src[i] & mask) << (bit % 8);
    (*out)[static_cast<size_t>(bit / 8)] |= static_cast<char>(v & 0xff);
    if ((bit % 8) + bits > 8) (*out)[static_cast<size_t>(bit / 8 + 1)] |= static_cast<char>(v >> 8);
  }
}

size_t packed_bytes(DataType t, int64_t n) {
  int bits = dtype_file_bits(t);
  if (bits >= 8) return static_cast<size_t>(n) * dtype_size(t);
  return static_cast<size_t>((n * bits + 7) / 8);
}

}  // namespace

Result<Tensor> tensor_from_proto(const onnx::TensorProto& p, const fs::path& base_dir) {
  const std::string name = p.name().empty() ? std::string("<unnamed>") : p.name();
  if (!dtype_valid(p.data_type())) return invalid("tensor '{}': unknown data type {}", name, p.data_type());
  DataType dt = static_cast<DataType>(p.data_type());
  Dims dims(p.dims().begin(), p.dims().end());
  for (int64_t d : dims) {
    if (d < 0) return invalid("tensor '{}': negative dimension {}", name, d);
  }
  if (p.has_segment()) return invalid("tensor '{}': segmented tensors are not supported", name);
  KILN_ASSIGN_OR_RETURN(Tensor t, Tensor::create(dt, dims));
  const int64_t n = t.numel();

  if (dt == DataType::kString) {
    if (p.string_data_size() != n) {
      return invalid("tensor '{}': {} strings for shape {}", name, p.string_data_size(), shape_to_string(dims));
    }
    for (int64_t i = 0; i < n; ++i) t.strings()[static_cast<size_t>(i)] = p.string_data(static_cast<int>(i));
    return t;
  }

  const size_t file_bytes = packed_bytes(dt, n);
  const std::string* raw = nullptr;
  std::string external;
  if (p.data_location() == onnx::TensorProto::EXTERNAL) {
    KILN_ASSIGN_OR_RETURN(external, read_external(p, base_dir, file_bytes));
    raw = &external;
  } else if (p.has_raw_data()) {
    raw = &p.raw_data();
  }
  const int bits = dtype_file_bits(dt);
  if (raw) {
    if (raw->size() != file_bytes) {
      return invalid("tensor '{}': raw data has {} bytes, shape {} of {} needs {}", name, raw->size(),
                     shape_to_string(dims), dtype_name(dt), file_bytes);
    }
    const auto* src = reinterpret_cast<const uint8_t*>(raw->data());
    if (bits < 8) {
      unpack_bits(src, n, bits, is_signed_int(dt), t.data<uint8_t>());
    } else if (dt == DataType::kBool) {
      for (int64_t i = 0; i < n; ++i) t.data<bool>()[i] = src[i] != 0;
    } else if (file_bytes) {
      std::memcpy(t.raw(), src, file_bytes);
    }
    return t;
  }

  // Typed fields. Their widths follow onnx.proto's comments on each field.
  auto count_error = [&](int64_t got) {
    return invalid("tensor '{}': {} values stored for shape {} ({} expected)", name, got, shape_to_string(dims), n);
  };
  switch (dt) {
    case DataType::kFloat:
      if (p.float_data_size() != n) return count_error(p.float_data_size());
      for (int64_t i = 0; i < n; ++i) t.data<float>()[i] = p.float_data(static_cast<int>(i));
      break;
    case DataType::kDouble:
      if (p.double_data_size() != n) return count_error(p.double_data_size());
      for (int64_t i = 0; i < n; ++i) t.data<double>()[i] = p.double_data(static_cast<int>(i));
      break;
    case DataType::kInt64:
      if (p.int64_data_size() != n) return count_error(p.int64_data_size());
      for (int64_t i = 0; i < n; ++i) t.data<int64_t>()[i] = p.int64_data(static_cast<int>(i));
      break;
    case DataType::kUInt32:
    case DataType::kUInt64:
      if (p.uint64_data_size() != n) return count_error(p.uint64_data_size());
      for (int64_t i = 0; i < n; ++i) {
        if (dt == DataType::kUInt32) {
          t.data<uint32_t>()[i] = static_cast<uint32_t>(p.uint64_data(static_cast<int>(i)));
        } else {
          t.data<uint64_t>()[i] = p.uint64_data(static_cast<int>(i));
        }
      }
      break;
    case DataType::kComplex64:
      if (p.float_data_size() != 2 * n) return count_error(p.float_data_size() / 2);
      for (int64_t i = 0; i < 2 * n; ++i) t.data<float>()[i] = p.float_data(static_cast<int>(i));
      break;
    case DataType::kComplex128:
      if (p.double_data_size() != 2 * n) return count_error(p.double_data_size() / 2);
      for (int64_t i = 0; i < 2 * n; ++i) t.data<double>()[i] = p.double_data(static_cast<int>(i));
      break;
    default: {
      // int32_data holds every other type: int8..int32, uint8, uint16, bool, float16/bfloat16 and
      // float8 bit patterns, and packed sub-byte values.
      if (bits < 8) {
        int64_t words = (n * bits + 7) / 8;
        if (p.int32_data_size() != words) return count_error(p.int32_data_size() * 8 / bits);
        std::vector<uint8_t> packed(static_cast<size_t>(words));
        for (int64_t i = 0; i < words; ++i)
          packed[static_cast<size_t>(i)] = static_cast<uint8_t>(p.int32_data(static_cast<int>(i)));
        unpack_bits(packed.data(), n, bits, is_signed_int(dt), t.data<uint8_t>());
        break;
      }
      if (p.int32_data_size() != n) return count_error(p.int32_data_size());
      for (int64_t i = 0; i < n; ++i) {
        int32_t v = p.int32_data(static_cast<int>(i));
        switch (dtype_size(dt)) {
          case 1:
            if (dt == DataType::kBool) {
              t.data<bool>()[i] = v != 0;
            } else {
              t.data<uint8_t>()[i] = static_cast<uint8_t>(v);
            }
            break;
          case 2: t.data<uint16_t>()[i] = static_cast<uint16_t>(v); break;
          case 4: t.data<int32_t>()[i] = v; break;
          default: return invalid("tensor '{}': unsupported storage for {}", name, dtype_name(dt));
        }
      }
    }
  }
  return t;
}

void tensor_to_proto(const Tensor& t, const std::string& name, onnx::TensorProto* p) {
  p->Clear();
  p->set_name(name);
  p->set_data_type(static_cast<int32_t>(t.dtype()));
  for (int64_t d : t.dims()) p->add_dims(d);
  if (t.dtype() == DataType::kString) {
    for (const auto& s : t.strings()) p->add_string_data(s);
    return;
  }
  int bits = dtype_file_bits(t.dtype());
  if (bits < 8) {
    pack_bits(t.data<uint8_t>(), t.numel(), bits, p->mutable_raw_data());
  } else {
    p->set_raw_data(t.raw(), t.nbytes());
  }
}

Result<TypeInfo> type_from_proto(const onnx::TypeProto& p) {
  TypeInfo t;
  auto read_shape = [](const onnx::TensorShapeProto& sp) {
    Shape s;
    s.rank_known = true;
    for (const auto& d : sp.dim()) {
      if (d.has_dim_value()) {
        s.dims.push_back(Dim::of(d.dim_value()));
      } else if (d.has_dim_param()) {
        s.dims.push_back(Dim::sym(d.dim_param()));
      } else {
        s.dims.push_back(Dim{});
      }
    }
    return s;
  };
  switch (p.value_case()) {
    case onnx::TypeProto::kTensorType:
      t.kind = TypeInfo::Kind::kTensor;
      t.dtype = static_cast<DataType>(p.tensor_type().elem_type());
      if (p.tensor_type().elem_type() != 0 && !dtype_valid(p.tensor_type().elem_type())) {
        return invalid("unknown tensor element type {}", p.tensor_type().elem_type());
      }
      if (p.tensor_type().has_shape()) t.shape = read_shape(p.tensor_type().shape());
      break;
    case onnx::TypeProto::kSparseTensorType:
      t.kind = TypeInfo::Kind::kSparseTensor;
      t.dtype = static_cast<DataType>(p.sparse_tensor_type().elem_type());
      if (p.sparse_tensor_type().has_shape()) t.shape = read_shape(p.sparse_tensor_type().shape());
      break;
    case onnx::TypeProto::kSequenceType: {
      t.kind = TypeInfo::Kind::kSequence;
      if (p.sequence_type().has_elem_type()) {
        KILN_ASSIGN_OR_RETURN(TypeInfo e, type_from_proto(p.sequence_type().elem_type()));
        t.elem = std::make_shared<TypeInfo>(std::move(e));
      }
      break;
    }
    case onnx::TypeProto::kOptionalType: {
      t.kind = TypeInfo::Kind::kOptional;
      if (p.optional_type().has_elem_type()) {
        KILN_ASSIGN_OR_RETURN(TypeInfo e, type_from_proto(p.optional_type().elem_type()));
        t.elem = std::make_shared<TypeInfo>(std::move(e));
      }
      break;
    }
    case onnx::TypeProto::kMapType: {
      t.kind = TypeInfo::Kind::kMap;
      t.key_type = static_cast<DataType>(p.map_type().key_type());
      if (p.map_type().has_value_type()) {
        KILN_ASSIGN_OR_RETURN(TypeInfo e, type_from_proto(p.map_type().value_type()));
        t.elem = std::make_shared<TypeInfo>(std::move(e));
      }
      break;
    }
    default: break;
  }
  return t;
}

void type_to_proto(const TypeInfo& t, onnx::TypeProto* p) {
  p->Clear();
  auto write_shape = [](const Shape& s, onnx::TensorShapeProto* sp) {
    for (const Dim& d : s.dims) {
      auto* dp = sp->add_dim();
      if (d.known()) {
        dp->set_dim_value(d.value);
      } else if (!d.symbol.empty()) {
        dp->set_dim_param(d.symbol);
      }
    }
  };
  switch (t.kind) {
    case TypeInfo::Kind::kTensor: {
      auto* tt = p->mutable_tensor_type();
      tt->set_elem_type(static_cast<int32_t>(t.dtype));
      if (t.shape.rank_known) write_shape(t.shape, tt->mutable_shape());
      break;
    }
    case TypeInfo::Kind::kSparseTensor: {
      auto* st = p->mutable_sparse_tensor_type();
      st->set_elem_type(static_cast<int32_t>(t.dtype));
      if (t.shape.rank_known) write_shape(t.shape, st->mutable_shape());
      break;
    }
    case TypeInfo::Kind::kSequence: {
      auto* sq = p->mutable_sequence_type();
      if (t.elem) type_to_proto(*t.elem, sq->mutable_elem_type());
      break;
    }
    case TypeInfo::Kind::kOptional: {
      auto* op = p->mutable_optional_type();
      if (t.elem) type_to_proto(*t.elem, op->mutable_elem_type());
      break;
    }
    case TypeInfo::Kind::kMap: {
      auto* mp = p->mutable_map_type();
      mp->set_key_type(static_cast<int32_t>(t.key_type));
      if (t.elem) type_to_proto(*t.elem, mp->mutable_value_type());
      break;
    }
    case TypeInfo::Kind::kUnknown: break;
  }
}

Result<RValue> sequence_from_proto(const onnx::SequenceProto& p) {
  std::vector<Tensor> items;
  if (p.elem_type() == onnx::SequenceProto::TENSOR || p.tensor_values_size() > 0) {
    for (const auto& tp : p.tensor_values()) {
      KILN_ASSIGN_OR_RETURN(Tensor t, tensor_from_proto(tp, {}));
      items.push_back(std::move(t));
    }
    return RValue::of_sequence(std::move(items));
  }
  if (p.elem_type() == onnx::SequenceProto::UNDEFINED) return RValue::of_sequence({});
  return invalid("sequence '{}': only sequences of tensors are supported", p.name());
}

Result<RValue> optional_from_proto(const onnx::OptionalProto& p) {
  switch (p.elem_type()) {
    case onnx::OptionalProto::TENSOR: {
      KILN_ASSIGN_OR_RETURN(Tensor t, tensor_from_proto(p.tensor_value(), {}));
      return RValue::of(std::move(t));
    }
    case onnx::OptionalProto::SEQUENCE: return sequence_from_proto(p.sequence_value());
    case onnx::OptionalProto::UNDEFINED: return RValue::none();
    default: return invalid("optional '{}': unsupported element kind {}", p.name(), static_cast<int>(p.elem_type()));
  }
}

Result<RValue> map_from_proto(const onnx::MapProto& p) {
  RValue v;
  v.kind = RValue::Kind::kMap;
  DataType kt = static_cast<DataType>(p.key_type());
  if (kt == DataType::kString) {
    std::vector<std::string> keys(p.string_keys().begin(), p.string_keys().end());
    v.map_keys = Tensor::from_vector(keys, {static_cast<int64_t>(keys.size())});
  } else {
    std::vector<int64_t> keys(p.keys().begin(), p.keys().end());
    v.map_keys = Tensor::from_vector(keys, {static_cast<int64_t>(keys.size())});
  }
  if (p.values().elem_type() != onnx::SequenceProto::TENSOR)
    return invalid("map '{}': values must be tensors", p.name());
  // Values are a sequence of scalars/tensors; flatten to one tensor.
  std::vector<Tensor> vals;
  for (const auto& tp : p.values().tensor_values()) {
    KILN_ASSIGN_OR_RETURN(Tensor t, tensor_from_proto(tp, {}));
    vals.push_back(std::move(t));
  }
  if (!vals.empty()) {
    Tensor out(vals[0].dtype(), {static_cast<int64_t>(vals.size())});
    for (size_t i = 0; i < vals.size(); ++i) copy_elements(out, static_cast<int64_t>(i), vals[i], 0, 1);
    v.map_values = out;
  }
  return v;
}

Result<RValue> read_value_file(const fs::path& file, const TypeInfo& expected) {
  std::ifstream in(file, std::ios::binary);
  if (!in) return invalid("cannot open '{}'", file.string());
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto fail = [&](const char* what) { return invalid("'{}' is not a valid serialized {}", file.string(), what); };
  switch (expected.kind) {
    case TypeInfo::Kind::kSequence: {
      onnx::SequenceProto p;
      if (!p.ParseFromString(bytes)) return fail("SequenceProto");
      return sequence_from_proto(p);
    }
    case TypeInfo::Kind::kOptional: {
      onnx::OptionalProto p;
      if (!p.ParseFromString(bytes)) return fail("OptionalProto");
      return optional_from_proto(p);
    }
    case TypeInfo::Kind::kMap: {
      onnx::MapProto p;
      if (!p.ParseFromString(bytes)) return fail("MapProto");
      return map_from_proto(p);
    }
    default: {
      onnx::TensorProto p;
      if (!p.ParseFromString(bytes)) return fail("TensorProto");
      auto r = tensor_from_proto(p, file.parent_path());
      if (!r.ok()) return r.status().with_context(file.string());
      return RValue::of(std::move(r).value());
    }
  }
}

void plain_attribute_from_proto(const onnx::AttributeProto& ap, int type, Attribute* a) {
  switch (type) {
    case onnx::AttributeProto::FLOAT:
      a->type = AttrType::kFloat;
      a->f = ap.f();
      break;
    case onnx::AttributeProto::INT:
      a->type = AttrType::kInt;
      a->i = ap.i();
      break;
    case onnx::AttributeProto::STRING:
      a->type = AttrType::kString;
      a->s = ap.s();
      break;
    case onnx::AttributeProto::FLOATS:
      a->type = AttrType::kFloats;
      a->floats.assign(ap.floats().begin(), ap.floats().end());
      break;
    case onnx::AttributeProto::INTS:
      a->type = AttrType::kInts;
      a->ints.assign(ap.ints().begin(), ap.ints().end());
      break;
    case onnx::AttributeProto::STRINGS:
      a->type = AttrType::kStrings;
      a->strings.assign(ap.strings().begin(), ap.strings().end());
      break;
    default: break;
  }
}

}  // namespace kiln
