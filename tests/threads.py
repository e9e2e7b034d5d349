"""Runs a computation at several compiled-backend thread counts, for the tests that check the
results do not depend on the count."""
import pytest

import fastattn
from fastattn import _threads


def at_thread_counts(fn, counts=(1, 2)):
    """[fn() with fastattn.set_num_threads(n), for n in counts], on the compiled backend; the
    thread count is restored afterwards. Kernel calls too small to be worth threads normally run
    on one (fastattn._threads.threads_for): here every call uses them all, so that the test's
    small arrays exercise the threaded code. Skips the test when the compiled backend is missing."""
    if "compiled" not in fastattn.available_backends():
        pytest.skip("compiled backend not built")
    before, min_work, adaptive = fastattn.get_num_threads(), _threads.MIN_WORK_PER_THREAD, _threads.ADAPTIVE
    results = []
    _threads.MIN_WORK_PER_THREAD = 1
    try:
        with fastattn.use_backend("compiled"):
            for n in counts:
                fastattn.set_num_threads(n, adaptive=False)  # n threads, however busy the machine
                results.append(fn())
    finally:
        fastattn.set_num_threads(before, adaptive=adaptive)
        _threads.MIN_WORK_PER_THREAD = min_work
    return results
