"""fastattn.nn's base (Parameter, Module) and simple layers, against torch.nn and finite differences."""
import numpy as np
import pytest

import fastattn
from fastattn import functional as F
from fastattn import nn
from nn_check import assert_param_grads_match, copy_to_torch, gradcheck


# -- F.relu, both backends ---------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(0,), (1,), (7, 5), (3, 0, 2)])
def test_relu_and_its_backward(backend, dtype, shape, rng):
    x = rng.standard_normal(shape).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    y = F.relu(x)
    assert y.dtype == dtype and y.shape == x.shape
    np.testing.assert_array_equal(y, np.maximum(x, 0))
    np.testing.assert_array_equal(F.relu_backward(g, x), np.where(x > 0, g, 0))
    np.testing.assert_array_equal(F.relu_backward(g, y), np.where(x > 0, g, 0))  # output works too


def test_relu_nan_strided_and_bad_input(backend):
    x = np.array([[-1.0, np.nan, 2.0, 0.0]] * 3).T  # non-contiguous
    y = F.relu(x)
    assert np.isnan(y[1]).all() and (y[0] == 0).all() and (y[2] == 2).all() and (y[3] == 0).all()
    with pytest.raises(TypeError, match="x must be a float32 or float64"):
        F.relu(np.arange(3))
    with pytest.raises(ValueError, match="grad_output must have shape"):
        F.relu_backward(np.zeros(2), np.zeros(3))


# -- Module ------------------------------------------------------------------------------------
class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(5, 4, dtype=np.float64, seed=0)
        self.blocks = nn.ModuleList([nn.Linear(4, 4, dtype=np.float64, seed=i) for i in range(2)])
        self.head = nn.Linear(4, 5, bias=False, dtype=np.float64, seed=3)
        self.head.weight = self.emb.weight  # tied


def test_names_sharing_and_counts():
    m = Tied()
    names = [n for n, _ in m.named_parameters()]
    assert names == ["emb.weight", "blocks.0.weight", "blocks.0.bias", "blocks.1.weight", "blocks.1.bias"]
    assert m.num_parameters() == 5 * 4 + 2 * (16 + 4)
    assert list(m.state_dict()) == names + ["head.weight"]  # as torch: a tied weight under each name
    assert [n for n, _ in m.named_parameters(remove_duplicate=False)][-1] == "head.weight"
    # the tied weight gets both gradients
    ids = np.array([[1, 2, 1]])
    h = m.emb(ids)
    logits = m.head(h)
    g = np.ones_like(logits)
    dh = m.head.backward(g)
    m.emb.backward(dh)
    want = g.reshape(-1, 5).T @ h.reshape(-1, 4)  # from the head
    want[1] += 2 * (g[0, 0] @ m.emb.weight.data)
    want[2] += g[0, 1] @ m.emb.weight.data
    np.testing.assert_allclose(m.emb.weight.grad, want)
    m.zero_grad()
    assert not m.emb.weight.grad.any() and not m.blocks[1].bias.grad.any()


def test_a_tied_state_dict_moves_to_torch_and_back():
    torch = pytest.importorskip("torch")
    m = Tied()

    class TorchTied(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(5, 4)
            self.blocks = torch.nn.ModuleList([torch.nn.Linear(4, 4) for _ in range(2)])
            self.head = torch.nn.Linear(4, 5, bias=False)
            self.head.weight = self.emb.weight

    t = TorchTied().double()
    assert list(t.state_dict()) == list(m.state_dict())
    copy_to_torch(m, t)
    back = Tied()
    back.load_state_dict(t.state_dict())
    assert back.head.weight is back.emb.weight
    np.testing.assert_array_equal(back.emb.weight.data, m.emb.weight.data)


def test_parameter_names_match_torch_modules():
    torch = pytest.importorskip("torch")
    ours = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.LayerNorm(4), nn.GELU(), nn.Linear(4, 2, bias=False))
    theirs = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.LayerNorm(4), torch.nn.GELU(),
                                 torch.nn.Linear(4, 2, bias=False))
    assert [(n, p.shape) for n, p in ours.named_parameters()] == [
        (n, tuple(p.shape)) for n, p in theirs.named_parameters()]


def test_load_state_dict_names_every_problem():
    m = nn.Sequential(nn.Linear(3, 4, seed=0), nn.Linear(4, 2, seed=1))
    good = m.state_dict()
    bad = dict(good)
    del bad["0.bias"]
    bad["2.weight"] = np.zeros(3)
    bad["1.weight"] = np.zeros((3, 3))
    with pytest.raises(ValueError) as e:
        m.load_state_dict(bad)
    msg = str(e.value)
    assert "missing ['0.bias']" in msg and "unexpected ['2.weight']" in msg and "1.weight: (3, 3) != (2, 4)" in msg
    assert np.array_equal(m[1].weight.data, good["1.weight"])  # nothing copied
    bad["1.weight"] = good["1.weight"] * 2
    missing, unexpected = m.load_state_dict(bad, strict=False)
    assert missing == ["0.bias"] and unexpected == ["2.weight"]
    assert np.array_equal(m[1].weight.data, good["1.weight"] * 2)
    m.load_state_dict(good)
    assert all(np.array_equal(m.state_dict()[k], v) for k, v in good.items())


def test_train_eval_flags_every_submodule():
    m = nn.Sequential(nn.Dropout(0.5), nn.Sequential(nn.Dropout(0.1)))
    assert m.training and m[1][0].training
    assert m.eval() is m and not m[1][0].training
    m.train()
    assert m[1][0].training


def test_dtype_and_seed():
    a, b = nn.Linear(4, 3, seed=7), nn.Linear(4, 3, seed=np.random.default_rng(7))
    assert a.weight.data.dtype == np.float32 and np.array_equal(a.weight.data, b.weight.data)
    c = nn.Linear(4, 3, dtype=np.float64, seed=7)
    assert c.weight.data.dtype == np.float64
    assert not np.array_equal(nn.Linear(4, 3, seed=8).weight.data, a.weight.data)
    with pytest.raises(TypeError, match="dtype must be float32 or float64"):
        nn.Linear(4, 3, dtype=np.int32)
    with pytest.raises(TypeError, match="seed must be"):
        nn.Linear(4, 3, seed="x")
    with pytest.raises(TypeError, match="has dtype float64, the module float32|dtype"):
        a(np.zeros((2, 4)))


def test_a_second_forward_replaces_the_first_and_backward_is_once():
    m = nn.Linear(3, 2, dtype=np.float64, seed=0)
    x1, x2 = np.ones((1, 3)), np.arange(3.0).reshape(1, 3)
    m(x1)
    m(x2)
    g = np.ones((1, 2))
    m.backward(g)
    np.testing.assert_allclose(m.weight.grad, g.T @ x2)  # the last call's
    with pytest.raises(RuntimeError, match="needs a forward"):
        m.backward(g)


def test_init_distributions_are_torchs():
    lin = nn.Linear(400, 300, seed=0)
    bound = 1 / np.sqrt(400)
    for p in (lin.weight.data, lin.bias.data):
        assert np.abs(p).max() <= bound and np.abs(p).max() > 0.95 * bound
    assert abs(lin.weight.data.std() - bound / np.sqrt(3)) < 0.01 * bound
    emb = nn.Embedding(300, 200, padding_idx=-1, seed=0)
    w = emb.weight.data[:-1]
    assert abs(w.mean()) < 0.01 and abs(w.std() - 1) < 0.01 and not emb.weight.data[-1].any()
    assert emb.padding_idx == 299


# -- layers against torch ------------------------------------------------------------------------
def _torch_pair(torch, ours, theirs, x, module_args=()):
    copy_to_torch(ours, theirs)
    y = ours(x, *module_args)
    tx = torch.tensor(x, requires_grad=True)
    ty = theirs(tx)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-10, atol=1e-12)
    g = np.random.default_rng(1).standard_normal(y.shape)
    dx = ours.backward(g)
    ty.backward(torch.tensor(g))
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-10, atol=1e-12)
    assert_param_grads_match(ours, theirs)


@pytest.mark.parametrize("bias", [True, False])
def test_linear_layer_norm_activations_against_torch(backend, bias, rng):
    torch = pytest.importorskip("torch")
    f64 = dict(dtype=torch.float64)
    x = rng.standard_normal((2, 3, 5))
    _torch_pair(torch, nn.Linear(5, 4, bias=bias, dtype=np.float64, seed=0), torch.nn.Linear(5, 4, bias=bias, **f64), x)
    ln = nn.LayerNorm(5, eps=1e-3, bias=bias, dtype=np.float64)
    ln.weight.data[...] = rng.standard_normal(5)
    _torch_pair(torch, ln, torch.nn.LayerNorm(5, eps=1e-3, bias=bias, **f64), x)
    ln2 = nn.LayerNorm((3, 5), dtype=np.float64)
    ln2.weight.data[...] = rng.standard_normal((3, 5))
    _torch_pair(torch, ln2, torch.nn.LayerNorm((3, 5), **f64), x)
    _torch_pair(torch, nn.LayerNorm(5, elementwise_affine=False, dtype=np.float64),
                torch.nn.LayerNorm(5, elementwise_affine=False, **f64), x)
    _torch_pair(torch, nn.ReLU(), torch.nn.ReLU(), x)
    for approximate in ("none", "tanh"):
        _torch_pair(torch, nn.GELU(approximate), torch.nn.GELU(approximate), x)
    seq = nn.Sequential(nn.Linear(5, 6, bias=bias, dtype=np.float64, seed=1), nn.GELU(),
                        nn.Linear(6, 5, dtype=np.float64, seed=2), nn.Dropout(0.0))
    tseq = torch.nn.Sequential(torch.nn.Linear(5, 6, bias=bias, **f64), torch.nn.GELU(),
                               torch.nn.Linear(6, 5, **f64), torch.nn.Dropout(0.0))
    _torch_pair(torch, seq, tseq, x.transpose(1, 0, 2))  # non-contiguous input


@pytest.mark.parametrize("padding_idx", [None, 2])
def test_embedding_against_torch(backend, padding_idx):
    torch = pytest.importorskip("torch")
    ours = nn.Embedding(6, 3, padding_idx=padding_idx, dtype=np.float64, seed=0)
    theirs = copy_to_torch(ours, torch.nn.Embedding(6, 3, padding_idx=padding_idx, dtype=torch.float64))
    ids = np.array([[0, 2, 2, 5], [5, 5, 1, 2]])
    y = ours(ids)
    ty = theirs(torch.tensor(ids))
    np.testing.assert_array_equal(y, ty.detach().numpy())
    g = np.random.default_rng(0).standard_normal(y.shape)
    assert ours.backward(g) is None
    ty.backward(torch.tensor(g))
    np.testing.assert_allclose(ours.weight.grad, theirs.weight.grad.numpy(), rtol=1e-12, atol=1e-14)


def test_embedding_bad_input():
    e = nn.Embedding(4, 2)
    with pytest.raises(TypeError, match="integer array of ids"):
        e(np.zeros(3))
    with pytest.raises(ValueError, match=r"ids must be in \[0, 4\)"):
        e(np.array([4]))
    with pytest.raises(ValueError, match="padding_idx"):
        nn.Embedding(4, 2, padding_idx=4)


def test_dropout_drops_in_train_mode_only():
    d = nn.Dropout(0.25, seed=0)
    x = np.ones((200, 100), np.float32)
    y = d(x)
    dropped = (y == 0).mean()
    assert 0.22 < dropped < 0.28 and np.allclose(y[y != 0], 1 / 0.75)
    g = d.backward(np.ones_like(x))
    np.testing.assert_array_equal(g, y)  # the same mask and scale
    d.eval()
    assert d(x) is x or np.array_equal(d(x), x)
    np.testing.assert_array_equal(nn.Dropout(1.0).train()(x), 0)
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\]"):
        nn.Dropout(1.5)


def test_bad_layer_input():
    with pytest.raises(ValueError, match=r"Linear: input must have shape \(\.\.\., 3\)"):
        nn.Linear(3, 2)(np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match=r"LayerNorm: input must have shape"):
        nn.LayerNorm(3)(np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match="approximate"):
        nn.GELU("fast")
    with pytest.raises(TypeError, match="not a fastattn.nn.Module"):
        nn.Sequential(nn.ReLU(), lambda x: x)


# -- finite differences (no torch needed), reference backend -------------------------------------
def test_simple_layers_finite_differences(rng):
    with fastattn.use_backend("reference"):
        x = rng.standard_normal((2, 3, 4))
        for m in (nn.Linear(4, 3, dtype=np.float64, seed=0), nn.LayerNorm(4, dtype=np.float64),
                  nn.GELU(), nn.Sequential(nn.Linear(4, 5, dtype=np.float64, seed=1), nn.ReLU(),
                                           nn.Linear(5, 4, dtype=np.float64, seed=2))):
            if isinstance(m, nn.LayerNorm):
                m.weight.data[...] = rng.standard_normal(4)
                m.bias.data[...] = rng.standard_normal(4)
            gradcheck(m, [x.copy()])
        emb = nn.Embedding(5, 3, dtype=np.float64, seed=0)  # (padding: against torch above)
        gradcheck(emb, [np.array([[0, 1, 4, 1]])], n_coords=15)


# -- CrossEntropyLoss --------------------------------------------------------------------------
def _cross_entropy_oracle(logits, target, ignore_index, smoothing):
    """float64 mean cross-entropy with label smoothing over the rows whose target is kept."""
    z = logits.reshape(-1, logits.shape[-1]).astype(np.float64)
    t = target.reshape(-1)
    keep = t != ignore_index
    logp = z - z.max(-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
    nll = -logp[keep, t[keep]]
    smooth = -logp[keep].mean(-1)
    return float(((1 - smoothing) * nll + smoothing * smooth).mean())


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_loss_module(backend, rng, smoothing):
    logits = rng.standard_normal((3, 4, 7))
    target = rng.integers(0, 7, (3, 4))
    target[0, 1] = -100
    crit = nn.CrossEntropyLoss(label_smoothing=smoothing)
    loss = crit(logits, target)
    assert loss == pytest.approx(_cross_entropy_oracle(logits, target, -100, smoothing), rel=1e-10)
    grad = crit.backward()
    eps, num = 1e-6, np.zeros_like(logits)
    for i in np.ndindex(logits.shape):  # central differences of the oracle
        up, down = logits.copy(), logits.copy()
        up[i] += eps
        down[i] -= eps
        num[i] = (_cross_entropy_oracle(up, target, -100, smoothing)
                  - _cross_entropy_oracle(down, target, -100, smoothing)) / (2 * eps)
    np.testing.assert_allclose(grad, num, atol=1e-8)
    target3 = np.where(target == -100, 3, target)
    np.testing.assert_allclose(nn.CrossEntropyLoss(ignore_index=3)(logits, target3),
                               _cross_entropy_oracle(logits, target3, 3, 0.0), rtol=1e-10)
    try:
        import torch
    except ImportError:
        return
    want = torch.nn.CrossEntropyLoss(label_smoothing=smoothing)(torch.tensor(logits).reshape(-1, 7),
                                                                torch.tensor(target).reshape(-1))
    assert loss == pytest.approx(float(want), rel=1e-10)


@pytest.mark.parametrize("kwargs, error, message", [
    ({"reduction": "sum"}, ValueError, "reduction must be 'mean'"),
    ({"weight": np.ones(3)}, ValueError, "weight (class weights) is not supported"),
    ({"ignore_index": 1.5}, TypeError, "ignore_index must be an int"),
    ({"label_smoothing": 2.0}, ValueError, "label_smoothing must be in [0, 1]"),
    ({"label_smoothing": "0.1"}, TypeError, "label_smoothing must be a number"),
])
def test_cross_entropy_loss_arguments(kwargs, error, message):
    import re
    with pytest.raises(error, match=re.escape(message)):
        nn.CrossEntropyLoss(**kwargs)
    with pytest.raises(RuntimeError, match="needs a forward"):
        nn.CrossEntropyLoss().backward()
