"""`import fastattn` from a source tree without the compiled extension says where it imported from
and what to do (`python -m fastattn.bench` or a Python script run in the clone's root does that)."""
import os
import shutil
import subprocess
import sys

import pytest

import fastattn

PACKAGE = os.path.dirname(os.path.abspath(fastattn.__file__))
PROBE = """
import fastattn
print(fastattn.get_backend())
try:
    fastattn.set_backend("compiled")
except RuntimeError as e:
    print(e)
"""


def run_in(directory):
    """PROBE run by the python in `directory`, which comes first on sys.path."""
    env = {k: v for k, v in os.environ.items() if k not in ("FASTATTN_BACKEND", "PYTHONPATH")}
    env["PYTHONWARNINGS"] = "default"
    return subprocess.run([sys.executable, "-c", PROBE], cwd=directory, env=env, capture_output=True, text=True)


@pytest.fixture
def checkout(tmp_path):
    """A copy of the package without its compiled modules, as a clone holds it before a build."""
    shutil.copytree(PACKAGE, tmp_path / "fastattn", ignore=shutil.ignore_patterns("*.so", "*.pyd", "__pycache__"))
    return tmp_path


def test_a_source_tree_says_where_and_what_to_do(checkout):
    (checkout / "setup.py").write_text("")
    (checkout / "src_cython").mkdir()
    done = run_in(checkout)
    assert done.returncode == 0, done.stderr
    where = os.path.join(str(checkout), "fastattn")
    warning = [line for line in done.stderr.splitlines() if "RuntimeWarning" in line]
    assert len(warning) == 1, done.stderr
    assert f"imported from the source tree {where}, which holds no compiled extension" in warning[0]
    assert "Run from another directory" in warning[0] and f"cd {checkout} && pip install -e ." in warning[0]
    backend, error = done.stdout.splitlines()
    assert backend == "reference"
    assert f"source tree {where}" in error and "pip install -e ." in error  # set_backend("compiled") too


def test_elsewhere_the_advice_is_to_reinstall(checkout):
    done = run_in(checkout)  # no setup.py beside the package: an installed copy that lost its extension
    assert done.returncode == 0, done.stderr
    assert "falling back to the reference (NumPy) backend. Reinstall fastattn" in done.stderr
    assert "source tree" not in done.stderr
