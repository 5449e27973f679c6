// The explicit list of operator families. Each family file registers its ops; adding a family
// means adding it here (static registration would be dropped by a static link).
#include "ops/registry.h"

namespace kiln {

void register_elementwise_ops(OpRegistry& r);  // elementwise.cc: math, logic, comparison, Where, Clip
void register_activation_ops(OpRegistry& r);   // activation.cc: Relu..Gelu, Softmax family, losses
void register_movement_ops(OpRegistry& r);     // movement.cc: Reshape, Transpose, Gather, Slice ...
void register_reduce_ops(OpRegistry& r);       // reduce.cc: Reduce*, ArgMax, CumSum, TopK, Unique, Einsum
void register_nn_ops(OpRegistry& r);           // nn.cc: Conv, pooling, normalization, MatMul, Gemm
void register_cast_ops(OpRegistry& r);         // cast.cc: Cast, CastLike, BitCast, (De)QuantizeLinear
void register_misc_ops(OpRegistry& r);         // misc.cc: strings, ai.onnx.ml, training, random
void register_control_ops(OpRegistry& r);      // control.cc: If, Loop, Scan
void register_sequence_ops(OpRegistry& r);     // sequence.cc: Sequence*, Optional*
void register_rnn_ops(OpRegistry& r);          // rnn.cc: RNN, GRU, LSTM, Attention
void register_image_ops(OpRegistry& r);        // image.cc: Resize, GridSample, RoiAlign, NMS ...
void register_signal_ops(OpRegistry& r);       // signal.cc: DFT, STFT, windows, MelWeightMatrix
void register_attention_ops(OpRegistry& r);    // attention.cc: Attention, RotaryEmbedding ...
void register_fused_ops(OpRegistry& r);        // fused.cc: kiln.FusedConv/Gemm/MatMul/Elementwise
void register_transition_ops(OpRegistry& r);   // transition.cc: kiln.Reformat, kiln.Copy

void register_all_ops(OpRegistry& r) {
  register_elementwise_ops(r);
  register_activation_ops(r);
  register_movement_ops(r);
  register_reduce_ops(r);
  register_nn_ops(r);
  register_cast_ops(r);
  register_misc_ops(r);
  register_control_ops(r);
  register_sequence_ops(r);
  register_rnn_ops(r);
  register_image_ops(r);
  register_signal_ops(r);
  register_attention_ops(r);
  register_fused_ops(r);
  register_transition_ops(r);
}

}  // namespace kiln
