#include "backends/elementwise_program.h"

#include <map>
#include <string>
#include <vector>

#include "ir/graph.h"
#include "ops/fused.h"

namespace kiln {
namespace {

bool is_fused(const Node& n) {
  return n.domain == kKilnDomain && n.op_type == "FusedElementwise";
}

float attr_f(const Node& n, const char* key, float def) {
  const Attribute* a = n.attr(key);
  return a ? a->f : def;
}

// The instruction for one ONNX elementwise node, its inputs in registers `in`; false when the op
// is not one a program runs.
bool instr_of(const Node& n, const std::vector<uint8_t>& in, ProgInstr* out) {
  static const std::map<std::string, ProgOp> ops = {
      {"Add", ProgOp::kAdd},
      {"Sub", ProgOp::kSub},
      {"Mul", ProgOp::kMul},
      {"Div", ProgOp::kDiv},
      {"Pow", ProgOp::kPow},
      {"Max", ProgOp::kMax},
      {"Min", ProgOp::kMin},
      {"Abs", ProgOp::kAbs},
      {"Neg", ProgOp::kNeg},
      {"Exp", ProgOp::kExp},
      {"Log", ProgOp::kLog},
      {"Sqrt", ProgOp::kSqrt},
      {"Reciprocal", ProgOp::kReciprocal},
      {"Sigmoid", ProgOp::kSigmoid},
      {"Tanh", ProgOp::kTanh},
      {"Erf", ProgOp::kErf},
      {"Relu", ProgOp::kRelu},
      {"LeakyRelu", ProgOp::kLeakyRelu},
      {"Clip", ProgOp::kClip},
      {"Floor", ProgOp::kFloor},
      {"Ceil", ProgOp::kCeil},
      {"Round", ProgOp::kRound},
      {"Sin", ProgOp::kSin},
      {"Cos", ProgOp::kCos},
      {"Softplus", ProgOp::kSoftplus},
      {"Softsign", ProgOp::kSoftsign},
      {"Elu", ProgOp::kElu},
      {"Selu", ProgOp::kSelu},
      {"HardSigmoid", ProgOp::kHardSigmoid},
      {"HardSwish", ProgOp::kHardSwish},
      {"Gelu", ProgOp::kGeluErf},
      {"Swish", ProgOp::kSwish},
      {"Sign", ProgOp::kSign},
      {"Where", ProgOp::kWhere},
      {"Equal", ProgOp::kEqual},
      {"Less", ProgOp::kLess},
      {"Greater", ProgOp::kGreater},
      {"LessOrEqual", ProgOp::kLessOrEqual},
      {"GreaterOrEqual", ProgOp::kGreaterOrEqual},
      {"And", ProgOp::kAnd},
      {"Or", ProgOp::kOr},
      {"Not", ProgOp::kNot},
      {"PRelu", ProgOp::kPRelu},
      {"IsNaN", ProgOp::kIsNaN},
      {"IsInf", ProgOp::kIsInf},
  };
  if (!n.domain.empty()) return false;
  // Before opset 7 PRelu's 1-D slope is per channel and binary ops broadcast B at `axis` only when
  // asked: not numpy broadcasting, which is all a program does. The reference kernels run them.
  if (n.opset < 7 && (n.op_type == "PRelu" || n.attr("broadcast"))) return false;
  auto it = ops.find(n.op_type);
  if (it == ops.end() || in.empty()) return false;
  ProgInstr p{it->second, 0, in[0], kProgNone, kProgNone, 0.f, 0.f};
  // Operands each instruction reads (Clip's bounds are optional; Max and Min with one input or
  // more than two are not a binary instruction).
  auto binary = [](ProgOp op) {
    switch (op) {
      case ProgOp::kAdd:
      case ProgOp::kSub:
      case ProgOp::kMul:
      case ProgOp::kDiv:
      case ProgOp::kPow:
      case ProgOp::kMax:
      case ProgOp::kMin:
      case ProgOp::kEqual:
      case ProgOp::kLess:
      case ProgOp::kGreater:
      case ProgOp::kLessOrEqual:
      case ProgOp::kGreaterOrEqual:
      case ProgOp::kAnd:
      case ProgOp::kOr:
      case ProgOp::kPRelu: return true;
      default: return false;
    }
  };
  const size_t arity = (p.op == ProgOp::kWhere || p.op == ProgOp::kClip) ? 3 : binary(p.op) ? 2 : 1;
  if (p.op != ProgOp::kClip && in.size() != arity) return false;
  if (arity >= 2 && in.size() > 1) p.b = in[1];
  if (arity == 3 && in.size() > 2) p.c = in[2];
  switch (p.op) {
    case ProgOp::kLeakyRelu: p.p0 = attr_f(n, "alpha", 0.01f); break;
    case ProgOp::kElu: p.p0 = attr_f(n, "alpha", 1.0f); break;
    case ProgOp::kSelu:
      p.p0 = attr_f(n, "alpha", 1.67326319217681884765625f);
      p.p1 = attr_f(n, "gamma", 1.05070102214813232421875f);
      break;
    case ProgOp::kHardSigmoid:
      p.p0 = attr_f(n, "alpha", 0.2f);
      p.p1 = attr_f(n, "beta", 0.5f);
      break;
    case ProgOp::kSwish: p.p0 = attr_f(n, "alpha", 1.0f); break;
    case ProgOp::kIsInf: {
      const Attribute* neg = n.attr("detect_negative");
      const Attribute* pos = n.attr("detect_positive");
      p.p0 = neg && neg->i == 0 ? 0.f : 1.f;
      p.p1 = pos && pos->i == 0 ? 0.f : 1.f;
      break;
    }
    case ProgOp::kGeluErf: {
      const Attribute* a = n.attr("approximate");
      if (a && a->s == "tanh") p.op = ProgOp::kGeluTanh;
      break;
    }
    case ProgOp::kClip:
      // Before opset 11 the bounds are attributes; after, optional inputs (absent: unbounded).
      p.p0 = attr_f(n, "min", -3.402823466e38f);
      p.p1 = attr_f(n, "max", 3.402823466e38f);
      break;
    default: break;
  }
  *out = p;
  return true;
}

}  // namespace

// Registers hold the operands first, then one value per instruction.
bool compile_program(const Node& n, Program* prog) {
  Program p;
  std::vector<const Node*> nodes;
  std::map<const Value*, uint8_t> reg;
  const Value* result = nullptr;
  if (is_fused(n)) {
    const Attribute* body = n.attr("body");
    if (!body || !body->g || body->g->outputs.size() != 1 || body->g->inputs.size() != n.inputs.size()) return false;
    for (size_t i = 0; i < body->g->inputs.size(); ++i) reg[body->g->inputs[i]] = static_cast<uint8_t>(i);
    for (const auto& b : body->g->nodes()) nodes.push_back(b.get());
    result = body->g->outputs[0];
  } else {
    for (size_t i = 0; i < n.inputs.size(); ++i) {
      if (n.inputs[i]) reg[n.inputs[i]] = static_cast<uint8_t>(i);
    }
    nodes.push_back(&n);
    result = n.outputs.empty() ? nullptr : n.outputs[0];
  }
  p.n_operands = static_cast<int>(n.inputs.size());
  if (p.n_operands > kProgMaxOperands || nodes.size() > static_cast<size_t>(kProgMaxInstr) ||
      p.n_operands + nodes.size() > static_cast<size_t>(kProgMaxRegs)) {
    return false;
  }
  int next = p.n_operands;
  for (const Node* b : nodes) {
    std::vector<uint8_t> in;
    for (const Value* v : b->inputs) {
      if (!v) {
        in.push_back(kProgNone);  // an optional input left out (Clip's min)
        continue;
      }
      auto it = reg.find(v);
      if (it == reg.end()) return false;
      in.push_back(it->second);
    }
    if (b->outputs.size() != 1 || !b->outputs[0]) return false;
    ProgInstr ins;
    if (!instr_of(*b, in, &ins) || ins.a == kProgNone) return false;
    ins.dst = static_cast<uint8_t>(next++);
    p.code[p.n_instr++] = ins;
    reg[b->outputs[0]] = ins.dst;
  }
  auto it = reg.find(result);
  if (it == reg.end()) return false;
  p.result = it->second;
  *prog = p;
  return true;
}

int collapse_dims(int64_t* dims, int rank, ProgOperand* operands, int n_operands) {
  int out = 0;
  for (int d = 0; d < rank; ++d) {
    if (dims[d] == 1) continue;  // any stride reads the same element
    bool merge = out > 0;
    for (int k = 0; merge && k < n_operands; ++k) {
      if (operands[k].data) merge = operands[k].strides[out - 1] == operands[k].strides[d] * dims[d];
    }
    if (merge) {
      dims[out - 1] *= dims[d];
      for (int k = 0; k < n_operands; ++k) operands[k].strides[out - 1] = operands[k].strides[d];
      continue;
    }
    dims[out] = dims[d];
    for (int k = 0; k < n_operands; ++k) operands[k].strides[out] = operands[k].strides[d];
    ++out;
  }
  if (out == 0) {
    dims[0] = 1;
    for (int k = 0; k < n_operands; ++k) operands[k].strides[0] = 0;
    out = 1;
  }
  return out;
}

}  // namespace kiln
