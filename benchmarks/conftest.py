"""pytest-benchmark suites: `pytest benchmarks/` (they are not part of the test suite).

Each case of fastattn.bench.CASES runs on the reference and compiled backends and on torch when it
is installed, at the same thread count. The reference backend only runs the small (--quick) cases:
at the full sizes one round takes seconds (`python -m fastattn.bench` times those once).
"""
import pytest

import fastattn
from _runner import torch


@pytest.fixture(scope="session", autouse=True)
def same_threads():
    if torch is not None:
        torch.set_num_threads(fastattn.get_num_threads())


@pytest.fixture(params=["reference", "compiled", "torch"])
def runner(request):
    return request.param
