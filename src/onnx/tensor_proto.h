#pragma once
// Conversions between ONNX protobuf messages and Kiln's runtime values.
#include <filesystem>
#include <string>

#include "core/rvalue.h"
#include "core/status.h"
#include "core/tensor.h"
#include "ir/graph.h"

namespace onnx {
class TensorProto;
class TypeProto;
class SequenceProto;
class OptionalProto;
class MapProto;
class AttributeProto;
}  // namespace onnx

namespace kiln {

// Decodes a TensorProto. `base_dir` resolves external data (empty: external data is refused).
// Errors name the tensor.
Result<Tensor> tensor_from_proto(const onnx::TensorProto& p, const std::filesystem::path& base_dir);
void tensor_to_proto(const Tensor& t, const std::string& name, onnx::TensorProto* p);

// Fills `a` from an attribute of one of the plain kinds (FLOAT, INT, STRING and their lists),
// read as `type` (the importer infers it for old files that leave it unset).
void plain_attribute_from_proto(const onnx::AttributeProto& ap, int type, Attribute* a);

Result<TypeInfo> type_from_proto(const onnx::TypeProto& p);
// The inverse of type_from_proto: known dims as dim_value, symbols as dim_param, unknown dims
// empty; an unknown type leaves `p` empty.
void type_to_proto(const TypeInfo& t, onnx::TypeProto* p);

Result<RValue> sequence_from_proto(const onnx::SequenceProto& p);
Result<RValue> optional_from_proto(const onnx::OptionalProto& p);
Result<RValue> map_from_proto(const onnx::MapProto& p);

// Reads a serialized TensorProto / SequenceProto / OptionalProto / MapProto file, choosing by
// the expected type (a tensor when the type is unknown).
Result<RValue> read_value_file(const std::filesystem::path& file, const TypeInfo& expected);

}  // namespace kiln
