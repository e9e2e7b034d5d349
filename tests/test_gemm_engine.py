"""The engines of the float32 linear products (fastattn/_compiled/_gemm_engine.py): oneDNN's matmul
in row panels (and its sgemm for dW), or the BLAS. Each engine against the float64 oracle on the
panel shapes (one row, two panels, a short last panel), with results that do not depend on the
thread count or on a plan being new or cached; the engine choice and its report."""
import importlib
import os
import subprocess
import sys

import numpy as np
import pytest

import fastattn
import oracle
from fastattn import functional as F
from threads import at_thread_counts

pytestmark = pytest.mark.skipif("compiled" not in fastattn.available_backends(),
                                reason="compiled backend not built")


# rows: 1 (gemv), 2 and 3 (two panels), 63 to 129 around 2 x 64, 200 (3 full panels + 8 rows), 255 and
# 257 around 2 x 128 (the panels where oneDNN has AMX)
@pytest.mark.parametrize("M", [1, 2, 3, 63, 64, 127, 128, 129, 200, 255, 257])
@pytest.mark.parametrize("K, N", [(5, 3), (128, 384), (96, 7)])
def test_linear_on_each_engine_matches_the_oracle(gemm_engine, rng, M, K, N):
    x, g = (rng.standard_normal(s).astype(np.float32) for s in ((M, K), (M, N)))
    w, b = rng.standard_normal((N, K)).astype(np.float32), rng.standard_normal(N).astype(np.float32)
    x64, w64, g64 = (a.astype(np.float64) for a in (x, w, g))
    oracle.assert_close(F.linear(x, w, b), x64 @ w64.T + b, np.float32, scale=np.sqrt(K), rtol_factor=10)
    oracle.assert_close(F.linear(x, w), x64 @ w64.T, np.float32, scale=np.sqrt(K), rtol_factor=10)
    out, pre = F.linear_gelu(x, w, b, "tanh", return_pre=True)
    oracle.assert_close(pre, x64 @ w64.T + b, np.float32, scale=np.sqrt(K), rtol_factor=10)
    oracle.assert_close(out, oracle.gelu(pre.astype(np.float64), "tanh"), np.float32, scale=1, rtol_factor=10)
    dx, dw, db = F.linear_backward(g, x, w)
    oracle.assert_close(dx, g64 @ w64, np.float32, scale=np.sqrt(N), rtol_factor=10)
    oracle.assert_close(dw, g64.T @ x64, np.float32, scale=np.sqrt(M), rtol_factor=10)
    oracle.assert_close(db, g64.sum(axis=0), np.float32, scale=np.sqrt(M), rtol_factor=10)


@pytest.mark.parametrize("M, K, N", [(2, 64, 64), (65, 128, 384), (200, 96, 300), (768, 128, 128)])
def test_each_engine_gives_the_same_bits_at_every_thread_count(gemm_engine, rng, M, K, N):
    x, g = (rng.standard_normal(s).astype(np.float32) for s in ((M, K), (M, N)))
    w = rng.standard_normal((N, K)).astype(np.float32)
    out = at_thread_counts(lambda: (F.linear(x, w), *F.linear_backward(g, x, w)), (1, 2, 3))
    for other in out[1:]:
        assert all(np.array_equal(a, b) for a, b in zip(out[0], other))


def test_a_cached_plan_gives_what_a_new_one_gave(gemm_engine, rng):
    x = rng.standard_normal((131, 48)).astype(np.float32)
    w = rng.standard_normal((40, 48)).astype(np.float32)
    first = F.linear(x, w)
    assert np.array_equal(F.linear(x, w), first)
    assert np.array_equal(F.linear(x.copy(), w.copy()), first)


def test_non_contiguous_and_batched_inputs(gemm_engine, rng):
    x = rng.standard_normal((3, 70, 40)).astype(np.float32).transpose(1, 0, 2)[:, ::2]  # (70, 2, 40) view
    w = rng.standard_normal((40, 33)).astype(np.float32).T                               # (33, 40) view
    want = x.astype(np.float64) @ w.T.astype(np.float64)
    oracle.assert_close(F.linear(x, w), want, np.float32, scale=np.sqrt(40), rtol_factor=10)


def _info_in_a_new_process(tmp_path, **env):
    # the same fastattn as this process: not the source tree (no extension) that `python -c` run in
    # the clone's root would import first
    code = "import json, fastattn; print(json.dumps(fastattn.build_info()))"
    env = {**os.environ, **env, "PYTHONPATH": os.path.dirname(os.path.dirname(fastattn.__file__))}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    import json

    return json.loads(done.stdout.splitlines()[-1]), done.stderr


def test_fastattn_gemm_openblas_keeps_the_blas(tmp_path):
    info, _ = _info_in_a_new_process(tmp_path, FASTATTN_GEMM="openblas")
    assert info["gemm"] == "openblas" and info["compiled"]


def test_an_unknown_engine_is_a_warning_and_the_default(tmp_path):
    info, stderr = _info_in_a_new_process(tmp_path, FASTATTN_GEMM="mkl")
    assert "FASTATTN_GEMM='mkl' is not a GEMM engine ('onednn', 'openblas'); using the default" in stderr
    assert info["gemm"] == ("onednn" if info["onednn"] else "openblas")


def test_build_info_says_what_runs():
    info = fastattn.build_info()
    assert info["compiled"] and info["compiled_error"] is None and info["blas"]
    if info["onednn"]:
        assert info["onednn"].startswith("3.") and info["onednn_unavailable"] is None
        assert info["onednn_isa"] in ("sse41", "avx", "avx2", "avx2_vnni", "avx2_vnni_2", "avx512_core",
                                      "avx512_core_vnni", "avx512_core_bf16", "avx512_core_fp16",
                                      "avx512_core_amx", "avx512_core_amx_fp16")
    else:
        assert info["gemm"] == "openblas" and info["onednn_unavailable"]
    # int8: oneDNN's kernels only on the oneDNN engine where they have VNNI (without it they
    # saturate), else fastattn's AVX2 ones
    from fastattn._compiled import _gemm_engine, linear_int8

    vnni = info["gemm"] == "onednn" and _gemm_engine.onednn_has_vnni()
    assert info["int8"] == ("onednn" if vnni else "avx2" if linear_int8.SUPPORTED else None)


def test_an_engine_that_is_not_there_is_a_value_error():
    linear = importlib.import_module("fastattn._compiled.linear")
    with pytest.raises(ValueError, match="unknown GEMM engine 'mkl'"):
        linear._use_engine("mkl")


# attention's tile products (src_cython/attention.pyx) run on the engine too: tiles of one row
# (decode), a short last tile, causal and full, against the float64 oracle and its gradients
@pytest.mark.parametrize("Tq, Tk, causal", [(1, 37, False), (5, 5, True), (130, 130, True), (67, 600, False)])
def test_attention_tiles_on_each_engine_match_the_oracle(gemm_engine, rng, Tq, Tk, causal):
    q = rng.standard_normal((2, 3, Tq, 16)).astype(np.float32)
    k, v = (rng.standard_normal((2, 3, Tk, 16)).astype(np.float32) for _ in range(2))
    g = rng.standard_normal((2, 3, Tq, 16)).astype(np.float32)
    want = oracle.attention(*(a.astype(np.float64) for a in (q, k, v)), causal=causal)
    out, lse = F.scaled_dot_product_attention(q, k, v, is_causal=causal, return_lse=True)
    oracle.assert_close(out, want, np.float32, scale=4, rtol_factor=10)
    # the gradients against central differences of the float64 oracle along one random direction
    dq, dk, dv = F.scaled_dot_product_attention_backward(g, q, k, v, out, lse, is_causal=causal)
    g64 = g.astype(np.float64)
    for grad, i in ((dq, 0), (dk, 1), (dv, 2)):
        d = rng.standard_normal(grad.shape)
        args = [a.astype(np.float64) for a in (q, k, v)]
        plus, minus = list(args), list(args)
        plus[i], minus[i] = args[i] + 1e-6 * d, args[i] - 1e-6 * d
        numeric = ((oracle.attention(*plus, causal=causal) - oracle.attention(*minus, causal=causal)) * g64).sum() / 2e-6
        np.testing.assert_allclose((grad * d).sum(), numeric, rtol=1e-3, atol=1e-3)


def test_attention_on_each_engine_gives_the_same_bits_at_every_thread_count(gemm_engine, rng):
    q, k, v, g = (rng.standard_normal((2, 4, 300, 32)).astype(np.float32) for _ in range(4))
    def run():
        out, lse = F.scaled_dot_product_attention(q, k, v, is_causal=True, return_lse=True)
        return (out, *F.scaled_dot_product_attention_backward(g, q, k, v, out, lse, is_causal=True))
    out = at_thread_counts(run, (1, 2, 3))
    for other in out[1:]:
        assert all(np.array_equal(a, b) for a, b in zip(out[0], other))
