"""Runs a computation at several compiled-backend thread counts, for the tests that check the
results do not depend on the count."""
import pytest

import fastattn


def at_thread_counts(fn, counts=(1, 2)):
    """[fn() with fastattn.set_num_threads(n), for n in counts], on the compiled backend; the
    thread count is restored afterwards. Skips the test when the compiled backend is missing."""
    if "compiled" not in fastattn.available_backends():
        pytest.skip("compiled backend not built")
    before = fastattn.get_num_threads()
    results = []
    try:
        with fastattn.use_backend("compiled"):
            for n in counts:
                fastattn.set_num_threads(n)
                results.append(fn())
    finally:
        fastattn.set_num_threads(before)
    return results
