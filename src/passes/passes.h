#pragma once
// Constructors of the individual passes (one per file); pipeline.cc orders them.
#include "passes/pass.h"

namespace kiln {

PassInfo constant_folding_pass();         // constant_folding.cc
PassInfo shape_arithmetic_pass();         // fold_shape_arithmetic.cc
PassInfo dead_code_pass();                // dead_code.cc
PassInfo identity_elimination_pass();     // identity_elimination.cc
PassInfo cse_pass();                      // cse.cc
PassInfo transpose_reshape_pass();        // transpose_reshape.cc
PassInfo row_ops_hoisting_pass();         // hoist_row_ops.cc
PassInfo batchnorm_folding_pass();        // batchnorm_folding.cc
PassInfo patch_conv_to_matmul_pass();     // patch_conv_to_matmul.cc
PassInfo gelu_recognition_pass();         // recognize_gelu.cc
PassInfo silu_recognition_pass();         // recognize_silu.cc
PassInfo layernorm_recognition_pass();    // recognize_layernorm.cc (LayerNorm and RMSNorm)
PassInfo attention_recognition_pass();    // recognize_attention.cc
PassInfo attention_heads_fusion_pass();   // fuse_attention_heads.cc
PassInfo attention_views_packing_pass();  // pack_attention_views.cc
PassInfo qkv_merge_pass();                // merge_qkv_projections.cc
PassInfo channel_scale_folding_pass();    // fold_channel_scale.cc
PassInfo bias_activation_fusion_pass();   // fuse_bias_activation.cc
PassInfo channel_mlp_fusion_pass();       // fuse_channel_mlp.cc
PassInfo embed_layernorm_fusion_pass();   // fuse_embed_layernorm.cc
PassInfo elementwise_fusion_pass();       // fuse_elementwise.cc
PassInfo channels_last_heads_pass();      // channels_last_heads.cc
PassInfo split_concat_conv_pass();        // split_concat_conv.cc
PassInfo reduce_to_global_pool_pass();    // reduce_to_global_pool.cc

}  // namespace kiln
