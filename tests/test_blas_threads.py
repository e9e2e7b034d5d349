"""The compiled attention keeps BLAS serial inside its own threads, and must leave the BLAS
thread setting of the calling thread as it found it (the user's own scipy/numpy BLAS calls
afterwards must not silently run on one thread)."""
import ctypes

import numpy as np
import pytest

import fastattn
from fastattn import functional as F

pytestmark = pytest.mark.skipif("compiled" not in fastattn.available_backends(),
                                reason="compiled backend not built")


def _blas_local_threads():
    from fastattn._compiled._blas_threads import local_setter_address

    address = local_setter_address()
    if not address:
        pytest.skip("this BLAS has no thread-local thread setting")
    setter = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)(address)
    value = setter(0)  # read it by setting it ...
    setter(value)      # ... and putting it back
    return value


@pytest.mark.parametrize("threads", [1, 2])
def test_attention_restores_blas_threads(threads):
    before = _blas_local_threads()
    q = np.random.default_rng(0).standard_normal((4, 300, 32)).astype(np.float32)
    previous = fastattn.get_num_threads()
    fastattn.set_num_threads(threads)
    try:
        with fastattn.use_backend("compiled"):
            for _ in range(3):
                F.scaled_dot_product_attention(q, q, q, is_causal=True)
    finally:
        fastattn.set_num_threads(previous)
    assert _blas_local_threads() == before


def test_concurrent_calls_restore_blas_threads():
    """Python threads calling the compiled attention at the same time (the GIL is released inside)
    must still leave the setting as they found it, and each get the right result."""
    import threading

    before = _blas_local_threads()
    rng = np.random.default_rng(1)
    qs = [rng.standard_normal((2, 200, 16)).astype(np.float32) for _ in range(4)]
    with fastattn.use_backend("reference"):
        expected = [F.scaled_dot_product_attention(q, q, q, is_causal=True) for q in qs]
    results, errors = {}, []

    def work(i):
        try:
            with fastattn.use_backend("compiled"):
                for _ in range(10):
                    results[i] = F.scaled_dot_product_attention(qs[i], qs[i], qs[i], is_causal=True)
        except Exception as exc:  # reported below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i in range(4):
        np.testing.assert_allclose(results[i], expected[i], rtol=1e-5, atol=1e-5)
    assert _blas_local_threads() == before
