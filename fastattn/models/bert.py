"""A BERT-family encoder on fastattn's kernels (inference), read from Hugging Face's layout.

    enc = fastattn.Encoder.from_pretrained("path/to/all-MiniLM-L6-v2")   # config.json + model.safetensors
    hidden = enc(input_ids, attention_mask)                               # (B, T, hidden_size)

Embeddings (word + position + token type) and a layer norm, then post-LN blocks, as BERT:

    a = attention(x), key-padding mask     x = layer_norm(x + a W_o + b_o)
    h = gelu(x W_i + b_i) (erf)            x = layer_norm(x + h W_2 + b_2)

The layers are fastattn.nn modules named as Hugging Face names them (embeddings.word_embeddings,
encoder.layer.N.attention.self.query, ...), so state_dict() and load_state_dict() use BERT's tensor
names; checkpoints may have the "bert." prefix or not; weights are (out, in), as Hugging Face
stores them. The encoder runs inference only (no backward). Attention is
scaled_dot_product_attention with a boolean (B, 1, 1, T) key mask, not causal; the query, key and
value weights of a layer are views into one (3 * hidden, hidden) array, so that they run as one
product. Everything but attention runs on the real tokens only, packed (no work on padding).
"""
from dataclasses import dataclass

import numpy as np

from fastattn import _lowp
from fastattn import functional as F
from fastattn import nn
from fastattn.nn.module import _skip_init
from fastattn.io.hf_files import a_number, positive_ints, read_hf_dir


@dataclass
class BertConfig:
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12

    @classmethod
    def from_hf(cls, hf):
        """From the fields of a Hugging Face BERT config.json (a dict)."""
        if hf.get("model_type") not in ("bert", None) and "Bert" not in str(hf.get("architectures", "")):
            raise ValueError(f"not a BERT config: model_type is {hf.get('model_type')!r}")
        names = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                 "intermediate_size", "max_position_embeddings")
        missing = [k for k in names if k not in hf]
        if missing:
            raise ValueError(f"config.json lacks {missing}")
        if hf.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"hidden_act {hf['hidden_act']!r} is not supported (only 'gelu', the erf form)")
        if hf.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"position_embedding_type {hf['position_embedding_type']!r} is not supported")
        positive_ints(hf, names)
        if not isinstance(hf.get("type_vocab_size", 2), int) or hf.get("type_vocab_size", 2) < 1:
            raise ValueError(f"config.json's type_vocab_size must be an int >= 1, got {hf['type_vocab_size']!r}")
        if hf["hidden_size"] % hf["num_attention_heads"]:
            raise ValueError("hidden_size must be a multiple of num_attention_heads")
        return cls(**{k: hf[k] for k in names}, type_vocab_size=hf.get("type_vocab_size", 2),
                   layer_norm_eps=a_number(hf, "layer_norm_eps", 1e-12))


def _parameter_shapes(cfg):
    """name -> shape of every tensor a BERT encoder (no pooler) needs, in Hugging Face's names."""
    H, I = cfg.hidden_size, cfg.intermediate_size
    shapes = {"embeddings.word_embeddings.weight": (cfg.vocab_size, H),
              "embeddings.position_embeddings.weight": (cfg.max_position_embeddings, H),
              "embeddings.token_type_embeddings.weight": (cfg.type_vocab_size, H),
              "embeddings.LayerNorm.weight": (H,), "embeddings.LayerNorm.bias": (H,)}
    for i in range(cfg.num_hidden_layers):
        p = f"encoder.layer.{i}."
        for name, shape in (("attention.self.query", (H, H)), ("attention.self.key", (H, H)),
                            ("attention.self.value", (H, H)), ("attention.output.dense", (H, H)),
                            ("intermediate.dense", (I, H)), ("output.dense", (H, I))):
            shapes[p + name + ".weight"] = shape
            shapes[p + name + ".bias"] = shape[:1]
        for name in ("attention.output.LayerNorm", "output.LayerNorm"):
            shapes[p + name + ".weight"] = (H,)
            shapes[p + name + ".bias"] = (H,)
    return shapes


def _check_bert_shapes(hf, shapes):
    """ValueError unless model.safetensors declares every tensor of the encoder that config.json
    describes, with its shape: checked before anything is read."""
    want = _parameter_shapes(BertConfig.from_hf(hf))
    have = {(n[len("bert."):] if n.startswith("bert.") else n): s for n, s in shapes.items()}
    missing = sorted(set(want) - set(have))
    wrong = [f"{n}: {have[n]} != {s}" for n, s in want.items() if n in have and have[n] != s]
    if missing or wrong:
        raise ValueError(f"model.safetensors does not fit config.json: missing {missing[:5]}, wrong shapes {wrong[:5]}")


# what a checkpoint may hold beyond the encoder: buffers, the pooler, pre-training heads
_IGNORED = ("embeddings.position_ids", "pooler.", "cls.")


def _linear(layer, x):
    return F.linear(x, layer.weight.data, layer.bias.data)


def _layer_norm(layer, x, eps):
    return F.layer_norm(x, layer.weight.data, layer.bias.data, eps)


class _Embeddings(nn.Module):
    def __init__(self, cfg, dtype):
        super().__init__()
        H = cfg.hidden_size
        self.word_embeddings = nn.Embedding(cfg.vocab_size, H, dtype=dtype)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, H, dtype=dtype)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, H, dtype=dtype)
        self.LayerNorm = nn.LayerNorm(H, cfg.layer_norm_eps, dtype=dtype)


class _SelfAttention(nn.Module):
    """query, key and value: three nn.Linear whose weights and biases are row blocks of one
    (3H, H) weight and one (3H,) bias, qkv_weight and qkv_bias (load_state_dict copies into them
    in place, so the views stay views)."""

    def __init__(self, cfg, dtype):
        super().__init__()
        H = cfg.hidden_size
        self.query, self.key, self.value = (nn.Linear(H, H, dtype=dtype) for _ in range(3))
        self._qkv_weight = np.zeros((3 * H, H), dtype)
        self._qkv_bias = np.zeros(3 * H, dtype)
        for i, layer in enumerate((self.query, self.key, self.value)):
            layer.weight.data = self._qkv_weight[i * H:(i + 1) * H]
            layer.bias.data = self._qkv_bias[i * H:(i + 1) * H]

    def _fused_weights(self):  # (the products read the fused weight: see Module.freeze)
        return [self._qkv_weight] if isinstance(self._qkv_weight, np.ndarray) else []

    def _fuse_quantized(self):
        """After q, k and v got int8 / bfloat16 weights and biases of their own (a quantized
        file): one fused weight and bias of theirs again, which they view."""
        H = self._qkv_weight.shape[1]
        layers = (self.query, self.key, self.value)
        self._qkv_weight = _lowp.stack_rows([layer.weight.data for layer in layers])
        self._qkv_bias = np.concatenate([layer.bias.data for layer in layers])
        for i, layer in enumerate(layers):
            layer.weight.data = self._qkv_weight._rows(i * H, (i + 1) * H)
            layer.bias.data = self._qkv_bias[i * H:(i + 1) * H]

    def _quantize_own(self, compute_type):
        # the fused (3H, H) weight quantized as one (its rows' scales are those of q, k and v),
        # q, k and v its row blocks again (quantize() reaches them after this: they are done)
        H = self._qkv_weight.shape[1]
        self._qkv_weight = _lowp.quantize(self._qkv_weight, "bfloat16" if compute_type == "bfloat16" else "int8")
        for i, layer in enumerate((self.query, self.key, self.value)):
            layer.weight.data = self._qkv_weight._rows(i * H, (i + 1) * H)
            layer.weight.grad = np.zeros(0, np.float32)


class _DenseLayerNorm(nn.Module):  # BERT's SelfOutput and Output: dense, then LayerNorm
    def __init__(self, n_in, H, eps, dtype):
        super().__init__()
        self.dense = nn.Linear(n_in, H, dtype=dtype)
        self.LayerNorm = nn.LayerNorm(H, eps, dtype=dtype)


class _Attention(nn.Module):
    def __init__(self, cfg, dtype):
        super().__init__()
        self.self = _SelfAttention(cfg, dtype)
        self.output = _DenseLayerNorm(cfg.hidden_size, cfg.hidden_size, cfg.layer_norm_eps, dtype)


class _Intermediate(nn.Module):
    def __init__(self, cfg, dtype):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.intermediate_size, dtype=dtype)


class _Layer(nn.Module):
    def __init__(self, cfg, dtype):
        super().__init__()
        self.attention = _Attention(cfg, dtype)
        self.intermediate = _Intermediate(cfg, dtype)
        self.output = _DenseLayerNorm(cfg.intermediate_size, cfg.hidden_size, cfg.layer_norm_eps, dtype)


class _Layers(nn.Module):
    def __init__(self, cfg, dtype):
        super().__init__()
        self.layer = nn.ModuleList(_Layer(cfg, dtype) for _ in range(cfg.num_hidden_layers))


class Encoder(nn.Module):
    """A BERT encoder: Encoder(config, weights) with weights name -> array in Hugging Face's
    names (see from_pretrained); enc(input_ids, attention_mask=None, token_type_ids=None).
    An nn.Module: embeddings and encoder.layer[i] hold the parameters."""

    def __init__(self, config, weights, dtype=np.float32):
        super().__init__()
        self.config = config
        shapes = _parameter_shapes(config)
        if weights is None:  # (zeros that are never written: a quantized file's weights replace them)
            with _skip_init():
                self.embeddings = _Embeddings(config, dtype)
                self.encoder = _Layers(config, dtype)
            self.eval()
            return
        missing = sorted(set(shapes) - set(weights))
        unexpected = sorted(n for n in set(weights) - set(shapes) if not n.startswith(_IGNORED))
        wrong = [f"{n}: {tuple(np.shape(weights[n]))} != {s}" for n, s in shapes.items()
                 if n in weights and tuple(np.shape(weights[n])) != s]
        if missing or unexpected or wrong:
            raise ValueError(f"the weights do not fit this BERT config: missing {missing}, "
                             f"unexpected {unexpected}, wrong shapes {wrong}")
        with _skip_init():  # every weight comes from `weights`
            self.embeddings = _Embeddings(config, dtype)
            self.encoder = _Layers(config, dtype)
        self.load_state_dict({n: weights[n] for n in shapes})
        self.eval()

    @classmethod
    def from_pretrained(cls, path, dtype=np.float32, compute_type="float32"):
        """The encoder in a Hugging Face BERT directory (config.json + model.safetensors, as
        transformers' save_pretrained writes it, or a sentence-transformers model directory).
        Missing, unexpected or mis-shaped tensors: a ValueError naming them. compute_type: see
        Module.quantize ("float32": the weights as stored)."""
        _lowp.check_compute_type(compute_type)  # (before reading the weights)
        hf_config, tensors = read_hf_dir(path, _check_bert_shapes)
        config = BertConfig.from_hf(hf_config)
        weights = {(n[len("bert."):] if n.startswith("bert.") else n): a for n, a in tensors.items()}
        if len(weights) != len(tensors):
            raise ValueError("model.safetensors holds tensors both with and without the 'bert.' prefix")
        return cls(config, weights, dtype).quantize(compute_type)

    def __call__(self, input_ids, attention_mask=None, token_type_ids=None):
        return self.forward(input_ids, attention_mask, token_type_ids)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        """input_ids (B, T) -> the last hidden state (B, T, hidden_size). attention_mask (B, T):
        1 for a token, 0 for padding (None: all tokens); padding is never attended to and never
        computed: its rows of the result are 0. token_type_ids (B, T): None means all 0."""
        cfg = self.config
        ids = np.asarray(input_ids)
        if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"input_ids must be a (B, T) integer array, got {ids.dtype} {ids.shape}")
        B, T = ids.shape
        if T > cfg.max_position_embeddings:
            raise ValueError(f"sequence of length {T} is longer than max_position_embeddings "
                             f"{cfg.max_position_embeddings}")
        if ids.size and (ids.min() < 0 or ids.max() >= cfg.vocab_size):
            raise ValueError(f"token ids must be in [0, {cfg.vocab_size})")
        types = np.zeros_like(ids) if token_type_ids is None else np.asarray(token_type_ids)
        if types.shape != ids.shape or (types.size and (types.min() < 0 or types.max() >= cfg.type_vocab_size)):
            raise ValueError(f"token_type_ids must be a {ids.shape} array of ids in [0, {cfg.type_vocab_size})")
        real = None  # (B, T) bool where a row has padding, else None: no padding anywhere
        if attention_mask is not None:
            mask = np.asarray(attention_mask)
            if mask.shape != ids.shape:
                raise ValueError(f"attention_mask must have the shape of input_ids {ids.shape}, got {mask.shape}")
            if not mask.all():
                real = mask.astype(bool)
        eps = cfg.layer_norm_eps
        nh, H = cfg.num_attention_heads, cfg.hidden_size
        # The real tokens are packed: x is (n, H), n = the number of real tokens, so that the
        # projections, the MLP and the layer norms never run on padding. Only attention needs
        # the (B, T) layout: each layer scatters its q, k, v into a padded buffer (padding
        # stays 0, hidden by the key mask) and gathers the real rows of the output back.
        if real is None:
            tok, pos, typ = ids.reshape(-1), np.tile(np.arange(T), B), types.reshape(-1)
            key_mask, at = None, None
        else:
            at = np.flatnonzero(real)  # where each packed row sits in the (B * T) layout
            tok, pos, typ = ids.reshape(-1)[at], at % T, types.reshape(-1)[at]
            key_mask = real[:, None, None, :]  # (B, 1, 1, T): which keys exist
        emb = self.embeddings
        x = (emb.word_embeddings.weight.data[tok] + emb.position_embeddings.weight.data[pos]
             + emb.token_type_embeddings.weight.data[typ])  # (n, H)
        x = _layer_norm(emb.LayerNorm, x, eps)
        qkv = np.zeros((B * T, 3 * H), x.dtype) if at is not None else None  # padded q, k, v
        y = np.empty((B, T, nh, H // nh), dtype=x.dtype)  # the heads' outputs, side by side
        for layer in self.encoder.layer:
            attention = layer.attention
            w_qkv, b_qkv = attention.self._qkv_weight, attention.self._qkv_bias
            if at is None:
                qkv = F.linear(x, w_qkv, b_qkv)
            else:
                qkv[at] = F.linear(x, w_qkv, b_qkv)
            q, k, v = qkv.reshape(B, T, 3, nh, H // nh).transpose(2, 0, 3, 1, 4)  # (B, nh, T, hs) views
            F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, out=y.transpose(0, 2, 1, 3))
            heads = y.reshape(B * T, H) if at is None else y.reshape(B * T, H)[at]
            a = _linear(attention.output.dense, heads)
            a += x
            x = _layer_norm(attention.output.LayerNorm, a, eps)
            fc = layer.intermediate.dense
            h = _linear(layer.output.dense, F.linear_gelu(x, fc.weight.data, fc.bias.data))
            h += x
            x = _layer_norm(layer.output.LayerNorm, h, eps)
        if at is None:
            return x.reshape(B, T, H)
        out = np.zeros((B * T, H), x.dtype)
        out[at] = x
        return out.reshape(B, T, H)
