import os

import numpy as np
import pytest

import fastattn


def pytest_addoption(parser):
    parser.addoption("--fuzz-long", action="store_true",
                     help="run tests/test_fuzz.py's long form (10,000+ cases; as FASTATTN_FUZZ_LONG=1)")


def pytest_configure(config):
    if config.getoption("--fuzz-long"):  # (read by tests/test_fuzz.py when it is imported, after this)
        os.environ["FASTATTN_FUZZ_LONG"] = "1"
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


def _gemm_engines():
    """The engines of the float32 products here: the BLAS, and oneDNN where it is installed."""
    if "compiled" not in fastattn.available_backends():
        return []
    from fastattn._compiled import _gemm_engine

    return ["openblas"] + (["onednn"] if _gemm_engine.onednn_version() else [])


@pytest.fixture(params=_gemm_engines())
def gemm_engine(request):
    """Runs the test once per GEMM engine, the compiled backend's float32 products on it."""
    import importlib

    linear = importlib.import_module("fastattn._compiled.linear")
    attention = importlib.import_module("fastattn._compiled.attention")
    previous = linear._use_engine(request.param), attention._use_tile_engine(request.param)
    try:
        with fastattn.use_backend("compiled"):
            yield request.param
    finally:
        linear._use_engine(previous[0])
        attention._use_tile_engine(previous[1])


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def small_corpus(lines=300, seed=0):
    """A few kilobytes of text with structure to learn (a 13-word vocabulary, sentences of 6 words)."""
    words = "the king queen speaks to his her lord and fair night day so".split()
    rng = np.random.default_rng(seed)
    return "\n".join(" ".join(rng.choice(words, 6)) + "." for _ in range(lines)) + "\n"


@pytest.fixture
def corpus_file(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(small_corpus(), encoding="utf-8")
    return path
