import numpy as np
import pytest

from fastattn import GPT, GPTConfig
from fastattn.model import _sample


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
        counts = np.bincount(_sample(logits, temperature, top_k, rng), minlength=5)
        sigma = np.sqrt(40000 * p * (1 - p)) + 1
        assert (np.abs(counts - 40000 * p) < 5 * sigma).all(), (temperature, top_k, counts, p)
    # ties at the k-th value keep every tied token; a token of zero probability is never drawn
    assert set(_sample(np.array([[1.0, 1.0, 0.0]] * 1000), 1.0, 1, rng)) == {0, 1}
    assert 2 not in _sample(np.array([[0.0, 0.0, -np.inf]] * 1000), 1.0, None, rng)


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
