"""Token datasets on disk, in nanoGPT's prepare.py layout: a directory with

    train.bin, val.bin   the token ids, one after the other, raw little-endian uint16 (uint32 for
                         a vocabulary above 65,535 tokens): np.memmap reads them, so a corpus
                         larger than memory trains, and a reader touches only the windows it takes
    meta.json            {"format": "fastattn-tokens", "version": 1, "dtype", "vocab_size",
                         "train_tokens", "val_tokens", "tokenizer"}: tokenizer is a CharTokenizer's
                         JSON ({"type": "char", "chars": ...}) or {"type": "tokenizer.json"}
    tokenizer.json       the Hugging Face tokenizer, when meta.json says so

nanoGPT's own prepare.py directories (train.bin and val.bin as uint16, no meta.json) are read too:
the vocabulary comes from their meta.pkl (shakespeare_char's characters; read as plain data, never
running a pickle's code) or from the model's tokenizer (`fastattn train --init-from`; nanoGPT's
shakespeare and openwebtext are GPT-2's tokens).

    write_token_dir("data/shakespeare", train_ids, val_ids, tokenizer)
    splits, tokenizer = read_token_dir("data/shakespeare")   # splits["train"][i] -> int64 ids
"""
import json
import os
import pickle

import numpy as np

from fastattn.io.atomic import stage, write_atomic
from fastattn.io.tokenizer import CharTokenizer, PretrainedTokenizer

FORMAT = "fastattn-tokens"
VERSION = 1
SPLITS = ("train", "val")
_CHECK_TOKENS = 1 << 20  # read at open: the first and last this many tokens of each split


def token_dtype(vocab_size):
    """uint16 while every id fits (vocab_size <= 65,535, as nanoGPT stores GPT-2's 50,257), else uint32."""
    return np.dtype("<u2") if vocab_size <= 65535 else np.dtype("<u4")


def write_token_dir(out_dir, train_ids, val_ids, tokenizer):
    """Writes train.bin, val.bin, meta.json (and tokenizer.json for a PretrainedTokenizer) to
    out_dir; the ids must lie in [0, tokenizer.vocab_size). Returns meta.json's dict.

    Over an existing dataset the update is whole or refused, never a mix: every new file is
    written (and flushed) under a temporary name first, then the old meta.json is removed, the
    new files renamed into place, and the new meta.json written last. A process killed on the
    way leaves the old dataset, or a directory without meta.json (read_token_dir refuses it),
    never new .bin files beside the old meta.json (which would decode them with the wrong
    tokenizer when the sizes match). The next write removes what a killed one left."""
    vocab = tokenizer.vocab_size
    dtype = token_dtype(vocab)
    meta = {"format": FORMAT, "version": VERSION, "dtype": dtype.name, "vocab_size": vocab}
    checked = []
    for name, ids in zip(SPLITS, (train_ids, val_ids)):
        ids = np.asarray(ids)
        if ids.size and (ids.min() < 0 or ids.max() >= vocab):
            raise ValueError(f"the {name} ids must lie in [0, {vocab}), got [{ids.min()}, {ids.max()}]")
        checked.append(ids)
        meta[f"{name}_tokens"] = int(ids.size)
    os.makedirs(out_dir, exist_ok=True)
    _remove_stale_temporaries(out_dir)
    staged = []  # (temporary, final) paths
    try:
        for name, ids in zip(SPLITS, checked):
            staged.append(_stage(os.path.join(out_dir, f"{name}.bin"), ids.astype(dtype).tofile))
        if isinstance(tokenizer, PretrainedTokenizer):
            text = tokenizer.json.encode("utf-8")
            staged.append(_stage(os.path.join(out_dir, "tokenizer.json"), lambda f: f.write(text)))
            meta["tokenizer"] = {"type": "tokenizer.json"}
        else:
            meta["tokenizer"] = tokenizer.to_json()
    except BaseException:
        for tmp, _ in staged:
            os.unlink(tmp)
        raise
    meta_path = os.path.join(out_dir, "meta.json")
    if os.path.exists(meta_path):  # from here until the new one is written, the directory is refused
        os.unlink(meta_path)
        _sync_dir(out_dir)
    for tmp, final in staged:
        os.replace(tmp, final)
    text = json.dumps(meta)
    write_atomic(meta_path, lambda f: f.write(text.encode()))
    _sync_dir(out_dir)
    return meta


def _stage(path, write):
    """write(binary file) to a flushed temporary file beside path: (its name, path)."""
    return stage(path, write), path


def _sync_dir(path):
    """The directory's entries (a removal, a rename) to disk, where the OS allows it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove_stale_temporaries(out_dir):
    """Removes NAME.<pid>.tmp (NAME one of the dataset's files) whose writing process no longer runs."""
    names = tuple(f"{s}.bin" for s in SPLITS) + ("meta.json", "tokenizer.json")
    for entry in os.listdir(out_dir):
        base, _, rest = entry.partition(".tmp")[0].rpartition(".")
        if entry.endswith(".tmp") and base in names and rest.isdigit() and not _running(int(rest)):
            os.unlink(os.path.join(out_dir, entry))


def _running(pid):
    if pid == os.getpid():
        return False  # (this process is not writing there now)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class TokenSplit:
    """One split's ids through np.memmap: len(split) tokens; split[index] (any NumPy index)
    -> int64 ids, checked against the vocabulary as they are read (a ValueError names the file)."""

    def __init__(self, path, dtype, vocab_size):
        self.path, self.vocab_size = path, vocab_size
        self.data = np.memmap(path, dtype=dtype, mode="r")

    def __len__(self):
        return len(self.data)

    def __getitem__(self, index):
        ids = np.asarray(self.data[index]).astype(np.int64)
        if ids.size and ids.max() >= self.vocab_size:
            first = int(np.argmax(ids.reshape(-1)))
            at = (range(len(self.data))[index][first] if isinstance(index, slice)
                  else int(np.asarray(index).reshape(-1)[first]))
            raise ValueError(f"{self.path}: token {int(ids.max())} at position {at} is outside the "
                             f"vocabulary [0, {self.vocab_size}) of meta.json: the file is not from "
                             "this tokenizer (prepare it again)")
        return ids


def read_token_dir(path, tokenizer=None):
    """({"train": TokenSplit, "val": TokenSplit}, tokenizer) of a directory that write_token_dir
    (fastattn prepare) wrote, or of nanoGPT's prepare.py (no meta.json: see the module's doc;
    tokenizer, the model's, is used when the directory brings none). Missing files, a meta.json
    that is not this format, a .bin whose size is not meta.json's count of items: a ValueError
    (FileNotFoundError) naming the file. Token ids are checked at the start and end of each split
    here, the rest as they are read."""
    meta_path = os.path.join(path, "meta.json")
    missing = [n for n in ("train.bin", "val.bin") if not os.path.isfile(os.path.join(path, n))]
    if missing:
        raise FileNotFoundError(f"{path} is not a token dataset: it has no {', '.join(missing)} "
                                "(write one with `fastattn prepare --data TEXT --out DIR`)")
    if not os.path.isfile(meta_path):
        return _read_nanogpt_dir(path, tokenizer)
    try:
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read {meta_path}: {e}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{meta_path} is not a fastattn token dataset's (format {FORMAT!r})")
    if meta.get("version") != VERSION:
        raise ValueError(f"{meta_path} is version {meta.get('version')!r}; this fastattn reads {VERSION}")
    vocab = meta.get("vocab_size")
    if isinstance(vocab, bool) or not isinstance(vocab, int) or vocab < 1:
        raise ValueError(f"{meta_path}: vocab_size must be a positive int, got {vocab!r}")
    if meta.get("dtype") != token_dtype(vocab).name:
        raise ValueError(f"{meta_path}: dtype {meta.get('dtype')!r} does not fit a vocabulary of {vocab} "
                         f"(it is {token_dtype(vocab).name})")
    tokenizer = _tokenizer(path, meta.get("tokenizer"), meta_path)
    if tokenizer.vocab_size != vocab:
        raise ValueError(f"{meta_path}: vocab_size is {vocab}, but its tokenizer has {tokenizer.vocab_size} tokens")
    dtype = token_dtype(vocab)
    splits = {}
    for name in SPLITS:
        file = os.path.join(path, f"{name}.bin")
        size = os.path.getsize(file)
        if size % dtype.itemsize:
            raise ValueError(f"{file} is {size} bytes, not a whole number of {dtype.name} ({dtype.itemsize} "
                             "bytes): truncated or not a token file")
        count = meta.get(f"{name}_tokens")
        if count != size // dtype.itemsize:
            raise ValueError(f"{file} holds {size // dtype.itemsize} tokens, meta.json says {count!r}: "
                             "truncated or from another dataset")
        splits[name] = _open_split(file, dtype, vocab)
    return splits, tokenizer


def _open_split(file, dtype, vocab):
    if os.path.getsize(file) == 0:
        raise ValueError(f"{file} is empty")
    split = TokenSplit(file, dtype, vocab)
    for part in (slice(None, _CHECK_TOKENS), slice(-_CHECK_TOKENS, None)):
        split[part]  # reading checks the ids: a ValueError names the first one out of range
    return split


class _PlainData(pickle.Unpickler):
    """Unpickles dicts, lists, strs and numbers only: any class or function (the way a pickle
    runs code) is refused."""

    def find_class(self, module, name):
        raise ValueError(f"it holds a {module}.{name} object; fastattn reads only plain data (dicts, "
                         "strs, ints) from meta.pkl and never runs a pickle's code")


def _meta_pkl_tokenizer(file):
    """The CharTokenizer of nanoGPT's shakespeare_char meta.pkl: {"vocab_size", "itos", "stoi"}."""
    try:
        with open(file, "rb") as f:
            meta = _PlainData(f).load()
        itos = meta["itos"]
        chars = [itos[i] for i in range(meta["vocab_size"])]
        return CharTokenizer(chars)
    except (OSError, pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as e:
        raise ValueError(f"cannot read {file} as nanoGPT's meta.pkl (vocab_size, itos, stoi): {e}") from None


def _read_nanogpt_dir(path, tokenizer):
    """train.bin / val.bin as nanoGPT's prepare.py writes them: raw uint16, no meta.json; the
    vocabulary from its meta.pkl, else the model's tokenizer. A directory that a `fastattn prepare`
    left without meta.json (killed before the end: its files may mix two datasets) is refused."""
    pkl = os.path.join(path, "meta.pkl")
    unfinished = ("a `fastattn prepare` that did not finish leaves its directory without meta.json (run it "
                  "again)")
    leftovers = sorted(e for e in os.listdir(path) if e == "tokenizer.json" or e.endswith(".tmp"))
    if leftovers:
        raise ValueError(f"{path} has train.bin and val.bin, {', '.join(leftovers)} but no meta.json: {unfinished}")
    if os.path.isfile(pkl):
        tokenizer = _meta_pkl_tokenizer(pkl)
    elif tokenizer is None:
        raise ValueError(f"{path} has train.bin and val.bin but no meta.json, so its vocabulary is unknown: "
                         f"{unfinished}; nanoGPT's prepare.py writes a meta.pkl beside character data, and its "
                         "GPT-2 token directories (shakespeare, openwebtext) train with --init-from a GPT-2 "
                         "directory, whose tokenizer they use")
    dtype = token_dtype(tokenizer.vocab_size)
    if dtype != np.dtype("<u2"):
        raise ValueError(f"{path}: nanoGPT's train.bin / val.bin are uint16, which cannot hold a vocabulary of "
                         f"{tokenizer.vocab_size} tokens")
    splits = {}
    for name in SPLITS:
        file = os.path.join(path, f"{name}.bin")
        if os.path.getsize(file) % dtype.itemsize:
            raise ValueError(f"{file} is {os.path.getsize(file)} bytes, not a whole number of uint16 (2 bytes): "
                             "truncated or not a token file")
        splits[name] = _open_split(file, dtype, tokenizer.vocab_size)
    return splits, tokenizer


def _tokenizer(path, entry, meta_path):
    if isinstance(entry, dict) and entry.get("type") == "tokenizer.json":
        file = os.path.join(path, "tokenizer.json")
        if not os.path.isfile(file):
            raise FileNotFoundError(f"{meta_path} names tokenizer.json, but {path} has no tokenizer.json")
        return PretrainedTokenizer(file)
    try:
        return CharTokenizer.from_json(entry)
    except ValueError as e:
        raise ValueError(f"{meta_path}: {e}") from None
