"""Shared by the pytest-benchmark suites: the cases of fastattn.bench and how one is run."""
import numpy as np
import pytest

import fastattn
from fastattn.bench import CASES

try:
    import torch
except ImportError:
    torch = None


def cases(prefix):
    return [pytest.param(case, id=f"{case[0]} {case[1]}") for case in CASES if case[0].startswith(prefix)]


def run_case(benchmark, case, runner):
    kernel, shape, setup, with_reference, quick = case
    if runner == "reference" and not (with_reference and quick):
        pytest.skip("the reference takes seconds per round at this size (see python -m fastattn.bench)")
    if runner == "compiled" and "compiled" not in fastattn.available_backends():
        pytest.skip("compiled backend not built")
    ours, theirs = setup(np.random.default_rng(0))
    benchmark.group = f"{kernel} {shape}"
    if runner == "torch":
        if theirs is None:
            pytest.skip("torch is not installed")
        with torch.inference_mode():
            out = benchmark(theirs).numpy()
    else:
        with fastattn.use_backend(runner):
            out = benchmark(ours)
    assert np.all(np.isfinite(out)), f"{runner} gave non-finite values for {kernel} {shape}"
