"""Token datasets on disk: `fastattn prepare` (char, byte-level BPE, a tokenizer.json), the files it
writes (nanoGPT's train.bin / val.bin), training from them through np.memmap, and bad files."""
import json
import os

import numpy as np
import pytest

from fastattn import CharTokenizer
from fastattn.cli import main
from fastattn.io.token_files import TokenSplit, read_token_dir, write_token_dir
from fastattn.training.datasets import load_splits, prepare
from fastattn.training.trainer import train

TINY = dict(n_layer=1, n_head=2, n_embd=16, block_size=16, batch_size=4, eval_iters=3, eval_interval=3,
            warmup_iters=2, max_iters=6)


def curve(out_dir):
    with open(os.path.join(out_dir, "metrics.jsonl")) as f:
        return [(r["step"], r["train_loss"], r["val_loss"]) for r in map(json.loads, f)]


def test_prepare_writes_nanogpts_layout_and_training_reads_it_through_memmap(corpus_file, tmp_path, capsys):
    text = corpus_file.read_text()
    assert main(["prepare", "--data", str(corpus_file), "--out", str(tmp_path / "d")]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {tmp_path / 'd'}: train.bin {int(0.9 * len(text))} tokens")
    assert sorted(os.listdir(tmp_path / "d")) == ["meta.json", "train.bin", "val.bin"]
    tok = CharTokenizer.from_text(text)
    raw = np.fromfile(tmp_path / "d" / "train.bin", dtype=np.uint16)  # as nanoGPT's train.py reads it
    n = int(0.9 * len(text))
    assert tok.decode(raw) == text[:n]
    assert tok.decode(np.fromfile(tmp_path / "d" / "val.bin", dtype=np.uint16)) == text[n:]

    splits, read_tok = load_splits(str(tmp_path / "d"), block_size=16)
    assert read_tok == tok and isinstance(splits["train"], TokenSplit)
    assert isinstance(splits["train"].data, np.memmap)

    # the same tokens as the text file itself: the same run
    train(str(tmp_path / "d"), tmp_path / "from_dir", progress=False, log=lambda s: None, **TINY)
    train(corpus_file, tmp_path / "from_text", progress=False, log=lambda s: None, **TINY)
    assert curve(tmp_path / "from_dir") == curve(tmp_path / "from_text")
    train(str(tmp_path / "d"), tmp_path / "from_dir", resume=True, progress=False, log=lambda s: None, max_iters=9)
    assert curve(tmp_path / "from_dir")[-1][0] == 9


def test_large_vocabularies_are_stored_as_uint32(tmp_path):
    tok = CharTokenizer([chr(0x10000 + i) for i in range(70000)])
    ids = np.array([0, 65535, 65536, 69999] * 10)
    meta = write_token_dir(tmp_path, ids, ids[:20], tok)
    assert meta["dtype"] == "uint32" and os.path.getsize(tmp_path / "train.bin") == 4 * 40
    splits, back = read_token_dir(str(tmp_path))
    assert back == tok and splits["train"][:].tolist() == ids.tolist()
    small = write_token_dir(tmp_path / "s", [1, 2], [3], CharTokenizer("abcd"))
    assert small["dtype"] == "uint16"


def test_bad_token_files_are_named(tmp_path):
    d = tmp_path / "d"
    write_token_dir(d, np.arange(40) % 4, np.arange(30) % 4, CharTokenizer("abcd"))
    splits, _ = read_token_dir(str(d))
    assert len(splits["train"]) == 40

    (d / "val.bin").rename(d / "gone.bin")
    with pytest.raises(FileNotFoundError, match="has no val.bin"):
        read_token_dir(str(d))
    (d / "gone.bin").rename(d / "val.bin")

    with open(d / "train.bin", "ab") as f:
        f.write(b"\x01")  # 81 bytes: not a whole number of uint16
    with pytest.raises(ValueError, match=r"train.bin is 81 bytes, not a whole number of uint16"):
        read_token_dir(str(d))
    with open(d / "train.bin", "ab") as f:
        f.write(b"\x01")
    with pytest.raises(ValueError, match="train.bin holds 41 tokens, meta.json says 40"):
        read_token_dir(str(d))

    bad = np.arange(40, dtype=np.uint16) % 4
    bad[7] = 9  # outside the vocabulary of 4
    bad.tofile(d / "train.bin")
    with pytest.raises(ValueError, match=r"train.bin: token 9 at position 7 is outside the vocabulary \[0, 4\)"):
        read_token_dir(str(d))

    meta = json.loads((d / "meta.json").read_text())
    (d / "meta.json").write_text(json.dumps({**meta, "format": "something else"}))
    with pytest.raises(ValueError, match="not a fastattn token dataset"):
        read_token_dir(str(d))
    (d / "meta.json").write_text(json.dumps({**meta, "vocab_size": 70000}))
    with pytest.raises(ValueError, match="dtype 'uint16' does not fit a vocabulary of 70000"):
        read_token_dir(str(d))


def test_an_id_out_of_range_deep_in_the_file_is_caught_when_read(tmp_path):
    ids = np.zeros(3 << 20, dtype=np.int64)  # longer than what is checked at open
    write_token_dir(tmp_path, ids, ids[:100], CharTokenizer("ab"))
    raw = np.memmap(tmp_path / "train.bin", dtype=np.uint16, mode="r+")
    raw[3 << 19] = 5
    raw.flush()
    del raw
    splits, _ = read_token_dir(str(tmp_path))  # (the start and the end are fine)
    with pytest.raises(ValueError, match=f"token 5 at position {3 << 19} is outside"):
        splits["train"][np.arange((3 << 19) - 2, (3 << 19) + 2)]


def test_prepare_with_a_byte_level_bpe(corpus_file, tmp_path, capsys):
    pytest.importorskip("tokenizers")
    assert main(["prepare", "--data", str(corpus_file), "--out", str(tmp_path / "bpe"), "--tokenizer", "bpe",
                 "--vocab-size", "300"]) == 0
    assert sorted(os.listdir(tmp_path / "bpe")) == ["meta.json", "tokenizer.json", "train.bin", "val.bin"]
    splits, tok = read_token_dir(str(tmp_path / "bpe"))
    assert 256 < tok.vocab_size <= 300
    text = corpus_file.read_text()
    ids = np.concatenate([splits["train"][:], splits["val"][:]])
    assert len(ids) < len(text) / 2  # merges happened: the words became tokens
    assert tok.decode(ids) == text
    capsys.readouterr()
    assert main(["train", "--data", str(tmp_path / "bpe"), "--out", str(tmp_path / "o"), "--no-progress",
                 *[f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()]]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("final: step 6 ")
    assert main(["sample", "--checkpoint", str(tmp_path / "o"), "--prompt", "the king", "--max-new-tokens", "5",
                 "--temperature", "0"]) == 0  # the checkpoint keeps its tokenizer.json
    assert capsys.readouterr().out.startswith("the king")

    # a tokenizer.json as --tokenizer PATH: the same ids
    assert main(["prepare", "--data", str(corpus_file), "--out", str(tmp_path / "path"), "--tokenizer",
                 str(tmp_path / "bpe" / "tokenizer.json")]) == 0
    again, tok2 = read_token_dir(str(tmp_path / "path"))
    assert tok2 == tok and again["train"][:].tolist() == splits["train"][:].tolist()


@pytest.mark.parametrize("argv, message", [
    (["--tokenizer", "bpe"], "the bpe tokenizer needs a vocab_size (--vocab-size)"),
    (["--tokenizer", "bpe", "--vocab-size", "100"], "needs vocab_size >= 256"),
    (["--vocab-size", "300"], "vocab_size applies to the bpe tokenizer only"),
    (["--tokenizer", "{tmp}/none.json"], "not 'char' or 'bpe', and no such tokenizer.json file"),
])
def test_prepare_errors_are_one_line(corpus_file, tmp_path, capsys, argv, message):
    if "bpe" in argv and "--vocab-size" in argv:
        pytest.importorskip("tokenizers")
    argv = [a.format(tmp=tmp_path) for a in argv]
    assert main(["prepare", "--data", str(corpus_file), "--out", str(tmp_path / "o"), *argv]) == 1
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o").exists()


def test_a_dataset_of_another_tokenizer_is_refused_on_resume(corpus_file, tmp_path):
    train(corpus_file, tmp_path / "o", progress=False, log=lambda s: None, **TINY)
    other = tmp_path / "other.txt"
    other.write_text(corpus_file.read_text().upper())
    prepare(other, tmp_path / "d")
    with pytest.raises(ValueError, match="was prepared with another tokenizer"):
        train(str(tmp_path / "d"), tmp_path / "o", resume=True, progress=False, max_iters=9)


def test_tiny_shakespeare_ships_with_the_package(tmp_path, monkeypatch, capsys):
    import fastattn
    text = fastattn.datasets.shakespeare()
    assert len(text) == 1_115_394 and len(set(text)) == 65
    assert text.startswith("First Citizen:\nBefore we proceed any further, hear me speak.")
    assert dir(fastattn.datasets) == ["NAMES", "shakespeare"]
    # --data shakespeare: prepare writes its 90% / 10% split, as of a file holding the text
    monkeypatch.chdir(tmp_path)
    assert main(["prepare", "--data", "shakespeare", "--out", "d"]) == 0
    tok = CharTokenizer.from_text(text)
    n = int(0.9 * len(text))
    assert tok.decode(np.fromfile(tmp_path / "d" / "train.bin", dtype=np.uint16)) == text[:n]
    splits, read_tok = load_splits("shakespeare", block_size=16)
    assert read_tok == tok and tok.decode(splits["val"]) == text[n:]
    # a file of that name wins over the packaged text
    (tmp_path / "shakespeare").write_text("to be or not to be, " * 10)
    splits, read_tok = load_splits("shakespeare", block_size=16)
    assert read_tok.vocab_size == len(set("to be or not to be, "))


def test_pyproject_ships_the_compressed_text():
    """`pip install .` puts fastattn/datasets/*.txt.gz in the package (pyproject's package-data)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "pyproject.toml"), encoding="utf-8") as f:
        pyproject = f.read()
    section = pyproject[pyproject.index("[tool.setuptools.package-data]"):]
    assert '"fastattn.datasets" = ["*.txt.gz"]' in section.split("\n[")[0]
    import fastattn
    assert os.path.isfile(os.path.join(os.path.dirname(fastattn.datasets.__file__), "tinyshakespeare.txt.gz"))


def _nanogpt_prepare(text, out):
    """What nanoGPT's data/shakespeare_char/prepare.py writes (written here, as it does it)."""
    import pickle
    chars = sorted(set(text))
    stoi, itos = {ch: i for i, ch in enumerate(chars)}, {i: ch for i, ch in enumerate(chars)}
    n = len(text)
    os.makedirs(out)
    np.array([stoi[c] for c in text[:int(n * 0.9)]], dtype=np.uint16).tofile(os.path.join(out, "train.bin"))
    np.array([stoi[c] for c in text[int(n * 0.9):]], dtype=np.uint16).tofile(os.path.join(out, "val.bin"))
    with open(os.path.join(out, "meta.pkl"), "wb") as f:
        pickle.dump({"vocab_size": len(chars), "itos": itos, "stoi": stoi}, f)


def test_nanogpts_own_prepare_directories_train(corpus_file, tmp_path):
    """nanoGPT's prepare.py layout: train.bin / val.bin without meta.json, the vocabulary in meta.pkl."""
    text = corpus_file.read_text()
    _nanogpt_prepare(text, str(tmp_path / "shakespeare_char"))
    splits, tok = load_splits(str(tmp_path / "shakespeare_char"), block_size=16)
    assert tok == CharTokenizer.from_text(text) and tok.decode(splits["val"][:]) == text[int(0.9 * len(text)):]
    train(str(tmp_path / "shakespeare_char"), tmp_path / "from_nanogpt", progress=False, log=lambda s: None, **TINY)
    train(corpus_file, tmp_path / "from_text", progress=False, log=lambda s: None, **TINY)
    assert curve(tmp_path / "from_nanogpt") == curve(tmp_path / "from_text")


def test_a_nanogpt_directory_without_a_vocabulary(tmp_path):
    import pickle
    d = tmp_path / "owt"
    d.mkdir()
    (np.arange(100, dtype=np.uint16) % 7).tofile(d / "train.bin")
    (np.arange(40, dtype=np.uint16) % 7).tofile(d / "val.bin")
    with pytest.raises(ValueError, match="no meta.json, so its vocabulary is unknown: a `fastattn prepare` that did not finish"):
        read_token_dir(str(d))
    splits, tok = read_token_dir(str(d), CharTokenizer("abcdefg"))  # the model's tokenizer (--init-from)
    assert tok == CharTokenizer("abcdefg") and len(splits["train"]) == 100
    with pytest.raises(ValueError, match=r"token 6 at position 6 is outside the vocabulary \[0, 5\)"):
        read_token_dir(str(d), CharTokenizer("abcde"))

    class Boom:
        def __reduce__(self):
            return (os.system, ("echo ran > ran.txt",))
    with open(d / "meta.pkl", "wb") as f:
        pickle.dump({"vocab_size": 7, "itos": Boom()}, f)
    with pytest.raises(ValueError, match="meta.pkl as nanoGPT's meta.pkl .*never runs a pickle's code"):
        read_token_dir(str(d))
    assert not os.path.exists("ran.txt") and not (d / "ran.txt").exists()
