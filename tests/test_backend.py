import subprocess
import sys
import threading

import numpy as np
import pytest

import fastattn
from fastattn import functional as F
from threads import at_thread_counts

HAS_COMPILED = "compiled" in fastattn.available_backends()


def run_python(code, **env):
    """Run `code` in a fresh interpreter, importing the same fastattn as this process (not the
    source tree of the working directory); returns (stdout, stderr)."""
    import os
    import tempfile

    full_env = {k: v for k, v in os.environ.items() if k != "FASTATTN_BACKEND"}
    full_env.update(env, PYTHONPATH=os.path.dirname(os.path.dirname(fastattn.__file__)))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=full_env, cwd=tempfile.gettempdir(), timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip(), result.stderr


@pytest.mark.skipif(not HAS_COMPILED, reason="compiled backend not built")
def test_default_is_compiled():
    out, _ = run_python("import fastattn; print(fastattn.get_backend(), fastattn.available_backends())")
    assert out == "compiled ('compiled', 'reference')"


def test_use_backend_restores_on_exit_and_on_exception():
    start = fastattn.get_backend()
    with fastattn.use_backend("reference") as name:
        assert name == "reference" and fastattn.get_backend() == "reference"
    assert fastattn.get_backend() == start
    with pytest.raises(KeyError):
        with fastattn.use_backend("reference"):
            raise KeyError("boom")
    assert fastattn.get_backend() == start


@pytest.mark.skipif(not HAS_COMPILED, reason="compiled backend not built")
def test_nested_and_set_backend_inside_a_block():
    fastattn.set_backend("compiled")
    try:
        with fastattn.use_backend("reference"):
            with fastattn.use_backend("compiled"):
                assert fastattn.get_backend() == "compiled"
            assert fastattn.get_backend() == "reference"
            fastattn.set_backend("compiled")  # replaces the block's choice too
            assert fastattn.get_backend() == "compiled"
            fastattn.set_backend("reference")
            assert fastattn.get_backend() == "reference"
        assert fastattn.get_backend() == "reference"  # the process-wide choice made inside stays
    finally:
        fastattn.set_backend("compiled")


def test_use_backend_is_per_thread():
    default = fastattn.get_backend()
    seen = []
    with fastattn.use_backend("reference"):
        t = threading.Thread(target=lambda: seen.append(fastattn.get_backend()))
        t.start()
        t.join()
        assert fastattn.get_backend() == "reference"
    assert seen == [default]  # a new thread starts from the process-wide choice


def test_bad_backend_names():
    with pytest.raises(ValueError, match=r"unknown backend 'cuda'; the backends are \('compiled', 'reference'\)"):
        fastattn.set_backend("cuda")
    with pytest.raises(TypeError, match="backend name must be a str, got int"):
        fastattn.set_backend(3)
    with pytest.raises(ValueError, match="unknown backend"):
        with fastattn.use_backend("numpy"):
            pass


def test_env_var_picks_the_backend():
    out, _ = run_python("import fastattn; print(fastattn.get_backend())", FASTATTN_BACKEND="reference")
    assert out == "reference"
    out, err = run_python("import fastattn; print(fastattn.get_backend())", FASTATTN_BACKEND="gpu")
    assert "FASTATTN_BACKEND='gpu' is not a backend" in err
    assert out == ("compiled" if HAS_COMPILED else "reference")


def test_missing_extension_falls_back_to_reference():
    code = """
import sys, warnings
sys.modules["fastattn._compiled"] = None  # makes `import fastattn._compiled` fail
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import fastattn
    import fastattn.functional as F
print(len([w for w in caught if "falling back to the reference" in str(w.message)]))
print(fastattn.get_backend(), fastattn.available_backends())
import numpy as np
print(F.softmax(np.array([0.0, 0.0])).tolist())
try:
    fastattn.set_backend("compiled")
except RuntimeError as exc:
    print("RuntimeError:", exc)
"""
    out, _ = run_python(code)
    lines = out.splitlines()
    assert lines[0] == "1"  # warned once
    assert lines[1] == "reference ('reference',)"
    assert lines[2] == "[0.5, 0.5]"
    assert lines[3].startswith("RuntimeError: the compiled backend is not available: importing it failed with")


def test_num_threads():
    before = fastattn.get_num_threads()
    assert isinstance(before, int) and before >= 1
    try:
        fastattn.set_num_threads(1)
        assert fastattn.get_num_threads() == 1
        fastattn.set_num_threads(np.int64(2))
        assert fastattn.get_num_threads() == 2
        with pytest.raises(ValueError, match="n must be >= 1, got 0"):
            fastattn.set_num_threads(0)
        with pytest.raises(TypeError, match="n must be an integer, got float"):
            fastattn.set_num_threads(2.0)
    finally:
        fastattn.set_num_threads(before)


@pytest.mark.skipif(not HAS_COMPILED, reason="compiled backend not built")
def test_thread_count_does_not_change_results(rng):
    x = rng.standard_normal((300, 257)).astype(np.float32)
    w = rng.standard_normal(257).astype(np.float32)
    mask = rng.random((300, 257)) < 0.9
    results = at_thread_counts(lambda: (F.masked_softmax(x, mask, 0.5), F.layer_norm(x, w), F.gelu(x)))
    for a, b in zip(*results):
        assert np.array_equal(a, b)


def test_small_calls_run_on_fewer_threads():
    from fastattn._threads import ADAPTIVE, MIN_WORK_PER_THREAD, threads_for
    before = fastattn.get_num_threads()
    try:
        fastattn.set_num_threads(4, adaptive=False)  # (not limited by how busy the machine is)
        assert threads_for(0) == threads_for(MIN_WORK_PER_THREAD - 1) == 1
        assert threads_for(2 * MIN_WORK_PER_THREAD) == 2
        assert threads_for(100 * MIN_WORK_PER_THREAD) == 4
    finally:
        fastattn.set_num_threads(before, adaptive=ADAPTIVE)


def test_public_surface():
    assert set(fastattn.__all__) == {"functional", "nn", "available_backends", "get_backend", "set_backend",
                                     "use_backend", "build_info", "get_num_threads", "set_num_threads", "GPT", "GPTConfig",
                                     "AdamW", "clip_grad_norm_", "CharTokenizer", "PretrainedTokenizer",
                                     "load_tokenizer", "Checkpoint",
                                     "save_checkpoint", "load_checkpoint", "TrainConfig", "train",
                                     "BertConfig", "Encoder", "SentenceEncoder", "embed", "Seq2SeqTransformer",
                                     "datasets", "Llama", "LlamaConfig", "from_pretrained"}
    for name in ("scaled_dot_product_attention", "masked_softmax", "softmax", "layer_norm", "gelu"):
        assert callable(getattr(F, name))


def test_dir_of_functional_is_its_kernels():
    """dir(F) lists the kernels (every public function defined in functional.py), not the modules
    it imports (np, numbers, _backend)."""
    import inspect
    defined = {n for n, f in vars(F).items()  # (not inspect.getmembers: it goes through dir)
               if inspect.isfunction(f) and f.__module__ == F.__name__ and not n.startswith("_")}
    assert set(dir(F)) == set(F.__all__) == defined
    assert {"relu", "relu_backward", "linear"} <= defined and not {"np", "numbers", "_backend"} & set(dir(F))


@pytest.mark.parametrize("name", fastattn.available_backends())
def test_functions_dispatch_to_the_chosen_backend(monkeypatch, name):
    """Each function of F runs on the module of the active backend (recorded by wrapping it)."""
    from fastattn import _backend

    module = _backend._BACKENDS[name]
    calls = []
    for fn in ("scaled_dot_product_attention", "masked_softmax", "layer_norm", "gelu"):
        original = getattr(module, fn)
        monkeypatch.setattr(module, fn, lambda *a, _f=original, _n=fn, **k: calls.append(_n) or _f(*a, **k))
    x = np.ones((2, 3, 4))
    other = [b for b in fastattn.available_backends() if b != name]
    with fastattn.use_backend(name):
        F.scaled_dot_product_attention(x, x, x)
        F.softmax(x)
        F.masked_softmax(x, x > 0)
        F.layer_norm(x)
        F.gelu(x)
    assert calls == ["scaled_dot_product_attention", "masked_softmax", "masked_softmax", "layer_norm", "gelu"]
    if other:
        calls.clear()
        with fastattn.use_backend(other[0]):
            F.gelu(x)
        assert calls == []


def test_use_backend_in_a_thread_does_not_leak():
    default = fastattn.get_backend()
    inside, ready, release = [], threading.Event(), threading.Event()

    def worker():
        with fastattn.use_backend("reference"):
            inside.append(fastattn.get_backend())
            ready.set()
            release.wait(10)

    t = threading.Thread(target=worker)
    t.start()
    try:
        assert ready.wait(10)
        assert fastattn.get_backend() == default  # the other thread's block is not ours
    finally:
        release.set()
        t.join()
    assert inside == ["reference"] and fastattn.get_backend() == default


@pytest.mark.skipif(not HAS_COMPILED, reason="compiled backend not built")
def test_set_backend_is_process_wide():
    seen = []
    try:
        t = threading.Thread(target=lambda: fastattn.set_backend("reference"))
        t.start()
        t.join()
        assert fastattn.get_backend() == "reference"  # set in another thread, seen here
        t = threading.Thread(target=lambda: seen.append(fastattn.get_backend()))
        t.start()
        t.join()
        assert seen == ["reference"]
    finally:
        fastattn.set_backend("compiled")
    assert fastattn.get_backend() == "compiled"


def test_use_backend_is_per_asyncio_task():
    import asyncio

    default = fastattn.get_backend()

    async def task(name, started, other_started):
        with fastattn.use_backend(name):
            started.set()
            await other_started.wait()  # both blocks are open now
            return fastattn.get_backend()

    async def main():
        a_started, b_started = asyncio.Event(), asyncio.Event()
        return await asyncio.gather(task("reference", a_started, b_started),
                                    task(default, b_started, a_started))

    assert asyncio.run(main()) == ["reference", default]
    assert fastattn.get_backend() == default


def test_failed_use_backend_leaves_the_choice_alone():
    start = fastattn.get_backend()
    for bad, exc in (("nonexistent", ValueError), (None, TypeError), (3, TypeError)):
        with pytest.raises(exc):
            with fastattn.use_backend(bad):
                pass
        with pytest.raises(exc):
            fastattn.set_backend(bad)
        assert fastattn.get_backend() == start


def test_env_var_explicit_compiled_and_invalid_warning_category():
    out, _ = run_python("import fastattn; print(fastattn.get_backend())", FASTATTN_BACKEND="compiled")
    assert out == ("compiled" if HAS_COMPILED else "reference")
    code = """
import warnings
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import fastattn
print([w.category.__name__ for w in caught], fastattn.get_backend())
"""
    out, _ = run_python(code, FASTATTN_BACKEND="nonexistent")
    assert out == "['RuntimeWarning'] " + ("compiled" if HAS_COMPILED else "reference")


def test_missing_extension_warning_and_errors():
    code = """
import sys, warnings
sys.modules["fastattn._compiled"] = None
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import fastattn
    import fastattn.functional
    import fastattn._backend
print([w.category.__name__ for w in caught])
for attempt in (lambda: fastattn.set_backend("compiled"), lambda: fastattn.use_backend("compiled").__enter__()):
    try:
        attempt()
    except RuntimeError as exc:
        print("RuntimeError", "ImportError" in str(exc) or "ModuleNotFoundError" in str(exc))
print(fastattn.get_backend())
"""
    for env in ({}, {"FASTATTN_BACKEND": "compiled"}):
        out, _ = run_python(code, **env)
        assert out.splitlines() == ["['RuntimeWarning']", "RuntimeError True", "RuntimeError True", "reference"]


def test_num_threads_validation_keeps_the_setting():
    before = fastattn.get_num_threads()
    for bad, exc in ((None, TypeError), ("2", TypeError), (1.5, TypeError), (0, ValueError),
                     (-1, ValueError), (np.int32(0), ValueError)):
        with pytest.raises(exc, match="set_num_threads: n must be"):
            fastattn.set_num_threads(bad)
        assert fastattn.get_num_threads() == before


@pytest.mark.skipif(not HAS_COMPILED, reason="compiled backend not built")
def test_num_threads_identical_results_all_kernels_float64(rng):
    # as test_thread_count_does_not_change_results, float64, attention with an additive mask
    q, k, v = (rng.standard_normal((2, 3, 200, 16)) for _ in range(3))
    mask = np.where(rng.random((200, 200)) < 0.2, -np.inf, 0.0)
    x = rng.standard_normal((100, 300))
    results = at_thread_counts(lambda: (F.scaled_dot_product_attention(q, k, v, mask, is_causal=True),
                                        F.masked_softmax(x, x > 0, 2.0), F.layer_norm(x), F.gelu(x, "tanh")))
    for a, b in zip(*results):
        assert np.array_equal(a, b, equal_nan=True)


@pytest.mark.skipif(not HAS_COMPILED, reason="compiled backend not built")
def test_backends_have_the_same_functions_and_signatures():
    import inspect

    from fastattn import _compiled, reference

    kernels = set(reference.__all__)
    assert kernels == set(_compiled.__all__) - {"openmp_enabled"}
    for name in sorted(kernels):
        ref, comp = getattr(reference, name), getattr(_compiled, name)
        assert inspect.signature(ref) == inspect.signature(comp), name
        assert callable(getattr(F, name if name != "masked_softmax" else "softmax"))
