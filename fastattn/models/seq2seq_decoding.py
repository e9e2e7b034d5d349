"""Decoding a Seq2SeqTransformer: greedy and beam search, one target position at a time over a
KV cache.

    from fastattn.models.seq2seq_decoding import beam_search, greedy
    outputs = greedy(model, src)                          # a list of N int64 arrays of target ids
    outputs = beam_search(model, src, beam_size=4, length_penalty=0.6)

The source runs through the encoder once; the keys and values of the memory are projected once
per source, for every decoder layer. Each step runs only the newest target position through the
decoder: its self-attention key and value go into the cache, and its query attends to the cache
(every earlier position) and to the memory. That is the decoder of nn.Transformer in eval mode,
unrolled: the same output as running the whole prefix again at every step (use_cache=False in
greedy), to float rounding.

Ids: decoding starts from bos and a sequence ends at eos, which is not part of the output
(defaults 1 and 2: the layout of fastattn.io.seq2seq_vocab.Seq2SeqVocab, pad 0, bos 1, eos 2,
unk 3). max_len: the most target tokens generated, eos included (default: 2 S + 10 for a source
of S ids, at most the model's max_len).

Beam search keeps beam_size hypotheses ranked by their log probability. At each step it takes
the 2 * beam_size best extensions: one that ends in eos and ranks among the first beam_size
becomes a finished hypothesis, the best others stay live (fairseq's rule). It stops once
beam_size hypotheses have finished (or at max_len, when the live ones count too) and returns
the one with the best log probability / lp, GNMT's length penalty
lp = ((5 + length) / 6) ** length_penalty (Wu et al. 2016, with alpha = 0.6 as the Transformer
paper's decoding), length counting eos. With beam_size=1 that is greedy decoding.
"""
import os

import numpy as np

from fastattn import functional as F
from fastattn.nn.activation import GELU
from fastattn.nn.attention import _weight_rows


def _data(p):
    return None if p is None else p.data


def _log_softmax(logits):  # (N, V) -> (N, V) in float64
    z = logits.astype(np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


class _IncrementalDecoder:
    """The model's decoder for N target rows, one position per step(tokens) call.

    Per decoder layer: cross-attention keys and values of the memory (N, H, S, hs), computed at
    construction; self-attention keys and values (N, H, max_len, hs), filled one position per
    step. step(tokens (N,)) -> log probabilities (N, V) of the next token, float64.
    reorder(index): the rows become rows `index` of the current ones (beam search)."""

    def __init__(self, model, src, src_key_padding_mask, max_len):
        t = model.transformer
        self.model, self.layers = model, list(t.decoder.layers)
        src = model._ids("src", src, model.src_tok_emb.num_embeddings)
        pad = model._padding("src_key_padding_mask", src_key_padding_mask, src)
        memory = t.encoder(model.embed_src(src), src_key_padding_mask=pad)  # (N, S, E)
        N, S, E = memory.shape
        self.H = t.nhead
        hs = E // self.H
        # F's polarity: True = may attend; (N, 1, 1, S)
        self.mem_mask = None if not pad.any() else ~pad[:, None, None, :]
        self.mem_kv = []
        for layer in self.layers:
            attn = layer.multihead_attn
            b = _data(attn.in_proj_bias)
            kv = F.linear(memory, _weight_rows(attn.in_proj_weight.data, slice(E, None)), None if b is None else b[E:])  # (N, S, 2E)
            k, v = kv.reshape(N, S, 2, self.H, hs).transpose(2, 0, 3, 1, 4)  # each (N, H, S, hs)
            self.mem_kv.append((np.ascontiguousarray(k), np.ascontiguousarray(v)))
        shape = (len(self.layers), N, self.H, max_len, hs)
        self.k, self.v = np.zeros(shape, memory.dtype), np.zeros(shape, memory.dtype)
        self.length = 0

    def _attend(self, attn, q, k, v, mask):
        """q (N, H, 1, hs) against k, v (N, H, L, hs) -> attn's output (N, 1, E)."""
        N, H, _, hs = q.shape
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (N, H, 1, hs)
        return F.linear(y.transpose(0, 2, 1, 3).reshape(N, 1, H * hs), attn.out_proj.weight.data,
                        _data(attn.out_proj.bias))

    def _self_attention(self, i, layer, x):
        attn, (N, _, E), end = layer.self_attn, x.shape, self.length + 1
        qkv = F.linear(x, attn.in_proj_weight.data, _data(attn.in_proj_bias))  # (N, 1, 3E)
        q, k, v = qkv.reshape(N, 1, 3, self.H, E // self.H).transpose(2, 0, 3, 1, 4)  # (N, H, 1, hs)
        self.k[i, :, :, self.length] = k[:, :, 0]
        self.v[i, :, :, self.length] = v[:, :, 0]
        return self._attend(attn, q, self.k[i, :, :, :end], self.v[i, :, :, :end], None)

    def _cross_attention(self, i, layer, x):
        attn, (N, _, E) = layer.multihead_attn, x.shape
        b = _data(attn.in_proj_bias)
        q = F.linear(x, _weight_rows(attn.in_proj_weight.data, slice(0, E)), None if b is None else b[:E])
        q = q.reshape(N, 1, self.H, E // self.H).transpose(0, 2, 1, 3)
        k, v = self.mem_kv[i]
        return self._attend(attn, q, k, v, self.mem_mask)

    @staticmethod
    def _feed_forward(layer, x):
        h = F.linear(x, layer.linear1.weight.data, _data(layer.linear1.bias))
        act = layer.activation
        h = F.gelu(h, act.approximate) if isinstance(act, GELU) else F.relu(h)
        return F.linear(h, layer.linear2.weight.data, _data(layer.linear2.bias))

    @staticmethod
    def _norm(norm, x):
        return F.layer_norm(x, _data(norm.weight), _data(norm.bias), norm.eps)

    def step(self, tokens):
        model = self.model
        if self.length >= self.k.shape[3]:
            raise ValueError(f"the cache holds {self.k.shape[3]} positions: no room for another")
        x = model.tgt_tok_emb.weight.data[tokens] * model._scale  # (N, E)
        x = (x + model.tgt_pos.pe[self.length].astype(x.dtype))[:, None]  # (N, 1, E)
        for i, layer in enumerate(self.layers):
            if layer.norm_first:
                x = x + self._self_attention(i, layer, self._norm(layer.norm1, x))
                x = x + self._cross_attention(i, layer, self._norm(layer.norm2, x))
                x = x + self._feed_forward(layer, self._norm(layer.norm3, x))
            else:
                x = self._norm(layer.norm1, x + self._self_attention(i, layer, x))
                x = self._norm(layer.norm2, x + self._cross_attention(i, layer, x))
                x = self._norm(layer.norm3, x + self._feed_forward(layer, x))
        self.length += 1
        norm = model.transformer.decoder.norm
        if norm is not None:
            x = self._norm(norm, x)
        return _log_softmax(F.linear(x[:, 0], model.generator.weight.data, _data(model.generator.bias)))

    def reorder(self, index):
        self.k, self.v = self.k[:, index], self.v[:, index]
        self.mem_kv = [(k[index], v[index]) for k, v in self.mem_kv]
        if self.mem_mask is not None:
            self.mem_mask = self.mem_mask[index]


class _FullPrefixDecoder:
    """step() by running the decoder (nn modules) over the whole prefix again: no cache. For
    checking _IncrementalDecoder; greedy(..., use_cache=False)."""

    def __init__(self, model, src, src_key_padding_mask, max_len):
        self.model = model
        src = model._ids("src", src, model.src_tok_emb.num_embeddings)
        self.pad = model._padding("src_key_padding_mask", src_key_padding_mask, src)
        self.memory = model.transformer.encoder(model.embed_src(src), src_key_padding_mask=self.pad)
        self.prefix = np.zeros((src.shape[0], 0), np.int64)

    def step(self, tokens):
        m = self.model
        self.prefix = np.concatenate([self.prefix, np.asarray(tokens, np.int64)[:, None]], axis=1)
        no_pad = np.zeros(self.prefix.shape, bool)
        y = m.transformer.decoder(m.embed_tgt(self.prefix), self.memory, tgt_key_padding_mask=no_pad,
                                  memory_key_padding_mask=self.pad, tgt_is_causal=True)
        return _log_softmax(m.generator(y[:, -1]))


def _check(model, src, max_len, bos, eos):
    src = model._ids("src", src, model.src_tok_emb.num_embeddings)
    V = model.generator.out_features
    for name, i in (("bos", bos), ("eos", eos)):
        if not isinstance(i, (int, np.integer)) or not 0 <= i < V:
            raise ValueError(f"{name} must be a target id in [0, {V}), got {i!r}")
    limit = model.tgt_pos.max_len
    if max_len is None:
        max_len = min(2 * src.shape[1] + 10, limit)
    if isinstance(max_len, bool) or not isinstance(max_len, (int, np.integer)) or not 1 <= max_len <= limit:
        raise ValueError(f"max_len must be an int in [1, {limit}] (the model's max_len), got {max_len!r}")
    return src, int(max_len)


def greedy(model, src, max_len=None, src_key_padding_mask=None, bos=1, eos=2, use_cache=True):
    """The most likely next token at each step, for each row of src (N, S) ids: a list of N
    int64 arrays (eos not included; max_len tokens when no eos came). A None padding mask is
    src == model.pad_idx. use_cache=False runs the decoder over the whole prefix at every step
    (slower; the same tokens). Runs in eval mode and restores the model's mode."""
    src, max_len = _check(model, src, max_len, bos, eos)
    was_training = model.training
    model.eval()
    try:
        dec = (_IncrementalDecoder if use_cache else _FullPrefixDecoder)(model, src, src_key_padding_mask, max_len)
        N = src.shape[0]
        out = np.zeros((N, max_len), np.int64)
        length = np.full(N, max_len)
        tokens = np.full(N, bos, np.int64)
        for t in range(max_len):
            tokens = dec.step(tokens).argmax(axis=-1)
            out[:, t] = tokens
            length = np.where((tokens == eos) & (length == max_len), t, length)
            if (length < max_len).all():
                break
    finally:
        model.train(was_training)
    return [out[i, :length[i]].copy() for i in range(N)]


def length_penalty_factor(length, alpha):
    """GNMT's lp = ((5 + length) / 6) ** alpha: a hypothesis' score is its log probability / lp."""
    return ((5.0 + length) / 6.0) ** alpha


def _beam(dec, bos, eos, beam_size, alpha, max_len):
    """Beam search over dec (step / reorder, one row to start) -> (tokens without eos, score)."""
    live = [[]]  # the live hypotheses' tokens
    live_logp = np.zeros(1)
    finished = []  # (score, tokens)
    tokens = np.array([bos], np.int64)
    for t in range(max_len):
        cand = live_logp[:, None] + dec.step(tokens)  # (live, V)
        V = cand.shape[1]
        order = np.argsort(-cand, axis=None, kind="stable")[:2 * beam_size]
        keep = []  # (row, token, logp)
        for rank, flat in enumerate(order):
            row, tok = divmod(int(flat), V)
            if tok == eos:
                if rank < beam_size:
                    finished.append((cand[row, tok] / length_penalty_factor(t + 1, alpha), live[row]))
            elif len(keep) < beam_size:
                keep.append((row, tok, cand[row, tok]))
        if len(finished) >= beam_size or not keep:
            break
        if t == max_len - 1:  # out of room: the live ones compete as they are
            finished += [(logp / length_penalty_factor(max_len, alpha), live[row] + [tok])
                         for row, tok, logp in keep]
            break
        rows = np.array([r for r, _, _ in keep])
        live = [live[r] + [tok] for r, tok, _ in keep]
        live_logp = np.array([lp for _, _, lp in keep])
        tokens = np.array([tok for _, tok, _ in keep], np.int64)
        dec.reorder(rows)
    best = max(range(len(finished)), key=lambda i: (finished[i][0], -i))
    score, toks = finished[best]
    return np.array(toks, np.int64), float(score)


def _available_memory():
    """Bytes of memory available to a new allocation (Linux's MemAvailable), or None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def _check_beam_fits(model, beam_size, S, max_len):
    """ValueError, before any work, when beam_size hypotheses cannot fit in the available memory.
    Per hypothesis: its self-attention cache (2 x layers x max_len x d_model) and cross-attention
    keys and values (2 x layers x S x d_model), each twice (reorder copies them), and its row of
    candidate scores (V float64, with argsort's copies: about 4 x 8 V bytes)."""
    c = model.config
    item = model.generator.weight.data.dtype.itemsize
    L, E, V = c["num_decoder_layers"], c["d_model"], c["tgt_vocab_size"]
    per = 2 * 2 * L * (max_len + S) * E * item + 32 * V + 4 * (c["dim_feedforward"] + 4 * E) * item
    available = _available_memory()
    if available is not None and beam_size * per > available:
        raise ValueError(f"beam_size {beam_size} does not fit: its hypotheses need about "
                         f"{beam_size * per / 2**30:.1f} GiB ({per} bytes each, max_len {max_len}), "
                         f"{available / 2**30:.1f} GiB are available: at most {available // per} fit")


def beam_search(model, src, beam_size=4, length_penalty=0.6, max_len=None, src_key_padding_mask=None,
                bos=1, eos=2, return_scores=False):
    """Beam search (see the module's doc) for each row of src (N, S) ids: a list of N int64
    arrays (eos not included), and with return_scores a list of their scores (log probability
    / lp). Each row is searched apart, its beam_size hypotheses as one batch. Runs in eval mode
    and restores the model's mode."""
    src, max_len = _check(model, src, max_len, bos, eos)
    if isinstance(beam_size, bool) or not isinstance(beam_size, (int, np.integer)) or beam_size < 1:
        raise ValueError(f"beam_size must be an int >= 1, got {beam_size!r}")
    if not np.isfinite(length_penalty) or length_penalty < 0:
        raise ValueError(f"length_penalty must be a finite number >= 0, got {length_penalty!r}")
    _check_beam_fits(model, int(beam_size), src.shape[1], max_len)
    pad = model._padding("src_key_padding_mask", src_key_padding_mask, src)
    was_training = model.training
    model.eval()
    outputs, scores = [], []
    try:
        for i in range(src.shape[0]):
            dec = _IncrementalDecoder(model, src[i:i + 1], pad[i:i + 1], max_len)
            toks, score = _beam(dec, bos, eos, int(beam_size), float(length_penalty), max_len)
            outputs.append(toks)
            scores.append(score)
    finally:
        model.train(was_training)
    return (outputs, scores) if return_scores else outputs
