"""docs/llama.md's examples run as written, as the README's do (tests/test_readme.py)."""
import os

import pytest

from test_readme import _provide, blocks

DOC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "llama.md")
PYTHON = blocks("python", DOC)


@pytest.mark.parametrize("line, needs, code", PYTHON, ids=[f"docs/llama.md:{line}" for line, _, _ in PYTHON])
def test_python_block_runs(line, needs, code, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for need in needs:
        _provide(need)
    exec(compile(code, f"docs/llama.md:{line}", "exec"), {"__name__": "__docs__"})
    assert capsys.readouterr().out.startswith("(1, 20, 100)")


def test_the_page_has_its_example():
    assert len(PYTHON) >= 1
