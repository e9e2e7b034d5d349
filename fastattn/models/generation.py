"""Generating tokens from a GPT: a KV cache, sampling (temperature, top-k, top-p), stop tokens,
batched prompts of different lengths (left padding) and a streaming form. GPT.generate and
GPT.generate_stream are the public entry points.

The cache holds every layer's keys and values, preallocated once, (n_layer, B, H, max_len, hs):
the prompt runs through the model once (prefill), then each new token runs alone through the
decode path of scaled_dot_product_attention (Tq = 1 against the cache, causal bottom-right).

The window. The model has learned positions 0 .. block_size - 1 only, so, as in nanoGPT, a token
is predicted from at most the last block_size tokens. Once a row's context is longer, the window
slides by one token per step and every position in it changes: the cached keys no longer apply,
and each step runs the whole window (block_size tokens) again, which is what generating without
the cache does. So the output is the same with and without the cache; the cache saves time while
the context fits in block_size.
"""
import numbers

import numpy as np

from fastattn import _backend
from fastattn import functional as F


class KVCache:
    """Keys and values of every layer, k and v (n_layer, B, H_kv, max_len, hs), and which of the
    first `length` positions hold a real token rather than left padding: valid (B, max_len).
    H_kv: a GPT's n_head; a Llama's num_key_value_heads (grouped-query: H / H_kv times smaller)."""

    def __init__(self, config, batch, max_len, dtype):
        if hasattr(config, "num_key_value_heads"):  # a LlamaConfig
            heads, hs = config.num_key_value_heads, config.head_dim
        else:
            heads, hs = config.n_head, config.n_embd // config.n_head
        shape = (config.n_layer, batch, heads, max_len, hs)
        self.k = np.zeros(shape, dtype)
        self.v = np.zeros(shape, dtype)
        self.valid = np.zeros((batch, max_len), bool)
        self.length = 0

    def key_mask(self, end):
        """The (B, 1, 1, end) bool mask of the keys a query may see, or None when all are real."""
        valid = self.valid[:, :end]
        return None if valid.all() else valid[:, None, None, :]


def check_prompt(idx, attention_mask, vocab_size):
    """idx (B, T) token ids and attention_mask (B, T) (1: token, 0: left padding; None: all 1)
    -> (int64 copy of idx, bool mask), or ValueError."""
    idx = np.asarray(idx)
    if idx.ndim != 2 or idx.shape[1] < 1 or not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"idx must be a (B, T) integer array with T >= 1, got {idx.dtype} {idx.shape}")
    if attention_mask is None:
        valid = np.ones(idx.shape, bool)
    else:
        valid = np.asarray(attention_mask)
        if valid.shape != idx.shape or not (valid.dtype == bool or np.issubdtype(valid.dtype, np.integer)):
            raise ValueError(f"attention_mask must be a {idx.shape} array of 0/1 (or bool), "
                             f"got {valid.dtype} {valid.shape}")
        if not np.isin(valid, (0, 1)).all():
            raise ValueError("attention_mask must hold only 0 (padding) and 1 (token)")
        valid = valid.astype(bool)
        if not valid[:, -1].all():
            raise ValueError("every prompt needs at least one token, and the padding must be on the "
                             "left: attention_mask[:, -1] must be 1")
        if (np.diff(valid.astype(np.int8), axis=1) < 0).any():
            raise ValueError("attention_mask must be left padding: 0s, then 1s, in every row")
    tokens = idx[valid]
    if tokens.size and (tokens.min() < 0 or tokens.max() >= vocab_size):
        raise ValueError(f"token ids must be in [0, {vocab_size})")
    return idx.astype(np.int64), valid


def check_sampling(max_new_tokens, temperature, top_k, top_p, stop):
    """ValueError unless the sampling arguments are valid; returns stop as an int64 array."""
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, numbers.Integral) \
            or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real) \
            or not np.isfinite(temperature) or temperature < 0:
        raise ValueError(f"temperature must be a finite number >= 0, got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral)
                              or top_k < 1):
        raise ValueError(f"top_k must be None or an int >= 1, got {top_k!r}")
    if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, numbers.Real)
                              or not 0 < top_p <= 1):
        raise ValueError(f"top_p must be None or a number in (0, 1], got {top_p!r}")
    stop = np.atleast_1d(np.asarray([] if stop is None else stop))
    if stop.ndim != 1 or (stop.size and not np.issubdtype(stop.dtype, np.integer)):
        raise ValueError(f"stop must be None, a token id or a list of token ids, got {stop!r}")
    return stop.astype(np.int64)


def stream(model, idx, valid, max_new_tokens, temperature, top_k, top_p, rng, stop, use_cache):
    """Yields one (B,) int64 array per step: each row's new token, -1 once the row has produced
    a stop token. Ends after max_new_tokens steps or when every row has stopped. The model must
    be in eval mode (no dropout) for the whole run."""
    B, T = idx.shape
    bs = model.config.block_size
    try:
        ctx = np.empty((B, T + max_new_tokens), np.int64)  # every row right-aligned: its tokens last
        ok = np.empty((B, T + max_new_tokens), bool)
    except MemoryError:
        raise ValueError(f"max_new_tokens={max_new_tokens} is too many: {B} rows of {T + max_new_tokens} "
                         "tokens do not fit in memory") from None
    ctx[:, :T], ok[:, :T] = idx, valid
    lengths = valid.sum(axis=1)  # tokens in each row so far
    end = T
    dtype = model.parameters()[0].data.dtype
    cache = KVCache(model.config, B, min(bs, int(lengths.max()) + max_new_tokens), dtype) if use_cache else None
    finished = np.zeros(B, bool)
    # The first step runs through fastattn.functional, which checks every argument. Later steps
    # have the same dtypes and shapes that fit by construction, so they call the backend's
    # kernels directly: the checks cost more than a kernel at Tq = 1 on a small model.
    kernels = _backend.current()
    for step in range(max_new_tokens):
        ops = F if step == 0 else kernels
        if use_cache and step > 0 and lengths.max() <= bs:
            # decode: the last token alone, at its position, against the cache
            logits = model._forward_cached(ctx[:, end - 1:end], (lengths - 1)[:, None],
                                           np.ones((B, 1), bool), cache, ops)
        else:  # prefill the window: each row's last min(length, block_size) tokens
            W = int(min(lengths.max(), bs))
            window, window_ok = ctx[:, end - W:end], ok[:, end - W:end]
            positions = np.maximum(np.cumsum(window_ok, axis=1) - 1, 0)
            if cache is None:
                run_cache = KVCache(model.config, B, W, dtype)
            else:
                run_cache = cache
                run_cache.length = 0
            logits = model._forward_cached(window, positions, window_ok, run_cache, ops)
        token = sample(logits, temperature, top_k, top_p, rng)
        ctx[:, end], ok[:, end] = token, True
        end += 1
        lengths += 1
        out = np.where(finished, -1, token)
        finished |= np.isin(token, stop)
        yield out
        if finished.all():
            return


def sample(logits, temperature, top_k, top_p, rng):
    """logits (B, V) -> (B,) token ids drawn from softmax(logits / temperature) restricted to
    the top_k most likely tokens (None: all) and then to the smallest set of most likely tokens
    whose probability reaches top_p (None: all); ties at either cut are kept. Temperature 0
    takes the most likely token (ties: the lowest id)."""
    if temperature == 0:
        return logits.argmax(axis=-1)
    # the max is subtracted before dividing: logits / 1e-310 overflow to inf (and inf - inf is
    # NaN), but differences from the max are <= 0 and go to -inf at worst, so a temperature near
    # 0 keeps the most likely tokens alone, as temperature 0 does
    z = logits.astype(np.float64)
    with np.errstate(over="ignore"):
        z = (z - z.max(axis=-1, keepdims=True)) / temperature
    if top_k is not None and top_k < z.shape[-1]:
        kth = np.partition(z, -top_k, axis=-1)[:, -top_k, None]
        z[z < kth] = -np.inf
    p = np.exp(z - z.max(axis=-1, keepdims=True))
    if top_p is not None and top_p < 1:
        p /= p.sum(axis=-1, keepdims=True)
        ranked = -np.sort(-p, axis=-1)  # descending
        before = np.cumsum(ranked, axis=-1) - ranked  # the mass of the tokens ranked above
        n_keep = (before < top_p).sum(axis=-1)  # >= 1: nothing is ranked above the first
        cutoff = ranked[np.arange(len(p)), n_keep - 1]
        p[p < cutoff[:, None]] = 0
    cdf = np.cumsum(p, axis=-1)
    u = rng.random((z.shape[0], 1)) * cdf[:, -1:]
    # the first token whose cumulative mass exceeds u; tokens of zero mass are never drawn
    return np.minimum((cdf <= u).sum(axis=-1), z.shape[-1] - 1)
