import json
import math

import numpy as np
import pytest

from fastattn.training.checkpoint import load_checkpoint
from fastattn.training.trainer import TrainConfig, get_batch, get_lr, train

TINY = dict(n_layer=2, n_head=2, n_embd=32, block_size=16, batch_size=8, eval_iters=4,
            learning_rate=1e-2, warmup_iters=5)


def curve(out_dir):
    with open(out_dir / "metrics.jsonl") as f:
        return [json.loads(line) for line in f]


def losses(records):
    return [(r["step"], r["train_loss"], r["val_loss"], r["lr"]) for r in records]


def test_the_loss_falls(backend, corpus_file, tmp_path):
    last = train(corpus_file, tmp_path / "out", progress=False, log=lambda s: None,
                 max_iters=40, eval_interval=20, **TINY)
    records = curve(tmp_path / "out")
    assert [r["step"] for r in records] == [0, 20, 40] and records[-1] == last
    vocab = len(set(corpus_file.read_text()))
    assert records[0]["val_loss"] == pytest.approx(math.log(vocab), abs=0.15)  # at init: near uniform
    assert last["val_loss"] < records[0]["val_loss"] - 1.0
    assert set(last) == {"step", "train_loss", "val_loss", "lr", "elapsed_s"}
    best = load_checkpoint(tmp_path / "out" / "best.npz")
    assert best.step == 40 and best.optimizer_state is None
    assert load_checkpoint(tmp_path / "out" / "ckpt.npz").optimizer_state["step"] == 40


def test_a_seed_gives_the_same_run_and_resume_continues_it(corpus_file, tmp_path):
    settings = dict(TINY, max_iters=30, eval_interval=10, dropout=0.1)  # dropout: its generator is resumed too
    train(corpus_file, tmp_path / "a", progress=False, log=lambda s: None, **settings)
    train(corpus_file, tmp_path / "b", progress=False, log=lambda s: None, **settings)
    straight = losses(curve(tmp_path / "a"))
    assert straight == losses(curve(tmp_path / "b"))

    # Stop at 20 (with the same lr schedule: it depends on lr_decay_iters), then resume to 30.
    d = tmp_path / "d"
    train(corpus_file, d, progress=False, log=lambda s: None, **dict(settings, max_iters=20, lr_decay_iters=30))
    with pytest.raises(ValueError, match="from another config: n_embd is 32 there, 64 was asked"):
        train(corpus_file, d, resume=True, progress=False, n_embd=64)
    train(corpus_file, d, resume=True, progress=False, log=lambda s: None, max_iters=30)
    assert losses(curve(d)) == straight


def test_schedule_and_batches():
    cfg = TrainConfig(learning_rate=1e-3, min_lr=1e-4, warmup_iters=100, max_iters=2000)
    assert cfg.lr_decay_iters == 2000
    assert get_lr(0, cfg) == pytest.approx(1e-3 / 101)
    assert get_lr(100, cfg) == pytest.approx(1e-3)
    assert get_lr(1050, cfg) == pytest.approx(1e-4 + 0.5 * 0.9e-3)
    assert get_lr(2000, cfg) == pytest.approx(1e-4) and get_lr(5000, cfg) == pytest.approx(1e-4)
    data = np.arange(50)
    x, y = get_batch(data, 8, 6, np.random.default_rng(0))
    assert x.shape == y.shape == (6, 8)
    np.testing.assert_array_equal(y, x + 1)  # the next token
    assert x.min() >= 0 and y.max() <= 49


def test_errors(corpus_file, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(ValueError, match="empty"):
        train(empty, tmp_path / "o", progress=False)
    with pytest.raises(ValueError, match="cannot read"):
        train(tmp_path / "missing.txt", tmp_path / "o", progress=False)
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00abc")
    with pytest.raises(ValueError, match="not UTF-8"):
        train(binary, tmp_path / "o", progress=False)
    short = tmp_path / "short.txt"
    short.write_text("abcdefghij" * 10)  # 100 characters: a validation split of 10
    with pytest.raises(ValueError, match="block_size 16 does not fit the data: the val split has 10"):
        train(short, tmp_path / "o", progress=False, **TINY)
    with pytest.raises(ValueError, match="eval_iters"):
        train(corpus_file, tmp_path / "o", progress=False, eval_iters=0)
    with pytest.raises(FileNotFoundError):
        train(corpus_file, tmp_path / "o", resume=True, progress=False)
    assert not (tmp_path / "o").exists()  # nothing written on a failed start
    train(corpus_file, tmp_path / "o", progress=False, log=lambda s: None, **dict(TINY, max_iters=2))
    with pytest.raises(ValueError, match="already holds a checkpoint"):
        train(corpus_file, tmp_path / "o", progress=False, **TINY)
