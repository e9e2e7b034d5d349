"""Greedy decoding and beam search: the KV-cached decoder against the whole prefix run again,
beam_size=1 against greedy, scores against the model's own log probabilities, and a hand-made
case where beam search finds the sequence that greedy misses."""
import numpy as np
import pytest

from fastattn.models.seq2seq import Seq2SeqTransformer
from fastattn.models.seq2seq_decoding import (_beam, _FullPrefixDecoder, _IncrementalDecoder, _log_softmax,
                                              beam_search, greedy, length_penalty_factor)

BOS, EOS = 1, 2


def _model(norm_first=False, activation="relu", dtype=np.float64):
    m = Seq2SeqTransformer(13, 10, d_model=16, nhead=4, num_encoder_layers=2, num_decoder_layers=2,
                           dim_feedforward=20, dropout=0.1, norm_first=norm_first, activation=activation,
                           dtype=dtype, seed=5)
    m.generator.bias.data[EOS] += 1.5  # (so that some rows end before max_len)
    return m


def _src(rng, n=3, s=6):
    src = rng.integers(3, 13, (n, s))
    src[1, 4:] = 0  # padding
    return src


@pytest.mark.parametrize("norm_first, activation", [(False, "relu"), (True, "gelu")])
def test_cached_step_equals_the_whole_prefix_again(backend, norm_first, activation):
    rng = np.random.default_rng(0)
    model = _model(norm_first, activation).eval()
    src = _src(rng)
    cached, full = _IncrementalDecoder(model, src, None, 8), _FullPrefixDecoder(model, src, None, 8)
    tokens = np.full(3, BOS)
    for _ in range(8):
        a, b = cached.step(tokens), full.step(tokens)
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)
        tokens = rng.integers(3, 10, 3)  # any prefix, not only the greedy one
    with pytest.raises(ValueError, match="no room"):
        cached.step(tokens)


def test_greedy_cached_equals_uncached_and_keeps_the_mode(backend):
    rng = np.random.default_rng(1)
    model = _model().train()
    src = _src(rng, 4)
    out = greedy(model, src, max_len=9)
    assert model.training  # restored
    again = greedy(model, src, max_len=9, use_cache=False)
    assert len(out) == 4 and all(a.dtype == np.int64 for a in out)
    assert [a.tolist() for a in out] == [a.tolist() for a in again]
    assert all(EOS not in a and len(a) <= 9 for a in out)
    assert any(len(a) < 9 for a in out)  # some row stopped at eos
    f32 = _model(dtype=np.float32)
    f32.load_state_dict(model.state_dict())
    assert greedy(f32, src, max_len=9)[0].tolist() == out[0].tolist()


def _sequence_log_prob(model, src_row, tokens, ended):
    """log p(tokens [+ eos] | src) from a whole forward pass."""
    tgt = list(tokens) + ([EOS] if ended else [])
    logits = model.eval()(src_row[None], np.array([[BOS] + tgt[:-1]]))[0]
    lp = _log_softmax(logits)
    return float(sum(lp[t, tok] for t, tok in enumerate(tgt)))


def test_beam_search_one_beam_is_greedy_and_scores_are_the_models(backend):
    rng = np.random.default_rng(2)
    model = _model()
    src = _src(rng)
    for i in range(3):
        g = greedy(model, src[i:i + 1], max_len=7)[0]
        b = beam_search(model, src[i:i + 1], beam_size=1, max_len=7)[0]
        assert g.tolist() == b.tolist()
    outs, scores = beam_search(model, src, beam_size=3, max_len=7, length_penalty=0.6, return_scores=True)
    for i, (toks, score) in enumerate(zip(outs, scores)):
        ended = len(toks) < 7  # (reorder bugs would give a score that is not this sequence's)
        n = len(toks) + ended
        expected = _sequence_log_prob(model, src[i], toks, ended) / length_penalty_factor(n, 0.6)
        assert abs(score - expected) < 1e-9


class _Markov:
    """A decoder whose next-token distribution depends on the last token only: from bos, A (0.55)
    or B (0.45); after A, A / B / eos at 0.3 / 0.3 / 0.4; after B, eos at 0.95. Greedy takes A
    then eos (0.55 * 0.4 = 0.22); the best sequence is B eos (0.45 * 0.95 = 0.43)."""
    A, B = 3, 4

    def __init__(self):
        p = np.full((5, 5), 1e-6)
        p[BOS, [self.A, self.B]] = 0.55, 0.45
        p[self.A, [self.A, self.B, EOS]] = 0.3, 0.3, 0.4
        p[self.B, [self.A, EOS]] = 0.05, 0.95
        self.logp = np.log(p / p.sum(axis=1, keepdims=True))
        self.reorders = []

    def step(self, tokens):
        return self.logp[tokens]

    def reorder(self, index):
        self.reorders.append(list(index))


def test_beam_search_finds_what_greedy_misses():
    assert _beam(_Markov(), BOS, EOS, 1, 0.6, 10)[0].tolist() == [_Markov.A]  # greedy's choice
    dec = _Markov()
    toks, score = _beam(dec, BOS, EOS, 2, 0.6, 10)
    assert toks.tolist() == [_Markov.B]
    assert abs(score - (dec.logp[BOS, _Markov.B] + dec.logp[_Markov.B, EOS]) / length_penalty_factor(2, 0.6)) < 1e-12
    assert dec.reorders[0] == [0, 0]  # one live row becomes two


def test_length_penalty_prefers_longer_finished_hypotheses():
    """alpha = 0: the shortest likely sequence; a large alpha divides longer ones' log probability more."""
    p = np.full((6, 6), 1e-9)
    p[BOS, [3, 4]] = 0.7, 0.3  # 3 eos: 0.35; 3 5 eos: 0.28; 4 5 eos: 0.24
    p[3, EOS] = 0.5
    p[3, 5] = 0.5
    p[4, 5] = 1.0
    p[5, 5], p[5, EOS] = 0.2, 0.8
    logp = np.log(p / p.sum(axis=1, keepdims=True))

    class Table:
        def step(self, tokens):
            return logp[tokens]

        def reorder(self, index):
            pass

    assert _beam(Table(), BOS, EOS, 4, 0.0, 10)[0].tolist() == [3]
    assert len(_beam(Table(), BOS, EOS, 4, 3.0, 10)[0]) > 1


def test_decoding_arguments_are_checked():
    model = _model()
    src = np.array([[3, 4, 5]])
    with pytest.raises(ValueError, match="max_len must be an int in"):
        greedy(model, src, max_len=0)
    with pytest.raises(ValueError, match="beam_size must be an int >= 1"):
        beam_search(model, src, beam_size=0)
    with pytest.raises(ValueError, match="eos must be a target id"):
        greedy(model, src, eos=10)
    with pytest.raises(ValueError, match="length_penalty"):
        beam_search(model, src, length_penalty=-1.0)
    assert len(greedy(model, src)[0]) <= 2 * 3 + 10  # the default max_len


def test_padding_does_not_change_a_row(backend):
    """A source decoded in a padded batch gives what it gives alone, trimmed (the memory's
    padding keys are hidden from the cross-attention)."""
    rng = np.random.default_rng(3)
    model = _model()
    src = _src(rng, 3, 7)
    batch = greedy(model, src, max_len=8)
    beams = beam_search(model, src, beam_size=2, max_len=8)
    row = src[1][src[1] != 0][None]
    assert batch[1].tolist() == greedy(model, row, max_len=8)[0].tolist()
    assert beams[1].tolist() == beam_search(model, row, beam_size=2, max_len=8)[0].tolist()
