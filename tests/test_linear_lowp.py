"""int8 and bfloat16 weights (fastattn/_lowp.py): the linear products on both backends against a
float64 oracle, within bounds derived from the quantization steps, and the compiled kernels
against the reference ones (int8: bit for bit; bfloat16: within float32 summation's bound)."""
import numpy as np
import pytest

import fastattn
from fastattn import _lowp
from fastattn import functional as F
from threads import at_thread_counts

U = 2.0 ** -24  # float32's unit roundoff

SHAPES = [(1, 1, 1), (1, 768, 300), (7, 13, 9), (3, 5, 130), (130, 77, 300), (64, 384, 1536), (200, 33, 65)]


def _needs(compute_type, backend):
    try:
        _lowp.check_compute_type(compute_type, backend)
    except ValueError as exc:
        pytest.skip(str(exc))


def _case(rng, M, K, N, kind):
    x = rng.standard_normal((M, K)).astype(np.float32)
    w = (rng.standard_normal((N, K)) * 0.05).astype(np.float32)
    b = rng.standard_normal(N).astype(np.float32)
    if kind == "zeros":  # a zero input row, an all-zero weight row (its scale is 0)
        x[0] = 0
        w[N // 2] = 0
    elif kind == "outliers":  # one huge value in a row drowns the others (they quantize to 0)
        x[M // 2, K // 2] = 1e6
        w[0, K - 1] = -3e4
    elif kind == "tiny":  # a row far below the quantization range of float32's 127 / amax
        x[-1] *= 1e-38
    return x, w, b


def _int8_bound(x, w, b, q):
    """|y - x w^T - b| for the int8 arithmetic: with sx = max|x_m| / 127 and sw the weight scales,
    x = sx qx + ex, |ex| <= sx (1/2 + 2^-15) (the rounding to the grid, and float32's in 127 / amax
    and x * that), w = sw qw + ew, |ew| <= sw / 2, so the product is off by at most
    max|ex| |w|_1 + max|ew| |x^|_1, x^ = sx qx; then 4 float32 roundings of |y| (int32 -> float32,
    the two scale products, the bias). A row with max|x| < 2^-100 quantizes to 0: |ex| <= max|x|."""
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    amax = np.abs(x64).max(axis=1)
    ex = np.where(amax < 2.0 ** -100, amax, amax / 127 * (0.5 + 2.0 ** -15))
    xhat_l1 = np.abs(x64).sum(axis=1) + x.shape[1] * ex
    sw = q.scale.astype(np.float64)
    quant = ex[:, None] * np.abs(w64).sum(axis=1)[None, :] + xhat_l1[:, None] * (sw / 2)[None, :]
    return quant + 4 * U * (np.abs(x64) @ np.abs(w64).T + quant + np.abs(b)) + 1e-30


def _bf16_bound(x, w, b):
    """bfloat16 keeps 8 significant bits: |x - bf16(x)| <= 2^-8 |x|, so a product is off by at most
    (2^-7 + 2^-16) |x| |w|; summed in float32 (K + 1 terms with the bias): gamma_{K+1} = (K + 1) u
    / (1 - (K + 1) u) of the sum of magnitudes, then the rounding of the result."""
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    mag = np.abs(x64) @ np.abs(w64).T
    K = x.shape[1]
    gamma = (K + 1) * U / (1 - (K + 1) * U)
    return (2.0 ** -7 + 2.0 ** -16) * mag + gamma * (mag * (1 + 2.0 ** -6) + np.abs(b)) + U * (mag + np.abs(b))


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("kind", ["plain", "zeros", "outliers", "tiny"])
@pytest.mark.parametrize("compute_type", ["int8", "bfloat16"])
def test_matches_oracle(backend, rng, shape, kind, compute_type):
    _needs(compute_type, backend)
    x, w, b = _case(rng, *shape, kind)
    q = _lowp.quantize(w, compute_type)
    got = F.linear(x, q, b)
    assert got.dtype == np.float32 and got.shape == (shape[0], shape[2])
    want = x.astype(np.float64) @ w.astype(np.float64).T + b
    bound = _int8_bound(x, w, b, q) if compute_type == "int8" else _bf16_bound(x, w, b)
    err = np.abs(got - want)
    assert np.all(err <= bound), f"worst error / bound {np.max(err / bound):.3g}"
    # the bound is not vacuous: the quantization error is at least a tenth of it somewhere
    if kind == "plain" and shape[1] > 30:
        assert np.max(err / bound) > 0.01


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("kind", ["plain", "zeros", "outliers", "tiny"])
def test_compiled_int8_is_the_reference_bit_for_bit(rng, shape, kind):
    _needs("int8", "compiled")
    x, w, b = _case(rng, *shape, kind)
    q = _lowp.quantize_int8(w)
    with fastattn.use_backend("reference"):
        want = F.linear(x, q, b)
        want_nobias = F.linear(x, q)
    for got, got_nobias in at_thread_counts(lambda: (F.linear(x, q, b), F.linear(x, q))):
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(got_nobias, want_nobias)


@pytest.mark.parametrize("shape", SHAPES + [(1, 768, 50257)], ids=str)
def test_compiled_bf16_against_the_reference(rng, shape):
    _needs("bfloat16", "compiled")
    x, w, b = _case(rng, *shape, "zeros")
    q = _lowp.to_bfloat16(w)
    with fastattn.use_backend("reference"):
        want = F.linear(x, q, b)
    xb, wb = (_lowp.bfloat16_values(_lowp.bfloat16_bits(a)).astype(np.float64) for a in (x, w))
    K = x.shape[1]
    gamma = (K + 1) * U / (1 - (K + 1) * U)
    bound = gamma * (np.abs(xb) @ np.abs(wb).T + np.abs(b)) + U * np.abs(want)
    first, second = at_thread_counts(lambda: F.linear(x, q, b))
    np.testing.assert_array_equal(first, second)  # (the grid depends on the shapes only)
    assert np.all(np.abs(first - want) <= bound)


def test_nonfinite_input_rows_give_nan(backend, rng):
    _needs("int8", backend)
    x, w, b = _case(rng, 4, 16, 8, "plain")
    x[1, 3] = np.inf
    x[2, 0] = np.nan
    y = F.linear(x, _lowp.quantize_int8(w), b)
    assert np.isnan(y[1]).all() and np.isnan(y[2]).all() and np.isfinite(y[[0, 3]]).all()


def test_linear_gelu_and_batch_dims(backend, rng):
    _needs("int8", backend)
    x = rng.standard_normal((2, 3, 24)).astype(np.float32)
    w = rng.standard_normal((10, 24)).astype(np.float32)
    b = rng.standard_normal(10).astype(np.float32)
    q = _lowp.quantize_int8(w)
    y = F.linear(x, q, b)
    np.testing.assert_array_equal(y.reshape(6, 10), F.linear(x.reshape(6, 24), q, b))
    act, pre = F.linear_gelu(x, q, b, return_pre=True)
    np.testing.assert_array_equal(pre, y)
    np.testing.assert_array_equal(act, F.gelu(y))


def test_quantize_int8_rows():
    w = np.array([[0.0, 0.0, 0.0], [1.0, -0.5, 0.25], [-254.0, 127.0, 1.0]], np.float32)
    q = _lowp.quantize_int8(w)
    assert q.scale[0] == 0 and not q.q[0].any()  # an all-zero row: scale 0, no NaN
    np.testing.assert_array_equal(q.q[1], [127, -64, 32])  # (-63.5 rounds to even -64, 31.75 to 32)
    np.testing.assert_array_equal(q.q[2], [-127, 64, 0])  # (63.5 -> 64, 0.5 -> 0)
    assert np.all(np.abs(q.dequantize() - w) <= q.scale[:, None] / 2)
    with pytest.raises(ValueError, match="NaN or inf"):
        _lowp.quantize_int8(np.array([[np.nan]], np.float32))


def test_bfloat16_rounding():
    x = np.array([1.0, 1 + 2 ** -8, 1 + 3 * 2 ** -8, 1 + 2 ** -8 + 2 ** -20, -0.0, np.inf, 3e38], np.float32)
    got = _lowp.bfloat16_values(_lowp.bfloat16_bits(x))
    # ties to even: 1 + 2^-8 -> 1, 1 + 3 * 2^-8 -> 1 + 2^-6; above the tie rounds up
    np.testing.assert_array_equal(got[:6], np.array([1, 1, 1 + 2 ** -6, 1 + 2 ** -7, -0.0, np.inf], np.float32))
    assert np.isnan(_lowp.bfloat16_values(_lowp.bfloat16_bits(np.array([np.nan], np.float32))))[0]
    assert abs(got[6] - 3e38) <= 3e38 * 2 ** -8


def test_bad_arguments(backend, rng):
    _needs("int8", backend)
    q = _lowp.quantize_int8(rng.standard_normal((4, 6)).astype(np.float32))
    with pytest.raises(TypeError, match="float32"):
        F.linear(np.ones((2, 6)), q)
    with pytest.raises(ValueError, match=r"\(4, 6\)"):
        F.linear(np.ones((2, 5), np.float32), q)
    with pytest.raises(ValueError, match="bias"):
        F.linear(np.ones((2, 6), np.float32), q, np.ones(3, np.float32))
    with pytest.raises(TypeError, match="inference only"):
        F.linear_backward(np.ones((2, 4), np.float32), np.ones((2, 6), np.float32), q)
    assert F.linear(np.ones((0, 6), np.float32), q).shape == (0, 4)
    with pytest.raises(ValueError, match="compute_type must be one of"):
        _lowp.check_compute_type("int4")


def _int8_engine():
    import importlib

    return importlib.import_module("fastattn._compiled.linear").int8_engine()


def test_cpu_and_engine_errors(monkeypatch):
    pytest.importorskip("fastattn._compiled.linear_lowp")
    from fastattn._compiled import _gemm_engine, linear_int8

    assert _lowp.check_compute_type("int8", "reference") == "int8"  # (NumPy runs anywhere)
    if _gemm_engine._lib is None:
        pytest.skip(f"oneDNN is not loaded: {_gemm_engine.unavailable_reason()}")
    monkeypatch.setattr(_gemm_engine, "ENGINE", "onednn")  # (also under FASTATTN_GEMM=openblas)
    monkeypatch.setattr(_gemm_engine._lib, "dnnl_get_effective_cpu_isa", lambda: 0x27)  # avx512_core
    # oneDNN without VNNI: int8 on fastattn's AVX2 kernels, where the CPU has AVX2
    assert _int8_engine() == ("avx2" if linear_int8.SUPPORTED else None)
    monkeypatch.setattr(linear_int8, "SUPPORTED", False)
    assert _int8_engine() is None
    with pytest.raises(ValueError, match="AVX2 .*or AVX512-VNNI / AVX-VNNI"):
        _lowp.check_compute_type("int8", "compiled")
    with pytest.raises(ValueError, match="AVX512-BF16 or AMX-BF16"):
        _lowp.check_compute_type("bfloat16", "compiled")
    assert _lowp.check_compute_type("auto", "compiled") == "float32"
    monkeypatch.setattr(_gemm_engine, "ENGINE", "openblas")
    with pytest.raises(ValueError, match="oneDNN engine"):
        _lowp.check_compute_type("bfloat16", "compiled")


# -- the packed weights (src_cython/linear_lowp.pyx's _Packed) -------------------------------------

PACKED_SHAPES = [(1, 1), (13, 7), (33, 65), (64, 64), (97, 130), (200, 3), (769, 66)]  # (N, K)


def _packed_weight(rng, N, K, compute_type):
    w = (rng.standard_normal((N, K)) * 0.05).astype(np.float32)
    w[N // 2] = 0  # (an all-zero row: scale 0)
    return w, _lowp.quantize(w, compute_type)


def _plain(q):
    return q.q.copy() if q.compute_type == "int8" else q.bits.copy()


@pytest.mark.parametrize("N, K", PACKED_SHAPES, ids=str)
@pytest.mark.parametrize("compute_type", ["int8", "bfloat16"])
def test_one_packed_weight_serves_every_row_count(rng, N, K, compute_type):
    """One weight, packed on its first product, then products of 0 to 260 rows (a decode row, the
    panels and the last ones) at 1 and 2 threads: int8 the reference bit for bit, bfloat16 within
    float32 summation's bound of it; the weight is packed once and keeps no plain copy."""
    _needs(compute_type, "compiled")
    w, q = _packed_weight(rng, N, K, compute_type)
    plain = _plain(q)
    xs = [rng.standard_normal((M, K)).astype(np.float32) for M in (1, 2, 63, 64, 65, 128, 129, 260)]
    b = rng.standard_normal(N).astype(np.float32)
    with fastattn.use_backend("reference"):
        want = [F.linear(x, q, b) for x in xs]
    first = at_thread_counts(lambda: F.linear(xs[0], q, b))
    if compute_type == "int8" and _int8_engine() == "avx2":  # (its kernels read the plain rows)
        for got in at_thread_counts(lambda: [F.linear(x, q, b) for x in xs]):
            for g, r in zip(got, want):
                np.testing.assert_array_equal(g, r)
        assert q._packed is None and q._resident_nbytes() == N * K + 4 * N
        np.testing.assert_array_equal(_plain(q), plain)
        return
    packed = q._packed
    assert packed is not None and q._plain is None
    runs = at_thread_counts(lambda: [F.linear(x, q, b) for x in xs]) + [[f] for f in first]
    for got in runs:
        for x, g, r in zip(xs, got, want):
            if compute_type == "int8":
                np.testing.assert_array_equal(g, r)
            else:
                xb, wb = (_lowp.bfloat16_values(_lowp.bfloat16_bits(a)).astype(np.float64) for a in (x, w))
                gamma = (K + 1) * U / (1 - (K + 1) * U)
                assert np.all(np.abs(g - r) <= gamma * (np.abs(xb) @ np.abs(wb).T + np.abs(b)) + U * np.abs(r))
    assert q._packed is packed
    assert F.linear(np.ones((0, K), np.float32), q, b).shape == (0, N)  # (zero rows: the bias)
    # the plain values, lookups and copies read the packed form
    np.testing.assert_array_equal(_plain(q), plain)
    ids = np.array([N - 1, 0, N // 2, N - 1])
    with fastattn.use_backend("reference"):
        fresh = _lowp.quantize(w, compute_type)
    np.testing.assert_array_equal(q[ids], fresh[ids])
    np.testing.assert_array_equal(q[N - 1], fresh[N - 1])
    np.testing.assert_array_equal(_plain(q.copy()), plain)
    # what it holds: the packed values (K and N padded to whole blocks), for int8 the scales and
    # the row sums: no plain copy
    extra = 4 * N if compute_type == "int8" else 0
    assert q._resident_nbytes() == packed.data.nbytes + 2 * extra and packed.nbytes == packed.data.nbytes + extra
    assert packed.data.size >= N * K


def test_packed_layout_is_plain_row_blocks(rng):
    """The packed data holds each value once (a permutation of the plain values, zero padding
    elsewhere), and a row is found at its place in the layout oneDNN reports."""
    _needs("int8", "compiled")
    if _int8_engine() != "onednn":
        pytest.skip("int8 runs on fastattn's AVX2 kernels here (oneDNN has no VNNI): nothing is packed")
    from fastattn._compiled import linear_lowp

    q = _lowp.quantize_int8(rng.standard_normal((130, 70)).astype(np.float32))
    p = linear_lowp.pack(q.q)
    (K_padded, N_padded), _, _, _, size = p.layout
    assert K_padded >= 70 and N_padded >= 130 and size == p.data.nbytes == K_padded * N_padded
    assert np.count_nonzero(p.data) == np.count_nonzero(q.q)
    np.testing.assert_array_equal(np.sort(p.data[p.data != 0]), np.sort(q.q[q.q != 0]))
    np.testing.assert_array_equal(p.take(np.arange(130)), q.q)
    np.testing.assert_array_equal(p.comp, 128 * q.q.astype(np.int64).sum(axis=1))


@pytest.mark.parametrize("compute_type", ["int8", "bfloat16"])
def test_row_views_of_a_stacked_weight(backend, rng, compute_type):
    """_rows views (BERT's q, k, v of one fused weight; MultiheadAttention's row blocks): the same
    object for the same rows, products and lookups those of a weight of those rows alone, before
    and after the stacked weight itself is packed; int8: the stacked product's columns too."""
    _needs(compute_type, backend)
    parts = [(rng.standard_normal((n, 40)) * 0.1).astype(np.float32) for n in (64, 37, 100)]
    x = rng.standard_normal((5, 40)).astype(np.float32)
    alone = [_lowp.quantize(p, compute_type) for p in parts]
    want = [F.linear(x, q) for q in alone]
    bounds = [(0, 64), (64, 101), (101, 201)]
    for parent_first in (False, True):
        stacked = _lowp.stack_rows([_lowp.quantize(p, compute_type) for p in parts])
        if parent_first:
            y = F.linear(x, stacked)
            if compute_type == "int8":  # (exact integer sums: any blocking gives the same)
                np.testing.assert_array_equal(y, np.concatenate(want, axis=1))
        for (a, z), q, w in zip(bounds, alone, want):
            view = stacked._rows(a, z)
            assert view is stacked._rows(a, z) and view.shape == (z - a, 40)
            np.testing.assert_array_equal(F.linear(x, view), w)
            np.testing.assert_array_equal(view[[0, z - a - 1]], q[[0, z - a - 1]])
    assert stacked._rows(0, 201) is stacked and stacked._rows(101, None) is stacked._rows(101, 201)


@pytest.mark.parametrize("K", [1, 3, 63, 64, 65, 768, 3072 + 17])
def test_few_rows_on_avx512_vnni_at_the_extremes_of_their_byte_products(rng, K):
    """Up to 4 rows run on int8_vnni.h's kernel (the packed weight read as it is), not oneDNN's: the
    u8 activations at 1 and 255 (x at -+127) against weights of -128 and 127 (a weight read from a
    file may hold -128), the last column block partial, K padded to the layout's 64: the same output
    as oneDNN's matmul and the reference, bit for bit, at 1 and 2 threads."""
    _needs("int8", "compiled")
    from fastattn._compiled import linear_lowp

    if not linear_lowp.VNNI:
        pytest.skip("this CPU has no AVX512-VNNI: few rows run on oneDNN")
    N = 130
    q = np.where(rng.random((N, K)) < 0.5, -128, 127).astype(np.int8)
    q[1] = 0
    sw = rng.random(N).astype(np.float32)
    b = rng.standard_normal(N).astype(np.float32)
    p = linear_lowp.pack(q)
    assert p.vnni_rows
    for M in (1, 2, 3, 4, 5):
        x = np.where(rng.random((M, K)) < 0.5, 1, -1).astype(np.float32)
        x[:, ::5] *= rng.random((M, len(range(0, K, 5)))) * 0.9  # (and bytes in between)
        for bias in (None, b):
            old = linear_lowp._set_vnni_rows(0)
            try:
                on_onednn = linear_lowp.linear_int8(x, p, sw, bias)
            finally:
                linear_lowp._set_vnni_rows(old)
            with fastattn.use_backend("reference"):
                want = F.linear(x, _lowp.Int8Weight(q, sw), bias)
            for got in at_thread_counts(lambda: linear_lowp.linear_int8(x, p, sw, bias)):
                np.testing.assert_array_equal(got, want)
            np.testing.assert_array_equal(on_onednn, want)


@pytest.mark.parametrize("n", [0, 1, 15, 16, 17, 40])
def test_compiled_bfloat16_rounding_is_the_reference_bit_for_bit(rng, n):
    """fa_bf16_row (16, 8 and 1 lanes at a time) against the reference's rounding on ties,
    subnormals, NaN payloads, infinities and the largest floats."""
    _needs("bfloat16", "compiled")
    from fastattn._compiled import linear_lowp

    special = np.array([1 + 2 ** -8, 1 + 3 * 2 ** -8, -(1 + 2 ** -8), 1e-40, -3e-39, 2 ** -149, 0.0, -0.0,
                        np.inf, -np.inf, 3.4028235e38, -3.4028235e38], np.float32)
    bits = rng.integers(0, 2 ** 32, n, dtype=np.uint64).astype(np.uint32)
    x = bits.view(np.float32).copy()  # (random bit patterns: NaNs of many payloads among them)
    x[: min(n, special.size)] = special[: min(n, special.size)]
    x[special.size:special.size + 3] = np.array([0x7fc00001, 0xff800001, 0x7f800001], np.uint32).view(np.float32)[
        : max(0, min(3, n - special.size))]
    np.testing.assert_array_equal(linear_lowp._rounded_to_bf16(x), _lowp.bfloat16_bits(x))
    for start in (1, 3):  # (every alignment of the 16-lane loop)
        np.testing.assert_array_equal(linear_lowp._rounded_to_bf16(x[start:].copy()), _lowp.bfloat16_bits(x[start:]))
