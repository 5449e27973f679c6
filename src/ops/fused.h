#pragma once
// Kiln's fused operators (domain "kiln"), produced by the optimizer's fusion passes:
//   FusedConv(X, W, B?, Z?)        = act(Conv(X, W) + B + Z)     Conv's attributes
//   FusedGemm(A, B, C?, Z?)        = act(Gemm(A, B, C) + Z)      Gemm's attributes
//   FusedMatMul(A, B, bias?, Z?)   = act(MatMul(A, B) + bias + Z)
//   FusedElementwise(X0, ...)      = the elementwise subgraph in attribute `body`
//   ChannelMLP(X, W1, B1?, W2, B2?) = act2(Conv(act1(Conv(X, W1, B1)), W2, B2)): two pointwise
//                                    convolutions in a row on one-pixel images (a squeeze-excite
//                                    block's), activations in `activation1`/`activation2`
//                                    (parameters in `activation1_params`/`activation2_params`)
//   EmbedLayerNorm(X?, Scale, B?, T0, I0, T1?, I1?, ...)
//                                  = LayerNormalization(X + Gather(T0, I0) + Gather(T1, I1) + ...,
//                                    Scale, B) over the last axis, `epsilon`: a transformer's
//                                    embedding lookups (2-D tables, axis 0), their sum with the
//                                    other terms (X: broadcast like Add) and its LayerNorm
// `activation` (string, "" for none) names an ONNX activation: Relu, LeakyRelu (alpha), Clip
// (min, max), Sigmoid, HardSigmoid (alpha, beta), HardSwish, Swish (alpha), Gelu (approximate:
// params[0] = 0 for erf, 1 for tanh), Tanh; its parameters are in `activation_params`.
#include <string>
#include <vector>

#include "ops/registry.h"

namespace kiln {

constexpr const char* kKilnDomain = "kiln";

// Whether `op` (ai.onnx) can be expressed as a fused activation, and with which parameters;
// `node` supplies attributes and constant inputs (Clip's min/max).
bool activation_from_node(const Node& node, std::string* activation, std::vector<float>* params);

}  // namespace kiln
