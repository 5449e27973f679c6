#pragma once
// The engine file layout, format version 2. All integers are little-endian.
//
//   offset  size  header (kHeaderSize = 64 bytes)
//   0       8     magic "KILNENG\0"
//   8       4     u32 format version (2; version 1 files, before storage, are refused: rebuild)
//   12      4     u32 header size (64)
//   16      8     u64 file size: the file ends exactly here
//   24      8     u64 section table offset (64: right after the header)
//   32      4     u32 section count (4)
//   36      4     u32 flags (a set bit is a feature the file uses; a reader refuses a file with a
//                 bit it does not know): kFlagPackedWeights (1) where a weight is packed
//   40      8     u64 body checksum: hash64 of bytes [header size, file size)
//   48      8     u64 reserved (0)
//   56      8     u64 header checksum: hash64 of bytes [0, 56)
//
// Section table: `section count` entries of kSectionEntrySize = 32 bytes:
//   u32 kind (FourCC, below), u32 reserved (0), u64 offset, u64 size, u64 reserved (0)
// Each kind appears exactly once. Sections lie after the table, inside the file, without
// overlapping; each starts on a kSectionAlignment boundary, WEIGHTS on a kWeightsAlignment (page)
// boundary so a mapped file can hand out aligned weight pointers. Gaps are zero bytes.
//
//   META     JSON object: "build" (BuildInfo: kiln_version, device, device_name, device_arch,
//            backend, precisions[], options{}, libraries{}), "profiles" ([{ranges: [{input,
//            min[], opt[], max[]}]}]), "memory" (MemoryStats fields), "passes_fired" {name: n},
//            "source_nodes", "opset".
//   GRAPH    ONNX ModelProto bytes of Plan::graph written by export_onnx with top-level
//            initializer data omitted; read back by read_exported_onnx (node order, per-node
//            opsets and types preserved).
//   PLAN     JSON object:
//              "slots":   [{name, kind ("input"|"output"|"weight"|"activation"), type,
//                           storage {dtype, layout, device ("cpu"|"cuda")}, bytes, offset,
//                           weight, first_step, last_step, in_place_of}]
//              "steps":   [{name, node (index into the graph's top-level node list), inputs[],
//                           outputs[] (slot ids, -1 omitted), fused[], precision (dtype name),
//                           layout ("plain"|"nhwc"|"blocked"), backend, tactic}]
//              "inputs", "outputs": slot ids in graph input / output order
//              "weights": [{name, dtype, dims[], offset, size, packing}]: offset relative to the
//                         WEIGHTS section start, a multiple of kBlobAlignment; packing (optional,
//                         base64): a weight packed for its step's kernel (Tensor::packing), whose
//                         `size` bytes are the packed ones, its dtype and dims the logical tensor's
//              "binaries": optional, {name: base64 string}: code a backend compiled at build
//                         (Plan::binaries)
//            A type is {"kind": "unknown"|"tensor"|"sparse_tensor"|"sequence"|"optional"|"map",
//            "dtype", "key_type", "shape": null (rank unknown) or [int | "symbol" | null], "elem"}.
//   WEIGHTS  The blobs, in memory layout (sub-byte types one element per byte, bool 0/1). A string
//            tensor's blob is, per element, a u64 byte length followed by the bytes.
//
// Invariants the loader checks beyond bounds: weight i is the data of exactly one slot, the one
// with weight == i, whose name is that of a top-level initializer of the graph with the same dtype
// and dims; a step's inputs/outputs name the same values as its node's, position by position;
// plan inputs/outputs name the graph's inputs/outputs in order; arena slots lie inside
// MemoryStats::arena.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

namespace kiln::engine_format {

inline constexpr char kMagic[8] = {'K', 'I', 'L', 'N', 'E', 'N', 'G', '\0'};
inline constexpr uint32_t kFormatVersion = 2;
inline constexpr size_t kHeaderSize = 64;
inline constexpr size_t kSectionEntrySize = 32;
inline constexpr size_t kSectionAlignment = 64;
inline constexpr size_t kWeightsAlignment = 4096;
inline constexpr size_t kBlobAlignment = 64;
// Header flags: features a file uses, which a reader must know.
inline constexpr uint32_t kFlagPackedWeights = 1;  // some weight is packed for its kernel
inline constexpr uint32_t kKnownFlags = kFlagPackedWeights;

// Header field offsets.
inline constexpr size_t kVersionOffset = 8;
inline constexpr size_t kHeaderSizeOffset = 12;
inline constexpr size_t kFileSizeOffset = 16;
inline constexpr size_t kTableOffsetOffset = 24;
inline constexpr size_t kSectionCountOffset = 32;
inline constexpr size_t kFlagsOffset = 36;
inline constexpr size_t kBodyChecksumOffset = 40;
inline constexpr size_t kReservedOffset = 48;
inline constexpr size_t kHeaderChecksumOffset = 56;

constexpr uint32_t fourcc(char a, char b, char c, char d) {
  return static_cast<uint32_t>(static_cast<uint8_t>(a)) | static_cast<uint32_t>(static_cast<uint8_t>(b)) << 8 |
         static_cast<uint32_t>(static_cast<uint8_t>(c)) << 16 | static_cast<uint32_t>(static_cast<uint8_t>(d)) << 24;
}
inline constexpr uint32_t kMeta = fourcc('M', 'E', 'T', 'A');
inline constexpr uint32_t kGraph = fourcc('G', 'R', 'P', 'H');
inline constexpr uint32_t kPlan = fourcc('P', 'L', 'A', 'N');
inline constexpr uint32_t kWeights = fourcc('W', 'G', 'H', 'T');

// Little-endian loads from an engine image (the format is little-endian; so are the hosts Kiln
// targets).
inline uint32_t load32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
inline uint64_t load64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

// XXH64 with seed 0, as xxHash's specification defines it (so any xxHash implementation can check
// a file).
uint64_t hash64(std::span<const uint8_t> bytes);

// Recomputes both checksums of an engine image in place, the body's over everything after the
// header (for tests and the fuzz target, which patch files on purpose). False when the image is
// shorter than a header.
bool reseal(std::span<uint8_t> image);

}  // namespace kiln::engine_format
