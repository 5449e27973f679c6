#include "core/npy.h"

#include <cstdio>
#include <fstream>
#include <regex>

namespace kiln {
namespace fs = std::filesystem;

namespace {

bool descr_to_dtype(const std::string& d, DataType* t) {
  static const std::pair<const char*, DataType> table[] = {
      {"<f4", DataType::kFloat},     {"<f8", DataType::kDouble},      {"<f2", DataType::kFloat16},
      {"|i1", DataType::kInt8},      {"<i2", DataType::kInt16},       {"<i4", DataType::kInt32},
      {"<i8", DataType::kInt64},     {"|u1", DataType::kUInt8},       {"<u2", DataType::kUInt16},
      {"<u4", DataType::kUInt32},    {"<u8", DataType::kUInt64},      {"|b1", DataType::kBool},
      {"<c8", DataType::kComplex64}, {"<c16", DataType::kComplex128},
  };
  for (const auto& [s, dt] : table) {
    if (d == s) {
      *t = dt;
      return true;
    }
  }
  return false;
}

}  // namespace

Result<Tensor> parse_npy(const std::string& bytes, const std::string& source) {
  if (bytes.size() < 10 || bytes.compare(0, 6, "\x93NUMPY") != 0) {
    return invalid("{}: not a NumPy .npy file (bad magic)", source);
  }
  const int major = static_cast<uint8_t>(bytes[6]);
  size_t header_len = 0;
  size_t offset = 0;
  if (major == 1) {
    header_len = static_cast<uint8_t>(bytes[8]) | static_cast<size_t>(static_cast<uint8_t>(bytes[9])) << 8;
    offset = 10;
  } else if (major == 2 || major == 3) {
    if (bytes.size() < 12) return invalid("{}: truncated .npy header", source);
    for (int i = 0; i < 4; ++i) header_len |= static_cast<size_t>(static_cast<uint8_t>(bytes[8 + i])) << (8 * i);
    offset = 12;
  } else {
    return invalid("{}: unsupported .npy format version {}", source, major);
  }
  if (offset + header_len > bytes.size()) return invalid("{}: truncated .npy header", source);
  const std::string header = bytes.substr(offset, header_len);
  std::smatch m;
  static const std::regex descr_re(R"('descr'\s*:\s*'([^']*)')");
  static const std::regex fortran_re(R"('fortran_order'\s*:\s*(True|False))");
  static const std::regex shape_re(R"('shape'\s*:\s*\(([^)]*)\))");
  if (!std::regex_search(header, m, descr_re)) return invalid("{}: .npy header has no descr", source);
  std::string descr = m[1];
  if (!std::regex_search(header, m, fortran_re)) return invalid("{}: .npy header has no fortran_order", source);
  if (m[1] == "True") return invalid("{}: Fortran-ordered arrays are not supported; save with C order", source);
  if (!std::regex_search(header, m, shape_re)) return invalid("{}: .npy header has no shape", source);
  Dims dims;
  std::string shape_s = m[1];
  size_t pos = 0;
  while (pos < shape_s.size()) {
    size_t comma = shape_s.find(',', pos);
    std::string part = shape_s.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    part.erase(0, part.find_first_not_of(" \t"));
    part.erase(part.find_last_not_of(" \tL") + 1);
    if (!part.empty()) {
      char* end = nullptr;
      long long v = std::strtoll(part.c_str(), &end, 10);
      if (*end != '\0' || v < 0) return invalid("{}: bad dimension '{}' in .npy shape", source, part);
      dims.push_back(v);
    }
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  const size_t data_off = offset + header_len;
  if (descr.size() > 2 && descr[1] == 'U') {  // fixed-width UTF-32 strings (ASCII subset kept)
    int width = std::atoi(descr.c_str() + 2);
    KILN_ASSIGN_OR_RETURN(Tensor t, Tensor::create(DataType::kString, dims));
    size_t need = static_cast<size_t>(t.numel()) * static_cast<size_t>(width) * 4;
    if (bytes.size() - data_off < need) return invalid("{}: .npy data is truncated", source);
    for (int64_t i = 0; i < t.numel(); ++i) {
      std::string s;
      for (int c = 0; c < width; ++c) {
        const auto* p =
            reinterpret_cast<const uint8_t*>(bytes.data() + data_off + (static_cast<size_t>(i) * width + c) * 4);
        uint32_t cp = p[0] | p[1] << 8 | p[2] << 16 | static_cast<uint32_t>(p[3]) << 24;
        if (cp == 0) break;
        if (cp < 0x80) {
          s += static_cast<char>(cp);
        } else if (cp < 0x800) {
          s += static_cast<char>(0xc0 | (cp >> 6));
          s += static_cast<char>(0x80 | (cp & 0x3f));
        } else if (cp < 0x10000) {
          s += static_cast<char>(0xe0 | (cp >> 12));
          s += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
          s += static_cast<char>(0x80 | (cp & 0x3f));
        } else {
          s += static_cast<char>(0xf0 | (cp >> 18));
          s += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
          s += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
          s += static_cast<char>(0x80 | (cp & 0x3f));
        }
      }
      t.strings()[static_cast<size_t>(i)] = s;
    }
    return t;
  }
  DataType dt;
  if (!descr_to_dtype(descr, &dt)) return invalid("{}: unsupported .npy dtype '{}'", source, descr);
  KILN_ASSIGN_OR_RETURN(Tensor t, Tensor::create(dt, dims));
  if (bytes.size() - data_off < t.nbytes()) {
    return invalid("{}: .npy data is truncated ({} bytes, shape {} of {} needs {})", source, bytes.size() - data_off,
                   shape_to_string(dims), dtype_name(dt), t.nbytes());
  }
  if (t.nbytes()) std::memcpy(t.raw(), bytes.data() + data_off, t.nbytes());
  if (dt == DataType::kBool) {
    for (int64_t i = 0; i < t.numel(); ++i) t.data<uint8_t>()[i] = t.data<uint8_t>()[i] ? 1 : 0;
  }
  return t;
}

Result<Tensor> read_npy(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) return invalid("{}: cannot open the file", file.string());
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return parse_npy(bytes, file.string());
}

std::string serialize_npy(const Tensor& src) {
  Tensor t = src;
  std::string descr(dtype_numpy_descr(t.dtype()));
  if (t.dtype() == DataType::kString) {
    size_t width = 1;
    for (const auto& s : t.strings()) width = std::max(width, s.size());
    descr = "<U" + std::to_string(width);
  } else if (descr.empty()) {
    if (is_float(t.dtype())) {
      Tensor f(DataType::kFloat, t.dims());
      for (int64_t i = 0; i < t.numel(); ++i) f.data<float>()[i] = static_cast<float>(t.get_double(i));
      t = f;
      descr = "<f4";
    } else {  // sub-byte integers, held one per byte
      descr = is_signed_int(t.dtype()) ? "|i1" : "|u1";
    }
  }
  std::string shape = "(";
  for (size_t i = 0; i < t.dims().size(); ++i)
    shape += std::to_string(t.dims()[i]) + (t.dims().size() == 1 ? "," : (i + 1 < t.dims().size() ? ", " : ""));
  shape += ")";
  std::string header = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': " + shape + ", }";
  size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  std::string out = "\x93NUMPY";
  out += '\x01';
  out += '\x00';
  out += static_cast<char>(header.size() & 0xff);
  out += static_cast<char>((header.size() >> 8) & 0xff);
  out += header;
  if (t.dtype() == DataType::kString) {
    size_t width = std::stoul(descr.substr(2));
    for (const auto& s : t.strings()) {
      for (size_t c = 0; c < width; ++c) {
        uint32_t cp = c < s.size() ? static_cast<uint8_t>(s[c]) : 0;
        for (int b = 0; b < 4; ++b) out += static_cast<char>((cp >> (8 * b)) & 0xff);
      }
    }
  } else {
    out.append(static_cast<const char*>(t.raw()), t.nbytes());
  }
  return out;
}

Status write_npy(const fs::path& file, const Tensor& t) {
  const std::string data = serialize_npy(t);
  fs::path tmp = file;
  tmp += ".partial";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) return runtime_error("{}: cannot create the file", file.string());
    out.write(data.data(), static_cast<std::streamsize>(data.size()));
    if (!out) {
      out.close();
      std::remove(tmp.c_str());
      return runtime_error("{}: write failed", file.string());
    }
  }
  std::error_code ec;
  fs::rename(tmp, file, ec);
  if (ec) {
    std::remove(tmp.c_str());
    return runtime_error("{}: cannot rename into place: {}", file.string(), ec.message());
  }
  return {};
}

}  // namespace kiln
