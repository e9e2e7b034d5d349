"""A character tokenizer, as nanoGPT's data/shakespeare_char/prepare.py: the vocabulary is the
sorted set of the characters of a training text, and a character's id is its place in it.

    tok = CharTokenizer.from_text(open("input.txt").read())
    ids = tok.encode("hello")          # np.ndarray of int64
    tok.decode(ids) == "hello"
"""
import numpy as np


class CharTokenizer:
    """CharTokenizer(chars): chars is the vocabulary, one character per id, all different
    (a string or a sequence of one-character strings). from_text(text) builds it as nanoGPT does."""

    def __init__(self, chars):
        if isinstance(chars, str):
            chars = list(chars)
        else:
            chars = list(chars)
            for i, c in enumerate(chars):
                if not isinstance(c, str) or len(c) != 1:
                    raise ValueError(f"the vocabulary must hold single characters, got {c!r} at {i}")
        if not chars:
            raise ValueError("the vocabulary is empty")
        if len(set(chars)) != len(chars):
            seen, dup = set(), []
            for c in chars:
                if c in seen and c not in dup:
                    dup.append(c)
                seen.add(c)
            raise ValueError(f"the vocabulary repeats characters: {dup!r}")
        self.chars = "".join(chars)
        self._stoi = {c: i for i, c in enumerate(self.chars)}
        self._itos = np.array(chars, dtype=object)

    @classmethod
    def from_text(cls, text):
        """The vocabulary of `text`: its distinct characters, sorted (by code point)."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        if not text:
            raise ValueError("cannot build a vocabulary from an empty text")
        return cls(sorted(set(text)))

    @property
    def vocab_size(self):
        return len(self.chars)

    def encode(self, text):
        """str -> int64 array of ids, one per character; a character outside the vocabulary
        raises ValueError naming it and its position."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        stoi = self._stoi
        try:
            return np.fromiter((stoi[c] for c in text), dtype=np.int64, count=len(text))
        except KeyError:
            pos = next(i for i, c in enumerate(text) if c not in stoi)
            raise ValueError(f"character {text[pos]!r} at position {pos} is not in the vocabulary") from None

    def decode(self, ids):
        """Integer ids (any shape; flattened) -> str; an id outside [0, vocab_size) raises ValueError."""
        a = np.asarray(ids)
        if a.size == 0:
            return ""
        if not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"ids must be integers, got dtype {a.dtype}")
        a = a.reshape(-1)
        bad = np.flatnonzero((a < 0) | (a >= self.vocab_size))
        if bad.size:
            raise ValueError(f"id {int(a[bad[0]])} at position {int(bad[0])} is outside the "
                             f"vocabulary [0, {self.vocab_size})")
        return "".join(self._itos[a])

    def to_json(self):
        """A dict for json.dump; from_json(to_json()) gives the same tokenizer."""
        return {"type": "char", "chars": self.chars}

    @classmethod
    def from_json(cls, data):
        if not isinstance(data, dict) or data.get("type") != "char" or not isinstance(data.get("chars"), str):
            raise ValueError(f"not a CharTokenizer's JSON (want {{'type': 'char', 'chars': str}}): {data!r:.200}")
        return cls(data["chars"])

    def __eq__(self, other):
        return isinstance(other, CharTokenizer) and self.chars == other.chars

    def __hash__(self):
        return hash(self.chars)

    def __repr__(self):
        return f"CharTokenizer(vocab_size={self.vocab_size})"


class PretrainedTokenizer:
    """A Hugging Face tokenizer.json (e.g. GPT-2's byte-level BPE) through the `tokenizers`
    package, with CharTokenizer's encode / decode / vocab_size. Read from disk only.

    encode gives the text's own ids whatever padding or truncation the file sets (all-MiniLM's
    pads and cuts to 128): it is what data is made of. Only encode_batch, the model input of an
    encoder, uses the file's truncation, on a tokenizer object of its own."""

    def __init__(self, path):
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"cannot read the tokenizer {path}: {getattr(e, 'strerror', None) or e}") from None
        self._load(text, str(path))

    def _load(self, text, path):
        Tokenizer = _tokenizers().Tokenizer
        try:
            self._tok = Tokenizer.from_str(text)
        except Exception as e:  # tokenizers raises its own Exception type for a bad file
            raise ValueError(f"cannot read the tokenizer {path}: {e}") from None
        # encode's tokenizer: never padded or cut, and never changed after this (threads share it)
        self._tok.no_padding()
        self._tok.no_truncation()
        self._batch_tok = None  # encode_batch's, read again from the text when first needed
        self.path, self.json = path, text  # json: the tokenizer.json text, as read

    @classmethod
    def from_str(cls, json_text, name="<tokenizer.json text>"):
        """The tokenizer whose tokenizer.json is the string json_text (name: what error messages
        call it)."""
        tok = cls.__new__(cls)
        tok._load(json_text, name)
        return tok

    def to_json(self):
        """A dict for json.dump (the tokenizer.json text inside); tokenizer_from_json reads it."""
        return {"type": "tokenizer.json", "json": self.json}

    def save(self, path):
        """Writes the tokenizer.json text, as read, to path."""
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.json)

    def __eq__(self, other):
        return isinstance(other, PretrainedTokenizer) and self.json == other.json

    def __hash__(self):
        return hash(self.json)

    @property
    def vocab_size(self):
        return self._tok.get_vocab_size()

    def encode(self, text):
        """str -> int64 array of token ids (no special tokens added)."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        _encodable("text", text)
        return np.array(self._tok.encode(text, add_special_tokens=False).ids, dtype=np.int64)

    def encode_batch(self, texts, max_length=None):
        """A list of int64 id arrays, one per text, with the tokenizer's special tokens (BERT's
        [CLS] ... [SEP]), unpadded; max_length cuts each to that many tokens, the special ones
        included (and leaves that setting on encode_batch's tokenizer; encode is never cut)."""
        if self._batch_tok is None:
            self._batch_tok = _tokenizers().Tokenizer.from_str(self.json)
        self._batch_tok.no_padding()
        if max_length is not None:
            self._batch_tok.enable_truncation(max_length)
        texts = list(texts)
        for i, text in enumerate(texts):
            _encodable(f"texts[{i}]", text)
        return [np.array(e.ids, dtype=np.int64) for e in self._batch_tok.encode_batch(texts)]

    def decode(self, ids):
        """Integer ids (any shape; flattened) -> str."""
        a = np.asarray(ids).reshape(-1)
        if a.size and not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"ids must be integers, got dtype {a.dtype}")
        if a.size and (a.min() < 0 or a.max() >= self.vocab_size):
            raise ValueError(f"ids must be in [0, {self.vocab_size})")
        return self._tok.decode(a.tolist(), skip_special_tokens=False)

    def __repr__(self):
        return f"PretrainedTokenizer({self.path!r}, vocab_size={self.vocab_size})"


def _tokenizers():
    try:
        import tokenizers
    except ImportError:
        raise ImportError("reading or training a tokenizer.json needs the tokenizers package: "
                          "pip install '.[hf]' in fastattn's clone") from None
    return tokenizers


def train_bpe(text, vocab_size):
    """A byte-level BPE (GPT-2's kind: every byte is a token, so any text encodes) of at most
    vocab_size tokens, trained on text with the tokenizers package."""
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 256:
        raise ValueError(f"a byte-level BPE needs vocab_size >= 256 (one token per byte), got {vocab_size!r}")
    _encodable("text", text)
    tk = _tokenizers()
    tok = tk.Tokenizer(tk.models.BPE())
    tok.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tk.decoders.ByteLevel()
    trainer = tk.trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                     initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet())
    # (one long line per chunk: the trainer counts words within each string)
    tok.train_from_iterator((text[i:i + (1 << 20)] for i in range(0, len(text), 1 << 20)), trainer)
    return PretrainedTokenizer.from_str(tok.to_str(), f"<byte-level BPE of {vocab_size}>")


def tokenizer_from_json(data):
    """The tokenizer that to_json() described: a CharTokenizer or a PretrainedTokenizer."""
    if isinstance(data, dict) and data.get("type") == "tokenizer.json":
        if not isinstance(data.get("json"), str):
            raise ValueError("a tokenizer.json entry needs its text under 'json'")
        return PretrainedTokenizer.from_str(data["json"])
    return CharTokenizer.from_json(data)


def _encodable(name, text):
    """ValueError unless text is valid Unicode: a lone surrogate ('\\ud800', from a bad decode
    with errors="surrogateescape", say) cannot be encoded to UTF-8, which tokenizers needs
    (it raised an unhelpful TypeError)."""
    if not isinstance(text, str):
        raise TypeError(f"{name} must be a str, got {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"{name} is not valid Unicode: a lone surrogate {text[e.start]!r} at position "
                         f"{e.start}") from None


def load_tokenizer(model_dir):
    """The tokenizer of a Hugging Face model directory: its tokenizer.json, or
    FileNotFoundError saying what to do when there is none (a hub name such as "gpt2" is not a
    directory: nothing is downloaded)."""
    import os
    if not os.path.isdir(model_dir):
        raise FileNotFoundError(
            f"{model_dir}: no such directory; fastattn never downloads: pass the path of a local model "
            "directory holding tokenizer.json (e.g. one written by transformers' save_pretrained)")
    path = os.path.join(model_dir, "tokenizer.json")
    if not os.path.isfile(path):
        slow = [f for f in ("vocab.json", "merges.txt", "vocab.txt") if os.path.isfile(os.path.join(model_dir, f))]
        hint = (f" (it has {', '.join(slow)}: a slow tokenizer's files)" if slow else "")
        raise FileNotFoundError(
            f"{model_dir} has no tokenizer.json{hint}; write one with transformers: "
            f"AutoTokenizer.from_pretrained(dir).save_pretrained(dir) saves a fast tokenizer's tokenizer.json")
    return PretrainedTokenizer(path)
