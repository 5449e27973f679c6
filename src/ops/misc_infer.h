#pragma once
// Inference functions of the string, ai.onnx.ml, training and random operators, and of a few
// operators of other families (misc_infer.cc).
#include "ops/registry.h"

namespace kiln {

Status string_normalizer_infer(InferContext& ctx);
Status string_concat_infer(InferContext& ctx);
Status string_split_infer(InferContext& ctx);
Status regex_full_match_infer(InferContext& ctx);
Status tfidf_infer(InferContext& ctx);
Status label_encoder_infer(InferContext& ctx);
Status tree_ensemble_infer(InferContext& ctx);
Status array_feature_extractor_infer(InferContext& ctx);
Status same_as_input0_infer(InferContext& ctx);
Status optimizer_infer(InferContext& ctx);
Status random_infer(InferContext& ctx);
Status multinomial_infer(InferContext& ctx);
Status linear_attention_infer(InferContext& ctx);
Status stft_infer(InferContext& ctx);
Status mel_weight_matrix_infer(InferContext& ctx);
Status optional_infer(InferContext& ctx);
Status scan_infer(InferContext& ctx);
Status sequence_map_infer(InferContext& ctx);

}  // namespace kiln
