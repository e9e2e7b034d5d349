"""The vocabulary of one side of a sequence-to-sequence model: four special ids, then the
tokens of a character set or of a Hugging Face tokenizer.json.

    vocab = Seq2SeqVocab.from_texts(sources)     # characters, sorted (as CharTokenizer)
    vocab = Seq2SeqVocab.from_tokenizer_dir(d)   # d/tokenizer.json's tokens, shifted by 4
    ids = vocab.encode("3 March 2021")           # int64, no bos/eos added
    vocab.decode(ids)                            # the special ids are dropped

Ids: PAD 0, BOS 1, EOS 2, UNK 3 (a character outside the set), then the tokens. to_json()
holds the whole vocabulary (a tokenizer.json's text too), so a checkpoint needs nothing else.
"""
import numpy as np

from fastattn.io.tokenizer import PretrainedTokenizer

SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
PAD, BOS, EOS, UNK = range(4)


class Seq2SeqVocab:
    """Seq2SeqVocab(chars=...) or Seq2SeqVocab(tokenizer_json=...): one of the two."""

    def __init__(self, chars=None, tokenizer_json=None):
        if (chars is None) == (tokenizer_json is None):
            raise ValueError("Seq2SeqVocab needs chars or tokenizer_json (one of the two)")
        self.chars, self.tokenizer_json = chars, tokenizer_json
        if chars is not None:
            if not isinstance(chars, str) or len(set(chars)) != len(chars):
                raise ValueError("chars must be a str of distinct characters")
            self._stoi = {c: i + len(SPECIALS) for i, c in enumerate(chars)}
            self._itos = np.array([""] * len(SPECIALS) + list(chars), dtype=object)
            self._tok = None
        else:
            self._tok = PretrainedTokenizer.from_str(tokenizer_json)

    @classmethod
    def from_texts(cls, texts):
        """The distinct characters of texts (an iterable of str), sorted by code point."""
        chars = set()
        for t in texts:
            chars.update(t)
        return cls(chars="".join(sorted(chars)))

    @classmethod
    def from_tokenizer_dir(cls, path):
        """The tokens of path/tokenizer.json (FileNotFoundError without one)."""
        import os
        file = os.path.join(path, "tokenizer.json")
        if not os.path.isfile(file):
            raise FileNotFoundError(f"{path} has no tokenizer.json")
        with open(file, encoding="utf-8") as f:
            return cls(tokenizer_json=f.read())

    @property
    def vocab_size(self):
        n = len(self.chars) if self._tok is None else self._tok.vocab_size
        return len(SPECIALS) + n

    def encode(self, text, strict=False):
        """str -> int64 ids; a character outside a character vocabulary is UNK, or with
        strict=True a ValueError naming it and its position (what the trainer and translate use);
        with a tokenizer, strict=True refuses a text that it encodes with its unknown token."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        if self._tok is not None:
            ids = self._tok.encode(text)
            unk = self._tok.unk_id
            if strict and unk is not None and (ids == unk).any() and self._tok.decode([unk]) not in text:
                token = int(np.argmax(ids == unk))
                raise ValueError(f"token {token} is the tokenizer's unknown token: the text holds characters "
                                 "outside the vocabulary")
            return ids + len(SPECIALS)
        get = self._stoi.get
        ids = np.fromiter((get(c, UNK) for c in text), dtype=np.int64, count=len(text))
        if strict and (ids == UNK).any():
            pos = int(np.argmax(ids == UNK))
            raise ValueError(f"character {text[pos]!r} at position {pos} is not in the vocabulary")
        return ids

    def decode(self, ids):
        """ids (any shape; flattened) -> str, without the special ids (an UNK is dropped too)."""
        a = np.asarray(ids, dtype=np.int64).reshape(-1)
        if a.size and (a.min() < 0 or a.max() >= self.vocab_size):
            raise ValueError(f"ids must be in [0, {self.vocab_size})")
        a = a[a >= len(SPECIALS)]
        if self._tok is not None:
            return self._tok.decode(a - len(SPECIALS))
        return "".join(self._itos[a])

    def to_json(self):
        if self._tok is None:
            return {"type": "seq2seq-chars", "chars": self.chars}
        return {"type": "seq2seq-tokenizer.json", "tokenizer_json": self.tokenizer_json}

    @classmethod
    def from_json(cls, data):
        if isinstance(data, dict) and data.get("type") == "seq2seq-chars" and isinstance(data.get("chars"), str):
            return cls(chars=data["chars"])
        if isinstance(data, dict) and data.get("type") == "seq2seq-tokenizer.json" \
                and isinstance(data.get("tokenizer_json"), str):
            return cls(tokenizer_json=data["tokenizer_json"])
        raise ValueError(f"not a Seq2SeqVocab's JSON: {str(data)[:120]}")

    def __eq__(self, other):
        return isinstance(other, Seq2SeqVocab) and self.to_json() == other.to_json()

    def __repr__(self):
        kind = "chars" if self._tok is None else "tokenizer.json"
        return f"Seq2SeqVocab({kind}, vocab_size={self.vocab_size})"
