"""GroupedQueryAttention: causal self-attention with fewer key/value heads than query heads
(grouped-query; multi-query at num_kv_heads = 1), rotary position embeddings and an optional
sliding window, as Llama, Qwen2 and Mistral have it. Parameter names are Hugging Face's
(q_proj, k_proj, v_proj, o_proj), so a decoder layer's weights load by name.

Shapes: B batch, T time, E embed_dim, H num_heads, H_kv num_kv_heads, D head_dim.
    q = rope(q_proj(x)) (B, H, T, D), k = rope(k_proj(x)) (B, H_kv, T, D), v (B, H_kv, T, D)
    y = o_proj(attention(q, k, v, causal, enable_gqa, window)) (B, T, E)
The kernel reads k and v once per group of H / H_kv query heads, never repeated, and writes each
head's output straight into the (B, T, H, D) buffer that o_proj reads.
"""
import numbers

import numpy as np

from fastattn import functional as F
from fastattn.nn.linear import Linear
from fastattn.nn.module import Module, _generator
from fastattn.nn.rotary import RotaryEmbedding


def _count(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return int(value)


class GroupedQueryAttention(Module):
    """GroupedQueryAttention(embed_dim, num_heads, num_kv_heads, head_dim=None, bias=False,
    rope_theta=10000.0, rope_scaling=None, window=None, dtype=np.float32, seed=None).

    bias: biases on q_proj, k_proj, v_proj (Qwen2); o_proj never has one. head_dim defaults to
    embed_dim / num_heads. window: None, or W (Mistral's sliding_window). forward(x, positions=None)
    with x (B, T, E) and positions (T,) or (B, T) (default 0 .. T-1) -> (B, T, E); backward(dy) -> dx."""

    def __init__(self, embed_dim, num_heads, num_kv_heads, head_dim=None, bias=False, rope_theta=10000.0,
                 rope_scaling=None, window=None, dtype=np.float32, seed=None):
        super().__init__()
        E, H, H_kv = (_count(n, v) for n, v in (("embed_dim", embed_dim), ("num_heads", num_heads),
                                                 ("num_kv_heads", num_kv_heads)))
        if H % H_kv:
            raise ValueError(f"num_heads {H} must be a multiple of num_kv_heads {H_kv}")
        if head_dim is None:
            if E % H:
                raise ValueError(f"embed_dim {E} is not a multiple of num_heads {H}: give head_dim")
            head_dim = E // H
        D = _count("head_dim", head_dim)
        if window is not None:
            window = _count("window", window)
        self.num_heads, self.num_kv_heads, self.head_dim, self.window = H, H_kv, D, window
        rng = _generator(seed)
        self.q_proj = Linear(E, H * D, bias, dtype, rng)
        self.k_proj = Linear(E, H_kv * D, bias, dtype, rng)
        self.v_proj = Linear(E, H_kv * D, bias, dtype, rng)
        self.o_proj = Linear(H * D, E, False, dtype, rng)
        self.rotary = RotaryEmbedding(D, rope_theta, rope_scaling)

    def _heads(self, proj, n):  # (B, T, n * D) -> (B, n, T, D), a view
        B, T = proj.shape[:2]
        return proj.reshape(B, T, n, self.head_dim).transpose(0, 2, 1, 3)

    def _positions(self, positions, B, T):
        if positions is None:
            return np.arange(T)
        p = np.asarray(positions)
        if p.shape not in ((T,), (B, T)) or not np.issubdtype(p.dtype, np.integer):
            raise ValueError(f"positions must be a ({T},) or ({B}, {T}) integer array, got {p.dtype} {p.shape}")
        return p

    def forward(self, x, positions=None):
        x = np.asarray(x)
        if x.ndim != 3:
            raise ValueError(f"GroupedQueryAttention: x must be (B, T, E), got {x.shape}")
        B, T, _ = x.shape
        H, H_kv, D = self.num_heads, self.num_kv_heads, self.head_dim
        cos, sin = self.rotary.cos_sin(self._positions(positions, B, T), x.dtype)
        q = F.rotary_embedding(self._heads(self.q_proj(x), H), cos, sin)
        k = F.rotary_embedding(self._heads(self.k_proj(x), H_kv), cos, sin)
        v = self._heads(self.v_proj(x), H_kv)
        y = np.empty((B, T, H, D), dtype=x.dtype)
        _, lse = F.scaled_dot_product_attention(q, k, v, is_causal=True, return_lse=True, enable_gqa=True,
                                                window=self.window, out=y.transpose(0, 2, 1, 3))
        self._save(q, k, v, y, lse, cos, sin)
        return self.o_proj(y.reshape(B, T, H * D))

    def backward(self, grad_output):
        q, k, v, y, lse, cos, sin = self._take()
        B, T = grad_output.shape[:2]
        H, H_kv, D = self.num_heads, self.num_kv_heads, self.head_dim
        dy = self.o_proj.backward(grad_output).reshape(B, T, H, D).transpose(0, 2, 1, 3)
        dq, dk, dv = F.scaled_dot_product_attention_backward(
            dy, q, k, v, y.transpose(0, 2, 1, 3), lse, is_causal=True, enable_gqa=True, window=self.window)
        dq, dk = F.rotary_embedding_backward(dq, cos, sin), F.rotary_embedding_backward(dk, cos, sin)
        flat = lambda a, n: a.transpose(0, 2, 1, 3).reshape(B, T, n * D)  # noqa: E731
        return (self.q_proj.backward(flat(dq, H)) + self.k_proj.backward(flat(dk, H_kv))
                + self.v_proj.backward(flat(dv, H_kv)))

    def extra_repr(self):
        return (f"num_heads={self.num_heads}, num_kv_heads={self.num_kv_heads}, head_dim={self.head_dim}, "
                f"window={self.window}")
