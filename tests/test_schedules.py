"""The optimizers (SGD, Adam, AdamW) and the learning-rate schedules against torch.optim, step by
step over 100 steps, and the schedules against their formulas (float64 oracles written here)."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastattn.nn import Parameter
from fastattn.optim import SGD, Adam, AdamW
from fastattn.training.schedules import SCHEDULES, check_schedule, learning_rate
from fastattn.training.trainer import TrainConfig, get_lr

STEPS = 100


def sgd_oracle(p, grads, lr, momentum, dampening, wd, nesterov):
    p, buf = p.astype(np.float64), None
    for g in grads:
        d = g + wd * p
        if momentum:
            buf = d if buf is None else momentum * buf + (1 - dampening) * d
            d = d + momentum * buf if nesterov else buf
        p = p - lr * d
    return p


def adam_oracle(p, grads, lr, b1, b2, eps, wd):
    p, m, v = p.astype(np.float64), 0.0, 0.0
    for t, g in enumerate(grads, start=1):
        g = g + wd * p  # Adam's weight decay: L2, in the gradient
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p - lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
    return p


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kw", [dict(momentum=0.0), dict(momentum=0.9), dict(momentum=0.9, dampening=0.5),
                                dict(momentum=0.9, nesterov=True, weight_decay=0.01), dict(weight_decay=0.1)])
def test_sgd_matches_the_oracle(rng, dtype, kw):
    shapes = [(3, 5), (1,), (0, 4), (2, 1, 3)]
    ps = [Parameter(rng.standard_normal(s).astype(dtype)) for s in shapes]
    start = [p.data.copy() for p in ps]
    opt = SGD(ps, lr=0.05, **kw)
    grads = [[] for _ in ps]
    for _ in range(5):
        for p, gs in zip(ps, grads):
            p.grad[...] = rng.standard_normal(p.data.shape)
            gs.append(p.grad.astype(np.float64))
        opt.step()
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for p, p0, gs in zip(ps, start, grads):
        want = sgd_oracle(p0, gs, 0.05, kw.get("momentum", 0.0), kw.get("dampening", 0.0),
                          kw.get("weight_decay", 0.0), kw.get("nesterov", False))
        assert p.data.dtype == dtype
        np.testing.assert_allclose(p.data, want, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_adam_matches_the_oracle(backend, rng, wd, dtype):
    ps = [Parameter(rng.standard_normal(s).astype(dtype)) for s in ((4, 3), (7,), (0, 2))]
    start = [p.data.copy() for p in ps]
    opt = Adam(ps, lr=1e-2, betas=(0.9, 0.99), weight_decay=wd)
    grads = [[] for _ in ps]
    for _ in range(6):
        for p, gs in zip(ps, grads):
            p.grad[...] = rng.standard_normal(p.data.shape)
            gs.append(p.grad.copy())
        before = [p.grad.copy() for p in ps]
        opt.step()
        for p, g in zip(ps, before):
            np.testing.assert_array_equal(p.grad, g)  # Adam's L2 term does not touch the grads
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for p, p0, gs in zip(ps, start, grads):
        assert p.data.dtype == dtype
        np.testing.assert_allclose(p.data, adam_oracle(p0, gs, 1e-2, 0.9, 0.99, 1e-8, wd), rtol=tol, atol=tol)


def test_bad_optimizer_arguments():
    p = Parameter(np.zeros(3))
    with pytest.raises(ValueError, match="nesterov"):
        SGD([p], lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="momentum"):
        SGD([p], lr=0.1, momentum=-1)
    with pytest.raises(ValueError, match="empty parameter list"):
        SGD([], lr=0.1)
    with pytest.raises(ValueError, match="unknown Adam group options"):
        Adam([{"params": [p], "momentum": 0.9}])
    with pytest.raises(ValueError, match="betas"):
        Adam([p], betas=(1.0, 0.9))


# --- the schedules' formulas -------------------------------------------------------------------------

def test_the_warmup_and_the_formulas():
    lr, lo, w, end = 1e-3, 1e-4, 10, 60
    for s in SCHEDULES:
        assert [learning_rate(s, i, lr, w, end, lo) for i in range(w)] == pytest.approx(
            [lr * (i + 1) / (w + 1) for i in range(w)], rel=1e-12)
        assert learning_rate(s, w, lr, w, end, lo) == pytest.approx(lr, rel=1e-12)
    assert learning_rate("constant", 1000, lr, w, end, lo) == lr
    assert learning_rate("linear", 35, lr, w, end, lo) == pytest.approx((lr + lo) / 2, rel=1e-12)
    assert learning_rate("cosine", 35, lr, w, end, lo) == pytest.approx((lr + lo) / 2, rel=1e-12)
    assert learning_rate("exponential", 35, lr, w, end, lo) == pytest.approx(math.sqrt(lr * lo), rel=1e-12)
    assert learning_rate("inverse_sqrt", 43, lr, w, end, lo) == pytest.approx(lr * 0.5, rel=1e-12)
    for s in ("linear", "cosine", "exponential"):
        assert learning_rate(s, end, lr, w, end, lo) == lo and learning_rate(s, 10 ** 6, lr, w, end, lo) == lo
        assert learning_rate(s, 5, lr, 5, 5, lo) == lo  # decay_iters <= warmup_iters: min_lr after the warmup
    assert learning_rate("constant", 0, lr, 0, 0, lo) == lr  # no warmup: lr from the start


@settings(max_examples=200, deadline=None)
@given(schedule=st.sampled_from(SCHEDULES), lr=st.floats(1e-6, 1.0), low=st.floats(0.0, 1.0),
       warmup=st.integers(0, 50), extra=st.integers(-5, 200), it=st.integers(0, 400))
def test_schedule_properties(schedule, lr, low, warmup, extra, it):
    min_lr = lr * low if schedule != "exponential" else lr * max(low, 1e-3)
    decay = max(0, warmup + extra)
    here = learning_rate(schedule, it, lr, warmup, decay, min_lr)
    nxt = learning_rate(schedule, it + 1, lr, warmup, decay, min_lr)
    assert 0 < here <= lr * (1 + 1e-12) or (here == min_lr == 0)
    if it < warmup:
        assert nxt >= here  # the warmup rises
    elif schedule == "constant":
        assert here == lr
    else:  # then the decays never rise, and stay at min_lr or above (inverse_sqrt has no floor)
        assert nxt <= here * (1 + 1e-12)
        if schedule != "inverse_sqrt":
            assert here >= min_lr * (1 - 1e-12)


def test_nanogpt_default_is_unchanged():
    cfg = TrainConfig()
    assert cfg.lr_schedule == "cosine"
    assert get_lr(1050, cfg) == pytest.approx(1e-4 + 0.5 * 0.9e-3)


def test_bad_schedules():
    with pytest.raises(ValueError, match="lr_schedule must be one of"):
        check_schedule("step", 1e-3, 1e-4)
    with pytest.raises(ValueError, match="exponential schedule .* min_lr"):
        TrainConfig(lr_schedule="exponential", min_lr=0.0)
    with pytest.raises(ValueError, match="lr_schedule must be one of"):
        TrainConfig(lr_schedule="Cosine")
    from fastattn.training.seq2seq_trainer import Seq2SeqTrainConfig
    with pytest.raises(ValueError, match="lr_schedule must be one of noam, constant"):
        Seq2SeqTrainConfig(lr_schedule="step")
    with pytest.raises(ValueError, match="min_lr must be >= 0"):
        Seq2SeqTrainConfig(min_lr=-1.0)


# --- against torch.optim, step by step ------------------------------------------------------------------

def torch_scheduler(torch, opt, schedule, lr, warmup, decay_iters, min_lr):
    """torch.optim.lr_scheduler's own classes, chained: LinearLR warmup, then the decay, then ConstantLR
    at min_lr (inverse_sqrt has no class in torch: LambdaLR with the paper's formula)."""
    S = torch.optim.lr_scheduler
    total = decay_iters - warmup
    parts, milestones = [S.LinearLR(opt, start_factor=1 / (warmup + 1), end_factor=1.0, total_iters=warmup)], [warmup]
    if schedule == "constant":
        parts.append(S.ConstantLR(opt, factor=1.0, total_iters=0))
    elif schedule == "inverse_sqrt":
        parts.append(S.LambdaLR(opt, lambda e: ((warmup + 1) / (warmup + 1 + e)) ** 0.5))
    else:
        if schedule == "linear":
            parts.append(S.LinearLR(opt, start_factor=1.0, end_factor=min_lr / lr, total_iters=total))
        elif schedule == "cosine":
            parts.append(S.CosineAnnealingLR(opt, T_max=total, eta_min=min_lr))
        else:
            parts.append(S.ExponentialLR(opt, gamma=(min_lr / lr) ** (1 / total)))
        parts.append(S.ConstantLR(opt, factor=min_lr / lr, total_iters=10 ** 9))
        milestones.append(decay_iters)
    return S.SequentialLR(opt, parts, milestones=milestones)


def torch_optimizer(torch, name, params, lr):
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=0.01)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=(0.9, 0.99), weight_decay=0.01)
    return torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.99), weight_decay=0.1)


def ours(name, params, lr):
    if name == "sgd":
        return SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=0.01)
    if name == "adam":
        return Adam(params, lr=lr, betas=(0.9, 0.99), weight_decay=0.01)
    return AdamW(params, lr=lr, betas=(0.9, 0.99), weight_decay=0.1)


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_matches_torch_step_by_step(backend, rng, schedule, name):
    torch = pytest.importorskip("torch")
    import warnings
    lr, min_lr, warmup, decay_iters = 0.05, 0.005, 10, 70  # 100 steps: warmup, decay and the floor
    ps = [Parameter(rng.standard_normal(s)) for s in ((5, 3), (4,))]
    tps = [torch.tensor(p.data.copy(), requires_grad=True) for p in ps]
    opt, topt = ours(name, ps, lr), torch_optimizer(torch, name, tps, lr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (SequentialLR's deprecation notices about step(epoch))
        sched = torch_scheduler(torch, topt, schedule, lr, warmup, decay_iters, min_lr)
        for it in range(STEPS):
            want = topt.param_groups[0]["lr"]
            got = learning_rate(schedule, it, lr, warmup, decay_iters, min_lr)
            assert got == pytest.approx(want, rel=1e-6), f"{schedule} at step {it}"
            for group in opt.param_groups:
                group["lr"] = got
            for p, tp in zip(ps, tps):
                p.grad[...] = rng.standard_normal(p.data.shape)
                tp.grad = torch.tensor(p.grad.copy())
            opt.step()
            topt.step()
            sched.step()
            for p, tp in zip(ps, tps):
                np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=1e-6, atol=1e-9,
                                           err_msg=f"{name} / {schedule} at step {it}")


# --- --lr-schedule in both trainers --------------------------------------------------------------------

def _records(path):
    import json
    with open(path) as f:
        return [json.loads(line) for line in f]


def test_train_cli_follows_the_schedule(corpus_file, tmp_path, capsys):
    from fastattn.cli import main
    argv = ["train", "--data", str(corpus_file), "--out", str(tmp_path / "o"), "--n-layer", "1", "--n-head", "2",
            "--n-embd", "16", "--block-size", "8", "--batch-size", "4", "--eval-iters", "2", "--max-iters", "12",
            "--eval-interval", "3", "--warmup-iters", "2", "--learning-rate", "0.01", "--min-lr", "0.001",
            "--lr-schedule", "exponential", "--no-progress"]
    assert main(argv) == 0, capsys.readouterr().err
    got = [(r["step"], r["lr"]) for r in _records(tmp_path / "o" / "metrics.jsonl")]
    assert got == [(s, pytest.approx(learning_rate("exponential", s, 0.01, 2, 12, 0.001), rel=1e-12))
                   for s in (0, 3, 6, 9, 12)]
    assert main(argv[:-3] + ["--lr-schedule", "exponential", "--min-lr", "0", "--out", str(tmp_path / "p")]) == 1
    assert "exponential schedule" in capsys.readouterr().err.strip().splitlines()[-1]
    with pytest.raises(SystemExit) as e:
        main(argv[:-2] + ["step", "--no-progress"])
    assert e.value.code == 2


def test_seq2seq_cli_follows_the_schedule(tmp_path, capsys):
    from fastattn.cli import main
    from fastattn.training.seq2seq_trainer import noam_lr
    data = tmp_path / "pairs.tsv"
    data.write_text("".join(f"{w}\t{w[::-1]}\n" for w in ["ab", "abc", "cab", "bca", "aa", "cc", "ba", "acb"] * 3))
    base = ["train-seq2seq", "--data", str(data), "--d-model", "16", "--nhead", "2", "--num-encoder-layers", "1",
            "--num-decoder-layers", "1", "--dim-feedforward", "16", "--batch-size", "4", "--warmup", "3",
            "--eval-interval", "4", "--eval-pairs", "4", "--max-iters", "8", "--no-progress"]
    peak = noam_lr(3, 16, 3)
    for schedule in ("noam", "cosine"):
        out = tmp_path / schedule
        assert main(base + ["--out", str(out), "--lr-schedule", schedule, "--min-lr", "1e-4"]) == 0
        got = [r["lr"] for r in _records(out / "metrics.jsonl")]
        want = ([noam_lr(s + 1, 16, 3) for s in (0, 4, 8)] if schedule == "noam"
                else [learning_rate("cosine", s, peak, 3, 8, 1e-4) for s in (0, 4, 8)])
        assert got == pytest.approx(want, rel=1e-12)
    assert main(base + ["--out", str(tmp_path / "x"), "--lr-schedule", "exponential"]) == 1  # min_lr 0
    assert "min_lr" in capsys.readouterr().err


def test_a_config_file_names_a_schedule(tmp_path):
    from fastattn.training.trainer import read_config_file
    (tmp_path / "good.json").write_text('{"lr_schedule": "linear"}')
    assert read_config_file(tmp_path / "good.json") == {"lr_schedule": "linear"}
    (tmp_path / "bad.json").write_text('{"lr_schedule": "step"}')
    with pytest.raises(ValueError, match=r"bad.json: lr_schedule must be one of constant, linear, cosine, "
                                         r"exponential, inverse_sqrt, got 'step'"):
        read_config_file(tmp_path / "bad.json")
