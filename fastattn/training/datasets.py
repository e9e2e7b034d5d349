"""What the trainer reads: a text file (tokenized in memory), a token dataset that `prepare`
wrote (read through np.memmap, fastattn/io/token_files.py), or a text that ships with fastattn
("shakespeare", fastattn/datasets/), split 90% train / 10% validation.

    prepare("input.txt", "data/shakespeare", tokenizer="bpe", vocab_size=512)   # fastattn prepare
    splits, tokenizer = load_splits("data/shakespeare", block_size=64)
"""
import os

import numpy as np

from fastattn import datasets
from fastattn.io.token_files import read_token_dir, write_token_dir
from fastattn.io.tokenizer import CharTokenizer, PretrainedTokenizer, train_bpe

TRAIN_FRACTION = 0.9  # nanoGPT's split: the first 90% of the tokens train, the rest validates


def read_text(path):
    """The file's text (UTF-8), or a ValueError that says what is wrong with it. A packaged text's
    name ("shakespeare") reads that text, unless a file or directory of that name exists."""
    if path in datasets.NAMES and not os.path.exists(path):
        return getattr(datasets, path)()
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text: {e}") from None
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror or e}") from None
    if not text:
        raise ValueError(f"{path} is empty")
    return text


def make_tokenizer(kind, text, vocab_size=None):
    """"char" (the text's characters), "bpe" (a byte-level BPE of vocab_size trained on the text),
    or the path of a tokenizer.json (or of a directory holding one, e.g. GPT-2's)."""
    if kind != "bpe" and vocab_size is not None:
        raise ValueError(f"vocab_size applies to the bpe tokenizer only (it was given with {kind!r})")
    if kind == "char":
        return CharTokenizer.from_text(text)
    if kind == "bpe":
        if vocab_size is None:
            raise ValueError("the bpe tokenizer needs a vocab_size (--vocab-size), e.g. 512")
        return train_bpe(text, vocab_size)
    path = os.path.join(kind, "tokenizer.json") if os.path.isdir(kind) else kind
    if not os.path.isfile(path):
        raise FileNotFoundError(f"tokenizer {kind!r}: not 'char' or 'bpe', and no such tokenizer.json file "
                                "(or directory holding one)")
    return PretrainedTokenizer(path)


def prepare(data_path, out_dir, tokenizer="char", vocab_size=None):
    """Tokenizes the text file data_path with make_tokenizer(tokenizer, ...) and writes its first
    90% of tokens to out_dir/train.bin, the rest to out_dir/val.bin, with meta.json and the
    tokenizer (nanoGPT's prepare.py layout, see fastattn/io/token_files.py). Returns meta.json's dict."""
    text = read_text(data_path)
    tok = make_tokenizer(tokenizer, text, vocab_size)
    ids = tok.encode(text)
    n = int(TRAIN_FRACTION * len(ids))
    if n == 0 or n == len(ids):
        raise ValueError(f"{data_path} gives {len(ids)} tokens: too few for a train and a validation split "
                         f"(the first 90% and the last 10%, each at least one token)")
    return write_token_dir(out_dir, ids[:n], ids[n:], tok)


def _check_fits(splits, block_size, unit, total):
    for name, split in splits.items():
        if len(split) <= block_size:
            raise ValueError(f"block_size {block_size} does not fit the data: the {name} split has "
                             f"{len(split)} {unit} ({total} in all, 90% train / 10% val); "
                             f"it needs more than block_size")


def load_splits(data_path, block_size, tokenizer=None, source=None):
    """({"train": ids, "val": ids}, tokenizer) from a text file or a prepared directory.

    A text file is encoded with `tokenizer` (default: a CharTokenizer of its characters); a
    directory brings its own, which must equal `tokenizer` when one is given (source: what it came
    from, for the error message)."""
    if os.path.isdir(data_path):
        splits, own = read_token_dir(data_path, tokenizer)
        if tokenizer is not None and own != tokenizer:
            raise ValueError(f"{data_path} was prepared with another tokenizer ({own!r}) than the one of "
                             f"{source} ({tokenizer!r}): the data must be tokenized with the model's tokenizer")
        _check_fits(splits, block_size, "tokens", sum(len(s) for s in splits.values()))
        return splits, own
    text = read_text(data_path)
    if tokenizer is None:
        tokenizer = CharTokenizer.from_text(text)
        data = tokenizer.encode(text)
    else:
        try:
            data = tokenizer.encode(text)
        except ValueError as e:
            raise ValueError(f"{data_path} does not fit the tokenizer of {source}: {e}") from None
    n = int(TRAIN_FRACTION * len(data))
    splits = {"train": data[:n], "val": data[n:]}
    unit = "characters" if isinstance(tokenizer, CharTokenizer) else "tokens"
    _check_fits(splits, block_size, unit, len(data))
    return splits, tokenizer


def micro_batch_rng(seed, step, micro):
    """The generator of micro-batch `micro` of step `step`: its windows, then its dropout masks.
    It depends on these three numbers only, not on how many processes share the step."""
    return np.random.default_rng(np.random.SeedSequence([seed, 0, step, micro]))


def eval_batch_rng(seed, split, i):
    """The generator of evaluation batch i of split number `split` (fixed by the seed: every
    evaluation sees the same windows)."""
    return np.random.default_rng(np.random.SeedSequence([seed, 1, split, i]))
