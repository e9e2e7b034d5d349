"""Fine-tuning: `fastattn train --init-from DIR` from a Hugging Face GPT-2 directory (a small random
one written here) or a fastattn checkpoint, with its tokenizer; GPT.crop_block_size."""
import dataclasses
import json

import numpy as np
import pytest

from fastattn import GPT, load_checkpoint
from fastattn.cli import main
from fastattn.training.datasets import load_splits, prepare
from fastattn.training.trainer import TrainConfig, estimate_loss, train

from test_pretrained import HF_CONFIG, byte_level_tokenizer, gpt2_like, write_hf_dir  # noqa: F401 (a fixture)

SETTINGS = dict(batch_size=4, eval_iters=3, eval_interval=3, warmup_iters=1, max_iters=3, learning_rate=1e-3)


@pytest.fixture
def gpt2_dir(gpt2_like, tmp_path):
    """A random GPT-2 (block 12, tanh GELU, biases) with a byte-level BPE, in Hugging Face's layout."""
    path = tmp_path / "gpt2"
    path.mkdir()
    vocab = byte_level_tokenizer(path)
    model = GPT(dataclasses.replace(gpt2_like.config, vocab_size=vocab), seed=1)
    write_hf_dir(path, model, config={**HF_CONFIG, "vocab_size": vocab})
    return path


def test_crop_block_size(gpt2_like):
    idx = np.random.default_rng(0).integers(0, 61, (2, 8))
    want = gpt2_like(idx)[0]
    wpe = gpt2_like.transformer.wpe.weight.data.copy()
    gpt2_like.crop_block_size(8)
    assert gpt2_like.config.block_size == 8 and gpt2_like.transformer.wpe.weight.data.shape == gpt2_like.transformer.wpe.weight.grad.shape == (8, 16)
    np.testing.assert_array_equal(gpt2_like.transformer.wpe.weight.data, wpe[:8])
    np.testing.assert_array_equal(gpt2_like(idx)[0], want)  # the first 8 positions are unchanged
    with pytest.raises(ValueError, match="sequence of length 9 is longer than block_size 8"):
        gpt2_like(np.zeros((1, 9), np.int64))
    with pytest.raises(ValueError, match="block_size 12 is larger than the model's 8"):
        gpt2_like.crop_block_size(12)


def test_fine_tune_a_gpt2_directory(gpt2_dir, corpus_file, tmp_path, capsys):
    out = tmp_path / "ft"
    last = train(corpus_file, out, progress=False, log=lambda s: None, init_from=str(gpt2_dir), block_size=8,
                 **SETTINGS)
    ckpt = load_checkpoint(out / "ckpt.npz")
    assert ckpt.config.block_size == 8 and ckpt.config.gelu_approximate == "tanh" and ckpt.config.bias
    assert ckpt.tokenizer.vocab_size == ckpt.config.vocab_size  # GPT-2's tokenizer came along
    saved = json.loads((out / "config.json").read_text())
    assert saved["n_layer"] == 2 and saved["n_embd"] == 16 and saved["bias"] is True and saved["block_size"] == 8

    # step 0 is the pretrained model itself, on the text encoded with its tokenizer
    start = GPT.from_pretrained(str(gpt2_dir))
    start.crop_block_size(8)
    splits, _ = load_splits(str(corpus_file), 8, ckpt.tokenizer)
    cfg = TrainConfig(**{**SETTINGS, "block_size": 8})
    first = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert first["val_loss"] == pytest.approx(estimate_loss(start, splits, cfg)["val"], rel=1e-12)
    assert last["step"] == 3

    # its output samples with the GPT-2 tokenizer; a prepared directory of that tokenizer trains too
    assert main(["sample", "--checkpoint", str(out), "--prompt", "the king", "--max-new-tokens", "4"]) == 0
    assert capsys.readouterr().out.startswith("the king")
    prepare(corpus_file, tmp_path / "d", tokenizer=str(gpt2_dir))
    train(str(tmp_path / "d"), tmp_path / "ft2", progress=False, log=lambda s: None, init_from=str(gpt2_dir),
          block_size=8, **SETTINGS)
    assert json.loads((tmp_path / "ft2" / "metrics.jsonl").read_text().splitlines()[0]) == \
        {**first, "elapsed_s": pytest.approx(first["elapsed_s"], abs=60)}


def test_a_nanogpt_directory_of_gpt2_tokens_trains_with_init_from(gpt2_dir, corpus_file, tmp_path):
    """nanoGPT's shakespeare / openwebtext layout: train.bin and val.bin of GPT-2 ids as uint16, no
    meta.json nor meta.pkl; --init-from brings the tokenizer, and the run is the one of the same
    ids prepared by fastattn."""
    prepare(corpus_file, tmp_path / "d", tokenizer=str(gpt2_dir))
    nanogpt = tmp_path / "owt"
    nanogpt.mkdir()
    for name in ("train.bin", "val.bin"):
        (nanogpt / name).write_bytes((tmp_path / "d" / name).read_bytes())  # (the same uint16 ids)
    with pytest.raises(ValueError, match="no meta.json, so its vocabulary is unknown"):
        train(str(nanogpt), tmp_path / "x", progress=False, log=lambda s: None, block_size=8, **SETTINGS)
    runs = []
    for data, out in ((nanogpt, "a"), (tmp_path / "d", "b")):
        train(str(data), tmp_path / out, progress=False, log=lambda s: None, init_from=str(gpt2_dir),
              block_size=8, **SETTINGS)
        runs.append([(r["step"], r["val_loss"]) for r in map(json.loads, open(tmp_path / out / "metrics.jsonl"))])
    assert runs[0] == runs[1]


def test_fine_tune_a_fastattn_checkpoint(corpus_file, tmp_path):
    tiny = dict(SETTINGS, n_layer=1, n_head=2, n_embd=16, block_size=16)
    source = train(corpus_file, tmp_path / "src", progress=False, log=lambda s: None, **tiny)
    train(corpus_file, tmp_path / "ft", progress=False, log=lambda s: None, init_from=str(tmp_path / "src"),
          **dict(SETTINGS, seed=tiny.get("seed", 1337), dropout=0.1))
    first = json.loads((tmp_path / "ft" / "metrics.jsonl").read_text().splitlines()[0])
    # best.npz is the source's last state here, evaluated on the same batches (same seed and shapes)
    assert first["step"] == 0 and first["val_loss"] == pytest.approx(source["val_loss"], rel=1e-12)
    assert json.loads((tmp_path / "ft" / "config.json").read_text())["dropout"] == 0.1


@pytest.mark.parametrize("extra, message", [
    (["--n-layer", "3"], "the model in {gpt2} has n_layer 2: 3 was asked"),
    (["--block-size", "16"], "block_size 16 is larger than the model's 12"),
    (["--resume"], "pass one of them"),
    (["--data", "{tmp}/d"], "was prepared with another tokenizer"),
])
def test_fine_tuning_errors_are_one_line(gpt2_dir, corpus_file, tmp_path, capsys, extra, message):
    prepare(corpus_file, tmp_path / "d")  # characters: not GPT-2's tokenizer
    argv = ["train", "--data", str(corpus_file), "--out", str(tmp_path / "o"), "--init-from", str(gpt2_dir),
            "--no-progress", "--max-iters", "1", *[a.format(tmp=tmp_path) for a in extra]]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert message.format(gpt2=gpt2_dir) in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o").exists()
