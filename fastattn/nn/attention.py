"""MultiheadAttention: torch.nn.MultiheadAttention's parameters, arguments and masks, on the fused
flash kernel (F.scaled_dot_product_attention and its backward).

Shapes: N batch, L target (query) length, S source (key) length, E embed_dim, H num_heads,
hs = E / H. batch_first=False: query (L, N, E), key (S, N, kdim), value (S, N, vdim); True:
(N, L, E) ...; unbatched: (L, E), (S, kdim), (S, vdim). The heads are views (N, H, T, hs) of
the projections, and the kernel writes each head's output straight into its columns of the
(.., H, hs) buffer that out_proj reads: no copies either way.
"""
import math

import numpy as np

from fastattn import functional as F
from fastattn.nn.dropout import _keep_mask
from fastattn.nn.linear import Linear
from fastattn.nn.module import Module, Parameter, _dtype, _generator, _positive_int, _probability


def _weight_rows(w, rows):
    """Rows `rows` (a slice) of a projection weight: a view, also of an int8 / bfloat16 one."""
    return w[rows] if isinstance(w, np.ndarray) else w._rows(rows.start, rows.stop)


def _xavier_uniform(rng, shape, dtype):
    """U(-b, b), b = sqrt(6 / (fan_in + fan_out)), the fans as torch counts them."""
    receptive = int(np.prod(shape[2:], dtype=np.int64))
    fan_out, fan_in = shape[0] * receptive, shape[1] * receptive
    bound = math.sqrt(6 / (fan_in + fan_out))
    return rng.uniform(-bound, bound, shape).astype(dtype)


def _mask_kind(name, mask, polarity):
    m = np.asarray(mask)
    if m.dtype != np.bool_ and not np.issubdtype(m.dtype, np.floating):
        raise TypeError(f"{name} must be bool ({polarity}) or floating (added to the scores), got dtype "
                        f"{m.dtype}: an integer mask is ambiguous, use .astype(bool)")
    return m


def _merged_mask(key_padding_mask, attn_mask, is_causal, N, H, L, S, extra, batched, dtype):
    """torch.nn's masks (True = NOT allowed) as one mask in F's terms (bool True = may attend, or
    float added), broadcastable to (N, H, L, S + extra), and whether F's is_causal may do the
    causal part (top-left: query i sees keys j <= i, as torch). The `extra` columns (bias_k,
    add_zero_attn) are visible to every query. None: no mask."""
    parts = []  # (N|1, H|1, L|1, S) arrays, in nn polarity for bools
    if key_padding_mask is not None:
        m = _mask_kind("key_padding_mask", key_padding_mask, "True = padding, ignored")
        want = (N, S) if batched else (S,)
        if m.shape != want:
            raise ValueError(f"key_padding_mask must have shape {want} (batch, source length), got {m.shape}")
        parts.append(m.reshape(N, 1, 1, S))
    if attn_mask is not None:
        m = _mask_kind("attn_mask", attn_mask, "True = not allowed")
        three = (N * H, L, S) if batched else (H, L, S)
        if m.shape == (L, S):
            parts.append(m.reshape(1, 1, L, S))
        elif m.shape == three:
            parts.append(m.reshape(N, H, L, S))
        else:
            raise ValueError(f"attn_mask must have shape {(L, S)} or {three}, got {m.shape}")
    fused_causal = bool(is_causal) and L == S and extra == 0
    if is_causal and not fused_causal:
        parts.append(~np.tri(L, S, dtype=bool).reshape(1, 1, L, S))  # True above the diagonal
    if not parts:
        return None, fused_causal
    if all(p.dtype == np.bool_ for p in parts):
        blocked = parts[0]
        for p in parts[1:]:
            blocked = blocked | p
        mask = ~blocked
        fill = True
    else:
        mask = 0
        for p in parts:
            mask = mask + (np.where(p, -np.inf, 0).astype(dtype) if p.dtype == np.bool_ else p.astype(dtype))
        fill = 0
    if extra:
        pad = np.full(mask.shape[:-1] + (extra,), fill, dtype=mask.dtype)
        mask = np.concatenate([mask, pad], axis=-1)
    return mask, fused_causal


class MultiheadAttention(Module):
    """MultiheadAttention(embed_dim, num_heads, dropout=0.0, bias=True, add_bias_kv=False,
    add_zero_attn=False, kdim=None, vdim=None, batch_first=False, dtype=np.float32, seed=None).

    Parameters as torch: in_proj_weight (3E, E) and in_proj_bias (3E,), or q_proj_weight (E, E),
    k_proj_weight (E, kdim), v_proj_weight (E, vdim) when kdim or vdim differ from E; out_proj
    (a Linear E -> E); bias_k, bias_v (1, 1, E) with add_bias_kv. Initialised as torch: xavier
    uniform projections, zero biases, xavier normal bias_k / bias_v.

    forward(query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
    average_attn_weights=True, is_causal=False) -> (output, weights or None).
    Masks are torch.nn's: key_padding_mask (N, S) bool True = a padding key, ignored; attn_mask
    (L, S) or (N * H, L, S), bool True = NOT allowed to attend; a float mask (either) is added
    to the scores. is_causal=True lets query i see keys j <= i only (top-left, as torch), with
    or without attn_mask (they combine: a key must pass both); unlike torch it is not a mere
    hint, and no mask is needed (nor built, when L == S). Integer masks raise TypeError.
    A query that may attend to no key gets an attention output of zeros (so the module's output
    there is out_proj.bias) and zero gradients, never NaN (torch gives NaN).
    weights: softmax weights (N, L, S) averaged over heads, or (N, H, L, S) per head with
    average_attn_weights=False (computed apart by F.attention_weights: need_weights=False is
    faster); they are an output to look at, not differentiated by backward.

    Attention dropout (dropout > 0, train mode) takes an unfused path: the (N, H, L, S) weights
    are built by F.attention_weights, dropped, multiplied by the values, and differentiated with
    F.masked_softmax_backward. Otherwise (eval, or dropout = 0) the fused flash kernel runs.

    backward(grad_output) -> (grad_query, grad_key, grad_value), each of its input's shape.
    Called as self-attention (query is key is value), the three are still returned apart: the
    gradient of the shared input is their sum (torch would accumulate it).
    """

    _optional = ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight", "in_proj_bias",
                 "bias_k", "bias_v")

    def __init__(self, embed_dim, num_heads, dropout=0.0, bias=True, add_bias_kv=False, add_zero_attn=False,
                 kdim=None, vdim=None, batch_first=False, dtype=np.float32, seed=None):
        super().__init__()
        E = self.embed_dim = _positive_int("embed_dim", embed_dim)
        self.num_heads = _positive_int("num_heads", num_heads)
        if E % self.num_heads:
            raise ValueError(f"embed_dim ({E}) must be divisible by num_heads ({self.num_heads})")
        self.head_dim = E // self.num_heads
        self.kdim = E if kdim is None else _positive_int("kdim", kdim)
        self.vdim = E if vdim is None else _positive_int("vdim", vdim)
        self._qkv_same_embed_dim = self.kdim == E and self.vdim == E
        self.dropout = _probability("dropout", dropout)
        self.batch_first = bool(batch_first)
        self.add_zero_attn = bool(add_zero_attn)
        dtype = _dtype(dtype)
        self._rng = _generator(seed)
        if self._qkv_same_embed_dim:
            self.in_proj_weight = Parameter(np.empty((3 * E, E), dtype))
            self.q_proj_weight = self.k_proj_weight = self.v_proj_weight = None
        else:
            self.in_proj_weight = None
            self.q_proj_weight = Parameter(np.empty((E, E), dtype))
            self.k_proj_weight = Parameter(np.empty((E, self.kdim), dtype))
            self.v_proj_weight = Parameter(np.empty((E, self.vdim), dtype))
        self.in_proj_bias = Parameter(np.zeros(3 * E, dtype)) if bias else None
        self.out_proj = Linear(E, E, bias=bias, dtype=dtype, seed=self._rng)
        if add_bias_kv:
            self.bias_k = Parameter(np.empty((1, 1, E), dtype))
            self.bias_v = Parameter(np.empty((1, 1, E), dtype))
        else:
            self.bias_k = self.bias_v = None
        self.reset_parameters()

    def reset_parameters(self, rng=None):
        rng = self._rng if rng is None else rng
        for p in (self.in_proj_weight, self.q_proj_weight, self.k_proj_weight, self.v_proj_weight):
            if p is not None:
                p.data[...] = _xavier_uniform(rng, p.data.shape, p.data.dtype)
        if self.in_proj_bias is not None:
            self.in_proj_bias.data[...] = 0
        self.out_proj.reset_parameters(rng)
        if self.out_proj.bias is not None:
            self.out_proj.bias.data[...] = 0
        for p in (self.bias_k, self.bias_v):
            if p is not None:  # xavier normal of a (1, 1, E) tensor: fan_in = fan_out = E
                p.data[...] = rng.normal(0, math.sqrt(1 / self.embed_dim), p.data.shape)

    def _quantize_own(self, compute_type):
        for name in ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight"):
            self._quantize_param(name, "bfloat16" if compute_type == "bfloat16" else "int8")

    @property
    def _dtype(self):
        return self.out_proj.weight.data.dtype

    # -- projections ----------------------------------------------------------------------------
    def _groups(self, query, key, value):
        """The input projections as groups: (input, weight Parameter, row slice, which of q, k, v
        (0, 1, 2) it gives). One fused product where inputs are shared and the weight is packed."""
        E = self.embed_dim
        if not self._qkv_same_embed_dim:
            return [(query, self.q_proj_weight, slice(None), (0,)),
                    (key, self.k_proj_weight, slice(None), (1,)),
                    (value, self.v_proj_weight, slice(None), (2,))]
        W = self.in_proj_weight
        if query is key and key is value:
            return [(query, W, slice(0, 3 * E), (0, 1, 2))]
        if key is value:
            return [(query, W, slice(0, E), (0,)), (key, W, slice(E, 3 * E), (1, 2))]
        return [(query, W, slice(0, E), (0,)), (key, W, slice(E, 2 * E), (1,)),
                (value, W, slice(2 * E, 3 * E), (2,))]

    def _bias_rows(self, parts):
        if self.in_proj_bias is None:
            return None
        E = self.embed_dim
        return slice(parts[0] * E, (parts[-1] + 1) * E)

    def _heads(self, a, bf):
        """(A0, A1, n, H, hs) -> (n, N, H, T, hs): views, bf: A0 = N (else A0 = T)."""
        return a.transpose(2, 0, 3, 1, 4) if bf else a.transpose(2, 1, 3, 0, 4)

    def _check(self, query, key, value):
        q, k, v = (np.asarray(a) for a in (query, key, value))
        if q.ndim not in (2, 3):
            raise ValueError(f"MultiheadAttention: query must be 3-D (batched) or 2-D (unbatched), got shape {q.shape}")
        for name, a, dim in (("query", q, self.embed_dim), ("key", k, self.kdim), ("value", v, self.vdim)):
            if a.ndim != q.ndim:
                raise ValueError(f"MultiheadAttention: {name} has {a.ndim} dims, query {q.ndim} "
                                 f"(shapes {q.shape}, {k.shape}, {v.shape})")
            if a.shape[-1] != dim:
                raise ValueError(f"MultiheadAttention: {name} must have last dimension {dim}, got shape {a.shape}")
            if a.dtype != self._dtype:
                raise TypeError(f"MultiheadAttention: {name} has dtype {a.dtype}, the module {self._dtype}")
        batch = 0 if self.batch_first else 1
        if q.ndim == 3 and not q.shape[batch] == k.shape[batch] == v.shape[batch]:
            raise ValueError(f"MultiheadAttention: query {q.shape}, key {k.shape} and value {v.shape} must "
                             f"have one batch size (dim {batch})")
        time = batch ^ 1 if q.ndim == 3 else 0
        if k.shape[time] != v.shape[time]:
            raise ValueError(f"MultiheadAttention: key {k.shape} and value {v.shape} must have one length")
        # (keep identity: a shared input is projected once)
        return (q, q, q) if (query is key and key is value) else (q, k, k) if key is value else (q, k, v)

    # -- forward / backward ---------------------------------------------------------------------
    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        query, key, value = self._check(query, key, value)
        batched = query.ndim == 3
        if not batched:  # as batch-first with N = 1, keeping which inputs are shared
            q1 = query[None]
            k1 = q1 if key is query else key[None]
            query, key, value = q1, k1, (k1 if value is key else value[None])
        bf = self.batch_first or not batched
        N, L = (query.shape[0], query.shape[1]) if bf else (query.shape[1], query.shape[0])
        S = key.shape[1] if bf else key.shape[0]
        E, H, hs = self.embed_dim, self.num_heads, self.head_dim
        extra = (self.bias_k is not None) + self.add_zero_attn
        mask, fused_causal = _merged_mask(key_padding_mask, attn_mask, is_causal, N, H, L, S, extra,
                                          batched, self._dtype)

        groups = self._groups(query, key, value)
        heads = [None, None, None]  # q4 (N, H, L, hs), k4, v4 (N, H, S, hs)
        for x, W, rows, parts in groups:
            b = self.in_proj_bias
            b = None if b is None else b.data[self._bias_rows(parts)]
            p = F.linear(x, _weight_rows(W.data, rows), b)
            views = self._heads(p.reshape(p.shape[:2] + (len(parts), H, hs)), bf)
            for i, part in enumerate(parts):
                heads[part] = views[i]
        q4, k4, v4 = heads
        if extra:
            k4, v4 = self._extend(k4, v4, N)

        y = np.empty((N, L, H, hs) if bf else (L, N, H, hs), self._dtype)  # heads side by side
        y4 = y.transpose(0, 2, 1, 3) if bf else y.transpose(1, 2, 0, 3)  # (N, H, L, hs) view
        weights = None
        if self.training and self.dropout > 0:
            w = F.attention_weights(q4, k4, mask, fused_causal)  # (N, H, L, S')
            keep = _keep_mask(self._rng, w.shape, self.dropout, w.dtype)
            weights = w * keep
            np.matmul(weights, v4, out=y4)
            state = ("dropout", w, keep, weights)
        else:
            _, lse = F.scaled_dot_product_attention(q4, k4, v4, mask, fused_causal, return_lse=True, out=y4)
            state = ("fused", lse)
            if need_weights:
                weights = F.attention_weights(q4, k4, mask, fused_causal)
        out = self.out_proj(y.reshape(y.shape[:2] + (E,)))
        self._save(groups, (q4, k4, v4), y4, mask, fused_causal, bf, batched, state, S)
        if need_weights:
            if average_attn_weights:
                weights = weights.mean(axis=1)
            if not batched:
                weights = weights[0]
        else:
            weights = None
        return (out if batched else out[0]), weights

    def _extend(self, k4, v4, N):
        """k4, v4 (N, H, S, hs) with bias_k / bias_v, then a zero key and value, appended."""
        H, hs = self.num_heads, self.head_dim
        ks, vs = [k4], [v4]
        if self.bias_k is not None:
            ks.append(np.broadcast_to(self.bias_k.data.reshape(1, H, 1, hs), (N, H, 1, hs)))
            vs.append(np.broadcast_to(self.bias_v.data.reshape(1, H, 1, hs), (N, H, 1, hs)))
        if self.add_zero_attn:
            ks.append(np.zeros((N, H, 1, hs), k4.dtype))
            vs.append(np.zeros((N, H, 1, hs), v4.dtype))
        return np.concatenate(ks, axis=2), np.concatenate(vs, axis=2)

    def backward(self, grad_output):
        """-> (grad_query, grad_key, grad_value), shaped as the forward's inputs."""
        return self._backward(grad_output, merge=False)

    def _backward(self, grad_output, merge):
        """merge=True: one gradient per distinct input (self-attention: (grad_x,); key is value:
        (grad_query, grad_memory)), each from one fused product; else the three."""
        groups, (q4, k4, v4), y4, mask, fused_causal, bf, batched, state, S = self._take()
        g = np.asarray(grad_output)
        if not batched:
            g = g[None]
        H, hs = self.num_heads, self.head_dim
        dy = self.out_proj.backward(g)  # (A0, A1, E)
        dy4 = self._heads(dy.reshape(dy.shape[:2] + (1, H, hs)), bf)[0]  # (N, H, L, hs) view
        # each group's gradient buffer (A0, A1, n, H, hs), its heads (n, N, H, T, hs) views
        buffers = [np.empty(x.shape[:2] + (len(parts), H, hs), self._dtype) for x, _, _, parts in groups]
        targets = [None, None, None]
        for buf, (_, _, _, parts) in zip(buffers, groups):
            views = self._heads(buf, bf)
            for i, part in enumerate(parts):
                targets[part] = views[i]
        extended = k4.shape[2] != S
        if state[0] == "fused":
            out = None if extended else tuple(targets)
            dq4, dk4, dv4 = F.scaled_dot_product_attention_backward(
                dy4, q4, k4, v4, y4, state[1], mask, fused_causal, out=out)
        else:
            _, w, keep, dropped = state
            dv4 = np.matmul(np.swapaxes(dropped, -1, -2), dy4)
            dw = np.matmul(dy4, np.swapaxes(v4, -1, -2)) * keep
            ds = F.masked_softmax_backward(dw, w, 1 / math.sqrt(hs))  # d(loss)/d(q k^T)
            dq4, dk4 = np.matmul(ds, k4), np.matmul(np.swapaxes(ds, -1, -2), q4)
        if extended or state[0] != "fused":
            if self.bias_k is not None:  # (the column after the S keys)
                self.bias_k.grad += dk4[:, :, S].sum(axis=0).reshape(self.bias_k.data.shape)
                self.bias_v.grad += dv4[:, :, S].sum(axis=0).reshape(self.bias_v.data.shape)
            for t, d in zip(targets, (dq4, dk4[:, :, :S], dv4[:, :, :S])):
                t[...] = d
        E = self.embed_dim
        results = [None, None, None]
        merged = []
        for buf, (x, W, rows, parts) in zip(buffers, groups):
            flat = buf.reshape(buf.shape[:2] + (len(parts) * E,))  # (A0, A1, n E)
            if merge or len(parts) == 1:
                pieces = [(flat, rows, parts)]
            else:  # one product per part: the gradients of query, key and value apart
                pieces = [(flat[..., i * E:(i + 1) * E], slice(rows.start + i * E, rows.start + (i + 1) * E), (part,))
                          for i, part in enumerate(parts)]
            for gp, r, ps in pieces:
                dx, dw, db = F.linear_backward(gp, x, W.data[r])
                W.grad[r] += dw
                if self.in_proj_bias is not None:
                    self.in_proj_bias.grad[self._bias_rows(ps)] += db
                if not batched:
                    dx = dx[0]
                merged.append(dx)
                for part in ps:
                    results[part] = dx
        return tuple(merged) if merge else tuple(results)

    def extra_repr(self):
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, batch_first={self.batch_first}"
