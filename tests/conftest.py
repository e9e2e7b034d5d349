import os

import numpy as np
import pytest

import fastattn


def pytest_configure(config):
    # `python -m pytest` from the repository root imports the source tree, which has no compiled
    # extension: the suite would quietly test the reference backend alone. Refuse, unless asked.
    if "compiled" not in fastattn.available_backends() and not os.environ.get("FASTATTN_TEST_REFERENCE_ONLY"):
        from fastattn._backend import _compiled_error

        raise pytest.UsageError(
            f"fastattn imported from {os.path.dirname(fastattn.__file__)} has no compiled backend "
            f"({_compiled_error}). Install it (pip install '.[test]') and run `pytest` from the "
            "repository root, or set FASTATTN_TEST_REFERENCE_ONLY=1 to test the reference backend alone."
        )


@pytest.fixture(params=fastattn.available_backends())
def backend(request):
    """Runs the test once per backend, inside use_backend(name)."""
    with fastattn.use_backend(request.param):
        yield request.param


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
