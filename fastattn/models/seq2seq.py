"""The encoder-decoder Transformer of "Attention Is All You Need", built from fastattn.nn.

    model = Seq2SeqTransformer(src_vocab_size, tgt_vocab_size, d_model=128, nhead=4,
                               num_encoder_layers=2, num_decoder_layers=2, dim_feedforward=512)
    logits = model(src, tgt_in)                  # (N, S) and (N, T) ids -> (N, T, tgt_vocab_size)
    loss = F.cross_entropy(logits, tgt_out, ignore_index=model.pad_idx, label_smoothing=0.1)
    model.backward(F.cross_entropy_backward(logits, tgt_out, ignore_index=model.pad_idx,
                                            label_smoothing=0.1))

Shapes: N batch, S source length, T target length, E = d_model, V target vocabulary. Every
tensor is batch first (nn.Transformer runs with batch_first=True). The embeddings are scaled by
sqrt(d_model) before the sinusoids are added, as in the paper (section 3.4). Decoding (greedy,
beam search over a KV cache): fastattn/models/seq2seq_decoding.py.
"""
import math

import numpy as np

from fastattn import nn
from fastattn.nn.attention import _xavier_uniform
from fastattn.nn.module import _dtype, _generator, _positive_int


class Seq2SeqTransformer(nn.Module):
    """Seq2SeqTransformer(src_vocab_size, tgt_vocab_size, d_model=512, nhead=8, num_encoder_layers=6,
    num_decoder_layers=6, dim_feedforward=2048, dropout=0.1, share_embeddings=False, *, pad_idx=0,
    max_len=5000, activation="relu", norm_first=False, dtype=np.float32, seed=None).

    Submodules (their names are the state_dict's): src_tok_emb, tgt_tok_emb (nn.Embedding, the
    pad_idx row zero), src_pos, tgt_pos (nn.PositionalEncoding, with the model's dropout),
    transformer (nn.Transformer, batch_first=True) and generator (nn.Linear E -> V). With
    share_embeddings=True (one vocabulary for both sides: the sizes must be equal) the source
    embedding, the target embedding and the generator's weight are one Parameter, as in the
    paper; its state_dict then lists it once, as src_tok_emb.weight. Every parameter of more
    than one dimension starts xavier uniform (as the Annotated Transformer), the pad rows zero.

    forward(src, tgt_in, src_key_padding_mask=None, tgt_key_padding_mask=None) -> logits (N, T, V);
    the target attends causally (position t sees t' <= t). A padding mask left None is computed
    from the ids (True where the id is pad_idx, torch.nn's polarity); pass an all-False mask to
    treat pad_idx as a token. The memory is masked as the source. backward(grad_logits) adds
    every parameter's gradient and returns None (ids have no gradient): the loss is the caller's
    (the training loop applies label smoothing and ignores pad_idx, see
    fastattn/training/seq2seq_trainer.py). model.config: the constructor's arguments (a dict),
    so that Seq2SeqTransformer(**model.config) builds the same shapes.
    """

    def __init__(self, src_vocab_size, tgt_vocab_size, d_model=512, nhead=8, num_encoder_layers=6,
                 num_decoder_layers=6, dim_feedforward=2048, dropout=0.1, share_embeddings=False, *,
                 pad_idx=0, max_len=5000, activation="relu", norm_first=False, dtype=np.float32, seed=None):
        super().__init__()
        src_vocab_size = _positive_int("src_vocab_size", src_vocab_size)
        tgt_vocab_size = _positive_int("tgt_vocab_size", tgt_vocab_size)
        d_model = _positive_int("d_model", d_model)
        if share_embeddings and src_vocab_size != tgt_vocab_size:
            raise ValueError(f"share_embeddings needs one vocabulary: src_vocab_size ({src_vocab_size}) "
                             f"and tgt_vocab_size ({tgt_vocab_size}) differ")
        pad_idx = _positive_int("pad_idx", pad_idx, zero=True)
        if pad_idx >= min(src_vocab_size, tgt_vocab_size):
            raise ValueError(f"pad_idx ({pad_idx}) must be an id of both vocabularies "
                             f"(sizes {src_vocab_size}, {tgt_vocab_size})")
        dtype = _dtype(dtype)
        rng = self._rng = _generator(seed)  # after the initialisation, it draws the dropout masks
        self.config = dict(src_vocab_size=src_vocab_size, tgt_vocab_size=tgt_vocab_size, d_model=d_model,
                           nhead=int(nhead), num_encoder_layers=int(num_encoder_layers),
                           num_decoder_layers=int(num_decoder_layers), dim_feedforward=int(dim_feedforward),
                           dropout=float(dropout), share_embeddings=bool(share_embeddings), pad_idx=pad_idx,
                           max_len=int(max_len), activation=activation, norm_first=bool(norm_first))
        self.pad_idx, self.d_model = pad_idx, d_model
        self.src_tok_emb = nn.Embedding(src_vocab_size, d_model, padding_idx=pad_idx, dtype=dtype, seed=rng)
        self.tgt_tok_emb = nn.Embedding(tgt_vocab_size, d_model, padding_idx=pad_idx, dtype=dtype, seed=rng)
        # two encodings: a module keeps the state of its last call only, and each has a dropout
        self.src_pos = nn.PositionalEncoding(d_model, dropout, max_len, batch_first=True, seed=rng)
        self.tgt_pos = nn.PositionalEncoding(d_model, dropout, max_len, batch_first=True, seed=rng)
        self.transformer = nn.Transformer(d_model, nhead, num_encoder_layers, num_decoder_layers, dim_feedforward,
                                          dropout, activation, batch_first=True, norm_first=norm_first,
                                          dtype=dtype, seed=rng)
        self.generator = nn.Linear(d_model, tgt_vocab_size, dtype=dtype, seed=rng)
        for emb in (self.src_tok_emb, self.tgt_tok_emb, self.generator):
            emb.weight.data[...] = _xavier_uniform(rng, emb.weight.data.shape, dtype)
        if share_embeddings:
            self.tgt_tok_emb.weight = self.src_tok_emb.weight
            self.generator.weight = self.src_tok_emb.weight
        for emb in (self.src_tok_emb, self.tgt_tok_emb):
            emb.weight.data[pad_idx] = 0
        self._scale = dtype.type(math.sqrt(d_model))

    def _ids(self, name, ids, vocab_size):
        ids = np.asarray(ids)
        if ids.ndim != 2 or ids.dtype == np.bool_ or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"{name} must be a (N, length) integer array of ids, got {ids.dtype} {ids.shape}")
        if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
            raise ValueError(f"{name}: ids must be in [0, {vocab_size}), got {ids.min()} .. {ids.max()}")
        return ids

    def _padding(self, name, mask, ids):
        """The key padding mask (N, L) bool, True = padding: `mask`, or ids == pad_idx."""
        if mask is None:
            return ids == self.pad_idx
        m = np.asarray(mask)
        if m.dtype != np.bool_ or m.shape != ids.shape:
            raise ValueError(f"{name} must be a bool array of shape {ids.shape} (True = padding), "
                             f"got {m.dtype} {m.shape}")
        return m

    def embed_src(self, src):
        """src (N, S) ids -> (N, S, E): embedding * sqrt(E) + sinusoids (and dropout)."""
        src = self._ids("src", src, self.src_tok_emb.num_embeddings)
        return self.src_pos(self.src_tok_emb(src) * self._scale)

    def embed_tgt(self, tgt):
        tgt = self._ids("tgt_in", tgt, self.tgt_tok_emb.num_embeddings)
        return self.tgt_pos(self.tgt_tok_emb(tgt) * self._scale)

    def forward(self, src, tgt_in, src_key_padding_mask=None, tgt_key_padding_mask=None):
        src = self._ids("src", src, self.src_tok_emb.num_embeddings)
        tgt_in = self._ids("tgt_in", tgt_in, self.tgt_tok_emb.num_embeddings)
        if src.shape[0] != tgt_in.shape[0]:
            raise ValueError(f"src {src.shape} and tgt_in {tgt_in.shape} must have one batch size")
        src_pad = self._padding("src_key_padding_mask", src_key_padding_mask, src)
        tgt_pad = self._padding("tgt_key_padding_mask", tgt_key_padding_mask, tgt_in)
        y = self.transformer(self.embed_src(src), self.embed_tgt(tgt_in), src_key_padding_mask=src_pad,
                             tgt_key_padding_mask=tgt_pad, memory_key_padding_mask=src_pad,
                             tgt_is_causal=True)  # (N, T, E)
        return self.generator(y)

    def backward(self, grad_output):
        """grad_output: d(loss)/d(logits) (N, T, V). Adds into every param.grad; returns None."""
        dy = self.generator.backward(grad_output)
        dsrc, dtgt = self.transformer.backward(dy)
        self.tgt_tok_emb.backward(self.tgt_pos.backward(dtgt) * self._scale)
        self.src_tok_emb.backward(self.src_pos.backward(dsrc) * self._scale)
        return None

    def extra_repr(self):
        c = self.config
        return (f"src_vocab_size={c['src_vocab_size']}, tgt_vocab_size={c['tgt_vocab_size']}, "
                f"d_model={c['d_model']}, share_embeddings={c['share_embeddings']}")
