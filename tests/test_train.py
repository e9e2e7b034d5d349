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


def _tiny_model(dtype, seed=0):
    from fastattn import GPT, GPTConfig
    return GPT(GPTConfig(vocab_size=13, block_size=8, n_layer=2, n_head=2, n_embd=16, bias=True), seed=seed,
               dtype=dtype)


@pytest.mark.parametrize("dtype, atol", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_gradient_accumulation_equals_one_big_batch(backend, dtype, atol):
    from fastattn.training import distributed
    from fastattn.training.trainer import train_step
    rng = np.random.default_rng(5)
    x = rng.integers(0, 13, (6, 8))
    y = rng.integers(0, 13, (6, 8))
    runs = []
    for pieces, flat in ((1, False), (3, False), (3, True), (6, True)):
        model = _tiny_model(dtype)
        grads = distributed.FlatGradients(model.parameters()) if flat else None
        opt = model.configure_optimizers(0.1, 1e-2, (0.9, 0.99))
        for _ in range(2):  # (the second step sees AdamW's moments of the first)
            batches = list(zip(np.split(x, pieces), np.split(y, pieces)))
            loss = train_step(model, opt, batches, 1e-2, 0.5, distributed.SingleProcess(), grads)
        runs.append((loss, model.state_dict()))
    (loss, want), others = runs[0], runs[1:]
    for other_loss, state in others:
        assert other_loss == pytest.approx(loss, rel=1e-6)  # the mean over the micro-batches
        for name in want:
            np.testing.assert_allclose(state[name], want[name], rtol=0, atol=atol, err_msg=name)
    assert not np.allclose(want["transformer.wte.weight"], _tiny_model(dtype).transformer.wte.weight.data)  # it did train


def test_micro_batches_depend_on_seed_step_and_index_only(corpus_file):
    from fastattn.training.trainer import micro_batches
    data = np.arange(1000)
    cfg = TrainConfig(block_size=8, batch_size=3, seed=7)
    model = _tiny_model(np.float32)
    all_four = list(micro_batches(model, data, cfg, 5, range(4)))
    odd = list(micro_batches(model, data, cfg, 5, [1, 3]))
    for (x, y), (xo, yo) in zip([all_four[1], all_four[3]], odd):
        np.testing.assert_array_equal(x, xo)
        np.testing.assert_array_equal(y, yo)
    other_step = next(micro_batches(model, data, cfg, 6, [1]))
    other_seed = next(micro_batches(model, data, TrainConfig(block_size=8, batch_size=3, seed=8), 5, [1]))
    assert not np.array_equal(other_step[0], all_four[1][0]) and not np.array_equal(other_seed[0], all_four[1][0])
    assert not np.array_equal(all_four[0][0], all_four[1][0])


@pytest.mark.parametrize("suffix", [".json", ".toml"])
def test_config_file_then_flags(corpus_file, tmp_path, capsys, suffix):
    from fastattn.cli import main
    config = tmp_path / f"train{suffix}"
    values = dict(n_layer=1, n_head=2, n_embd=24, block_size=16, batch_size=4, max_iters=3, eval_iters=2,
                  learning_rate=2e-3, bias=True, lr_decay_iters=50)
    if suffix == ".json":
        config.write_text(json.dumps(values))
    else:
        config.write_text("\n".join(f"{k} = {str(v).lower() if isinstance(v, bool) else v}" for k, v in values.items()))
    assert main(["train", "--data", str(corpus_file), "--out", str(tmp_path / "o"), "--config", str(config),
                 "--max-iters", "2", "--no-bias", "--no-progress"]) == 0
    saved = json.loads((tmp_path / "o" / "config.json").read_text())
    assert saved == {**TrainConfig().__dict__, **values, "max_iters": 2, "bias": False}  # the flags win
    assert load_checkpoint(tmp_path / "o" / "ckpt.npz").config.n_embd == 24
    # the written config.json is itself a config file: the same run again
    assert main(["train", "--data", str(corpus_file), "--out", str(tmp_path / "again"), "--config",
                 str(tmp_path / "o" / "config.json"), "--no-progress"]) == 0
    assert losses(curve(tmp_path / "again")) == losses(curve(tmp_path / "o"))


@pytest.mark.parametrize("text, message", [
    ('{"n_layers": 2, "batch_size": 4, "colour": 1}', "unknown settings ['colour', 'n_layers']"),
    ('{"batch_size": "4"}', "batch_size must be an int, got '4'"),
    ('{"bias": 1}', "bias must be a bool, got 1"),
    ('[1, 2]', "must hold one table"),
    ('n_layer = 2', "is not JSON"),
])
def test_bad_config_files_are_one_line_errors(corpus_file, tmp_path, capsys, text, message):
    from fastattn.cli import main
    config = tmp_path / "c.json"
    config.write_text(text)
    assert main(["train", "--data", str(corpus_file), "--out", str(tmp_path / "o"), "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert message in err and str(config) in err and len(err.strip().splitlines()) == 1, err
    assert main(["train", "--data", str(corpus_file), "--out", str(tmp_path / "o"), "--config",
                 str(tmp_path / "none.toml")]) == 1
    assert "cannot read the config" in capsys.readouterr().err


def test_a_text_outside_the_checkpoints_vocabulary_is_named(corpus_file, tmp_path):
    train(corpus_file, tmp_path / "o", progress=False, log=lambda s: None, **dict(TINY, max_iters=1))
    other = tmp_path / "other.txt"
    other.write_text("XYZ" * 200)
    with pytest.raises(ValueError, match=f"{other} does not fit the tokenizer of the checkpoint in .*'X' at "
                                         "position 0 is not in the vocabulary"):
        train(other, tmp_path / "o", resume=True, progress=False, max_iters=2)


def test_toml_without_tomllib_or_tomli_is_a_clear_error(tmp_path, monkeypatch):
    import sys
    from fastattn.training.trainer import read_config_file
    config = tmp_path / "c.toml"
    config.write_text("n_layer = 2\n")
    assert read_config_file(config) == {"n_layer": 2}
    monkeypatch.setitem(sys.modules, "tomllib", None)  # as on Python 3.9 and 3.10 without tomli
    monkeypatch.setitem(sys.modules, "tomli", None)
    with pytest.raises(ImportError, match="needs Python 3.11\\+ or the tomli package"):
        read_config_file(config)


def test_the_progress_bar_does_not_count_the_evaluation_as_an_iteration(corpus_file, tmp_path, capsys, monkeypatch):
    """The step-0 evaluation (here made to take 1.5 s) is not in the bar's time, rate or ETA."""
    import time

    from fastattn.training import trainer
    real, calls = trainer.estimate_loss, []

    def slow_at_step_0(model, splits, cfg, world=None, on_batch=None):
        if not calls:
            time.sleep(1.5)
        calls.append(1)
        return real(model, splits, cfg, world, on_batch)

    monkeypatch.setattr(trainer, "estimate_loss", slow_at_step_0)
    trainer.train(corpus_file, tmp_path / "o", progress=True, log=lambda s: None, max_iters=4, eval_interval=100,
                  n_layer=1, n_head=2, n_embd=16, block_size=16, batch_size=4, eval_iters=2, warmup_iters=1)
    bars = [part for part in capsys.readouterr().err.replace("\r", "\n").split("\n")
            if "4/4" in part and "evaluating" not in part]
    assert bars and all("[00:00<00:00" in bar for bar in bars), bars
