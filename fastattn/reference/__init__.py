"""The reference backend: plain NumPy, written to be read next to the maths.

Each file mirrors a kernel family in src_cython/ and has the same function signatures as the
compiled backend (fastattn/_compiled). Inputs arrive already validated by fastattn.functional.
"""
from fastattn.reference.adamw import adamw_step
from fastattn.reference.attention import scaled_dot_product_attention, scaled_dot_product_attention_backward
from fastattn.reference.cross_entropy import cross_entropy, cross_entropy_backward
from fastattn.reference.gelu import gelu, gelu_backward
from fastattn.reference.linear import linear, linear_backward, linear_gelu
from fastattn.reference.layer_norm import layer_norm, layer_norm_backward
from fastattn.reference.softmax import masked_softmax, masked_softmax_backward
from fastattn.reference.relu import relu, relu_backward
from fastattn.reference.rms_norm import rms_norm, rms_norm_backward
from fastattn.reference.rotary import rotary_embedding, rotary_embedding_backward
from fastattn.reference.silu import silu, silu_backward, silu_mul, silu_mul_backward

__all__ = ["scaled_dot_product_attention", "masked_softmax", "layer_norm", "gelu",
           "masked_softmax_backward", "layer_norm_backward", "gelu_backward",
           "scaled_dot_product_attention_backward", "cross_entropy", "cross_entropy_backward", "linear", "linear_backward", "linear_gelu",
           "adamw_step", "relu", "relu_backward", "rms_norm", "rms_norm_backward",
           "rotary_embedding", "rotary_embedding_backward", "silu", "silu_backward", "silu_mul", "silu_mul_backward"]
