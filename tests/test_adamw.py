"""F.adamw_step against a float64 oracle written here, against torch.optim.AdamW, bad input, threads."""
import numpy as np
import pytest

import fastattn
from fastattn import functional as F
from threads import at_thread_counts

DTYPES = [np.float32, np.float64]
RTOL = {np.float32: 1e-5, np.float64: 1e-12}
SHAPES = [(), (1,), (7,), (1000,), (100_003,), (3, 5), (33, 129)]


def oracle_step(state, g, step, lr, beta1, beta2, eps, wd):
    """One AdamW step in float64 on state = dict(p, m, v, and their magnitudes pm, mm), new arrays.

    The magnitudes bound the sizes of the terms that were summed into each value (through all
    steps so far), so that rtol * magnitude bounds the rounding error even where a sum cancels."""
    g = np.asarray(g, dtype=np.float64)
    bc1, bc2 = 1 - beta1 ** step, 1 - beta2 ** step
    m = beta1 * state["m"] + (1 - beta1) * g
    mm = beta1 * state["mm"] + (1 - beta1) * np.abs(g)
    v = beta2 * state["v"] + (1 - beta2) * g * g
    denom = np.sqrt(v / bc2) + eps
    p = (1 - lr * wd) * state["p"] - lr * (m / bc1) / denom
    pm = abs(1 - lr * wd) * state["pm"] + lr * (mm / bc1) / denom
    return dict(p=p, m=m, v=v, pm=pm, mm=mm)


def assert_close(got, want, magnitude, dtype, what):
    assert got.dtype == dtype
    err = np.abs(got.astype(np.float64) - want)
    bound = RTOL[dtype] * np.maximum(magnitude, np.abs(want)) + 1000 * np.finfo(dtype).tiny
    bad = err > bound
    assert not bad.any(), f"{what}: got {got[bad][:4]}, want {want[bad][:4]}"


def run_and_check(rng, shape, dtype, steps, lr, wd, start=1, warm_state=False, betas=(0.9, 0.999), eps=1e-8):
    p = np.asarray(rng.standard_normal(shape), dtype=dtype)
    m = np.asarray(rng.standard_normal(shape) * 0.1 if warm_state else np.zeros(shape), dtype=dtype)
    v = np.asarray(rng.random(shape) * 0.01 if warm_state else np.zeros(shape), dtype=dtype)
    state = dict(p=p.astype(np.float64), m=m.astype(np.float64), v=v.astype(np.float64))
    state.update(pm=np.abs(state["p"]), mm=np.abs(state["m"]))
    for step in range(start, start + steps):
        g = np.asarray(rng.standard_normal(shape) * rng.choice([1e-3, 1.0, 10.0]), dtype=dtype)
        assert F.adamw_step(p, g, m, v, step, lr=lr, beta1=betas[0], beta2=betas[1], eps=eps,
                            weight_decay=wd) is None
        state = oracle_step(state, g, step, lr, betas[0], betas[1], eps, wd)
        assert p.shape == m.shape == v.shape == shape
        assert_close(m, state["m"], state["mm"], dtype, f"exp_avg after step {step}")
        assert_close(v, state["v"], state["v"], dtype, f"exp_avg_sq after step {step}")
        assert_close(p, state["p"], state["pm"], dtype, f"param after step {step}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_matches_oracle(backend, rng, dtype, shape, wd):
    run_and_check(rng, shape, dtype, steps=4, lr=0.01, wd=wd)


@pytest.mark.parametrize("dtype", DTYPES)
def test_warm_state_later_steps_and_other_hyperparameters(backend, rng, dtype):
    run_and_check(rng, (17, 31), dtype, steps=3, lr=0.05, wd=0.3, start=100, warm_state=True,
                  betas=(0.5, 0.9), eps=1e-3)
    run_and_check(rng, (257,), dtype, steps=2, lr=0.0, wd=0.5, start=1, warm_state=True,
                  betas=(0.0, 0.0), eps=0.0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_non_contiguous_grad(backend, rng, dtype):
    p = rng.standard_normal((20, 30)).astype(dtype)
    m, v = np.zeros_like(p), np.zeros_like(p)
    g = rng.standard_normal((60, 20)).astype(dtype)[::2].T  # (20, 30), neither C nor F order
    assert not g.flags.c_contiguous and not g.flags.f_contiguous
    p2, m2, v2 = p.copy(), m.copy(), v.copy()
    F.adamw_step(p, g, m, v, 1, lr=0.1, weight_decay=0.1)
    F.adamw_step(p2, np.ascontiguousarray(g), m2, v2, 1, lr=0.1, weight_decay=0.1)
    assert np.array_equal(p, p2) and np.array_equal(m, m2) and np.array_equal(v, v2)


def test_empty_is_a_no_op(backend):
    for shape in [(0,), (3, 0)]:
        a = [np.zeros(shape, np.float32) for _ in range(4)]
        assert F.adamw_step(*a, step=1) is None
        assert all(x.shape == shape for x in a)


@pytest.mark.parametrize("dtype", DTYPES)
def test_against_torch_adamw(backend, rng, dtype):
    torch = pytest.importorskip("torch")
    shape = (37, 11)
    lr, betas, eps, wd = 0.01, (0.8, 0.99), 1e-6, 0.05
    p = rng.standard_normal(shape).astype(dtype)
    m, v = np.zeros_like(p), np.zeros_like(p)
    tp = torch.nn.Parameter(torch.tensor(p.copy()))
    opt = torch.optim.AdamW([tp], lr=lr, betas=betas, eps=eps, weight_decay=wd, foreach=False)
    for step in range(1, 6):
        g = rng.standard_normal(shape).astype(dtype)
        tp.grad = torch.tensor(g.copy())
        opt.step()
        F.adamw_step(p, g, m, v, step, lr=lr, beta1=betas[0], beta2=betas[1], eps=eps, weight_decay=wd)
    st = opt.state[tp]
    assert int(st["step"]) == 5
    for name, ours, theirs in (("param", p, tp.detach()), ("exp_avg", m, st["exp_avg"]),
                               ("exp_avg_sq", v, st["exp_avg_sq"])):
        theirs = theirs.numpy()
        assert theirs.dtype == ours.dtype
        tol = RTOL[dtype]
        np.testing.assert_allclose(ours, theirs, rtol=tol, atol=tol * np.abs(theirs).max(), err_msg=name)


@pytest.mark.skipif("compiled" not in fastattn.available_backends(), reason="compiled backend not built")
@pytest.mark.parametrize("dtype", DTYPES)
def test_thread_count_does_not_change_results(rng, dtype):
    shape = (3, 100_003)  # many parallel chunks of 16384, the last one short
    p0 = rng.standard_normal(shape).astype(dtype)
    grads = [rng.standard_normal(shape).astype(dtype) for _ in range(3)]

    def three_steps():
        p, m, v = p0.copy(), np.zeros_like(p0), np.zeros_like(p0)
        for step, g in enumerate(grads, 1):
            F.adamw_step(p, g, m, v, step, lr=0.01, weight_decay=0.1)
        return p, m, v
    results = at_thread_counts(three_steps)
    assert not np.array_equal(results[0][0], p0)
    for a, b in zip(*results):
        assert np.array_equal(a, b)


# --- bad input: a clear error naming the argument, and nothing modified -----------------------

def arrays(dtype=np.float32, shape=(4, 5)):
    rng = np.random.default_rng(0)
    return [rng.standard_normal(shape).astype(dtype) for _ in range(4)]


def bad(**change):
    """Keyword arguments of adamw_step, with `change` applied."""
    p, g, m, v = arrays()
    kw = dict(param=p, grad=g, exp_avg=m, exp_avg_sq=v, step=1, lr=1e-3, beta1=0.9, beta2=0.999,
              eps=1e-8, weight_decay=0.0)
    kw.update(change)
    return kw


def noncontig():
    return np.zeros((4, 10), np.float32)[:, ::2]


def readonly():
    a = np.zeros((4, 5), np.float32)
    a.setflags(write=False)
    return a


CASES = [
    (dict(grad=np.zeros((4, 5), np.float64)), TypeError, "grad must have the dtype of param"),
    (dict(exp_avg_sq=np.zeros((4, 5), np.float64)), TypeError, "exp_avg_sq must have the dtype of param"),
    (dict(param=np.zeros((4, 5), np.int32)), TypeError, "param must be a float32 or float64"),
    (dict(param=[[0.0] * 5] * 4), TypeError, "param must be a NumPy array"),
    (dict(exp_avg=np.zeros((4, 6), np.float32)), ValueError, r"exp_avg must have shape \(4, 5\)"),
    (dict(grad=np.zeros((5, 4), np.float32)), ValueError, r"grad must have shape \(4, 5\)"),
    (dict(param=noncontig()), ValueError, "param must be C-contiguous"),
    (dict(exp_avg=np.asfortranarray(np.zeros((4, 5), np.float32))), ValueError, "exp_avg must be C-contiguous"),
    (dict(param=readonly()), ValueError, "param must be writeable"),
    (dict(exp_avg_sq=readonly()), ValueError, "exp_avg_sq must be writeable"),
    (dict(step=0), ValueError, "step must be >= 1"),
    (dict(step=-3), ValueError, "step must be >= 1"),
    (dict(step=1.0), TypeError, "step must be an int"),
    (dict(step=True), TypeError, "step must be an int"),
    (dict(lr=-1e-3), ValueError, "lr must be >= 0"),
    (dict(lr=float("nan")), ValueError, "lr must be >= 0"),
    (dict(lr="0.1"), TypeError, "lr must be a real number"),
    (dict(beta1=1.0), ValueError, r"beta1 must be in \[0, 1\)"),
    (dict(beta1=-0.1), ValueError, r"beta1 must be in \[0, 1\)"),
    (dict(beta2=1.0), ValueError, r"beta2 must be in \[0, 1\)"),
    (dict(eps=-1e-8), ValueError, "eps must be >= 0"),
    (dict(weight_decay=-0.01), ValueError, "weight_decay must be >= 0"),
]


@pytest.mark.parametrize("change, exc, message", CASES, ids=[f"{c[1].__name__}-{c[2][:30]}" for c in CASES])
def test_bad_input(backend, change, exc, message):
    kw = bad(**change)
    before = [np.array(kw[k], copy=True) for k in ("param", "exp_avg", "exp_avg_sq")]
    with pytest.raises(exc, match=message):
        F.adamw_step(**kw)
    for b, k in zip(before, ("param", "exp_avg", "exp_avg_sq")):
        assert np.array_equal(np.asarray(kw[k]), b), f"{k} was modified before the error"


def test_arrays_that_share_memory_are_rejected(backend):
    p, g, m, v = arrays()
    with pytest.raises(ValueError, match="param and exp_avg must not share memory"):
        F.adamw_step(p, g, p, v, 1)
    with pytest.raises(ValueError, match="exp_avg_sq and grad must not share memory"):
        F.adamw_step(p, v, m, v, 1)
    buf = np.zeros((2, 4, 5), np.float32)
    with pytest.raises(ValueError, match="exp_avg and exp_avg_sq must not share memory"):
        F.adamw_step(p, g, buf[0], buf[0].reshape(4, 5), 1)
