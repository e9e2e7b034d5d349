"""PositionalEncoding: the sinusoids of "Attention Is All You Need", added to the input."""
import math

import numpy as np

from fastattn.nn.dropout import Dropout
from fastattn.nn.module import Module, _positive_int


class PositionalEncoding(Module):
    """PositionalEncoding(d_model, dropout=0.1, max_len=5000, batch_first=True, seed=None).

    dropout(x + pe[:T]) with pe[pos, 2i] = sin(pos / 10000^(2i / d_model)) and
    pe[pos, 2i + 1] = cos(pos / 10000^(2i / d_model)). Input (N, T, d_model) as the Annotated
    Transformer (batch_first=True, the default), (T, N, d_model) with batch_first=False (as
    torch's tutorial), or unbatched (T, d_model); T <= max_len. pe is a constant (float64,
    cast to the input's dtype), not a Parameter: it is not in state_dict().
    backward(grad_output) -> grad_input."""

    def __init__(self, d_model, dropout=0.1, max_len=5000, batch_first=True, seed=None):
        super().__init__()
        self.d_model = _positive_int("d_model", d_model)
        self.max_len = _positive_int("max_len", max_len)
        self.batch_first = bool(batch_first)
        self.dropout = Dropout(dropout, seed=seed)
        pos = np.arange(self.max_len, dtype=np.float64)[:, None]
        div = np.exp(np.arange(0, self.d_model, 2) * (-math.log(10000.0) / self.d_model))  # (ceil(d/2),)
        pe = np.zeros((self.max_len, self.d_model))
        pe[:, 0::2] = np.sin(pos * div)
        pe[:, 1::2] = np.cos(pos * div[: self.d_model // 2])
        self.pe = pe  # (max_len, d_model)

    def forward(self, x):
        x = np.asarray(x)
        if x.ndim not in (2, 3) or x.shape[-1] != self.d_model:
            raise ValueError(f"PositionalEncoding: input must be (N, T, {self.d_model}), (T, N, {self.d_model}) "
                             f"or (T, {self.d_model}), got {x.shape}")
        if x.dtype not in (np.float32, np.float64):  # (float16: the kernels and Dropout's draws have none)
            raise TypeError(f"PositionalEncoding: input must be float32 or float64, got {x.dtype}")
        time = 1 if x.ndim == 3 and self.batch_first else 0
        T = x.shape[time]
        if T > self.max_len:
            raise ValueError(f"PositionalEncoding: sequence of length {T} is longer than max_len {self.max_len}")
        pe = self.pe[:T].astype(x.dtype)
        pe = pe[None] if time == 1 else pe[:, None] if x.ndim == 3 else pe
        return self.dropout(x + pe)

    def backward(self, grad_output):
        return self.dropout.backward(grad_output)

    def extra_repr(self):
        return f"d_model={self.d_model}, max_len={self.max_len}, batch_first={self.batch_first}"
