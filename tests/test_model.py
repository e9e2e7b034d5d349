"""The GPT model: its explicit backward against finite differences, state dicts, a short training."""
import numpy as np
import pytest

import fastattn
from fastattn import GPT, GPTConfig


def micro(**kw):
    return GPTConfig(**{"vocab_size": 11, "block_size": 8, "n_layer": 2, "n_head": 2, "n_embd": 8, **kw})


def batch(rng, cfg, B=2, T=5):
    return rng.integers(0, cfg.vocab_size, (B, T)), rng.integers(0, cfg.vocab_size, (B, T))


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gradient_matches_finite_differences(backend, rng, bias, approximate):
    cfg = micro(bias=bias, gelu_approximate=approximate)
    model = GPT(cfg, seed=1, dtype=np.float64)
    idx, targets = batch(rng, cfg)
    targets[0, 1] = -1  # an ignored target
    model.zero_grad()
    model(idx, targets)
    model.backward()
    h = 1e-6
    for name, p in model.named_parameters():
        picks = [tuple(rng.integers(0, n) for n in p.data.shape) for _ in range(3)]
        if name == "transformer.wte.weight":
            picks.append((int(idx[0, 0]), 0))  # a row that is both looked up and in the head
        for i in picks:
            old = p.data[i]
            p.data[i] = old + h
            up = model(idx, targets)[1]
            p.data[i] = old - h
            down = model(idx, targets)[1]
            p.data[i] = old
            numeric = (up - down) / (2 * h)
            assert abs(p.grad[i] - numeric) <= 1e-6 * abs(numeric) + 1e-9, (name, i, p.grad[i], numeric)


def test_backends_agree(rng):
    cfg = micro()
    idx, targets = batch(rng, cfg)
    results = []
    for name in fastattn.available_backends():
        with fastattn.use_backend(name):
            model = GPT(cfg, seed=3)
            logits, loss = model(idx, targets)
            model.backward()
            results.append((logits, loss, [p.grad.copy() for p in model.parameters()]))
    for logits, loss, grads in results[1:]:
        np.testing.assert_allclose(logits, results[0][0], rtol=1e-5, atol=1e-6)
        assert abs(loss - results[0][1]) < 1e-5
        for a, b in zip(grads, results[0][2]):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_names_shapes_and_counts():
    cfg = GPTConfig(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128, bias=False)
    model = GPT(cfg)
    shapes = {n: p.data.shape for n, p in model.named_parameters()}
    assert shapes["transformer.wte.weight"] == (65, 128)
    assert shapes["transformer.h.0.attn.c_attn.weight"] == (384, 128)  # (out, in), as torch's Linear
    assert shapes["transformer.h.3.mlp.c_proj.weight"] == (128, 512)
    assert "transformer.h.0.attn.c_attn.bias" not in shapes
    # nanoGPT's count for this config (without position embeddings): 4 * 12 C^2 + 9 * 128 + V C
    assert model.num_params() == 4 * (12 * 128 * 128 + 2 * 128) + 128 + 65 * 128
    assert model.num_params(non_embedding=False) == model.num_params() + 64 * 128
    std = model.transformer.h[0].attn.c_proj.weight.data.std()
    assert 0.8 < std / (0.02 / np.sqrt(2 * 4)) < 1.2  # GPT-2's scaled residual init


def test_state_dict_round_trip(rng):
    cfg = micro()
    idx, _ = batch(rng, cfg)
    a, b = GPT(cfg, seed=1), GPT(cfg, seed=2)
    assert not np.allclose(a(idx)[0], b(idx)[0])
    b.load_state_dict(a.state_dict())
    np.testing.assert_array_equal(a(idx)[0], b(idx)[0])
    state = a.state_dict()
    state["lm_head.weight"] = state["transformer.wte.weight"]  # as nanoGPT's state dicts have it
    b.load_state_dict(state)
    bad = dict(state)
    bad.pop("transformer.ln_f.weight")
    bad["transformer.h.0.ln_1.weight"] = np.ones(9, np.float32)
    with pytest.raises(ValueError, match=r"missing \['transformer.ln_f.weight'\].*transformer.h.0.ln_1.weight: \(9,\)"):
        b.load_state_dict(bad)


def test_training_lowers_the_loss(backend):
    # a repeating pattern: a small model must learn it quickly with plain gradient descent
    cfg = micro(vocab_size=5, block_size=16, n_embd=16)
    model = GPT(cfg, seed=0)
    data = np.tile(np.arange(5), 10)
    idx = np.stack([data[i:i + 16] for i in range(4)])
    targets = np.stack([data[i + 1:i + 17] for i in range(4)])
    losses = []
    for _ in range(60):
        model.zero_grad()
        losses.append(model(idx, targets)[1])
        model.backward()
        for p in model.parameters():
            p.data -= 0.5 * p.grad
    assert losses[-1] < 0.3 * losses[0], losses[::10]


def test_dropout_train_and_eval(rng):
    cfg = micro(dropout=0.5)
    model = GPT(cfg, seed=0)
    idx, targets = batch(rng, cfg)
    model.eval()
    assert np.array_equal(model(idx)[0], model(idx)[0])  # no dropout in eval mode
    model.train()
    a, b = model(idx)[0], model(idx)[0]
    assert not np.array_equal(a, b)
    model.zero_grad()
    model(idx, targets)
    model.backward()
    assert all(np.all(np.isfinite(p.grad)) for p in model.parameters())


def test_bad_input():
    model = GPT(micro())
    with pytest.raises(ValueError, match="longer than block_size 8"):
        model(np.zeros((1, 9), int))
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 11\)"):
        model(np.full((1, 3), 11))
    with pytest.raises(ValueError, match=r"idx must be a \(B, T\) integer array"):
        model(np.zeros(3, int))
    with pytest.raises(RuntimeError, match="needs a forward"):
        model.backward()
    with pytest.raises(ValueError, match="n_embd \\(10\\) must be a multiple of n_head \\(4\\)"):
        GPTConfig(vocab_size=5, block_size=4, n_head=4, n_embd=10)
