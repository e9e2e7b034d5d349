import numpy as np
import pytest

import oracle
from fastattn import functional as F
from threads import at_thread_counts

DTYPES = [np.float32, np.float64]


def qkv(rng, lead, Tq, Tk, D, Dv, dtype):
    q = rng.standard_normal(lead + (Tq, D)).astype(dtype)
    k = rng.standard_normal(lead + (Tk, D)).astype(dtype)
    v = rng.standard_normal(lead + (Tk, Dv)).astype(dtype)
    return q, k, v


def make_mask(rng, kind, shape):
    """A bool mask (about 70% True) or an additive one (finite values and some -inf)."""
    if kind == "bool":
        return rng.random(shape) < 0.7
    m = rng.standard_normal(shape)
    return np.where(rng.random(shape) < 0.25, -np.inf, m)


def check(q, k, v, mask=None, causal=False, scale=None):
    got = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, scale=scale)
    want = oracle.attention(q, k, v, mask, causal, scale)
    oracle.assert_close(got, want, q.dtype, scale=np.abs(v).max())
    return got


# (lead, Tq, Tk, D, Dv): sizes around no tile multiple (compiled tiles: 128 queries x 512 keys)
SHAPES = [
    ((1,), 1, 1, 16, 16),        # T = 1
    ((2, 3), 7, 7, 1, 1),        # D = 1
    ((2, 2), 63, 63, 32, 32),
    ((1, 3), 65, 65, 80, 80),    # D = 80 (not a power of 2)
    ((1, 1), 129, 129, 64, 64),  # one past the query tile
    ((1, 1), 257, 257, 128, 128),
    ((1, 2), 5, 513, 16, 8),     # Tq < Tk, one past the key tile, Dv != D
    ((1, 1), 1, 1000, 64, 64),   # decode: one query against a long cache
    ((2,), 33, 9, 16, 24),       # Tq > Tk (causal: the first queries see nothing)
    ((), 1000, 1000, 16, 16),    # no leading dims, T = 1000
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_oracle(backend, rng, dtype, causal, shape):
    check(*qkv(rng, *shape, dtype), causal=causal)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("D", [1, 16, 32, 64, 80, 128])
def test_head_dims(backend, rng, dtype, D):
    check(*qkv(rng, (2, 2), 37, 41, D, D, dtype), causal=True)


MASK_SHAPES = {  # for lead (B, H) = (2, 3), Tq = 19, Tk = 70
    "(Tk,)": (70,),
    "(Tq, Tk)": (19, 70),
    "(B, 1, 1, Tk)": (2, 1, 1, 70),
    "(B, H, Tq, Tk)": (2, 3, 19, 70),
    "(Tq, 1)": (19, 1),
    "(1, H, Tq, 1)": (1, 3, 19, 1),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("kind", ["bool", "additive"])
@pytest.mark.parametrize("mask_shape", list(MASK_SHAPES), ids=str)
def test_masks(backend, rng, dtype, causal, kind, mask_shape):
    q, k, v = qkv(rng, (2, 3), 19, 70, 16, 16, dtype)
    check(q, k, v, make_mask(rng, kind, MASK_SHAPES[mask_shape]), causal)


@pytest.mark.parametrize("dtype", DTYPES)
def test_padding_mask_over_several_key_blocks(backend, rng, dtype):
    # lengths below, at and past the compiled key tile of 512: blocks past a row's last key are skipped
    q, k, v = qkv(rng, (4, 2), 40, 1100, 16, 16, dtype)
    lengths = np.array([1, 511, 513, 1100])
    mask = np.arange(1100)[None, None, None, :] < lengths[:, None, None, None]
    check(q, k, v, mask)
    check(q, k, v, np.where(mask, 0.0, -np.inf))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["bool", "additive"])
def test_a_mask_reused_or_written_in_place_between_calls(backend, rng, dtype, kind):
    # as a model's layers call it: the same padding mask again (the compiled backend reuses its
    # plan), then the same array written in place, then an equal copy of the first: each call
    # must see the mask it is given
    q, k, v = qkv(rng, (3, 2), 1, 40, 16, 16, dtype)
    lengths = np.array([40, 25, 3])
    visible = np.arange(40)[None, None, None, :] >= 40 - lengths[:, None, None, None]  # left padding
    mask = visible.copy() if kind == "bool" else np.where(visible, 0.0, -np.inf)
    first = check(q, k, v, mask, causal=True)
    np.testing.assert_array_equal(check(q, k, v, mask, causal=True), first)
    mask[...] = mask[::-1]  # (other rows padded, in place)
    assert not np.array_equal(check(q, k, v, mask, causal=True), first)
    original = visible.copy() if kind == "bool" else np.where(visible, 0.0, -np.inf)
    np.testing.assert_array_equal(check(q, k, v, original, causal=True), first)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["bool", "additive", "causal"])
def test_fully_masked_rows_are_zero(backend, rng, dtype, kind):
    q, k, v = qkv(rng, (2, 2), 12, 9, 8, 8, dtype)
    if kind == "causal":  # Tq > Tk: query i sees keys j <= i - 3, so queries 0..2 see nothing
        out = check(q, k, v, causal=True)
        hidden = slice(0, 3)
    else:
        mask = make_mask(rng, "bool" if kind == "bool" else "additive", (12, 9))
        mask[[0, 5]] = False if kind == "bool" else -np.inf
        out = check(q, k, v, mask)
        hidden = [0, 5]
    assert np.all(out[..., hidden, :] == 0)
    assert np.all(np.isfinite(out))


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_row_masked(backend, rng, dtype):
    q, k, v = qkv(rng, (3,), 5, 600, 4, 4, dtype)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=np.zeros(600, dtype=bool))
    assert out.dtype == dtype and np.all(out == 0)


def test_huge_logits_float64(backend, rng):
    # scores up to ~1e4: the max subtraction must keep exp finite. Here the scores of a row are
    # far apart (each row is dominated by a few keys), so the rounding of a score of size 1e4
    # (~1e-12 absolute) hardly matters and the usual tolerance holds; near ties at 1e4 are
    # tested in test_huge_logits_near_ties.
    q, k, v = qkv(rng, (2,), 50, 60, 8, 8, np.float64)
    q *= 1e4 / np.abs(np.einsum("bid,bjd->bij", q, k)).max()
    got = F.scaled_dot_product_attention(q, k, v, scale=1.0, is_causal=True)
    want = oracle.attention(q, k, v, causal=True, scale=1.0)
    assert np.all(np.isfinite(got))
    oracle.assert_close(got, want, np.float64, scale=np.abs(v).max())


def test_huge_logits_float32(backend, rng):
    # float32 scores of size 1e4 carry absolute rounding of ~1e-3, so any float32 kernel
    # (PyTorch's too) is ~1e-3 away from a float64 softmax of near-tied scores. Here the scores
    # are +-1e4 * linspace(-1, 1): each query's best key leads the next by > 500, so the result
    # must be that key's value row, finite, to float32 precision.
    T, D = 40, 8
    k = np.zeros((T, D), np.float32)
    k[:, 0] = np.linspace(-1, 1, T)
    q = np.zeros((T, D), np.float32)
    q[:, 0] = 1e4 * rng.choice([-1, 1], T)  # + prefers the last key, - the first
    v = rng.standard_normal((T, D)).astype(np.float32)
    out = F.scaled_dot_product_attention(q, k, v, scale=1.0)
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out, np.where(q[:, :1] > 0, v[-1], v[0]), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_additive_mask_with_inf_and_huge_values(backend, rng, dtype):
    q, k, v = qkv(rng, (2,), 10, 30, 8, 8, dtype)
    mask = rng.standard_normal((10, 30)) * 1e3
    mask[:, ::3] = -np.inf
    check(q, k, v, mask.astype(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_non_contiguous_inputs(backend, rng, dtype):
    B, H, T, D = 2, 3, 45, 16
    q = rng.standard_normal((B, T, H, D)).astype(dtype).transpose(0, 2, 1, 3)  # (B, H, T, D) view
    k = rng.standard_normal((B, H, 2 * T, D)).astype(dtype)[:, :, ::2]          # every other key
    v = rng.standard_normal((B, H, T, 2 * D)).astype(dtype)[:, :, ::-1, ::2]    # reversed, strided
    mask = rng.random((T, T)).T < 0.8                                         # transposed mask
    assert not (q.flags.c_contiguous or k.flags.c_contiguous or v.flags.c_contiguous)
    check(q, k, v, mask, causal=True)


@pytest.mark.parametrize("dtype", DTYPES)
def test_explicit_scale(backend, rng, dtype):
    check(*qkv(rng, (2,), 17, 23, 16, 16, dtype), scale=0.37)
    check(*qkv(rng, (2,), 17, 23, 16, 16, dtype), scale=0.0)  # uniform over the visible keys


@pytest.mark.parametrize("lead", [(), (3,), (2, 3), (2, 1, 2)], ids=str)
def test_leading_dims(backend, rng, lead):
    out = check(*qkv(rng, lead, 9, 11, 8, 5, np.float32), causal=True)
    assert out.shape == lead + (9, 5)


def test_nan_propagates_to_the_rows_that_see_it(backend, rng):
    q, k, v = qkv(rng, (1,), 6, 6, 4, 4, np.float64)
    q[0, 2, 1] = np.nan
    out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert np.all(np.isnan(out[0, 2]))
    others = [0, 1, 3, 4, 5]
    oracle.assert_close(out[0, others], oracle.attention(q, k, v, causal=True)[0, others], np.float64)
    # a NaN key reaches the queries that may attend to it (causal: queries 3.. see key 3)
    q, k, v = qkv(rng, (1,), 6, 6, 4, 4, np.float32)
    k[0, 3, 0] = np.nan
    out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert np.all(np.isnan(out[0, 3:])) and np.all(np.isfinite(out[0, :3]))


@pytest.mark.parametrize("dtype", DTYPES)
def test_empty_inputs(backend, dtype):
    z = np.zeros
    assert F.scaled_dot_product_attention(z((0, 4, 8), dtype), z((0, 5, 8), dtype),
                                          z((0, 5, 3), dtype)).shape == (0, 4, 3)
    assert F.scaled_dot_product_attention(z((2, 0, 8), dtype), z((2, 5, 8), dtype),
                                          z((2, 5, 3), dtype)).shape == (2, 0, 3)
    out = F.scaled_dot_product_attention(np.ones((2, 4, 8), dtype), z((2, 0, 8), dtype),
                                         z((2, 0, 3), dtype))  # no key: every row fully masked
    assert out.shape == (2, 4, 3) and out.dtype == dtype and np.all(out == 0)
    assert F.scaled_dot_product_attention(np.ones((2, 4, 8), dtype), np.ones((2, 5, 8), dtype),
                                          z((2, 5, 0), dtype)).shape == (2, 4, 0)


def test_results_do_not_depend_on_thread_count(rng):
    q, k, v = qkv(rng, (3, 4), 300, 300, 32, 32, np.float32)
    mask = rng.random((3, 1, 1, 300)) < 0.9
    outs = at_thread_counts(lambda: F.scaled_dot_product_attention(q, k, v, mask, is_causal=True), (1, 2, 3))
    # every output row is computed by one thread in a fixed order: bitwise identical
    assert all(np.array_equal(outs[0], o) for o in outs[1:])


# --- tile boundaries, non-contiguous masks, NaN across key blocks, near-tied huge logits ---------

# The compiled kernel uses query blocks of min(128, Tq) rows and key blocks of
# max(512, 65536 // query block) keys, capped at Tk: 512 for Tq >= 128, 655 for Tq = 100,
# 65536 for Tq = 1 (so Tk = 65537 needs two key blocks).
# A last query block of one row goes through BLAS gemv instead of gemm.
TILE_EDGES = [(127, 511), (128, 512), (129, 513), (257, 1025), (100, 655), (100, 656), (1, 65537)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("Tq, Tk", TILE_EDGES, ids=str)
def test_tile_edges(backend, rng, dtype, causal, masked, Tq, Tk):
    q, k, v = qkv(rng, (), Tq, Tk, 4, 3, dtype)
    mask = make_mask(rng, "bool", (Tk,)) if masked else None
    check(q, k, v, mask, causal)


@pytest.mark.parametrize("dtype", DTYPES)
def test_causal_with_mask_when_tq_exceeds_tk(backend, rng, dtype):
    # Tq = 20 > Tk = 12: query i sees keys j <= i - 8; the mask additionally hides key 0, so
    # query 8 (which could only see key 0) is fully masked as well as queries 0..7.
    q, k, v = qkv(rng, (2,), 20, 12, 8, 5, dtype)
    mask = np.ones((20, 12), bool)
    mask[:, 0] = False
    out = check(q, k, v, mask, causal=True)
    assert np.all(out[:, :9] == 0) and np.all(out[:, 9:] != 0)
    # the same with an additive mask, and with Tq < Tk (queries are the last Tq positions)
    check(q, k, v, np.where(mask, 0.5, -np.inf), causal=True)
    q, k, v = qkv(rng, (2,), 12, 20, 8, 5, dtype)
    check(q, k, v, make_mask(rng, "additive", (2, 12, 20)), causal=True)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["bool", "additive"])
def test_non_contiguous_masks(backend, rng, dtype, kind):
    B, H, Tq, Tk = 2, 3, 21, 600  # Tk past one key block
    q, k, v = qkv(rng, (B, H), Tq, Tk, 8, 8, dtype)
    full = make_mask(rng, kind, (B, H, 2 * Tq, 3 * Tk))[:, :, ::2, ::-3]  # steps, negative stride
    per_key = make_mask(rng, kind, (2 * B, 1, 1, Tk))[::2]                # (B, 1, 1, Tk) strided
    per_query = make_mask(rng, kind, (1, Tq))[:, ::-1].T                  # (Tq, 1) transposed
    pair = make_mask(rng, kind, (Tk, Tq)).T                               # (Tq, Tk) transposed
    for mask in (full, per_key, per_query, pair):
        assert not mask.flags.c_contiguous
        check(q, k, v, mask, causal=False)
        check(q, k, v, mask, causal=True)
    # a broadcast view with zero strides
    check(q, k, v, np.broadcast_to(make_mask(rng, kind, (Tk,)), (B, H, Tq, Tk)))


@pytest.mark.parametrize("dtype", DTYPES)
def test_mask_dtype_is_cast_to_the_scores(backend, rng, dtype):
    q, k, v = qkv(rng, (2,), 9, 14, 8, 8, dtype)
    for mdtype in (np.float16, np.float32, np.float64):
        mask = make_mask(rng, "additive", (9, 14)).astype(mdtype)
        out = check(q, k, v, mask)
        assert out.dtype == dtype


@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_in_a_later_key_block(backend, rng, dtype):
    # NaN in key 600 (second key block of the compiled kernel), causal, Tq = Tk = 700: queries
    # 600.. see it and give NaN; queries before it never see it (the causal -inf replaces the
    # NaN score) and must be finite and correct.
    q, k, v = qkv(rng, (), 700, 700, 8, 4, dtype)
    k[600, 3] = np.nan
    out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert np.all(np.isnan(out[600:]))
    oracle.assert_close(out[:600], oracle.attention(q, k, v, causal=True)[:600], dtype,
                        scale=np.abs(v).max())
    # a NaN query row in the second query block: that row only
    q, k, v = qkv(rng, (), 300, 700, 8, 4, dtype)
    q[200, 0] = np.nan
    out = F.scaled_dot_product_attention(q, k, v)
    rows = np.arange(300) != 200
    assert np.all(np.isnan(out[200]))
    oracle.assert_close(out[rows], oracle.attention(q, k, v)[rows], dtype, scale=np.abs(v).max())


@pytest.mark.parametrize("dtype", DTYPES)
def test_masked_out_nan_key_does_not_leak(backend, rng, dtype):
    # a NaN score that a bool mask excludes is replaced by -inf: no NaN anywhere
    q, k, v = qkv(rng, (2,), 10, 30, 8, 8, dtype)
    k[:, 7] = np.nan
    mask = np.ones(30, bool)
    mask[7] = False
    out = check(q, k, v, mask)
    assert np.all(np.isfinite(out))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_huge_logits_near_ties(backend, rng, dtype, causal):
    # Scores of size 1e4 whose differences are O(1), so the weights spread over many keys. With
    # D = 1 and scale = 1 every score is a single product, rounded once to `dtype` by any
    # implementation; the oracle takes these same rounded scores, and the rest (s - max: exact,
    # exp, sums) must then hold the usual tolerance. (In float32 the unrounded float64 scores
    # differ by up to 5e-4, half an ulp at 1e4, which moves the result by ~1e-4 relative: no
    # float32 kernel, PyTorch's included, can match those.)
    T = 70
    q = (1e4 * (1 + 1e-4 * rng.standard_normal((2, T, 1)))).astype(dtype)
    k = (1 + 1e-4 * rng.standard_normal((2, T, 1))).astype(dtype)
    v = rng.standard_normal((2, T, 8)).astype(dtype)
    s = np.einsum("bid,bjd->bij", q.astype(np.float64), k.astype(np.float64))
    assert np.abs(s).min() > 9e3 and np.ptp(s, axis=-1).mean() > 2  # huge, and not one-key rows
    s = s.astype(dtype).astype(np.float64)
    visible = np.tril(np.ones((T, T), bool)) if causal else None
    want = np.einsum("bij,bjd->bid", oracle.softmax(s, visible), v.astype(np.float64))
    got = F.scaled_dot_product_attention(q, k, v, scale=1.0, is_causal=causal)
    oracle.assert_close(got, want, dtype, scale=np.abs(v).max())


@pytest.mark.parametrize("dtype", DTYPES)
def test_decode_with_padding(backend, rng, dtype):
    # one new query per sequence against a cache of 1000 keys, each sequence with its own length
    q, k, v = qkv(rng, (3, 2), 1, 1000, 64, 64, dtype)
    lengths = np.array([1, 512, 1000])
    mask = np.arange(1000) < lengths[:, None, None, None]
    check(q, k, v, mask, causal=True)  # Tq = 1: causal lets the query see every key


@pytest.mark.parametrize("dtype", DTYPES)
def test_inputs_are_not_modified_and_result_is_new(backend, rng, dtype):
    q, k, v = qkv(rng, (2,), 40, 40, 8, 8, dtype)
    mask = make_mask(rng, "additive", (40, 40))
    copies = [a.copy() for a in (q, k, v, mask)]
    out = F.scaled_dot_product_attention(q, k, v, mask, is_causal=True)
    for a, c in zip((q, k, v, mask), copies):
        assert np.array_equal(a, c, equal_nan=True)
        assert not np.shares_memory(out, a)
