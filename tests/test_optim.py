import math
import re

import numpy as np
import pytest

from fastattn import GPT, GPTConfig
from fastattn.nn import Parameter
from fastattn.optim import AdamW, clip_grad_norm_


def params_with_grads(rng, dtype=np.float32):
    ps = [Parameter(rng.standard_normal(s).astype(dtype)) for s in ((3, 5), (5,), (2, 2, 2))]
    for p in ps:
        p.grad[...] = rng.standard_normal(p.data.shape)
    return ps


def adamw_oracle(p, grads, lrs, b1, b2, eps, wd):
    """float64 AdamW (torch.optim.AdamW's algorithm) over a list of gradients, one per step."""
    p, m, v = p.astype(np.float64), 0.0, 0.0
    for t, (g, lr) in enumerate(zip(grads, lrs), start=1):
        p = p * (1 - lr * wd)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p - lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
    return p


def test_groups_and_schedule_match_the_oracle(backend, rng):
    ps = params_with_grads(rng, np.float64)
    start = [p.data.copy() for p in ps]
    opt = AdamW([{"params": ps[:1], "weight_decay": 0.1}, {"params": ps[1:], "weight_decay": 0.0}],
                lr=1e-2, betas=(0.9, 0.99), eps=1e-8)
    grads, lrs = [[] for _ in ps], [1e-2, 5e-3, 2e-3]
    for lr in lrs:
        for group in opt.param_groups:
            group["lr"] = lr
        for p, gs in zip(ps, grads):
            p.grad[...] = rng.standard_normal(p.data.shape)
            gs.append(p.grad.copy())
        opt.step()
    for p, p0, gs, wd in zip(ps, start, grads, (0.1, 0.0, 0.0)):
        np.testing.assert_allclose(p.data, adamw_oracle(p0, gs, lrs, 0.9, 0.99, 1e-8, wd), rtol=1e-12, atol=1e-14)
    assert opt.step_count == 3


def test_matches_torch_adamw(rng):
    torch = pytest.importorskip("torch")
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8, bias=True), seed=3)
    opt = model.configure_optimizers(weight_decay=0.1, learning_rate=3e-3, betas=(0.9, 0.95))
    names = dict((id(p), n) for n, p in model.named_parameters())
    tparams = {n: torch.tensor(p.data.astype(np.float64), requires_grad=True) for n, p in model.named_parameters()}
    topt = torch.optim.AdamW([{"params": [tparams[names[id(p)]] for p in g["params"]],
                               "weight_decay": g["weight_decay"]} for g in opt.param_groups],
                             lr=3e-3, betas=(0.9, 0.95))
    for _ in range(4):
        for n, p in model.named_parameters():
            p.grad[...] = rng.standard_normal(p.data.shape)
            tparams[n].grad = torch.tensor(p.grad.astype(np.float64))
        opt.step()
        topt.step()
    for n, p in model.named_parameters():
        np.testing.assert_allclose(p.data, tparams[n].detach().numpy(), rtol=2e-5, atol=1e-6, err_msg=n)


def test_configure_optimizers_decays_2d_weights_only():
    model = GPT(GPTConfig(vocab_size=7, block_size=4, n_layer=2, n_head=1, n_embd=4, bias=True))
    decay, no_decay = model.configure_optimizers(0.1, 1e-3, (0.9, 0.99)).param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.data.ndim == 2 for p in decay["params"]) and all(p.data.ndim == 1 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(model.parameters())


def test_configure_optimizers_takes_nanogpts_arguments():
    """nanoGPT's train.py: model.configure_optimizers(weight_decay, learning_rate, (beta1, beta2), device_type)."""
    model = GPT(GPTConfig(vocab_size=7, block_size=4, n_layer=1, n_head=1, n_embd=4))
    opt = model.configure_optimizers(0.1, 6e-4, (0.9, 0.95), "cpu")
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
    assert all(g["lr"] == 6e-4 and g["betas"] == (0.9, 0.95) and g["eps"] == 1e-8 for g in opt.param_groups)
    opt = model.configure_optimizers(weight_decay=0.1, learning_rate=1e-3, betas=[0.9, 0.99], device_type="cpu",
                                     eps=1e-6)
    assert opt.param_groups[0]["eps"] == 1e-6 and opt.param_groups[0]["betas"] == (0.9, 0.99)


@pytest.mark.parametrize("args, kwargs, error, message", [
    ((0.1, 1e-3, (0.9, 0.99), "cuda"), {}, ValueError, "device_type must be 'cpu' (fastattn runs on the CPU), got 'cuda'"),
    ((0.1, 1e-3, (0.9, 0.99), 1e-8), {}, TypeError, "device_type must be the str 'cpu'"),
    (("0.1", 1e-3, (0.9, 0.99)), {}, TypeError, "weight_decay must be a number, got '0.1'"),
    ((0.1, None, (0.9, 0.99)), {}, TypeError, "learning_rate must be a number, got None"),
    ((0.1, 1e-3, 0.9), {}, TypeError, "betas must be a pair of numbers (beta1, beta2), got 0.9"),
    ((0.1, 1e-3, (0.9, 0.99)), {"eps": "1e-8"}, TypeError, "eps must be a number"),
])
def test_configure_optimizers_names_a_wrong_argument(args, kwargs, error, message):
    model = GPT(GPTConfig(vocab_size=7, block_size=4, n_layer=1, n_head=1, n_embd=4))
    with pytest.raises(error, match=re.escape(message)):
        model.configure_optimizers(*args, **kwargs)


def test_state_dict_resumes_the_same_steps(rng):
    a = params_with_grads(rng)
    b = [Parameter(p.data.copy()) for p in a]
    opt_a, opt_b = AdamW(a, lr=1e-2), AdamW(b, lr=1e-2)
    grads = [[rng.standard_normal(p.data.shape).astype(np.float32) for p in a] for _ in range(4)]
    for g in grads[:2]:
        for p, gi in zip(a, g):
            p.grad[...] = gi
        opt_a.step()
    for p, q in zip(a, b):
        q.data[...] = p.data
    opt_b.load_state_dict(opt_a.state_dict())
    for g in grads[2:]:
        for opt, ps in ((opt_a, a), (opt_b, b)):
            for p, gi in zip(ps, g):
                p.grad[...] = gi
            opt.step()
    for p, q in zip(a, b):
        np.testing.assert_array_equal(p.data, q.data)
    bad = opt_a.state_dict()
    bad["exp_avg"][0] = np.zeros((2, 2))
    with pytest.raises(ValueError, match=r"0: \(2, 2\)"):
        opt_b.load_state_dict(bad)


def test_clip_grad_norm(rng):
    ps = params_with_grads(rng, np.float64)
    grads = [p.grad.copy() for p in ps]
    norm = math.sqrt(sum(float((g ** 2).sum()) for g in grads))
    assert clip_grad_norm_(ps, 2 * norm) == pytest.approx(norm, rel=1e-12)
    for p, g in zip(ps, grads):  # below the threshold: untouched
        np.testing.assert_array_equal(p.grad, g)
    assert clip_grad_norm_(ps, 0.5) == pytest.approx(norm, rel=1e-12)
    clipped = math.sqrt(sum(float((p.grad ** 2).sum()) for p in ps))
    assert clipped == pytest.approx(0.5, rel=1e-5)
    for p, g in zip(ps, grads):  # same direction
        np.testing.assert_allclose(p.grad, g * (0.5 / (norm + 1e-6)), rtol=1e-12)
    ps[0].grad[0, 0] = np.inf
    before = [p.grad.copy() for p in ps]
    assert math.isinf(clip_grad_norm_(ps, 1.0))
    for p, g in zip(ps, before):
        np.testing.assert_array_equal(p.grad, g)


def test_bad_arguments(rng):
    ps = params_with_grads(rng)
    with pytest.raises(ValueError, match="empty"):
        AdamW([])
    with pytest.raises(ValueError, match="betas"):
        AdamW(ps, betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="lr"):
        AdamW(ps, lr=-1)
    with pytest.raises(ValueError, match="more than one group"):
        AdamW([{"params": ps}, {"params": ps[:1]}])
    with pytest.raises(ValueError, match="unknown"):
        AdamW([{"params": ps, "momentum": 0.9}])
