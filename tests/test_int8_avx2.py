"""fastattn's own int8 kernels on AVX2 (src_cython/linear_int8.pyx, int8_avx2.h), the int8 engine
where oneDNN has no VNNI: against the reference arithmetic (fastattn/reference/linear_lowp.py) bit
for bit, on every tile edge (2 rows x 4 columns, K in steps of 16; a single row's steps of 64 and 32 bytes), on the
values whose int16 pair sums saturate oneDNN's kernels without VNNI, and at 1 and 2 threads;
integer sums against int64."""
import numpy as np
import pytest

from fastattn.reference import linear_lowp as reference
from threads import at_thread_counts

linear_int8 = pytest.importorskip("fastattn._compiled.linear_int8")
if not linear_int8.SUPPORTED:
    pytest.skip("this CPU has no AVX2: fastattn's int8 kernels do not run here", allow_module_level=True)


def _weight(rng, N, K):
    q = rng.integers(-127, 128, (N, K)).astype(np.int8)
    scale = (rng.random(N) * 0.02).astype(np.float32)
    if N > 2:
        q[1], scale[1] = 0, 0  # (an all-zero row: scale 0)
    return q, scale


@pytest.mark.parametrize("M", [1, 2, 3, 4, 5, 7, 97, 193])
@pytest.mark.parametrize("K, N", [(1, 1), (15, 3), (16, 4), (17, 5), (33, 65), (100, 130), (768, 7)])
def test_the_reference_bit_for_bit(rng, M, K, N):
    q, scale = _weight(rng, N, K)
    x = rng.standard_normal((M, K)).astype(np.float32)
    b = rng.standard_normal(N).astype(np.float32)
    for bias in (None, b):
        want = reference.linear_int8(x, q, scale, bias)
        for got in at_thread_counts(lambda: linear_int8.linear_int8(x, q, scale, bias)):
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("M, K, N", [(1, 3072, 5), (4, 1000, 9), (6, 64, 8)])
def test_sums_that_saturate_int16_pairs_are_exact(rng, M, K, N):
    """Every activation quantized to +-127 with the sign of the weight it meets (and weights at
    +-127): each pair of products is 2 * 127 * 127, and the sums reach 127^2 K. The weight scales are
    1: the output is the integer sum times the row's scale, the sum compared with int64's."""
    q = np.where(rng.random((N, K)) < 0.5, -127, 127).astype(np.int8)
    x = np.repeat(np.sign(q[:1].astype(np.float32)), M, axis=0)
    x[1:] *= -1  # (rows after the first: every product -127^2)
    got = linear_int8.linear_int8(x, q, np.ones(N, np.float32))
    acc = np.rint(x * 127).astype(np.int64) @ q.astype(np.int64).T
    assert acc[0, 0] == 127 * 127 * K
    # (each row's scale is max|x| / 127 = 1 / 127)
    np.testing.assert_array_equal(got, acc.astype(np.float32) * (np.float32(1) / np.float32(127)))
    np.testing.assert_array_equal(got, reference.linear_int8(x, q, np.ones(N, np.float32)))


@pytest.mark.parametrize("K", [1, 31, 32, 33, 63, 64, 65, 95, 96, 97, 768, 3072 + 17])
def test_a_single_row_at_the_extremes_of_its_byte_products(rng, K):
    """The one-row loop multiplies |w| (as u8) by x * sign(w): with x at +-127 and weights of -128
    and 127 (a weight read from a file may hold -128; the quantizer never writes it), each int16
    pair of products reaches -2 * 128 * 127 and 2 * 127 * 127, one short of saturating. Every tail
    of its 64- and 32-byte steps, and more rows than the 4 KiB it prefetches ahead."""
    N = 70
    q = np.where(rng.random((N, K)) < 0.5, -128, 127).astype(np.int8)
    q[1] = 0
    x = np.where(q[:1] < 0, 1, -1).astype(np.float32)  # (quantized to -+127: every product -128 * 127 or -127^2)
    x[0, :: 7] *= -1
    b = rng.standard_normal(N).astype(np.float32)
    acc = np.rint(x * 127).astype(np.int64) @ q.astype(np.int64).T
    for bias in (None, b):
        want = acc.astype(np.float32) * (np.float32(1) / np.float32(127))
        if bias is not None:
            want = want + bias
        for got in at_thread_counts(lambda: linear_int8.linear_int8(x, q, np.ones(N, np.float32), bias)):
            np.testing.assert_array_equal(got, want)
            np.testing.assert_array_equal(got, reference.linear_int8(x, q, np.ones(N, np.float32), bias))


def test_rows_of_nan_inf_zeros_and_tiny_values(rng):
    q, scale = _weight(rng, 6, 40)
    x = rng.standard_normal((5, 40)).astype(np.float32)
    x[0, 3], x[1, 7], x[2] = np.nan, -np.inf, 0
    x[3] *= 1e-38
    got = linear_int8.linear_int8(x, q, scale)
    np.testing.assert_array_equal(got, reference.linear_int8(x, q, scale))
    assert np.isnan(got[:2]).all() and (got[2:4] == 0).all() and np.isfinite(got[4]).all()


def test_batch_dims_non_contiguous_input_and_empty_sizes(rng):
    q, scale = _weight(rng, 9, 24)
    x = rng.standard_normal((2, 3, 48)).astype(np.float32)[..., ::2]  # (strided rows)
    got = linear_int8.linear_int8(x, q, scale)
    assert got.shape == (2, 3, 9)
    np.testing.assert_array_equal(got, reference.linear_int8(x, q, scale))
    assert linear_int8.linear_int8(np.ones((0, 24), np.float32), q, scale).shape == (0, 9)
    b = np.arange(3, dtype=np.float32)
    got = linear_int8.linear_int8(np.ones((2, 0), np.float32), np.zeros((3, 0), np.int8), np.ones(3, np.float32), b)
    np.testing.assert_array_equal(got, np.stack([b, b]))


def test_bad_shapes_and_sizes_are_value_errors():
    q, s = np.zeros((4, 8), np.int8), np.ones(4, np.float32)
    with pytest.raises(ValueError, match=r"x \(2, 5\), int8 weight \(4, 8\)"):
        linear_int8._forward(np.ones((2, 5), np.float32), q, s, None, np.empty((2, 4), np.float32), 1)
    with pytest.raises(ValueError, match=r"scales \(3,\)"):
        linear_int8._forward(np.ones((2, 8), np.float32), q, s[:3], None, np.empty((2, 4), np.float32), 1)
    K = linear_int8.MAX_K + 1  # (|sum| <= 127^2 K must fit int32)
    with pytest.raises(ValueError, match="in_features <= %d" % linear_int8.MAX_K):
        linear_int8._forward(np.ones((1, K), np.float32), np.zeros((1, K), np.int8), s[:1], None,
                             np.empty((1, 1), np.float32), 1)
