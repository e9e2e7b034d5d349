"""Frozen (read-only) weights: Module.freeze (fastattn/_frozen.py), and the compiled backend's
packed copies of them (src_cython/linear.pyx: onednn.pack on a frozen weight's first product of
two rows or more). Products on frozen weights against the float64 oracle; a packed copy never
outlives the values it was made from (a weight unfrozen and written, a read-only flag set or
cleared by hand, an array that dies); training a frozen module is a clear error."""
import gc
import importlib

import numpy as np
import pytest

import fastattn
import oracle
from fastattn import GPT, GPTConfig, nn, optim
from fastattn import _frozen as _frozen_weights
from fastattn import functional as F
from threads import at_thread_counts


def _packs():
    """Whether this process packs frozen weights (the compiled backend on oneDNN)."""
    return ("compiled" in fastattn.available_backends() and fastattn.build_info()["gemm"] == "onednn"
            and importlib.import_module("fastattn._compiled.linear")._current_engine() == "onednn")


def _frozen(a):
    a = np.array(a)
    _frozen_weights.freeze(a)
    return a


def _kept_bytes():
    return sum(p.buffer.nbytes for p in _frozen_weights.kept_values())


@pytest.mark.parametrize("M", [0, 1, 2, 3, 129, 257, 605])
# (N = 256, 512: rows of 1 and 2 KiB, which onednn.pyx pads where it packs them as a plain matrix)
@pytest.mark.parametrize("K, N", [(1, 1), (5, 3), (384, 96), (33, 130), (33, 256), (7, 512)])
def test_products_on_a_frozen_weight_match_the_oracle(backend, rng, M, K, N):
    x = rng.standard_normal((M, K)).astype(np.float32)
    w, b = _frozen(rng.standard_normal((N, K)).astype(np.float32)), rng.standard_normal(N).astype(np.float32)
    want = x.astype(np.float64) @ w.astype(np.float64).T + b
    for _ in range(2):  # (the second: from the packed copy the first made)
        oracle.assert_close(F.linear(x, w, b), want, np.float32, scale=np.sqrt(K), rtol_factor=10)
        out, pre = F.linear_gelu(x, w, b, return_pre=True)
        oracle.assert_close(pre, want, np.float32, scale=np.sqrt(K), rtol_factor=10)
        oracle.assert_close(out, oracle.gelu(pre.astype(np.float64)), np.float32, scale=1, rtol_factor=10)
    # the gradients through a frozen weight (its plain layout)
    g = rng.standard_normal((M, N)).astype(np.float32)
    dx, dw, _ = F.linear_backward(g, x, w)
    oracle.assert_close(dx, g.astype(np.float64) @ w.astype(np.float64), np.float32, scale=np.sqrt(N) + 1,
                        rtol_factor=10)


@pytest.mark.parametrize("M, K, N", [(2, 64, 64), (300, 96, 200), (606, 384, 128)])
def test_a_frozen_weight_gives_the_same_bits_at_every_thread_count(rng, M, K, N):
    x = rng.standard_normal((M, K)).astype(np.float32)
    w = _frozen(rng.standard_normal((N, K)).astype(np.float32))
    out = at_thread_counts(lambda: (F.linear(x, w), F.linear_gelu(x, w, approximate="tanh")), (1, 2, 3))
    for other in out[1:]:
        assert all(np.array_equal(a, b) for a, b in zip(out[0], other))


@pytest.mark.skipif(not _packs(), reason="packing needs the compiled backend on oneDNN")
def test_a_packed_copy_is_made_once_and_let_go_with_its_weight(rng):
    gc.collect()
    before = _kept_bytes()
    x = rng.standard_normal((300, 256)).astype(np.float32)
    w = _frozen(rng.standard_normal((512, 256)).astype(np.float32))
    with fastattn.use_backend("compiled"):
        F.linear(x[:1], w)  # (one row: the weight is read as it is, nothing packed)
        assert _kept_bytes() == before
        F.linear(x, w)
        packed = _kept_bytes() - before
        assert packed >= w.nbytes
        F.linear(x, w)
        assert _kept_bytes() - before == packed  # (once)
    del w
    gc.collect()
    assert _kept_bytes() == before


def test_a_weight_written_after_unfreeze_is_read_anew(backend, rng):
    x = rng.standard_normal((300, 64)).astype(np.float32)
    layer = nn.Linear(64, 96).freeze()
    first = layer(x)
    with pytest.raises(ValueError, match="read-only"):
        layer.weight.data[...] = 0
    layer.unfreeze()
    layer.weight.data *= 2  # in place: the same array, new values
    layer.freeze()
    want = x.astype(np.float64) @ layer.weight.data.astype(np.float64).T + layer.bias.data
    oracle.assert_close(layer(x), want, np.float32, scale=8, rtol_factor=10)
    assert not np.allclose(layer(x), first)


def test_read_only_flags_set_or_cleared_by_hand_are_not_trusted(backend, rng):
    x = rng.standard_normal((300, 32)).astype(np.float32)
    base = rng.standard_normal((80, 32)).astype(np.float32)
    view = base[:40]  # read-only by hand, its base writable: its values may change under it
    view.flags.writeable = False
    F.linear(x, view)
    base[:40] *= -1
    want = x.astype(np.float64) @ base[:40].astype(np.float64).T
    oracle.assert_close(F.linear(x, view), want, np.float32, scale=6, rtol_factor=10)
    w = _frozen(base)  # frozen, then made writable by hand (not unfreeze) and written
    F.linear(x, w)
    w.flags.writeable = True
    w *= 3
    want = x.astype(np.float64) @ w.astype(np.float64).T
    oracle.assert_close(F.linear(x, w), want, np.float32, scale=18, rtol_factor=10)


def test_freeze_covers_views_and_their_base(backend, rng):
    # BERT's q, k and v weights are row blocks of one fused array that the products read
    model = fastattn.Encoder(fastattn.BertConfig(vocab_size=20, hidden_size=16, num_hidden_layers=1,
                                                 num_attention_heads=2, intermediate_size=24,
                                                 max_position_embeddings=8), None)
    attention = model.encoder.layer[0].attention.self
    model.freeze()
    assert not any(p.data.flags.writeable for p in model.parameters())
    assert not attention._qkv_weight.flags.writeable
    model.unfreeze()
    assert all(p.data.flags.writeable for p in model.parameters())
    assert attention._qkv_weight.flags.writeable


@pytest.mark.parametrize("make", [lambda ps: optim.AdamW(ps, lr=1e-2), lambda ps: optim.Adam(ps),
                                  lambda ps: optim.SGD(ps, lr=0.1)])
def test_training_a_frozen_module_is_a_value_error(make):
    model = GPT(GPTConfig(vocab_size=11, block_size=6, n_layer=1, n_head=2, n_embd=8), seed=0)
    opt = make(model.parameters())
    before = [p.data.copy() for p in model.parameters()]
    model.freeze()
    with pytest.raises(ValueError, match=r"read-only .*unfreeze"):
        opt.step()
    with pytest.raises(ValueError, match=r"read-only .*unfreeze"):
        model.load_state_dict(model.state_dict())
    assert all(np.array_equal(a, p.data) for a, p in zip(before, model.parameters()))
    model.unfreeze()
    for p in model.parameters():
        p.grad[...] = 1
    opt.step()
    assert not all(np.array_equal(a, p.data) for a, p in zip(before, model.parameters()))


def test_a_frozen_gpt_gives_the_logits_of_the_unfrozen_one(backend):
    cfg = GPTConfig(vocab_size=37, block_size=40, n_layer=2, n_head=2, n_embd=64)
    model = GPT(cfg, seed=3).eval()
    idx = np.random.default_rng(0).integers(0, 37, (3, 40))
    want, _ = model(idx)
    model.freeze()
    for _ in range(2):
        got, _ = model(idx)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    tokens = model.generate(idx[:1, :5], 6, temperature=0)
    model.unfreeze()
    np.testing.assert_array_equal(model.generate(idx[:1, :5], 6, temperature=0), tokens)


def test_the_base_a_freeze_made_read_only_is_not_trusted(backend, rng):
    # freezing a view makes its base read-only, but another view of the base, made before, can
    # still write into it: products on the base read it as it is
    x = rng.standard_normal((300, 32)).astype(np.float32)
    base = rng.standard_normal((80, 32)).astype(np.float32)
    first, second = base[:40], base[40:]
    _frozen_weights.freeze(first)
    F.linear(x, base), F.linear(x, first)
    second *= -2  # (second's own flag is still writable)
    want = x.astype(np.float64) @ base.astype(np.float64).T
    oracle.assert_close(F.linear(x, base), want, np.float32, scale=12, rtol_factor=10)
    oracle.assert_close(F.linear(x, first), want[:, :40], np.float32, scale=6, rtol_factor=10)


def test_freezing_part_of_a_bert_layer_leaves_its_fused_weight_correct(backend, rng):
    model = fastattn.Encoder(fastattn.BertConfig(vocab_size=20, hidden_size=16, num_hidden_layers=1,
                                                 num_attention_heads=2, intermediate_size=24,
                                                 max_position_embeddings=64), None)
    attention = model.encoder.layer[0].attention.self
    attention.query.freeze()  # (not key and value: their rows of the fused weight stay writable)
    x = rng.standard_normal((130, 16)).astype(np.float32)
    F.linear(x, attention._qkv_weight)
    attention.key.weight.data[...] = 1
    want = x.astype(np.float64) @ attention._qkv_weight.astype(np.float64).T
    oracle.assert_close(F.linear(x, attention._qkv_weight), want, np.float32, scale=16, rtol_factor=10)
