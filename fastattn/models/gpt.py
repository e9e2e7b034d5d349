"""A GPT (nanoGPT's model.py, layer by layer) on fastattn's kernels, with an explicit backward.

Every layer is a forward/backward pair over NumPy arrays, as in llm.c: forward keeps what its
backward needs; backward takes d(loss)/d(output), adds the parameter gradients into param.grad
and returns d(loss)/d(input). No autograd engine. Shapes: B batch, T time, C = n_embd,
H = n_head, hs = C / H head size, V vocabulary.

Parameter names and shapes follow nanoGPT (transformer.wte.weight, transformer.h.0.attn.c_attn.weight
with Linear weights stored (out_features, in_features), ...), so weights move between the two by name.
"""
import contextlib
import math
import numbers

import numpy as np

from fastattn import _lowp
from fastattn import functional as F
from fastattn import nn
from fastattn.nn.module import _init_default, _skip_init
from fastattn.models import generation as _gen
from fastattn.models.gpt2_files import read_gpt2_dir
from fastattn.models.gpt_config import GPTConfig  # noqa: F401 (fastattn.models.gpt.GPTConfig)


def _data(param):
    return None if param is None else param.data


def _linear_infer(layer, x, ops):  # an nn.Linear's forward without keeping x for a backward
    return ops.linear(x, layer.weight.data, _data(layer.bias))


def _layer_norm_infer(layer, x, ops):  # an nn.LayerNorm's forward, without its statistics
    return ops.layer_norm(x, layer.weight.data, _data(layer.bias), layer.eps)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg, rng, dtype):
        super().__init__()
        C = cfg.n_embd
        self.n_head = cfg.n_head
        self.c_attn = nn.Linear(C, 3 * C, cfg.bias, dtype)  # fused q, k, v projection
        self.c_proj = nn.Linear(C, C, cfg.bias, dtype)
        self.resid_dropout = nn.Dropout(cfg.dropout, seed=rng)

    def forward(self, x):  # (B, T, C) -> (B, T, C)
        B, T, C = x.shape
        H = self.n_head
        qkv = self.c_attn(x).reshape(B, T, 3, H, C // H)
        self.q, self.k, self.v = qkv.transpose(2, 0, 3, 1, 4)  # each (B, H, T, hs): views
        # the kernel reads q, k, v in place and writes each head's output straight into its
        # columns of y (B, T, H, hs), which is then c_proj's (B, T, C) input: no copies
        y = np.empty((B, T, H, C // H), dtype=x.dtype)
        self.y, self.lse = F.scaled_dot_product_attention(
            self.q, self.k, self.v, is_causal=True, return_lse=True, out=y.transpose(0, 2, 1, 3))
        return self.resid_dropout(self.c_proj(y.reshape(B, T, C)))

    def forward_cached(self, x, cache, layer, key_mask, ops, last_only=False):
        """x (B, Tn, C): the next Tn positions. Their keys and values go into the cache after
        its first cache.length positions, and their queries attend to all of those (inference).
        last_only: the output of the last position only, (B, 1, C)."""
        B, T, C = x.shape
        H = self.n_head
        q, k, v = _linear_infer(self.c_attn, x, ops).reshape(B, T, 3, H, C // H).transpose(2, 0, 3, 1, 4)
        end = cache.length + T
        cache.k[layer, :, :, cache.length:end] = k
        cache.v[layer, :, :, cache.length:end] = v
        if last_only:  # (the last query sees every key: causal, bottom-right)
            q, T = q[:, :, -1:], 1
        y = np.empty((B, T, H, C // H), dtype=x.dtype)
        ops.scaled_dot_product_attention(q, cache.k[layer, :, :, :end], cache.v[layer, :, :, :end],
                                         attn_mask=key_mask, is_causal=True, out=y.transpose(0, 2, 1, 3))
        return _linear_infer(self.c_proj, y.reshape(B, T, C), ops)

    def backward(self, dout):
        B, T, C = dout.shape
        H = self.n_head
        dy = self.c_proj.backward(self.resid_dropout.backward(dout))
        dy = dy.reshape(B, T, H, C // H).transpose(0, 2, 1, 3)  # (B, H, T, hs): a view
        # dq, dk, dv go straight into their places in c_attn's output gradient (B, T, 3, H, hs)
        dqkv = np.empty((B, T, 3, H, C // H), dtype=dout.dtype)
        F.scaled_dot_product_attention_backward(dy, self.q, self.k, self.v, self.y, self.lse,
                                                is_causal=True, out=tuple(dqkv.transpose(2, 0, 3, 1, 4)))
        return self.c_attn.backward(dqkv.reshape(B, T, 3 * C))


class MLP(nn.Module):
    def __init__(self, cfg, rng, dtype):
        super().__init__()
        C = cfg.n_embd
        self.c_fc = nn.Linear(C, 4 * C, cfg.bias, dtype)
        self.c_proj = nn.Linear(4 * C, C, cfg.bias, dtype)
        self.approximate = cfg.gelu_approximate
        self.dropout = nn.Dropout(cfg.dropout, seed=rng)

    def forward(self, x):  # (B, T, C) -> (B, T, C)
        # c_fc and the GELU in one kernel; c_fc keeps x for its backward, as its own forward would
        self.c_fc._save(x)
        a, self.h = F.linear_gelu(x, self.c_fc.weight.data, _data(self.c_fc.bias), self.approximate,
                                  return_pre=True)  # h (B, T, 4C) before the GELU, a after it
        return self.dropout(self.c_proj(a))

    def infer(self, x, ops):  # inference: no dropout, nothing kept
        a = ops.linear_gelu(x, self.c_fc.weight.data, _data(self.c_fc.bias), self.approximate)
        return _linear_infer(self.c_proj, a, ops)

    def backward(self, dout):
        da = self.c_proj.backward(self.dropout.backward(dout))
        return self.c_fc.backward(F.gelu_backward(da, self.h, self.approximate))


class Block(nn.Module):
    def __init__(self, cfg, rng, dtype):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, cfg.layer_norm_eps, bias=cfg.bias, dtype=dtype)
        self.attn = CausalSelfAttention(cfg, rng, dtype)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, cfg.layer_norm_eps, bias=cfg.bias, dtype=dtype)
        self.mlp = MLP(cfg, rng, dtype)

    def forward(self, x):  # pre-LN residual block
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))

    def forward_cached(self, x, cache, layer, key_mask, ops, last_only=False):  # inference: no dropout
        a = self.attn.forward_cached(_layer_norm_infer(self.ln_1, x, ops), cache, layer, key_mask, ops, last_only)
        x = (x[:, -1:] if last_only else x) + a
        x += self.mlp.infer(_layer_norm_infer(self.ln_2, x, ops), ops)
        return x

    def backward(self, dx):  # the residual stream passes dx through; each branch adds to it
        dx = dx + self.ln_2.backward(self.mlp.backward(dx))
        return dx + self.ln_1.backward(self.attn.backward(dx))


class _Transformer(nn.Module):
    """nanoGPT's model.transformer: what its parameter names start with."""

    def __init__(self, cfg, rng, dtype):
        super().__init__()
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd, dtype=dtype)
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd, dtype=dtype)
        self.drop = nn.Dropout(cfg.dropout, seed=rng)
        self.h = nn.ModuleList(Block(cfg, rng, dtype) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd, cfg.layer_norm_eps, bias=cfg.bias, dtype=dtype)


class GPT(nn.Module):
    """GPT(GPTConfig(...), seed=0, dtype=np.float32). logits, loss = model(idx, targets).

    An nn.Module: model.transformer holds wte, wpe, drop, h (the blocks) and ln_f as in nanoGPT,
    and the LM head is tied to transformer.wte (no lm_head.weight of its own)."""

    def __init__(self, config, seed=0, dtype=np.float32):
        super().__init__()
        self.config = config
        rng = np.random.default_rng(seed)
        with _skip_init():  # the weights are drawn below, as GPT-2 initialises them
            self.transformer = _Transformer(config, rng, dtype)
        t = self.transformer
        C = config.n_embd
        self.rng = rng
        self._last = None
        if not _init_default():  # (built inside _skip_init: its weights come from a file)
            return
        t.wte.weight.data[...] = rng.standard_normal((config.vocab_size, C)) * 0.02
        t.wpe.weight.data[...] = rng.standard_normal((config.block_size, C)) * 0.02
        # residual projections scaled by 1/sqrt(2 n_layer), as GPT-2 (two per block)
        resid_std = 0.02 / math.sqrt(2 * config.n_layer)
        for block in t.h:
            for layer, std in ((block.attn.c_attn, 0.02), (block.attn.c_proj, resid_std),
                               (block.mlp.c_fc, 0.02), (block.mlp.c_proj, resid_std)):
                layer.weight.data[...] = rng.standard_normal(layer.weight.data.shape) * std
        self.rng = rng  # after the init draws, it drives dropout (a trainer saves its state)
        self._last = None  # what backward() needs from the last forward with targets

    @classmethod
    def from_pretrained(cls, path, dtype=np.float32, compute_type="float32"):
        """The GPT-2 in a Hugging Face model directory (config.json + model.safetensors, as
        transformers' save_pretrained writes it); see fastattn/models/gpt2_files.py. Missing,
        unexpected or mis-shaped tensors: a ValueError naming them. Its tokenizer:
        fastattn.load_tokenizer(path). compute_type: see Module.quantize ("float32": the
        weights as stored)."""
        _lowp.check_compute_type(compute_type)  # (before reading the weights)
        config, state = read_gpt2_dir(path)
        with _skip_init():  # (every weight comes from the file: drawing them first took 5.5 of 7 s)
            model = cls(config, dtype=dtype)
        model.load_state_dict(state)  # names what is missing or mis-shaped
        del state
        return model.quantize(compute_type)

    def __call__(self, idx, targets=None):
        return self.forward(idx, targets)

    def forward(self, idx, targets=None):
        """idx (B, T) token ids -> logits (B, T, V), and the mean cross-entropy against targets
        (B, T) (None without targets; targets of -1 are ignored, as in nanoGPT)."""
        idx = np.asarray(idx)
        if idx.ndim != 2 or not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(f"idx must be a (B, T) integer array, got {idx.dtype} {idx.shape}")
        B, T = idx.shape
        if T > self.config.block_size:
            raise ValueError(f"sequence of length {T} is longer than block_size {self.config.block_size}")
        if idx.size and (idx.min() < 0 or idx.max() >= self.config.vocab_size):
            raise ValueError(f"token ids must be in [0, {self.config.vocab_size})")
        t = self.transformer
        t.wte._save(idx)  # (wte's forward, without checking the ids a second time)
        x = t.drop(t.wte.weight.data[idx] + t.wpe.weight.data[:T])  # (B, T, C)
        for block in t.h:
            x = block(x)
        x = t.ln_f(x)
        logits = F.linear(x, t.wte.weight.data)  # the LM head is tied to the token embedding: (B, T, V)
        if targets is None:
            self._last = None
            return logits, None
        targets = np.asarray(targets)
        loss = F.cross_entropy(logits, targets, ignore_index=-1)
        self._last = (T, x, logits, targets)
        return logits, float(loss)

    def backward(self):
        """Adds the gradients of the last forward's loss to every param.grad."""
        if self._last is None:
            raise RuntimeError("backward() needs a forward() with targets first")
        T, x, logits, targets = self._last
        self._last = None
        t = self.transformer
        dlogits = F.cross_entropy_backward(logits, targets, ignore_index=-1)  # (B, T, V)
        dx, dwte, _ = F.linear_backward(dlogits, x, t.wte.weight.data)  # through the tied head
        t.wte.weight.grad += dwte
        dx = t.ln_f.backward(dx)
        for block in reversed(t.h):
            dx = block.backward(dx)
        dx = t.drop.backward(dx)
        t.wte.backward(dx)  # token rows used several times add up
        t.wpe.weight.grad[:T] += dx.sum(axis=0)

    def crop_block_size(self, block_size):
        """Shortens the context to block_size (<= the current one), as nanoGPT's crop_block_size:
        the position table keeps its first block_size rows (fine-tuning a GPT-2 on shorter windows)."""
        if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)) or block_size < 1:
            raise ValueError(f"block_size must be a positive int, got {block_size!r}")
        if block_size > self.config.block_size:
            raise ValueError(f"block_size {block_size} is larger than the model's {self.config.block_size}: "
                             "a position table can be cropped, not grown")
        wpe = self.transformer.wpe
        wpe.weight.data = wpe.weight.data[:block_size].copy()
        wpe.weight.grad = wpe.weight.grad[:block_size].copy()
        wpe.num_embeddings = self.config.block_size = int(block_size)

    def num_params(self, non_embedding=True):
        """Number of parameters; by default without the position embeddings, as nanoGPT counts."""
        n = self.num_parameters()
        return n - self.transformer.wpe.weight.data.size if non_embedding else n

    def load_state_dict(self, state, strict=True):
        """Copies the arrays of `state` (name -> array) in; every name must be present with its
        shape, or a ValueError names what does not fit. nanoGPT's state dicts also hold the tied
        lm_head.weight (the same array as transformer.wte.weight): it is accepted and ignored."""
        return super().load_state_dict({n: a for n, a in state.items() if n != "lm_head.weight"}, strict)

    @contextlib.contextmanager
    def _eval_mode(self):
        """eval() inside the block; the previous mode comes back after it (also on an error)."""
        was_training = self.training
        self.eval()
        try:
            yield self
        finally:
            self.train(was_training)

    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type="cpu", *, eps=1e-8):
        """AdamW as nanoGPT configures it, with nanoGPT's signature: weight decay on the 2-D
        weights (matmuls and embeddings), none on biases and layer-norm weights. device_type is
        nanoGPT's (it picks fused AdamW on "cuda"): fastattn runs on the CPU, so only "cpu"."""
        from fastattn.optim import AdamW
        for name, value in (("weight_decay", weight_decay), ("learning_rate", learning_rate), ("eps", eps)):
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise TypeError(f"configure_optimizers: {name} must be a number, got {value!r}")
        if (not isinstance(betas, (tuple, list)) or len(betas) != 2
                or not all(isinstance(b, numbers.Real) and not isinstance(b, bool) for b in betas)):
            raise TypeError(f"configure_optimizers: betas must be a pair of numbers (beta1, beta2), got {betas!r}")
        if not isinstance(device_type, str):
            raise TypeError(f"configure_optimizers: device_type must be the str 'cpu' (nanoGPT's 4th argument; "
                            f"eps is a keyword here), got {device_type!r}")
        if device_type != "cpu":
            raise ValueError(f"configure_optimizers: device_type must be 'cpu' (fastattn runs on the CPU), "
                             f"got {device_type!r}")
        params = self.parameters()
        return AdamW([{"params": [p for p in params if p.data.ndim >= 2], "weight_decay": weight_decay},
                      {"params": [p for p in params if p.data.ndim < 2], "weight_decay": 0.0}],
                     lr=learning_rate, betas=tuple(betas), eps=eps)

    def attention_maps(self, idx):
        """idx (B, T) -> one (B, n_head, T, T) array per layer: the attention weights of each head
        (row i: how much position i attends to each position; rows sum to 1). Runs in eval mode."""
        with self._eval_mode():
            self(idx)
        return [F.attention_weights(b.attn.q, b.attn.k, is_causal=True) for b in self.transformer.h]

    def _forward_cached(self, idx, positions, valid, cache, ops=F):
        """Inference on the next Tn tokens of each row, idx (B, Tn), at positions (B, Tn), valid
        (B, Tn) False for left padding; their keys and values are appended to the cache.
        Returns the logits of the last position (B, V): the last block's query and MLP, the
        final layer norm and the LM head run on that position only. ops: fastattn.functional, or
        (to save its checks on every call of a decode loop whose shapes and dtypes are fixed)
        the backend module itself."""
        cache.valid[:, cache.length:cache.length + idx.shape[1]] = valid
        key_mask = cache.key_mask(cache.length + idx.shape[1])
        t = self.transformer
        x = t.wte.weight.data[idx] + t.wpe.weight.data[positions]
        last = len(t.h) - 1
        for layer, block in enumerate(t.h):
            # the last block needs every position's keys and values, but only the last position's
            # query, MLP and output: the logits are those of the last position
            x = block.forward_cached(x, cache, layer, key_mask, ops, last_only=layer == last)
        cache.length += idx.shape[1]
        return ops.linear(_layer_norm_infer(t.ln_f, x[:, -1], ops), t.wte.weight.data)

    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, seed=None,
                 stop=None, attention_mask=None, use_cache=True):
        """idx (B, T) token ids -> (B, T + n): the prompts followed by n <= max_new_tokens new
        tokens (fewer only when every row has stopped; a row that stopped earlier is filled
        with -1 after its stop token).

        Each token is drawn from softmax(logits / temperature), over the top_k most likely tokens
        (None: all), then over the fewest most likely tokens whose probability reaches top_p
        (nucleus sampling; None: all). temperature 0 takes the most likely token (ties: the
        lowest id). seed seeds the sampling (None: fresh entropy). stop: a token id or a list of
        them; a row stops after producing one. attention_mask (B, T): 1 for a token, 0 for left
        padding, so that prompts of different lengths run as one batch (each row gives what it
        would alone). The context is at most the last block_size tokens, a window as in nanoGPT
        (see fastattn/models/generation.py on what that means for the cache). use_cache=False runs the
        whole window at every step instead of the KV cache: same tokens, slower. Runs in eval
        mode (no dropout) and restores the previous mode.
        """
        steps = list(self.generate_stream(idx, max_new_tokens, temperature, top_k, top_p, seed, stop,
                                          attention_mask, use_cache))
        idx = np.asarray(idx).astype(np.int64)
        return np.concatenate([idx, np.stack(steps, axis=1)], axis=1) if steps else idx

    def generate_stream(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, seed=None,
                        stop=None, attention_mask=None, use_cache=True):
        """generate() as an iterator: yields each step's new tokens, a (B,) int64 array (-1 for
        the rows that have stopped), as soon as they are drawn. The arguments are checked at
        the call, before the first token."""
        idx, valid = _gen.check_prompt(idx, attention_mask, self.config.vocab_size)
        stop = _gen.check_sampling(max_new_tokens, temperature, top_k, top_p, stop)
        return self._stream(idx, valid, max_new_tokens, temperature, top_k, top_p,
                            np.random.default_rng(seed), stop, use_cache)

    def _stream(self, *args):
        with self._eval_mode():
            yield from _gen.stream(self, *args)
