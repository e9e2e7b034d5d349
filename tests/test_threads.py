"""The adaptive thread count: fewer threads while other processes keep cores busy."""
import multiprocessing
import os
import time

import pytest

import fastattn
from fastattn import _threads


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
