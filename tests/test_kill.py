"""Processes killed (SIGKILL) in the middle of their work, as a crash or the OOM killer does:
`prepare` re-preparing a directory in place leaves the old dataset or a refused one, never a mix;
a Dask job whose every worker dies ends with a one-line error instead of waiting forever. (The
checkpoint ones are in test_untrusted_files.py: a killed run's temporaries are removed.)"""
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from fastattn.io.token_files import read_token_dir

OLD, NEW = "abcd\n" * 200, "wxyz\n" * 200  # the same sizes and vocabulary size, other characters


def _prepare_killed_at(data, out, k):
    """Runs prepare(data, out) in a child that SIGKILLs itself at its k-th os.replace call
    (k beyond the last: not killed); returns the child's exit status."""
    code = textwrap.dedent(f"""
        import os, signal
        from fastattn.training.datasets import prepare
        real, calls = os.replace, [0]
        def replace(src, dst):
            if calls[0] == {k}:
                os.kill(os.getpid(), signal.SIGKILL)
            calls[0] += 1
            real(src, dst)
        os.replace = replace
        prepare({str(data)!r}, {str(out)!r})
    """)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120).returncode


def _text(splits, tok):
    return tok.decode(np.concatenate([splits["train"][:], splits["val"][:]]))


@pytest.mark.parametrize("k", range(4))
def test_prepare_killed_in_place_leaves_the_old_dataset_or_a_refused_one(tmp_path, k):
    (tmp_path / "old.txt").write_text(OLD)
    (tmp_path / "new.txt").write_text(NEW)
    out = tmp_path / "data"
    assert _prepare_killed_at(tmp_path / "old.txt", out, 99) == 0
    status = _prepare_killed_at(tmp_path / "new.txt", out, k)
    try:
        splits, tok = read_token_dir(str(out))
    except (ValueError, FileNotFoundError) as e:
        assert status == -signal.SIGKILL
        assert "did not finish" in str(e) or "truncated" in str(e), e
    else:
        assert _text(splits, tok) in (OLD, NEW)  # whole, never old ids read as new characters or back
        assert _text(splits, tok) == NEW or status == -signal.SIGKILL
    assert _prepare_killed_at(tmp_path / "new.txt", out, 99) == 0  # the next run repairs it
    splits, tok = read_token_dir(str(out))
    assert _text(splits, tok) == NEW
    assert sorted(os.listdir(out)) == ["meta.json", "train.bin", "val.bin"]  # no temporaries left


def test_the_last_kill_point_is_before_meta_json(tmp_path):
    """(So the cases above include the one of the issue: killed just before meta.json is written.)"""
    (tmp_path / "old.txt").write_text(OLD)
    out = tmp_path / "data"
    assert _prepare_killed_at(tmp_path / "old.txt", out, 99) == 0
    assert _prepare_killed_at(tmp_path / "old.txt", out, 3) == 0  # 3 renames: train.bin, val.bin, meta.json
    assert _prepare_killed_at(tmp_path / "old.txt", out, 2) == -signal.SIGKILL
