"""The reference backend: plain NumPy, written to be read next to the maths.

Each file mirrors a kernel family in src_cython/ and has the same function signatures as the
compiled backend (fastattn/_compiled). Inputs arrive already validated by fastattn.functional.
"""
from fastattn.reference.attention import scaled_dot_product_attention
from fastattn.reference.gelu import gelu
from fastattn.reference.layer_norm import layer_norm
from fastattn.reference.softmax import masked_softmax

__all__ = ["scaled_dot_product_attention", "masked_softmax", "layer_norm", "gelu"]
