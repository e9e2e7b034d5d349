"""Layouts the kernels must read right: rows more than 2**31 elements apart (BLAS takes C int
leading dimensions), and broadcast masks read in place (issue 13, items 2 and 7)."""
import tracemalloc

import numpy as np
import pytest
from numpy.lib.stride_tricks import as_strided

import fastattn
import oracle
from fastattn import functional as F

needs_compiled = pytest.mark.skipif("compiled" not in fastattn.available_backends(),
                                    reason="compiled backend not built")


def huge_stride_rows(path, values, row_stride):
    """values (T, D) as a view whose rows are row_stride elements apart, in a sparse memory map
    (only the pages of the rows are ever written)."""
    T, D = values.shape
    size = (T - 1) * row_stride + D
    buf = np.memmap(path, dtype=values.dtype, mode="w+", shape=(size,))
    view = as_strided(buf, shape=(T, D), strides=(row_stride * values.itemsize, values.itemsize))
    view[...] = values
    return view


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("row_stride", [2 ** 31 + 16, 2 ** 32 + 16], ids=["2^31+16", "2^32+16"])
def test_row_strides_beyond_32_bits(backend, rng, tmp_path, dtype, row_stride):
    # (beyond 2**32 a truncated leading dimension read the wrong rows; between 2**31 and 2**32
    # OpenBLAS rejected it, printed a message and left garbage)
    T, D = 3, 8
    q, k, v, g = (rng.standard_normal((T, D)).astype(dtype) for _ in range(4))
    qs, ks, vs = (huge_stride_rows(tmp_path / name, a, row_stride)
                  for name, a in (("q", q), ("k", k), ("v", v)))
    want = oracle.attention(q, k, v, causal=True)
    out, lse = F.scaled_dot_product_attention(qs, ks, vs, is_causal=True, return_lse=True)
    oracle.assert_close(out, want, dtype, scale=np.abs(v).max())
    # an out= view with such rows is written right too
    out_s = huge_stride_rows(tmp_path / "out", np.zeros((T, D), dtype), row_stride)
    F.scaled_dot_product_attention(q, ks, v, is_causal=True, out=out_s)
    oracle.assert_close(np.array(out_s), want, dtype, scale=np.abs(v).max())
    # the backward reads (and writes) them the same as contiguous copies
    grads = F.scaled_dot_product_attention_backward(g, qs, ks, vs, out, lse, is_causal=True)
    plain = F.scaled_dot_product_attention_backward(g, q, k, v, out, lse, is_causal=True)
    for got, ref in zip(grads, plain):
        np.testing.assert_array_equal(got, ref)


@needs_compiled
def test_the_kernel_refuses_a_row_stride_blas_cannot_take(tmp_path):
    # what the nogil code trusts is checked while it can still raise (if _view4 did not copy)
    from fastattn._compiled import attention

    q = huge_stride_rows(tmp_path / "q", np.ones((3, 4)), 2 ** 31 + 8)
    k = np.ones((3, 4))
    out = np.zeros((1, 1, 3, 4))
    with pytest.raises(ValueError, match="row stride of q, 2147483656 elements, is above 2147483647"):
        attention._forward4(q[None, None], k[None, None], k[None, None], out, 0.5, False,
                            None, None, None, 0, 0, 3, 3, 1)


def peak_bytes(fn):
    """(fn(), the peak of the memory NumPy allocated while it ran)."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        result = fn()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@needs_compiled
@pytest.mark.parametrize("kind", [np.bool_, np.float64, np.float32])
def test_a_broadcast_mask_is_not_expanded(rng, kind):
    B, H, T, D = 8, 8, 256, 8
    q, k, v = (rng.standard_normal((B, H, T, D)) for _ in range(3))
    small = rng.standard_normal((T, T)) > -1 if kind is np.bool_ else rng.standard_normal((T, T)).astype(kind)
    mask = np.broadcast_to(small, (B, H, T, T))  # 4 Mi entries, of T * T distinct ones
    with fastattn.use_backend("compiled"):
        out, peak = peak_bytes(lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask))
        # the output (1 MiB) and per-thread tiles; the expansion would be 4 Mi entries (>= 4 MiB)
        assert peak < out.nbytes + 2 * 2 ** 20, f"{peak / 2 ** 20:.1f} MiB"
        oracle.assert_close(out, oracle.attention(q, k, v, small), np.float64, scale=np.abs(v).max())
        # masked_softmax reads a broadcast mask in place as well
        x = rng.standard_normal((B, H, T, T))
        y, peak = peak_bytes(lambda: F.masked_softmax(x, mask))
        assert peak < y.nbytes + small.nbytes + 2 ** 20, f"{peak / 2 ** 20:.1f} MiB"
        oracle.assert_close(y, oracle.softmax(x, small), np.float64)


@needs_compiled
def test_a_mask_broadcast_along_inner_dims_is_read_in_place(rng):
    # stride-0 key and query dims (a per-(batch, head) scalar mask expanded to the scores)
    q, k, v = (rng.standard_normal((2, 3, 300, 8)) for _ in range(3))
    per_head = rng.standard_normal((2, 3, 1, 1))
    mask = np.broadcast_to(per_head, (2, 3, 300, 300))
    with fastattn.use_backend("compiled"):
        out, peak = peak_bytes(lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask))
        assert peak < out.nbytes + 2 * 2 ** 20
        oracle.assert_close(out, oracle.attention(q, k, v, mask), np.float64, scale=np.abs(v).max())


@needs_compiled
def test_linear_refuses_sizes_blas_cannot_take():
    # linear copies its inputs C-contiguous, so its leading dimensions are its sizes: each must
    # fit the C int BLAS takes (checked before the GIL is released)
    import importlib

    linear = importlib.import_module("fastattn._compiled.linear")  # (the package's `linear` is the function)
    for sizes in ((2 ** 31, 1, 1), (1, 2 ** 31, 1), (1, 1, 2 ** 31)):
        with pytest.raises(ValueError, match="sizes above 2147483647 are not supported"):
            linear._check(*sizes, 1)
    linear._check(2 ** 31 - 1, 1, 1, 1)  # the largest that fits passes
