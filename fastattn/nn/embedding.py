"""Embedding: a lookup table of vectors, torch.nn.Embedding's parameters and initialisation."""
import numpy as np
import scipy.sparse

from fastattn.nn.module import Module, Parameter, _dtype, _generator, _init_default, _positive_int


class Embedding(Module):
    """Embedding(num_embeddings, embedding_dim, padding_idx=None, dtype=np.float32, seed=None).

    weight (num_embeddings, embedding_dim) ~ N(0, 1); the padding_idx row (negative: counted from
    the end, as torch) is zero and gets no gradient. input: integer ids (...) -> (..., embedding_dim).
    backward(grad_output) adds into weight.grad and returns None (ids have no gradient)."""

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, dtype=np.float32, seed=None):
        super().__init__()
        self.num_embeddings = _positive_int("num_embeddings", num_embeddings)
        self.embedding_dim = _positive_int("embedding_dim", embedding_dim, zero=True)
        if padding_idx is not None:
            if isinstance(padding_idx, bool) or not isinstance(padding_idx, (int, np.integer)):
                raise TypeError(f"padding_idx must be None or an int, got {type(padding_idx).__name__}")
            if not -self.num_embeddings <= padding_idx < self.num_embeddings:
                raise ValueError(f"padding_idx must be in [-{self.num_embeddings}, {self.num_embeddings}), "
                                 f"got {padding_idx}")
            padding_idx = int(padding_idx) % self.num_embeddings
        self.padding_idx = padding_idx
        self._rng = _generator(seed)
        self.weight = Parameter(np.zeros((self.num_embeddings, self.embedding_dim), _dtype(dtype)))
        if _init_default():
            self.reset_parameters()

    def reset_parameters(self, rng=None):
        rng = self._rng if rng is None else rng
        w = self.weight.data
        w[...] = rng.standard_normal(w.shape)
        if self.padding_idx is not None:
            w[self.padding_idx] = 0

    def forward(self, input):  # ids (...) -> (..., embedding_dim)
        idx = np.asarray(input)
        if idx.dtype == np.bool_ or not np.issubdtype(idx.dtype, np.integer):
            raise TypeError(f"Embedding: input must be an integer array of ids, got dtype {idx.dtype}")
        if idx.size and (idx.min() < 0 or idx.max() >= self.num_embeddings):
            raise ValueError(f"Embedding: ids must be in [0, {self.num_embeddings}), "
                             f"got {idx.min()} .. {idx.max()}")
        self._save(idx)
        return self.weight.data[idx]

    def backward(self, grad_output):
        (idx,) = self._take()
        g = np.asarray(grad_output)
        if g.shape != idx.shape + (self.embedding_dim,):
            raise ValueError(f"Embedding: grad_output must have shape {idx.shape + (self.embedding_dim,)}, "
                             f"got {g.shape}")
        flat = idx.reshape(-1)
        ones = np.ones(flat.size, self.weight.data.dtype)
        if self.padding_idx is not None:
            ones[flat == self.padding_idx] = 0
        # rows used several times add up: grad += onehot(idx)^T g, the one-hot (V, N) sparse
        onehot_t = scipy.sparse.csc_matrix((ones, flat, np.arange(flat.size + 1)),
                                           shape=(self.num_embeddings, flat.size))
        self.weight.grad += onehot_t @ g.reshape(flat.size, self.embedding_dim).astype(
            self.weight.data.dtype, copy=False)
        return None

    def _quantize_own(self, compute_type):
        # (rows quantized one by one: a lookup reads rows; a table tied to an output layer, as
        # GPT's, is that layer's weight too. int8_bfloat16 keeps the tables in bfloat16.)
        self._quantize_param("weight", "int8" if compute_type == "int8" else "bfloat16")

    def extra_repr(self):
        pad = "" if self.padding_idx is None else f", padding_idx={self.padding_idx}"
        return f"{self.num_embeddings}, {self.embedding_dim}{pad}"
