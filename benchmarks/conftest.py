"""pytest-benchmark suites: every kernel on the reference and compiled backends, and on PyTorch.

    pytest benchmarks/ --benchmark-only                  # time them (a couple of minutes)
    pytest benchmarks/ -q --benchmark-disable            # run each once: do they work?
    pytest benchmarks/ --benchmark-only --benchmark-group-by=group --benchmark-columns=median,iqr,rounds

Results are grouped by kernel and shape (benchmark.group), so each group compares the backends.
fastattn and torch run at the same thread count: fastattn.get_num_threads() (OMP_NUM_THREADS,
else the usable cores). The torch cases skip when PyTorch is not installed.
"""
import numpy as np
import pytest

import fastattn

try:
    import torch
except ImportError:
    torch = None

BACKENDS = [
    pytest.param("reference"),
    pytest.param("compiled", marks=pytest.mark.skipif(
        "compiled" not in fastattn.available_backends(), reason="the compiled backend is not built")),
    pytest.param("torch", marks=pytest.mark.skipif(torch is None, reason="PyTorch is not installed")),
]


@pytest.fixture(scope="session", autouse=True)
def same_threads():
    if torch is not None:
        torch.set_num_threads(fastattn.get_num_threads())


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


@pytest.fixture
def measure(benchmark, backend):
    """measure(group, ours, theirs): benchmarks `ours` (a fastattn call) on the backend under test,
    or `theirs` (the torch equivalent) for "torch"; returns the result as a NumPy array."""
    def run(group, ours, theirs):
        benchmark.group = group
        benchmark.extra_info["threads"] = fastattn.get_num_threads()
        if backend == "torch":
            with torch.inference_mode():
                if not benchmark.disabled:
                    theirs()  # warm-up (pytest-benchmark does none by default)
                return benchmark(theirs).numpy()
        with fastattn.use_backend(backend):
            if not benchmark.disabled:
                ours()
            return benchmark(ours)
    return run


@pytest.fixture
def rng():
    return np.random.default_rng(0)
