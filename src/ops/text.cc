// String operators: StringNormalizer, StringConcat, StringSplit, RegexFullMatch and
// TfIdfVectorizer (which also takes integer token ids).
#include <algorithm>
#include <cctype>
#include <map>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "ops/broadcast.h"
#include "ops/misc_infer.h"
#include "ops/registry.h"

namespace kiln {
namespace {

Status require_strings(const Tensor& t, const char* op) {
  if (t.dtype() != DataType::kString)
    return invalid("{}: input must be a string tensor, got {}", op, dtype_name(t.dtype()));
  return Status();
}

// Case mapping is ASCII-only: multi-byte UTF-8 sequences pass through unchanged (their bytes are
// all >= 0x80, which toupper/tolower leave alone in the C locale).
std::string to_lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}
std::string to_upper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

Status string_normalizer_kernel(OpContext& ctx) {
  const Tensor& x = ctx.input(0);
  KILN_RETURN_IF_ERROR(require_strings(x, "StringNormalizer"));
  const bool two_d = x.rank() == 2;
  if (!(x.rank() == 1 || (two_d && x.dim(0) == 1))) {
    return invalid("StringNormalizer: input must have shape [C] or [1, C], got {}", shape_to_string(x.dims()));
  }
  const std::string action = ctx.attr_string("case_change_action", "NONE");
  if (action != "NONE" && action != "LOWER" && action != "UPPER") {
    return invalid("StringNormalizer: case_change_action must be NONE, LOWER or UPPER, got '{}'", action);
  }
  const bool case_sensitive = ctx.attr_int("is_case_sensitive", 0) != 0;
  std::set<std::string> stops;
  for (const std::string& w : ctx.attr_strings("stopwords")) stops.insert(case_sensitive ? w : to_lower(w));

  std::vector<std::string> kept;
  for (const std::string& s : x.strings()) {
    if (!stops.empty() && stops.count(case_sensitive ? s : to_lower(s))) continue;
    if (action == "LOWER") {
      kept.push_back(to_lower(s));
    } else if (action == "UPPER") {
      kept.push_back(to_upper(s));
    } else {
      kept.push_back(s);
    }
  }
  // Everything dropped: a single empty string, keeping the input's rank.
  if (kept.empty()) kept.emplace_back();
  const auto n = static_cast<int64_t>(kept.size());
  Tensor y(DataType::kString, two_d ? Dims{1, n} : Dims{n});
  y.strings() = std::move(kept);
  ctx.set_output(0, std::move(y));
  return Status();
}

Status string_concat_kernel(OpContext& ctx) {
  const Tensor& a = ctx.input(0);
  const Tensor& b = ctx.input(1);
  KILN_RETURN_IF_ERROR(require_strings(a, "StringConcat"));
  KILN_RETURN_IF_ERROR(require_strings(b, "StringConcat"));
  KILN_ASSIGN_OR_RETURN(Dims out_dims, broadcast_shapes({a.dims(), b.dims()}));
  KILN_ASSIGN_OR_RETURN(Tensor y, Tensor::create(DataType::kString, out_dims));
  Broadcaster bc({a.dims(), b.dims()}, out_dims);
  auto& out = y.strings();
  bc.for_each([&](int64_t o, const int64_t* idx) {
    out[static_cast<size_t>(o)] = a.strings()[static_cast<size_t>(idx[0])] + b.strings()[static_cast<size_t>(idx[1])];
  });
  ctx.set_output(0, std::move(y));
  return Status();
}

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f' || (c >= 0x1c && c <= 0x1f);
}

// Python's str.split(None, maxsplit): runs of whitespace separate, leading whitespace is dropped,
// and the unsplit remainder keeps its trailing whitespace.
std::vector<std::string> split_whitespace(const std::string& s, int64_t maxsplit) {
  std::vector<std::string> parts;
  size_t i = 0;
  const size_t n = s.size();
  while (true) {
    while (i < n && is_space(s[i])) ++i;
    if (i >= n) break;
    if (maxsplit >= 0 && static_cast<int64_t>(parts.size()) == maxsplit) {
      parts.push_back(s.substr(i));
      break;
    }
    size_t j = i;
    while (j < n && !is_space(s[j])) ++j;
    parts.push_back(s.substr(i, j - i));
    i = j;
  }
  return parts;
}

// Python's str.split(sep, maxsplit): every occurrence separates, empty pieces are kept.
std::vector<std::string> split_on(const std::string& s, const std::string& sep, int64_t maxsplit) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (maxsplit < 0 || static_cast<int64_t>(parts.size()) < maxsplit) {
    size_t p = s.find(sep, start);
    if (p == std::string::npos) break;
    parts.push_back(s.substr(start, p - start));
    start = p + sep.size();
  }
  parts.push_back(s.substr(start));
  return parts;
}

Status string_split_kernel(OpContext& ctx) {
  const Tensor& x = ctx.input(0);
  KILN_RETURN_IF_ERROR(require_strings(x, "StringSplit"));
  const std::string delim = ctx.attr_string("delimiter", "");
  const int64_t maxsplit = ctx.has_attr("maxsplit") ? ctx.attr_int("maxsplit", -1) : -1;
  if (ctx.has_attr("maxsplit") && maxsplit < 0) return invalid("StringSplit: maxsplit must be >= 0, got {}", maxsplit);
  std::vector<std::vector<std::string>> pieces;
  pieces.reserve(x.strings().size());
  size_t widest = 0;
  for (const std::string& s : x.strings()) {
    pieces.push_back(delim.empty() ? split_whitespace(s, maxsplit) : split_on(s, delim, maxsplit));
    widest = std::max(widest, pieces.back().size());
  }
  Dims ydims = x.dims();
  ydims.push_back(static_cast<int64_t>(widest));
  KILN_ASSIGN_OR_RETURN(Tensor y, Tensor::create(DataType::kString, ydims));
  Tensor counts(DataType::kInt64, x.dims());
  for (size_t i = 0; i < pieces.size(); ++i) {
    for (size_t k = 0; k < pieces[i].size(); ++k) y.strings()[i * widest + k] = std::move(pieces[i][k]);
    counts.data<int64_t>()[i] = static_cast<int64_t>(pieces[i].size());
  }
  ctx.set_output(0, std::move(y));
  ctx.set_output(1, std::move(counts));
  return Status();
}

// ONNX specifies RE2 syntax; std::regex's ECMAScript grammar agrees on the common subset
// (classes, \w \W \b, anchors, alternation, bounded repetition).
Status regex_full_match_kernel(OpContext& ctx) {
  const Tensor& x = ctx.input(0);
  KILN_RETURN_IF_ERROR(require_strings(x, "RegexFullMatch"));
  if (!ctx.has_attr("pattern")) return invalid("RegexFullMatch needs the 'pattern' attribute");
  const std::string pattern = ctx.attr_string("pattern", "");
  std::regex re;
  try {
    re = std::regex(pattern, std::regex::ECMAScript);
  } catch (const std::regex_error& e) {
    return invalid("RegexFullMatch: invalid pattern '{}': {}", pattern, e.what());
  }
  Tensor y(DataType::kBool, x.dims());
  for (int64_t i = 0; i < x.numel(); ++i) {
    try {
      y.data<bool>()[i] = std::regex_match(x.strings()[static_cast<size_t>(i)], re);
    } catch (const std::regex_error& e) {
      return runtime_error("RegexFullMatch: matching failed: {}", e.what());
    }
  }
  ctx.set_output(0, std::move(y));
  return Status();
}

// TfIdfVectorizer. The pool holds n-grams grouped by length: ngram_counts[i] is where the
// (i+1)-grams start. The k-th n-gram of the pool (counting across lengths) is counted into output
// column ngram_indexes[k]. For each start position and each skip distance 1..max_skip_count+1 the
// n-grams of every length in [min, max] are looked up; unigrams are counted once, not per skip.
template <typename Key>
Status tfidf_count(const std::vector<Key>& pool, const std::vector<Key>& tokens, int64_t rows, int64_t cols,
                   const OpContext& ctx, int64_t out_size, std::vector<int64_t>& freq) {
  const std::vector<int64_t> counts = ctx.attr_ints("ngram_counts");
  const std::vector<int64_t> indexes = ctx.attr_ints("ngram_indexes");
  const int64_t min_n = ctx.attr_int("min_gram_length", 0);
  const int64_t max_n = ctx.attr_int("max_gram_length", 0);
  const int64_t max_skip = ctx.attr_int("max_skip_count", 0);
  if (min_n < 1 || max_n < min_n) return invalid("TfIdfVectorizer: need 1 <= min_gram_length <= max_gram_length");
  if (max_skip < 0) return invalid("TfIdfVectorizer: max_skip_count must be >= 0");

  std::map<std::vector<Key>, int64_t> grams;  // n-gram -> output column
  int64_t gram_id = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    const int64_t n = static_cast<int64_t>(i) + 1;
    const int64_t start = counts[i];
    const int64_t end = i + 1 < counts.size() ? counts[i + 1] : static_cast<int64_t>(pool.size());
    if (start < 0 || end > static_cast<int64_t>(pool.size()) || end < start) {
      return invalid("TfIdfVectorizer: ngram_counts {} is out of range for a pool of {}", start, pool.size());
    }
    for (int64_t p = start; p + n <= end; p += n, ++gram_id) {
      if (gram_id >= static_cast<int64_t>(indexes.size()))
        return invalid("TfIdfVectorizer: ngram_indexes is too short");
      if (n < min_n || n > max_n) continue;
      grams.emplace(std::vector<Key>(pool.begin() + p, pool.begin() + p + n), indexes[static_cast<size_t>(gram_id)]);
    }
  }
  std::vector<Key> gram;
  for (int64_t r = 0; r < rows; ++r) {
    const Key* row = tokens.data() + r * cols;
    for (int64_t skip = 1; skip <= max_skip + 1; ++skip) {
      const int64_t first_n = skip == 1 ? min_n : std::max<int64_t>(min_n, 2);
      for (int64_t s = 0; s < cols; ++s) {
        for (int64_t n = first_n; n <= max_n; ++n) {
          if (s + (n - 1) * skip >= cols) break;
          gram.clear();
          for (int64_t k = 0; k < n; ++k) gram.push_back(row[s + k * skip]);
          auto it = grams.find(gram);
          if (it != grams.end()) ++freq[static_cast<size_t>(r * out_size + it->second)];
        }
      }
    }
  }
  return Status();
}

Status tfidf_kernel(OpContext& ctx) {
  const Tensor& x = ctx.input(0);
  int64_t rows = 1, cols = 1;
  bool batched = false;
  if (x.rank() == 1) {
    cols = x.dim(0);
  } else if (x.rank() == 2) {
    rows = x.dim(0);
    cols = x.dim(1);
    batched = true;
  } else if (x.rank() != 0) {
    return invalid("TfIdfVectorizer: input must be 1-D or 2-D, got {}", shape_to_string(x.dims()));
  }
  const std::vector<int64_t> indexes = ctx.attr_ints("ngram_indexes");
  if (indexes.empty()) return invalid("TfIdfVectorizer: ngram_indexes is empty");
  const int64_t out_size = *std::max_element(indexes.begin(), indexes.end()) + 1;
  if (*std::min_element(indexes.begin(), indexes.end()) < 0) return invalid("TfIdfVectorizer: negative ngram index");
  const std::string mode = ctx.attr_string("mode", "");
  if (mode != "TF" && mode != "IDF" && mode != "TFIDF")
    return invalid("TfIdfVectorizer: mode must be TF, IDF or TFIDF");
  const std::vector<float> weights = ctx.attr_floats("weights");
  if (!weights.empty() && static_cast<int64_t>(weights.size()) < out_size) {
    return invalid("TfIdfVectorizer: weights has {} entries, need {}", weights.size(), out_size);
  }

  const Dims out_dims = {rows, out_size};
  KILN_RETURN_IF_ERROR(check_allocation(out_dims, sizeof(int64_t), "TfIdfVectorizer output"));
  std::vector<int64_t> freq(static_cast<size_t>(rows * out_size), 0);
  if (x.numel() > 0) {
    if (x.dtype() == DataType::kString) {
      std::vector<std::string> pool = ctx.attr_strings("pool_strings");
      KILN_RETURN_IF_ERROR(tfidf_count(pool, x.strings(), rows, cols, ctx, out_size, freq));
    } else if (x.dtype() == DataType::kInt32 || x.dtype() == DataType::kInt64) {
      std::vector<int64_t> pool = ctx.attr_ints("pool_int64s");
      KILN_RETURN_IF_ERROR(tfidf_count(pool, x.to_int64_vector(), rows, cols, ctx, out_size, freq));
    } else {
      return invalid("TfIdfVectorizer: input must be string, int32 or int64, got {}", dtype_name(x.dtype()));
    }
  }
  Tensor y(DataType::kFloat, batched ? Dims{rows, out_size} : Dims{out_size});
  float* out = y.data<float>();
  for (int64_t p = 0; p < rows * out_size; ++p) {
    const auto f = static_cast<float>(freq[static_cast<size_t>(p)]);
    const float w = weights.empty() ? 1.0f : weights[static_cast<size_t>(p % out_size)];
    if (mode == "TF") {
      out[p] = f;
    } else if (mode == "IDF") {
      out[p] = f > 0 ? w : 0.0f;
    } else {
      out[p] = f * w;
    }
  }
  ctx.set_output(0, std::move(y));
  return Status();
}

}  // namespace

void register_text_ops(OpRegistry& r) {
  r.add({"", "StringNormalizer", 10, string_normalizer_kernel, string_normalizer_infer});
  r.add({"", "StringConcat", 20, string_concat_kernel, string_concat_infer});
  r.add({"", "StringSplit", 20, string_split_kernel, string_split_infer});
  r.add({"", "RegexFullMatch", 20, regex_full_match_kernel, regex_full_match_infer});
  r.add({"", "TfIdfVectorizer", 9, tfidf_kernel, tfidf_infer});
}

}  // namespace kiln
