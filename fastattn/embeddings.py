"""Sentence embeddings from a BERT-family model directory, as sentence-transformers computes them.

    vectors = fastattn.embed(["first sentence", "second"], "path/to/all-MiniLM-L6-v2")   # (2, 384) float32
    model = fastattn.SentenceEncoder("path/to/all-MiniLM-L6-v2")                         # keeps it loaded
    vectors = model.encode(texts, batch_size=32)

The directory holds config.json + model.safetensors (the encoder, fastattn.Encoder), tokenizer.json
(read with the `tokenizers` package: BERT's WordPiece, [CLS] ... [SEP]) and, from
sentence-transformers, optionally modules.json with its Pooling module's config (mean, CLS, max
or mean-sqrt-len pooling; mean when absent) and sentence_bert_config.json (max_seq_length).

Texts are cut to max_seq_length tokens (the special ones included; max_position_embeddings
without that file), as sentence-transformers does. They are sorted by length into batches, so
that a batch holds little padding, and the result comes back in the input order. A text's vector
does not depend on the batch it lands in (padding is masked) beyond float rounding.
"""
import numbers
import os

import numpy as np

from fastattn.encoder import Encoder
from fastattn.pretrained import read_json

_POOLING = {"pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean",
            "pooling_mode_max_tokens": "max", "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len"}


def _pooling_modes(model_dir):
    """The pooling modes of a sentence-transformers directory (several are concatenated, in
    sentence-transformers' order); ["mean"] when it names none."""
    modules_path = os.path.join(model_dir, "modules.json")
    if not os.path.isfile(modules_path):
        return ["mean"]
    for module in read_json(modules_path, list):
        if not isinstance(module, dict) or not isinstance(module.get("type", ""), str):
            raise ValueError(f"{modules_path}: each module must be a JSON object with a str type, got {module!r:.100}")
        if module.get("type", "").endswith("Pooling"):
            config = read_json(os.path.join(model_dir, module.get("path", ""), "config.json"), dict)
            modes = [mode for key, mode in _POOLING.items() if config.get(key)]
            unknown = [k for k, v in config.items() if k.startswith("pooling_mode") and v and k not in _POOLING]
            if unknown or not modes:
                raise ValueError(f"{model_dir}: pooling {unknown or 'none'} is not supported "
                                 f"(only {sorted(_POOLING.values())})")
            return modes
    return ["mean"]


def pool(hidden, mask, modes):
    """hidden (B, T, H), mask (B, T) 1 for tokens -> (B, len(modes) * H), in float64 sums."""
    m = mask.astype(hidden.dtype)[..., None]
    count = np.maximum(m.sum(axis=1), 1e-9)
    out = []
    for mode in modes:
        if mode == "cls":
            out.append(hidden[:, 0])
        elif mode == "max":
            out.append(np.where(m > 0, hidden, -1e9).max(axis=1))
        else:
            total = (hidden * m).sum(axis=1, dtype=np.float64)
            out.append(total / (count if mode == "mean" else np.sqrt(count)))
    return np.concatenate(out, axis=-1)


class SentenceEncoder:
    """A sentence-embedding model kept loaded: SentenceEncoder(model_dir).encode(texts)."""

    def __init__(self, model_dir):
        from fastattn.tokenizer import load_tokenizer
        self.model_dir = model_dir
        self.encoder = Encoder.from_pretrained(model_dir)
        self.tokenizer = load_tokenizer(model_dir)
        st_config = os.path.join(model_dir, "sentence_bert_config.json")
        limit = self.encoder.config.max_position_embeddings
        self.max_seq_length = min(limit, int(read_json(st_config, dict).get("max_seq_length") or limit)) \
            if os.path.isfile(st_config) else limit
        self.pooling = _pooling_modes(model_dir)
        self.dimension = len(self.pooling) * self.encoder.config.hidden_size

    def tokenize(self, texts):
        """Token ids of each text ([CLS] ... [SEP]), cut to max_seq_length as sentence-transformers
        does (the last token kept is [SEP])."""
        return self.tokenizer.encode_batch(texts, max_length=self.max_seq_length)

    def encode(self, texts, batch_size=32, normalize=True, progress=False):
        """texts (a list of str) -> (len(texts), dimension) float32 vectors; normalize: scale
        each to unit length. progress: a tqdm bar over the batches."""
        if isinstance(texts, str):
            raise TypeError("texts must be a list of strings, not one string")
        texts = list(texts)
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise TypeError(f"texts must be strings; item {bad[0]} is {type(texts[bad[0]]).__name__}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        out = np.zeros((len(texts), self.dimension), np.float32)
        ids = self.tokenize(texts)
        order = np.argsort([-len(i) for i in ids], kind="stable")  # longest first
        starts = range(0, len(texts), batch_size)
        if progress:
            from tqdm import tqdm
            starts = tqdm(starts, unit="batch", desc="embed")
        for start in starts:
            rows = order[start:start + batch_size]
            T = max(len(ids[r]) for r in rows)
            batch = np.zeros((len(rows), T), np.int64)
            mask = np.zeros((len(rows), T), np.int64)
            for j, r in enumerate(rows):  # right padding, as BERT tokenizers pad
                batch[j, :len(ids[r])], mask[j, :len(ids[r])] = ids[r], 1
            vectors = pool(self.encoder(batch, mask), mask, self.pooling)
            if normalize:
                vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
            out[rows] = vectors
        return out


def embed(texts, model_dir, batch_size=32, normalize=True):
    """(len(texts), dimension) float32 sentence embeddings of texts with the model in model_dir
    (see the module's doc). To embed several lists, keep a SentenceEncoder instead."""
    return SentenceEncoder(model_dir).encode(texts, batch_size, normalize)
