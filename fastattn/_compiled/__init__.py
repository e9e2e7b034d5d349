"""The compiled backend: extension modules built by setup.py from src_cython/*.pyx.

Same functions and signatures as fastattn.reference; inputs arrive validated by fastattn.functional.
"""
from fastattn._compiled.adamw import adamw_step
from fastattn._compiled.attention import scaled_dot_product_attention, scaled_dot_product_attention_backward
from fastattn._compiled.build_info import openmp_enabled
from fastattn._compiled.cross_entropy import cross_entropy, cross_entropy_backward
from fastattn._compiled.gelu import gelu, gelu_backward
from fastattn._compiled.linear import linear, linear_backward, linear_gelu
from fastattn._compiled.layer_norm import layer_norm, layer_norm_backward
from fastattn._compiled.softmax import masked_softmax, masked_softmax_backward
from fastattn._compiled.relu import relu, relu_backward
from fastattn._compiled.rms_norm import rms_norm, rms_norm_backward
from fastattn._compiled.rotary import rotary_embedding, rotary_embedding_backward
from fastattn._compiled.silu import silu, silu_backward, silu_mul, silu_mul_backward

__all__ = ["scaled_dot_product_attention", "masked_softmax", "layer_norm", "gelu",
           "masked_softmax_backward", "layer_norm_backward", "gelu_backward",
           "scaled_dot_product_attention_backward", "cross_entropy", "cross_entropy_backward", "linear", "linear_backward", "linear_gelu",
           "adamw_step", "relu", "relu_backward", "rms_norm", "rms_norm_backward",
           "rotary_embedding", "rotary_embedding_backward", "silu", "silu_backward", "silu_mul", "silu_mul_backward", "openmp_enabled"]
