"""docs/export.md's examples run as written, as the README's do (tests/test_readme.py: the same
requirement markers, plus `onnx`: the onnx and onnxruntime packages, skipping without them)."""
import os

import pytest

from test_readme import _provide, _skip_unless, blocks

DOC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "export.md")
PYTHON = blocks("python", DOC)


@pytest.mark.parametrize("line, needs, code", PYTHON, ids=[f"docs/export.md:{line}" for line, _, _ in PYTHON])
def test_python_block_runs(line, needs, code, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for need in needs:
        if need == "onnx":
            _skip_unless("onnx", "onnxruntime", install="pip install '.[onnx]' onnxruntime")
        else:
            _provide(need)
    exec(compile(code, f"docs/export.md:{line}", "exec"), {"__name__": "__docs__"})
    out = capsys.readouterr().out
    assert out, "every example prints what it shows"
    assert "False" not in out  # (the ONNX example prints whether it agrees)


def test_the_page_has_its_examples():
    assert len(PYTHON) >= 7
