"""The adaptive thread count: fewer threads while other processes keep cores busy."""
import multiprocessing
import os
import signal
import time

import numpy as np
import pytest

import fastattn
from fastattn import _frozen, _threads
from fastattn import functional as F


@pytest.fixture
def restore_threads():
    before, adaptive, free = fastattn.get_num_threads(), _threads.ADAPTIVE, _threads._free_cores
    yield
    fastattn.set_num_threads(before, adaptive=adaptive)
    _threads._free_cores = free


@pytest.mark.parametrize("free, expected", [(2.0, 2), (1.8, 2), (1.6, 1), (1.0, 1), (0.2, 1), (None, 2)])
def test_threads_for_leaves_the_busy_cores_alone(restore_threads, free, expected):
    fastattn.set_num_threads(2, adaptive=True)
    _threads._free_cores = lambda: free
    assert _threads.threads_for(1 << 30) == expected


def test_fixed_thread_count_ignores_the_load(restore_threads):
    fastattn.set_num_threads(2, adaptive=False)
    _threads._free_cores = lambda: 0.0
    assert _threads.threads_for(1 << 30) == 2
    assert _threads.threads_for(1) == 1  # small work still runs on one thread


def test_set_num_threads_adaptive_must_be_a_bool(restore_threads):
    with pytest.raises(TypeError, match="adaptive must be a bool"):
        fastattn.set_num_threads(2, adaptive=1)


def _spin(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="reads /proc/stat (Linux)")
def test_free_cores_sees_another_process_keep_a_core_busy(monkeypatch):
    monkeypatch.setattr(_threads, "LOAD_INTERVAL", 0.3)
    competitor = multiprocessing.get_context("spawn").Process(target=_spin, args=(3.0,), daemon=True)
    competitor.start()
    try:
        time.sleep(0.5)  # let it start spinning
        free = _threads._FreeCores()
        time.sleep(0.4)
        seen = free()
    finally:
        competitor.terminate()
        competitor.join()
    assert seen is not None and seen <= free.cores - 0.6, f"{seen} of {free.cores} cores free"


def _run_forked(child, timeout=30.0):
    """Fork; the child runs child() (True: success) and exits. Returns the child's exit code,
    or fails the test when the child has not finished within `timeout` seconds (it is killed):
    a hang fails, it does not hang the suite."""
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 3
        try:
            code = 0 if child() else 1
        except BaseException:
            code = 2
        finally:
            os._exit(code)
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail(f"the forked child hung (killed after {timeout} s)")
        time.sleep(0.02)


@pytest.mark.skipif(not hasattr(os, "fork") or "compiled" not in fastattn.available_backends(),
                    reason="needs os.fork and the compiled backend")
def test_a_child_forked_after_threaded_kernels_runs_them(restore_threads):
    # issue 13, item 1: without the fork handler the child's first threaded kernel never returns
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4096, 512)).astype(np.float32)
    q, k, v = (rng.standard_normal((2, 4, 256, 32)) for _ in range(3))
    w = rng.standard_normal((384, 512)).astype(np.float32)
    fastattn.set_num_threads(2, adaptive=False)
    with fastattn.use_backend("compiled"):
        assert _threads.threads_for(20 * x.size) == 2
        # (F.linear and its backward run on oneDNN where it is installed: its matmul and sgemm
        # open no OpenMP region of their own, so the child's first product returns too)
        g = rng.standard_normal((4096, 384)).astype(np.float32)
        frozen, fresh = w.copy(), w.copy()  # (a weight packed here, and one packed in the child)
        _frozen.freeze(frozen)
        want = (F.gelu(x), F.scaled_dot_product_attention(q, k, v, is_causal=True), F.linear(x, w),
                *F.linear_backward(g, x, w), F.linear(x, frozen))

        def child():
            _frozen.freeze(fresh)
            got = (F.gelu(x), F.scaled_dot_product_attention(q, k, v, is_causal=True), F.linear(x, w),
                   *F.linear_backward(g, x, w), F.linear(x, frozen))
            if not np.allclose(F.linear(x, fresh), want[2], rtol=1e-5, atol=1e-4):
                return False
            # one thread from now on, even when asked for more
            with pytest.warns(RuntimeWarning, match="forked"):
                fastattn.set_num_threads(2)
            return (fastattn.get_num_threads() == 1 and _threads.threads_for(1 << 40) == 1
                    and all(np.array_equal(a, b) for a, b in zip(got, want)))

        assert _run_forked(child) == 0
    assert fastattn.get_num_threads() == 2  # the parent keeps its threads


@pytest.mark.skipif(not hasattr(os, "fork") or "compiled" not in fastattn.available_backends(),
                    reason="needs os.fork and the compiled backend")
def test_multiprocessing_fork_workers_after_threaded_kernels(restore_threads):
    fastattn.set_num_threads(2, adaptive=False)
    x = np.linspace(-3, 3, 4096 * 512, dtype=np.float32).reshape(4096, 512)
    with fastattn.use_backend("compiled"):
        want = F.gelu(x)
    with multiprocessing.get_context("fork").Pool(2) as pool:
        results = pool.map_async(_gelu_compiled, [x, x[::-1]])
        got = results.get(timeout=30)  # (multiprocessing.TimeoutError on a hang)
    np.testing.assert_array_equal(got[0], want)
    np.testing.assert_array_equal(got[1], want[::-1])


def _gelu_compiled(x):
    with fastattn.use_backend("compiled"):
        return F.gelu(x)
