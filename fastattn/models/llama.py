"""A Llama-family decoder (Llama, Qwen2, Mistral: Hugging Face's LlamaForCausalLM and kin) on
fastattn's kernels, with an explicit backward, as the GPT in fastattn/models/gpt.py.

    x = embed_tokens[idx]                                     (B, T, E)
    per layer:  x = x + self_attn(input_layernorm(x))          RMSNorm, RoPE, grouped-query
                x = x + mlp(post_attention_layernorm(x))       down(silu(gate(x)) * up(x))
    logits = lm_head(norm(x))                                 (B, T, V), lm_head tied to embed_tokens or not

Parameter names are Hugging Face's (model.layers.0.self_attn.q_proj.weight, ..., lm_head.weight),
so a directory written by save_pretrained loads by name (Llama.from_pretrained). The KV cache
holds H_kv heads per layer (fastattn/models/generation.py), and Mistral's sliding window is the
attention kernel's window: query i sees keys i - W < j <= i.
"""
import contextlib

import numpy as np

from fastattn import _lowp
from fastattn import functional as F
from fastattn import nn
from fastattn.io.hf_files import read_hf_dir
from fastattn.models import generation as _gen
from fastattn.models.llama_config import LlamaConfig, llama_config, parameter_shapes
from fastattn.nn.module import _skip_init


def _fuse(*linears, out=None):
    """One (sum of out_features, in) weight (and bias) for Linears that read the same input,
    each Linear's weight (bias) rebound to its rows, a view: one product instead of several at
    inference (q/k/v, gate/up), the same Parameters for training and loading. out: the array
    to hold the weight (else a new one)."""
    weight = np.concatenate([m.weight.data for m in linears], out=out)
    has_bias = linears[0].bias is not None
    bias = np.concatenate([m.bias.data for m in linears]) if has_bias else None
    start = 0
    for m in linears:
        n = m.weight.data.shape[0]
        m.weight.data = weight[start:start + n]
        if has_bias:
            m.bias.data = bias[start:start + n]
        start += n
    return weight, bias


def _pack_layers(layers):
    """Every layer's weights moved into one array, in the order a decode step reads them (per
    layer: q/k/v, o_proj, gate/up, down_proj), each Linear's weight and each fused weight
    rebound to a view of it. A decode step multiplies one row by every weight once, streaming
    them from memory: out of one run of memory with transparent huge pages (NumPy asks for them
    on large arrays), the matrix-vector products of SmolLM2-135M's shapes ran 1.25x faster than
    on separate arrays of 1.3-7 MB (measured on an Intel Xeon, 1 thread)."""
    groups = []
    for layer in layers:
        a, mlp = layer.self_attn, layer.mlp
        groups += [(a.q_proj, a.k_proj, a.v_proj), (a.o_proj,), (mlp.gate_proj, mlp.up_proj), (mlp.down_proj,)]
    arena = np.empty(sum(m.weight.data.size for g in groups for m in g), groups[0][0].weight.data.dtype)
    start, fused = 0, []
    for g in groups:
        rows, K = sum(m.out_features for m in g), g[0].in_features
        out = arena[start:start + rows * K].reshape(rows, K)
        start += rows * K
        if len(g) == 1:
            out[...] = g[0].weight.data
            g[0].weight.data = out
        else:
            fused.append(_fuse(*g, out=out))  # (weight, bias)
    for i, layer in enumerate(layers):
        layer._qkv = fused[2 * i]
        layer.mlp._gate_up = fused[2 * i + 1][0]


def _quantize_fused(weight, linears, compute_type):
    """The fused weight of _fuse as int8 / bfloat16 (one scale a row: the same as each Linear's
    own), each Linear's weight rebound to its rows of it (Module.quantize then leaves them)."""
    weight = _lowp.quantize(weight, "bfloat16" if compute_type == "bfloat16" else "int8")
    start = 0
    for m in linears:
        n = m.out_features
        m.weight.data, m.weight.grad = weight._rows(start, start + n), np.zeros(0, np.float32)
        start += n
    return weight


def _rms_infer(norm, x, ops):  # an nn.RMSNorm's forward without keeping x for a backward
    if ops is F:
        return F.rms_norm(x, norm.normalized_shape, norm.weight.data, norm.eps)
    return ops.rms_norm(x, norm.weight.data, norm.eps)


class LlamaMLP(nn.Module):
    """down_proj(silu(gate_proj(x)) * up_proj(x)), no biases (F.swiglu)."""

    def __init__(self, E, I, dtype, rng):
        super().__init__()
        self.gate_proj = nn.Linear(E, I, False, dtype, rng)
        self.up_proj = nn.Linear(E, I, False, dtype, rng)
        self.down_proj = nn.Linear(I, E, False, dtype, rng)
        self._gate_up = _fuse(self.gate_proj, self.up_proj)[0]  # (2I, E)

    def _quantize_own(self, compute_type):
        self._gate_up = _quantize_fused(self._gate_up, (self.gate_proj, self.up_proj), compute_type)

    def _fused_weights(self):  # (the gated product reads the fused weight: see Module.freeze)
        return [self._gate_up] if isinstance(self._gate_up, np.ndarray) else []

    def forward(self, x):  # (B, T, E) -> (B, T, E)
        if isinstance(self._gate_up, _lowp.LOW_PRECISION):  # (quantized: inference only)
            return self.infer(x, F)
        a, (gate, up) = F.swiglu(x, self.gate_proj.weight.data, self.up_proj.weight.data, return_pre=True)
        self._save(x, gate, up)
        return self.down_proj(a)

    def infer(self, x, ops):  # inference: nothing kept; gate and up from one product (..., 2I)
        I = self.gate_proj.out_features
        gate_up = ops.linear(x, self._gate_up, None)
        a = ops.silu_mul(gate_up[..., :I], gate_up[..., I:])
        return ops.linear(a, self.down_proj.weight.data, None)

    def backward(self, dout):
        x, gate, up = self._take()
        da = self.down_proj.backward(dout)
        dx, dwg, dwu = F.swiglu_backward(da, x, self.gate_proj.weight.data, self.up_proj.weight.data, gate, up)
        self.gate_proj.weight.grad += dwg
        self.up_proj.weight.grad += dwu
        return dx


class LlamaDecoderLayer(nn.Module):
    def __init__(self, cfg, window, dtype, rng):
        super().__init__()
        E = cfg.hidden_size
        self.input_layernorm = nn.RMSNorm(E, cfg.rms_norm_eps, dtype=dtype)
        self.self_attn = nn.GroupedQueryAttention(E, cfg.num_attention_heads, cfg.num_key_value_heads,
                                                  cfg.head_dim, cfg.attention_bias, cfg.rope_theta,
                                                  cfg.rope_scaling, window, dtype, rng)
        self.post_attention_layernorm = nn.RMSNorm(E, cfg.rms_norm_eps, dtype=dtype)
        self.mlp = LlamaMLP(E, cfg.intermediate_size, dtype, rng)
        a = self.self_attn
        self._qkv = _fuse(a.q_proj, a.k_proj, a.v_proj)  # ((H + 2 H_kv) D, E) and its bias

    def _quantize_own(self, compute_type):
        a = self.self_attn
        self._qkv = (_quantize_fused(self._qkv[0], (a.q_proj, a.k_proj, a.v_proj), compute_type), self._qkv[1])

    def _fused_weights(self):  # (the q/k/v product reads the fused weight: see Module.freeze)
        return [self._qkv[0]] if isinstance(self._qkv[0], np.ndarray) else []

    def forward(self, x):  # pre-norm residual block, positions 0 .. T-1
        x = x + self.self_attn(self.input_layernorm(x))
        return x + self.mlp(self.post_attention_layernorm(x))

    def backward(self, dx):
        dx = dx + self.post_attention_layernorm.backward(self.mlp.backward(dx))
        return dx + self.input_layernorm.backward(self.self_attn.backward(dx))

    def forward_cached(self, x, cos, sin, cache, layer, key_mask, ops, last_only=False):
        """x (B, Tn, E): the next Tn positions (their rotary tables cos, sin (B, Tn, D)); their
        keys and values go into the cache after its first cache.length positions (inference)."""
        attn = self.self_attn
        B, T, _ = x.shape
        H, H_kv, D = attn.num_heads, attn.num_kv_heads, attn.head_dim
        h = _rms_infer(self.input_layernorm, x, ops)
        qkv = ops.linear(h, *self._qkv).reshape(B, T, H + 2 * H_kv, D)  # q, k, v heads side by side
        # q and k rotated in one call: (B, H + H_kv, T, D), then split by heads (views)
        qk = ops.rotary_embedding(qkv[:, :, :H + H_kv].transpose(0, 2, 1, 3), cos, sin)
        end = cache.length + T
        cache.k[layer, :, :, cache.length:end] = qk[:, H:]
        cache.v[layer, :, :, cache.length:end] = qkv[:, :, H + H_kv:].transpose(0, 2, 1, 3)
        q = qk[:, :H]
        if last_only:  # (the last query sees every key: causal, bottom-right)
            q, T = q[:, :, -1:], 1
        y = np.empty((B, T, H, D), dtype=x.dtype)
        ops.scaled_dot_product_attention(q, cache.k[layer, :, :, :end], cache.v[layer, :, :, :end],
                                         attn_mask=key_mask, is_causal=True, out=y.transpose(0, 2, 1, 3),
                                         enable_gqa=True, window=attn.window)
        x = (x[:, -1:] if last_only else x) + ops.linear(y.reshape(B, T, H * D), attn.o_proj.weight.data, None)
        x += self.mlp.infer(_rms_infer(self.post_attention_layernorm, x, ops), ops)
        return x


class _Body(nn.Module):
    """Hugging Face's model.model: what the parameter names start with."""

    def __init__(self, cfg, dtype, rng):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size, dtype=dtype)
        self.layers = nn.ModuleList(LlamaDecoderLayer(cfg, cfg.windows[i], dtype, rng)
                                    for i in range(cfg.num_hidden_layers))
        self.norm = nn.RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, dtype=dtype)


class Llama(nn.Module):
    """Llama(LlamaConfig(...), seed=0, dtype=np.float32): a Llama, Qwen2 or Mistral decoder.

    model(idx) -> logits (B, T, V); model(idx, targets) -> (logits, mean cross-entropy), and then
    model.backward() adds the gradients to every param.grad. Weights are drawn N(0, 0.02) (the
    transformers initializer_range), RMSNorm weights 1."""

    def __init__(self, config, seed=0, dtype=np.float32):
        super().__init__()
        if not isinstance(config, LlamaConfig):
            raise TypeError(f"config must be a LlamaConfig, got {type(config).__name__}")
        self.config = config
        rng = np.random.default_rng(seed)
        with _skip_init():
            self.model = _Body(config, dtype, rng)
            self.lm_head = None if config.tie_word_embeddings else nn.Linear(
                config.hidden_size, config.vocab_size, False, dtype)
        _pack_layers(self.model.layers)
        for name, p in self.named_parameters():
            if p.data.ndim == 2:
                p.data[...] = rng.standard_normal(p.data.shape) * 0.02
        self.rotary = nn.RotaryEmbedding(config.head_dim, config.rope_theta, config.rope_scaling)
        self.rng = rng
        self._last = None

    @classmethod
    def from_pretrained(cls, path, dtype=np.float32, compute_type="float32"):
        """The model in a Hugging Face directory written by LlamaForCausalLM, Qwen2ForCausalLM or
        MistralForCausalLM's save_pretrained (config.json + model.safetensors). Missing,
        unexpected or mis-shaped tensors: a ValueError naming them. Its tokenizer:
        fastattn.load_tokenizer(path). compute_type: the weights' precision (Module.quantize)."""
        _lowp.check_compute_type(compute_type)  # (before reading the weights)
        hf, tensors = read_hf_dir(path, _check_shapes)
        config = llama_config(hf)
        if config.tie_word_embeddings:
            tensors.pop("lm_head.weight", None)  # (the tied head, if a file holds it too)
        model = cls(config, dtype=dtype)
        model.load_state_dict(tensors)
        del tensors
        return model.quantize(compute_type)

    @property
    def head_weight(self):
        """(V, E): lm_head's weight, or the token embedding when they are tied."""
        return (self.model.embed_tokens if self.lm_head is None else self.lm_head).weight.data

    def __call__(self, idx, targets=None):
        return self.forward(idx, targets)

    def forward(self, idx, targets=None):
        """idx (B, T) token ids -> logits (B, T, V); with targets (B, T) (-1: ignored), (logits,
        the mean cross-entropy), the state for backward() kept."""
        idx = np.asarray(idx)
        if idx.ndim != 2 or not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(f"idx must be a (B, T) integer array, got {idx.dtype} {idx.shape}")
        if idx.size and (idx.min() < 0 or idx.max() >= self.config.vocab_size):
            raise ValueError(f"token ids must be in [0, {self.config.vocab_size})")
        m = self.model
        x = m.embed_tokens(idx)
        for layer in m.layers:
            x = layer(x)
        x = m.norm(x)
        logits = F.linear(x, self.head_weight)
        if targets is None:
            self._last = None
            return logits
        targets = np.asarray(targets)
        loss = F.cross_entropy(logits, targets, ignore_index=-1)
        self._last = (x, logits, targets)
        return logits, float(loss)

    def backward(self):
        """Adds the gradients of the last forward's loss to every param.grad."""
        if self._last is None:
            raise RuntimeError("backward() needs a forward() with targets first")
        x, logits, targets = self._last
        self._last = None
        m = self.model
        dlogits = F.cross_entropy_backward(logits, targets, ignore_index=-1)
        dx, dw, _ = F.linear_backward(dlogits, x, self.head_weight)
        (m.embed_tokens if self.lm_head is None else self.lm_head).weight.grad += dw
        dx = m.norm.backward(dx)
        for layer in reversed(m.layers):
            dx = layer.backward(dx)
        m.embed_tokens.backward(dx)

    def num_params(self, non_embedding=True):
        """Number of parameters; by default without the token embedding (as the GPT counts
        without its position table: a tied head is counted with the embedding)."""
        n = self.num_parameters()
        return n - self.model.embed_tokens.weight.data.size if non_embedding else n

    def configure_optimizers(self, weight_decay, learning_rate, betas, eps=1e-8):
        """AdamW with weight decay on the 2-D weights, none on the norms and biases."""
        from fastattn.optim import AdamW
        params = self.parameters()
        return AdamW([{"params": [p for p in params if p.data.ndim >= 2], "weight_decay": weight_decay},
                      {"params": [p for p in params if p.data.ndim < 2], "weight_decay": 0.0}],
                     lr=learning_rate, betas=betas, eps=eps)

    @contextlib.contextmanager
    def _eval_mode(self):
        was_training = self.training
        self.eval()
        try:
            yield self
        finally:
            self.train(was_training)

    def attention_maps(self, idx):
        """idx (B, T) -> one (B, H, T, T) array per layer: each head's attention weights (rows sum
        to 1), from the rotated queries and keys the layer's forward kept. Runs in eval mode."""
        with self._eval_mode():
            self(idx)
        maps = []
        for layer in self.model.layers:
            q, k = layer.self_attn._saved[:2]
            maps.append(F.attention_weights(q, k, is_causal=True, enable_gqa=True, window=layer.self_attn.window))
        return maps

    def _forward_cached(self, idx, positions, valid, cache, ops=F):
        """As GPT._forward_cached: idx (B, Tn) at positions (B, Tn), valid (B, Tn) False for
        left padding; keys and values appended to the cache; returns the last position's
        logits (B, V)."""
        cache.valid[:, cache.length:cache.length + idx.shape[1]] = valid
        key_mask = cache.key_mask(cache.length + idx.shape[1])
        m = self.model
        x = m.embed_tokens.weight.data[idx]
        cos, sin = self.rotary.cos_sin(positions, x.dtype)  # (B, Tn, D)
        last = len(m.layers) - 1
        for i, layer in enumerate(m.layers):
            x = layer.forward_cached(x, cos, sin, cache, i, key_mask, ops, last_only=i == last)
        cache.length += idx.shape[1]
        return ops.linear(_rms_infer(m.norm, x[:, -1], ops), self.head_weight, None)

    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, seed=None,
                 stop=None, attention_mask=None, use_cache=True):
        """As GPT.generate: idx (B, T) -> (B, T + n), sampling with temperature (0: greedy),
        top_k, top_p, stop tokens, left-padded batches (attention_mask), the KV cache (H_kv heads
        per layer) or not (use_cache=False: same tokens, slower)."""
        steps = list(self.generate_stream(idx, max_new_tokens, temperature, top_k, top_p, seed, stop,
                                          attention_mask, use_cache))
        idx = np.asarray(idx).astype(np.int64)
        return np.concatenate([idx, np.stack(steps, axis=1)], axis=1) if steps else idx

    def generate_stream(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, seed=None,
                        stop=None, attention_mask=None, use_cache=True):
        """generate() as an iterator of each step's (B,) new tokens (-1 for stopped rows)."""
        idx, valid = _gen.check_prompt(idx, attention_mask, self.config.vocab_size)
        stop = _gen.check_sampling(max_new_tokens, temperature, top_k, top_p, stop)
        return self._stream(idx, valid, max_new_tokens, temperature, top_k, top_p,
                            np.random.default_rng(seed), stop, use_cache)

    def _stream(self, *args):
        with self._eval_mode():
            yield from _gen.stream(self, *args)


def _check_shapes(hf, shapes):
    """ValueError unless model.safetensors declares every tensor config.json implies, with its
    shape (checked before any tensor is read)."""
    want = parameter_shapes(llama_config(hf))
    have = dict(shapes)
    if hf.get("tie_word_embeddings") and "lm_head.weight" in have:
        have.pop("lm_head.weight")
    missing = sorted(set(want) - set(have))
    unexpected = sorted(set(have) - set(want))
    wrong = [f"{n}: {have[n]} != {s}" for n, s in want.items() if n in have and have[n] != s]
    if missing or unexpected or wrong:
        raise ValueError(f"model.safetensors does not fit config.json ({hf.get('model_type')}): missing "
                         f"{missing[:5]}, unexpected {unexpected[:5]}, wrong shapes {wrong[:5]}")
