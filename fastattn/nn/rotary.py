"""RotaryEmbedding: the cos and sin tables of rotary position embeddings (RoPE), as Hugging Face's
Llama computes them, for F.rotary_embedding (rotate-half convention).

    inv_freq[i] = rope_theta ** (-2i / D),  i < D / 2        ("default")
    angle(p, i) = p * inv_freq[i];  cos, sin (..., D) = cos/sin of [angle, angle] (both halves)

rope_scaling {"rope_type": "llama3", "factor", "low_freq_factor", "high_freq_factor",
"original_max_position_embeddings"} (Llama 3.1 / 3.2) divides the low frequencies (wavelength
above original / low_freq_factor) by factor, keeps the high ones (wavelength below original /
high_freq_factor) and blends those in between. The tables are made in float64, then cast.
"""
import math
import numbers

import numpy as np

from fastattn.nn.module import Module

ROPE_TYPES = ("default", "llama3")


def _rope_type(rope_scaling):
    if rope_scaling is None:
        return "default"
    if not isinstance(rope_scaling, dict):
        raise ValueError(f"rope_scaling must be None or a dict, got {type(rope_scaling).__name__}")
    kind = rope_scaling.get("rope_type", rope_scaling.get("type", "default"))
    if kind not in ROPE_TYPES:
        raise ValueError(f"rope_scaling type {kind!r} is not supported (only {ROPE_TYPES})")
    return kind


def inverse_frequencies(head_dim, rope_theta=10000.0, rope_scaling=None):
    """(head_dim / 2,) float64: the rotation speed of each pair of dimensions."""
    inv = rope_theta ** -(np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    if _rope_type(rope_scaling) == "llama3":
        try:
            factor = float(rope_scaling["factor"])
            low, high = float(rope_scaling["low_freq_factor"]), float(rope_scaling["high_freq_factor"])
            old = float(rope_scaling["original_max_position_embeddings"])
        except KeyError as e:
            raise ValueError(f"rope_scaling of type llama3 lacks {e.args[0]!r}") from None
        if not high > low:
            raise ValueError(f"rope_scaling: high_freq_factor {high} must exceed low_freq_factor {low}")
        wavelen = 2 * math.pi / inv
        scaled = np.where(wavelen > old / low, inv / factor, inv)
        smooth = (old / wavelen - low) / (high - low)
        medium = (wavelen >= old / high) & (wavelen <= old / low)
        inv = np.where(medium, (1 - smooth) * scaled / factor + smooth * scaled, scaled)
    return inv


class RotaryEmbedding(Module):
    """RotaryEmbedding(head_dim, rope_theta=10000.0, rope_scaling=None): no parameters.
    cos_sin(positions, dtype) -> (cos, sin), each positions.shape + (head_dim,)."""

    def __init__(self, head_dim, rope_theta=10000.0, rope_scaling=None):
        super().__init__()
        if isinstance(head_dim, bool) or not isinstance(head_dim, numbers.Integral) or head_dim < 2 or head_dim % 2:
            raise ValueError(f"head_dim must be an even int >= 2, got {head_dim!r}")
        if isinstance(rope_theta, bool) or not isinstance(rope_theta, numbers.Real) or not rope_theta > 0:
            raise ValueError(f"rope_theta must be a number > 0, got {rope_theta!r}")
        self.head_dim = int(head_dim)
        self.rope_theta = float(rope_theta)
        self.rope_scaling = rope_scaling
        self.inv_freq = inverse_frequencies(self.head_dim, self.rope_theta, rope_scaling)

    def cos_sin(self, positions, dtype=np.float32):
        angles = np.asarray(positions, dtype=np.float64)[..., None] * self.inv_freq  # (..., D / 2)
        angles = np.concatenate([angles, angles], axis=-1)
        return np.cos(angles).astype(dtype), np.sin(angles).astype(dtype)

    def extra_repr(self):
        return f"{self.head_dim}, rope_theta={self.rope_theta}, rope_scaling={self.rope_scaling}"
