"""docs/lower-precision.md's examples run as written, as the README's do (tests/test_readme.py: the
same requirement markers, plus `int8`: a CPU and build that run compute_type="int8", skipping
elsewhere)."""
import os

import pytest

from fastattn import _lowp
from test_readme import _provide, blocks

DOC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "lower-precision.md")
PYTHON = blocks("python", DOC)


@pytest.mark.parametrize("line, needs, code", PYTHON, ids=[f"docs/lower-precision.md:{line}" for line, _, _ in PYTHON])
def test_python_block_runs(line, needs, code, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for need in needs:
        if need == "int8":
            try:
                _lowp.check_compute_type("int8")
            except ValueError as exc:
                pytest.skip(str(exc))
        else:
            _provide(need)
    exec(compile(code, f"docs/lower-precision.md:{line}", "exec"), {"__name__": "__docs__"})
    assert capsys.readouterr().out, "every example prints what it shows"


def test_the_page_has_its_examples():
    assert len(PYTHON) >= 2
