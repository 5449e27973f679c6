#include "ops/op_context.h"

namespace kiln {

int64_t OpContext::attr_int(const std::string& key, int64_t def) const {
  const Attribute* a = node_.attr(key);
  if (!a) return def;
  if (a->type == AttrType::kFloat) return static_cast<int64_t>(a->f);
  return a->i;
}

float OpContext::attr_float(const std::string& key, float def) const {
  const Attribute* a = node_.attr(key);
  if (!a) return def;
  if (a->type == AttrType::kInt) return static_cast<float>(a->i);
  return a->f;
}

std::string OpContext::attr_string(const std::string& key, const std::string& def) const {
  const Attribute* a = node_.attr(key);
  return a ? a->s : def;
}

std::vector<int64_t> OpContext::attr_ints(const std::string& key, std::vector<int64_t> def) const {
  const Attribute* a = node_.attr(key);
  if (!a) return def;
  if (a->type == AttrType::kInt) return {a->i};
  return a->ints;
}

std::vector<float> OpContext::attr_floats(const std::string& key, std::vector<float> def) const {
  const Attribute* a = node_.attr(key);
  if (!a) return def;
  if (a->type == AttrType::kFloat) return {a->f};
  return a->floats;
}

std::vector<std::string> OpContext::attr_strings(const std::string& key) const {
  const Attribute* a = node_.attr(key);
  if (!a) return {};
  if (a->type == AttrType::kString) return {a->s};
  return a->strings;
}

const Tensor* OpContext::attr_tensor(const std::string& key) const {
  const Attribute* a = node_.attr(key);
  return a && a->type == AttrType::kTensor ? &a->t : nullptr;
}

const Graph* OpContext::attr_graph(const std::string& key) const {
  const Attribute* a = node_.attr(key);
  return a && a->type == AttrType::kGraph ? a->g.get() : nullptr;
}

}  // namespace kiln
