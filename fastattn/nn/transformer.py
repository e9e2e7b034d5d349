"""The Transformer of "Attention Is All You Need" as torch.nn builds it: encoder and decoder
layers, their stacks, and nn.Transformer, with torch's names, arguments and initialisation.

Shapes: batch_first=False: src (S, N, E), tgt (T, N, E); True: (N, S, E), (N, T, E);
unbatched: (S, E), (T, E). E = d_model. Masks are torch.nn's (see MultiheadAttention).
"""
import numpy as np

from fastattn import functional as F
from fastattn.nn.activation import GELU, ReLU
from fastattn.nn.attention import MultiheadAttention, _xavier_uniform
from fastattn.nn.container import ModuleList
from fastattn.nn.dropout import Dropout
from fastattn.nn.linear import Linear
from fastattn.nn.module import Module, _dtype, _generator, _positive_int
from fastattn.nn.normalization import LayerNorm


def _activation(activation):
    if isinstance(activation, (ReLU, GELU)):
        return activation
    if activation == "relu":
        return ReLU()
    if activation == "gelu":
        return GELU()
    raise ValueError(f"activation must be 'relu', 'gelu', or a ReLU or GELU module, got {activation!r}")


def _causal(flag):
    return False if flag is None else bool(flag)


class _Layer(Module):
    """What the encoder and decoder layers share: their submodules, built in torch's order (the
    names and the initialisation draws follow it), and the self-attention branch."""

    def _build(self, d_model, nhead, dim_feedforward, dropout, activation, layer_norm_eps, batch_first,
               norm_first, bias, dtype, seed, cross_attention):
        rng = self._rng = _generator(seed)
        dtype = _dtype(dtype)
        d_model = _positive_int("d_model", d_model)
        dim_feedforward = _positive_int("dim_feedforward", dim_feedforward)
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias, batch_first=batch_first,
                                            dtype=dtype, seed=rng)
        if cross_attention:
            self.multihead_attn = MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias,
                                                     batch_first=batch_first, dtype=dtype, seed=rng)
        self.linear1 = Linear(d_model, dim_feedforward, bias=bias, dtype=dtype, seed=rng)
        self.dropout = Dropout(dropout, seed=rng)
        self.linear2 = Linear(dim_feedforward, d_model, bias=bias, dtype=dtype, seed=rng)
        self.norm_first = bool(norm_first)
        for i in range(1, 4 if cross_attention else 3):
            setattr(self, f"norm{i}", LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype))
        for i in range(1, 4 if cross_attention else 3):
            setattr(self, f"dropout{i}", Dropout(dropout, seed=rng))
        self.activation = _activation(activation)
        self.batch_first = bool(batch_first)

    def _sa(self, x, attn_mask, key_padding_mask, is_causal):
        y, _ = self.self_attn(x, x, x, attn_mask=attn_mask, key_padding_mask=key_padding_mask,
                              need_weights=False, is_causal=_causal(is_causal))
        return self.dropout1(y)

    def _sa_backward(self, g):
        return self.self_attn._backward(self.dropout1.backward(g), merge=True)[0]

    def _ff(self, x):
        """linear2(dropout(activation(linear1(x)))), GELU fused into linear1 (F.linear_gelu)."""
        if isinstance(self.activation, GELU):
            l1 = self.linear1
            a, pre = F.linear_gelu(x, l1.weight.data, None if l1.bias is None else l1.bias.data,
                                   self.activation.approximate, return_pre=True)
            l1._save(np.asarray(x))  # (what linear1.backward and the GELU's backward need)
            self.activation._save(pre)
        else:
            a = self.activation(self.linear1(x))
        return self.linear2(self.dropout(a))

    def _ff_backward(self, g):
        return self.linear1.backward(self.activation.backward(self.dropout.backward(self.linear2.backward(g))))


class TransformerEncoderLayer(_Layer):
    """TransformerEncoderLayer(d_model, nhead, dim_feedforward=2048, dropout=0.1, activation="relu",
    layer_norm_eps=1e-5, batch_first=False, norm_first=False, bias=True, dtype=np.float32, seed=None).

    Self-attention then a feed-forward block, each with dropout and a residual connection;
    LayerNorm after each (norm_first=False, the paper) or before (norm_first=True).
    forward(src, src_mask=None, src_key_padding_mask=None, is_causal=False) -> same shape as src;
    backward(grad_output) -> grad_src."""

    def __init__(self, d_model, nhead, dim_feedforward=2048, dropout=0.1, activation="relu",
                 layer_norm_eps=1e-5, batch_first=False, norm_first=False, bias=True, dtype=np.float32,
                 seed=None):
        super().__init__()
        self._build(d_model, nhead, dim_feedforward, dropout, activation, layer_norm_eps, batch_first,
                    norm_first, bias, dtype, seed, cross_attention=False)

    def forward(self, src, src_mask=None, src_key_padding_mask=None, is_causal=False):
        x = np.asarray(src)
        if self.norm_first:
            x = x + self._sa(self.norm1(x), src_mask, src_key_padding_mask, is_causal)
            return x + self.dropout2(self._ff(self.norm2(x)))
        x = self.norm1(x + self._sa(x, src_mask, src_key_padding_mask, is_causal))
        return self.norm2(x + self.dropout2(self._ff(x)))

    def backward(self, grad_output):
        g = np.asarray(grad_output)
        ff = lambda d: self._ff_backward(self.dropout2.backward(d))  # noqa: E731
        if self.norm_first:  # the residual stream passes g through; each branch adds to it
            g = g + self.norm2.backward(ff(g))
            return g + self.norm1.backward(self._sa_backward(g))
        g = self.norm2.backward(g)
        g = self.norm1.backward(g + ff(g))
        return g + self._sa_backward(g)


class TransformerDecoderLayer(_Layer):
    """TransformerDecoderLayer(d_model, nhead, dim_feedforward=2048, dropout=0.1, activation="relu",
    layer_norm_eps=1e-5, batch_first=False, norm_first=False, bias=True, dtype=np.float32, seed=None).

    Self-attention over tgt, cross-attention to memory (queries from tgt, keys and values from
    memory), a feed-forward block; each with dropout, a residual and a LayerNorm (after, or
    before with norm_first). forward(tgt, memory, tgt_mask=None, memory_mask=None,
    tgt_key_padding_mask=None, memory_key_padding_mask=None, tgt_is_causal=False,
    memory_is_causal=False) -> tgt's shape; backward(grad_output) -> (grad_tgt, grad_memory)."""

    def __init__(self, d_model, nhead, dim_feedforward=2048, dropout=0.1, activation="relu",
                 layer_norm_eps=1e-5, batch_first=False, norm_first=False, bias=True, dtype=np.float32,
                 seed=None):
        super().__init__()
        self._build(d_model, nhead, dim_feedforward, dropout, activation, layer_norm_eps, batch_first,
                    norm_first, bias, dtype, seed, cross_attention=True)

    def _mha(self, x, mem, attn_mask, key_padding_mask, is_causal):
        y, _ = self.multihead_attn(x, mem, mem, attn_mask=attn_mask, key_padding_mask=key_padding_mask,
                                   need_weights=False, is_causal=_causal(is_causal))
        return self.dropout2(y)

    def forward(self, tgt, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
                memory_key_padding_mask=None, tgt_is_causal=False, memory_is_causal=False):
        x, mem = np.asarray(tgt), np.asarray(memory)
        if x.ndim != mem.ndim:
            raise ValueError(f"TransformerDecoderLayer: tgt {x.shape} and memory {mem.shape} must have "
                             "the same number of dimensions")
        if self.norm_first:
            x = x + self._sa(self.norm1(x), tgt_mask, tgt_key_padding_mask, tgt_is_causal)
            x = x + self._mha(self.norm2(x), mem, memory_mask, memory_key_padding_mask, memory_is_causal)
            return x + self.dropout3(self._ff(self.norm3(x)))
        x = self.norm1(x + self._sa(x, tgt_mask, tgt_key_padding_mask, tgt_is_causal))
        x = self.norm2(x + self._mha(x, mem, memory_mask, memory_key_padding_mask, memory_is_causal))
        return self.norm3(x + self.dropout3(self._ff(x)))

    def backward(self, grad_output):
        g = np.asarray(grad_output)
        ff = lambda d: self._ff_backward(self.dropout3.backward(d))  # noqa: E731
        mha = lambda d: self.multihead_attn._backward(self.dropout2.backward(d), merge=True)  # noqa: E731
        if self.norm_first:
            g = g + self.norm3.backward(ff(g))
            dq, dmem = mha(g)
            g = g + self.norm2.backward(dq)
            return g + self.norm1.backward(self._sa_backward(g)), dmem
        g = self.norm3.backward(g)
        g = self.norm2.backward(g + ff(g))
        dq, dmem = mha(g)
        g = self.norm1.backward(g + dq)
        return g + self._sa_backward(g), dmem


def _stack(layer, num_layers, name):
    """num_layers copies of layer: the first with its weights, the others freshly initialised
    from the layer's own Generator (torch deep-copies one layer num_layers times: issue 86274)."""
    if not isinstance(layer, Module):
        raise TypeError(f"{name} must be a fastattn.nn Module, got {type(layer).__name__}")
    n = _positive_int("num_layers", num_layers)
    return ModuleList([layer._clone(fresh=i > 0) for i in range(n)])


class TransformerEncoder(Module):
    """TransformerEncoder(encoder_layer, num_layers, norm=None): num_layers copies of encoder_layer
    and an optional final norm. Unlike torch, whose copies start identical (issue 86274), copy 0
    has encoder_layer's weights and copies 1.. fresh ones, drawn from encoder_layer's Generator.
    forward(src, mask=None, src_key_padding_mask=None, is_causal=None); backward -> grad_src."""

    def __init__(self, encoder_layer, num_layers, norm=None, enable_nested_tensor=True, mask_check=True):
        super().__init__()
        self.layers = _stack(encoder_layer, num_layers, "encoder_layer")
        self.num_layers = len(self.layers)
        self.norm = norm

    def forward(self, src, mask=None, src_key_padding_mask=None, is_causal=None):
        x = src
        for layer in self.layers:
            x = layer(x, src_mask=mask, src_key_padding_mask=src_key_padding_mask, is_causal=_causal(is_causal))
        return x if self.norm is None else self.norm(x)

    def backward(self, grad_output):
        g = grad_output if self.norm is None else self.norm.backward(grad_output)
        for layer in reversed(list(self.layers)):
            g = layer.backward(g)
        return g


class TransformerDecoder(Module):
    """TransformerDecoder(decoder_layer, num_layers, norm=None): num_layers copies of decoder_layer
    (copy 0 with its weights, the others fresh, as TransformerEncoder) and an optional final norm.
    forward(tgt, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
    memory_key_padding_mask=None, tgt_is_causal=None, memory_is_causal=False);
    backward -> (grad_tgt, grad_memory), grad_memory summed over the layers."""

    def __init__(self, decoder_layer, num_layers, norm=None):
        super().__init__()
        self.layers = _stack(decoder_layer, num_layers, "decoder_layer")
        self.num_layers = len(self.layers)
        self.norm = norm

    def forward(self, tgt, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
                memory_key_padding_mask=None, tgt_is_causal=None, memory_is_causal=False):
        x = tgt
        for layer in self.layers:
            x = layer(x, memory, tgt_mask=tgt_mask, memory_mask=memory_mask,
                      tgt_key_padding_mask=tgt_key_padding_mask, memory_key_padding_mask=memory_key_padding_mask,
                      tgt_is_causal=_causal(tgt_is_causal), memory_is_causal=bool(memory_is_causal))
        return x if self.norm is None else self.norm(x)

    def backward(self, grad_output):
        g = grad_output if self.norm is None else self.norm.backward(grad_output)
        dmem = None
        for layer in reversed(list(self.layers)):
            g, d = layer.backward(g)
            dmem = d if dmem is None else dmem + d
        return g, dmem


class Transformer(Module):
    """Transformer(d_model=512, nhead=8, num_encoder_layers=6, num_decoder_layers=6,
    dim_feedforward=2048, dropout=0.1, activation="relu", custom_encoder=None, custom_decoder=None,
    layer_norm_eps=1e-5, batch_first=False, norm_first=False, bias=True, dtype=np.float32, seed=None).

    torch.nn.Transformer: an encoder (encoder.layers.i..., encoder.norm) and a decoder
    (decoder.layers.i..., decoder.norm), every parameter of more than one dimension xavier
    uniform (as torch's _reset_parameters), biases as their modules initialise them.
    forward(src, tgt, src_mask=None, tgt_mask=None, memory_mask=None, src_key_padding_mask=None,
    tgt_key_padding_mask=None, memory_key_padding_mask=None, src_is_causal=None,
    tgt_is_causal=None, memory_is_causal=False) -> tgt's shape; backward(grad_output) ->
    (grad_src, grad_tgt). No embedding, positional encoding or output projection: see
    PositionalEncoding and Embedding to build those around it."""

    def __init__(self, d_model=512, nhead=8, num_encoder_layers=6, num_decoder_layers=6, dim_feedforward=2048,
                 dropout=0.1, activation="relu", custom_encoder=None, custom_decoder=None, layer_norm_eps=1e-5,
                 batch_first=False, norm_first=False, bias=True, dtype=np.float32, seed=None):
        super().__init__()
        rng = self._rng = _generator(seed)
        dtype = _dtype(dtype)
        common = dict(dim_feedforward=dim_feedforward, dropout=dropout, activation=activation,
                      layer_norm_eps=layer_norm_eps, batch_first=batch_first, norm_first=norm_first, bias=bias,
                      dtype=dtype, seed=rng)
        if custom_encoder is not None:
            self.encoder = custom_encoder
        else:
            self.encoder = TransformerEncoder(TransformerEncoderLayer(d_model, nhead, **common), num_encoder_layers,
                                              LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype))
        if custom_decoder is not None:
            self.decoder = custom_decoder
        else:
            self.decoder = TransformerDecoder(TransformerDecoderLayer(d_model, nhead, **common), num_decoder_layers,
                                              LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype))
        self.d_model, self.nhead, self.batch_first = int(d_model), int(nhead), bool(batch_first)
        self._reset_parameters(rng)

    def _reset_parameters(self, rng):
        for p in self.parameters():
            if p.data.ndim > 1:
                p.data[...] = _xavier_uniform(rng, p.data.shape, p.data.dtype)

    def forward(self, src, tgt, src_mask=None, tgt_mask=None, memory_mask=None, src_key_padding_mask=None,
                tgt_key_padding_mask=None, memory_key_padding_mask=None, src_is_causal=None, tgt_is_causal=None,
                memory_is_causal=False):
        s, t = np.asarray(src), np.asarray(tgt)
        if s.ndim not in (2, 3) or s.ndim != t.ndim:
            raise ValueError(f"Transformer: src {s.shape} and tgt {t.shape} must both be 3-D (batched) or 2-D")
        batch = 0 if self.batch_first else 1
        if s.ndim == 3 and s.shape[batch] != t.shape[batch]:
            raise ValueError(f"Transformer: the batch size of src {s.shape} and tgt {t.shape} must be equal "
                             f"(dim {batch}, batch_first={self.batch_first})")
        if s.shape[-1] != self.d_model or t.shape[-1] != self.d_model:
            raise ValueError(f"Transformer: the feature size of src {s.shape} and tgt {t.shape} must be "
                             f"d_model = {self.d_model}")
        memory = self.encoder(s, mask=src_mask, src_key_padding_mask=src_key_padding_mask, is_causal=src_is_causal)
        return self.decoder(t, memory, tgt_mask=tgt_mask, memory_mask=memory_mask,
                            tgt_key_padding_mask=tgt_key_padding_mask,
                            memory_key_padding_mask=memory_key_padding_mask, tgt_is_causal=tgt_is_causal,
                            memory_is_causal=memory_is_causal)

    def backward(self, grad_output):
        dtgt, dmem = self.decoder.backward(grad_output)
        return self.encoder.backward(dmem), dtgt

    @staticmethod
    def generate_square_subsequent_mask(sz, dtype=np.float32):
        """(sz, sz) float mask: 0 on and below the diagonal, -inf above (position i sees j <= i)."""
        sz = _positive_int("sz", sz, zero=True)
        return np.triu(np.full((sz, sz), -np.inf, dtype=_dtype(dtype)), k=1)
