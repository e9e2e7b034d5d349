import numpy as np
import pytest

from fastattn import GPT, GPTConfig
from fastattn import functional as F
from fastattn.models.generation import sample


@pytest.fixture
def model():
    return GPT(GPTConfig(vocab_size=13, block_size=8, n_layer=2, n_head=2, n_embd=16, dropout=0.1), seed=5)


def test_greedy_takes_the_most_likely_token_of_a_full_forward(backend, model, rng):
    prompt = rng.integers(0, 13, (3, 2))
    out = model.generate(prompt, 6, temperature=0)
    assert out.shape == (3, 8) and (out[:, :2] == prompt).all()
    model.eval()
    logits, _ = model(out[:, :-1])  # teacher forcing: position t predicts token t + 1
    np.testing.assert_array_equal(out[:, 2:], logits[:, 1:].argmax(axis=-1))
    assert model.generate(prompt, 6, temperature=0, seed=9).tolist() == out.tolist()
    assert model.generate(prompt, 6, top_k=1, seed=9).tolist() == out.tolist()


def test_prefill_logits_are_the_last_position_of_a_full_forward(backend, model, rng):
    import fastattn.models.generation as gen
    from fastattn import _backend
    idx = rng.integers(0, 13, (2, 7))
    model.eval()
    want = model(idx)[0][:, -1]
    for ops in (F, _backend.current()):  # checked, and the decode loop's direct kernel calls
        cache = gen.KVCache(model.config, 2, 7, np.float32)
        got = model._forward_cached(idx, np.broadcast_to(np.arange(7), (2, 7)), np.ones((2, 7), bool), cache, ops)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_context_is_cropped_to_block_size(model, rng):
    out = model.generate(rng.integers(0, 13, (1, 7)), 20, temperature=0)
    assert out.shape == (1, 27)
    model.eval()
    last, _ = model(out[:, -9:-1])  # the last token was predicted from the 8 before it
    assert out[0, -1] == last[0, -1].argmax()


def test_sampling_is_seeded_and_restores_the_mode(model, rng):
    prompt = rng.integers(0, 13, (2, 3))
    model.train()
    a = model.generate(prompt, 10, temperature=1.0, seed=1)
    assert model.training
    assert a.tolist() == model.generate(prompt, 10, temperature=1.0, seed=1).tolist()
    assert a.tolist() != model.generate(prompt, 10, temperature=1.0, seed=2).tolist()
    model.eval()
    model.generate(prompt, 1)
    assert not model.training


def test_sample_follows_softmax_over_top_k():
    logits = np.log(np.array([[0.5, 0.25, 0.15, 0.1, 1e-9]], np.float32)).repeat(40000, axis=0)
    rng = np.random.default_rng(0)
    for temperature, top_k in ((1.0, None), (0.5, None), (1.0, 2)):
        z = np.log([0.5, 0.25, 0.15, 0.1, 1e-9]) / temperature
        if top_k:
            z[np.argsort(z)[:-top_k]] = -np.inf
        p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
        counts = np.bincount(sample(logits, temperature, top_k, None, rng), minlength=5)
        sigma = np.sqrt(40000 * p * (1 - p)) + 1
        assert (np.abs(counts - 40000 * p) < 5 * sigma).all(), (temperature, top_k, counts, p)
    # ties at the k-th value keep every tied token; a token of zero probability is never drawn
    assert set(sample(np.array([[1.0, 1.0, 0.0]] * 1000), 1.0, 1, None, rng)) == {0, 1}
    assert 2 not in sample(np.array([[0.0, 0.0, -np.inf]] * 1000), 1.0, None, None, rng)


def test_bad_arguments(model):
    with pytest.raises(ValueError, match="idx"):
        model.generate(np.zeros((2, 0), np.int64), 3)
    with pytest.raises(ValueError, match="idx"):
        model.generate(np.zeros(3, np.int64), 3)
    with pytest.raises(ValueError, match="max_new_tokens"):
        model.generate(np.zeros((1, 1), np.int64), -1)
    with pytest.raises(ValueError, match="temperature"):
        model.generate(np.zeros((1, 1), np.int64), 1, temperature=-0.5)
    with pytest.raises(ValueError, match="top_k"):
        model.generate(np.zeros((1, 1), np.int64), 1, top_k=0)
    with pytest.raises(ValueError, match="token ids"):
        model.generate(np.full((1, 1), 13), 1)


# --- the KV cache, batches of different lengths, top-p, stop tokens, streaming ---------------------

def test_cache_gives_the_tokens_of_full_forwards(backend, model, rng):
    # greedy and sampled, within block_size (8) and far past it (the window slides)
    prompt = rng.integers(0, 13, (3, 3))
    for kw in (dict(temperature=0), dict(temperature=1.0, top_k=5, top_p=0.9, seed=4)):
        cached = model.generate(prompt, 20, **kw)
        assert cached.shape == (3, 23)
        assert cached.tolist() == model.generate(prompt, 20, use_cache=False, **kw).tolist()


def test_decode_runs_one_query_against_a_preallocated_cache(model, rng, monkeypatch):
    import fastattn.models.generation as gen
    from fastattn import _backend
    seen, caches = [], []
    kernels = _backend.current()  # the prefill reaches it through F, the decode steps directly
    sdpa = kernels.scaled_dot_product_attention

    def recording(q, k, v, *args, **kw):
        seen.append((q.shape[-2], k.shape[-2]))
        return sdpa(q, k, v, *args, **kw)

    class CountingCache(gen.KVCache):
        def __init__(self, *args):
            super().__init__(*args)
            caches.append(self)

    monkeypatch.setattr(kernels, "scaled_dot_product_attention", recording)
    monkeypatch.setattr(gen, "KVCache", CountingCache)
    model.generate(rng.integers(0, 13, (2, 3)), 4, temperature=0)
    n_layer = model.config.n_layer
    # prefill: 3 queries over 3 keys (the last layer: the last query only, which is all the
    # logits need); then one query over 4, 5, 6 keys, in every layer
    assert seen == ([(3, 3)] * (n_layer - 1) + [(1, 3)] + [(1, 4)] * n_layer + [(1, 5)] * n_layer
                    + [(1, 6)] * n_layer)
    assert len(caches) == 1 and caches[0].k.shape == (n_layer, 2, 2, 7, 8)


def test_left_padded_rows_give_what_they_give_alone(backend, model, rng):
    prompts = [rng.integers(0, 13, n) for n in (1, 4, 6)]
    T = max(len(p) for p in prompts)
    idx = np.zeros((3, T), np.int64)
    mask = np.zeros((3, T), np.int64)
    for i, p in enumerate(prompts):
        idx[i, T - len(p):], mask[i, T - len(p):] = p, 1
    for use_cache in (True, False):
        out = model.generate(idx, 12, temperature=0, attention_mask=mask, use_cache=use_cache)
        assert (out[:, :T] == idx).all()
        for i, p in enumerate(prompts):
            alone = model.generate(p[None], 12, temperature=0)
            assert out[i, T:].tolist() == alone[0, len(p):].tolist(), (i, use_cache)


def test_top_p_keeps_the_fewest_tokens_that_reach_p():
    probs = np.array([0.5, 0.25, 0.15, 0.1])
    logits = np.log(probs)[None].repeat(40000, axis=0)
    rng = np.random.default_rng(0)
    # 0.5 < 0.7, 0.5 + 0.25 >= 0.7: the first two, renormalised (2/3, 1/3)
    for top_p, want in ((0.7, [2 / 3, 1 / 3, 0, 0]), (0.5, [1, 0, 0, 0]), (0.85, [0.5 / 0.9, 0.25 / 0.9, 0.15 / 0.9, 0]),
                        (1.0, probs)):
        counts = np.bincount(sample(logits, 1.0, None, top_p, rng), minlength=4)
        want = np.array(want)
        sigma = np.sqrt(40000 * want * (1 - want)) + 1
        assert (np.abs(counts - 40000 * want) < 5 * sigma).all(), (top_p, counts)
    # with top_k first: top_k=3 leaves (0.5, 0.25, 0.15) / 0.9, and top_p=0.6 then keeps two
    counts = np.bincount(sample(logits, 1.0, 3, 0.6, rng), minlength=4)
    assert counts[2] == counts[3] == 0 and abs(counts[0] / counts.sum() - 2 / 3) < 0.02


def test_stop_tokens_end_rows_and_then_the_run(model, rng):
    prompt = rng.integers(0, 13, (2, 2))
    free = model.generate(prompt, 10, temperature=0)
    first = free[0, 4]  # row 0 produces it at its third step
    out = model.generate(prompt, 10, temperature=0, stop=[first])
    for row in range(2):
        hits = np.flatnonzero(free[row, 2:] == first)
        if hits.size:  # the row ends at its first stop token, -1 after it
            k = 2 + hits[0]
            assert out[row, :k + 1].tolist() == free[row, :k + 1].tolist()
            assert (out[row, k + 1:] == -1).all()
        else:
            assert out[row].tolist() == free[row, :out.shape[1]].tolist()
    if (free[:, 2:] == first).any(axis=1).all():  # both rows stopped: no step after the last stop
        assert out.shape[1] == 2 + 1 + max(np.flatnonzero(free[r, 2:] == first)[0] for r in range(2))
    assert model.generate(prompt, 10, temperature=0, stop=int(first)).tolist() == out.tolist()


def test_stream_yields_the_columns_of_generate(model, rng):
    prompt = rng.integers(0, 13, (2, 3))
    steps = list(model.generate_stream(prompt, 7, temperature=0.8, seed=3))
    assert len(steps) == 7 and all(s.shape == (2,) and s.dtype == np.int64 for s in steps)
    assert np.stack(steps, axis=1).tolist() == model.generate(prompt, 7, temperature=0.8, seed=3)[:, 3:].tolist()
    model.train()
    stream = model.generate_stream(prompt, 3)
    next(stream)
    assert not model.training  # eval mode while it runs ...
    stream.close()
    assert model.training  # ... and the mode comes back when it ends


def test_bad_generation_arguments(model):
    one = np.zeros((1, 2), np.int64)
    with pytest.raises(ValueError, match="top_p"):
        model.generate_stream(one, 1, top_p=0)  # checked at the call, not at the first token
    with pytest.raises(ValueError, match="top_p"):
        model.generate(one, 1, top_p=1.5)
    with pytest.raises(ValueError, match="left"):
        model.generate(one, 1, attention_mask=[[1, 0]])
    with pytest.raises(ValueError, match="left"):
        model.generate(np.zeros((1, 3), np.int64), 1, attention_mask=[[1, 0, 1]])
    with pytest.raises(ValueError, match="attention_mask"):
        model.generate(one, 1, attention_mask=[[1, 1, 1]])
    with pytest.raises(ValueError, match="attention_mask"):
        model.generate(one, 1, attention_mask=[[2, 1]])
    with pytest.raises(ValueError, match="stop"):
        model.generate(one, 1, stop=[1.5])
    with pytest.raises(ValueError, match="temperature"):
        model.generate(one, 1, temperature=float("nan"))
    # padding may hold any id: only the tokens are checked
    assert model.generate(np.array([[99, 3]]), 1, attention_mask=[[0, 1]]).shape == (1, 3)


@pytest.mark.parametrize("temperature", [1e-310, 5e-324, 1e-300, 1e-30])
def test_a_temperature_near_0_is_greedy(backend, model, rng, temperature):
    # logits / 1e-310 overflow: the max must be subtracted first, or every token is 0 (NaN cdf)
    logits = rng.standard_normal((4, 50)) * 3
    for top_k, top_p in ((None, None), (5, None), (None, 0.9)):
        got = sample(logits, temperature, top_k, top_p, np.random.default_rng(0))
        np.testing.assert_array_equal(got, logits.argmax(axis=-1))
    prompt = rng.integers(0, 13, (2, 3))
    np.testing.assert_array_equal(model.generate(prompt, 5, temperature=temperature, seed=1),
                                  model.generate(prompt, 5, temperature=0))
