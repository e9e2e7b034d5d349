import os
import re
import shutil
import subprocess
import sys

import pytest

from fastattn.cli import main

TINY = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "16", "--batch-size", "4",
        "--eval-iters", "2", "--eval-interval", "5", "--warmup-iters", "2", "--no-progress"]


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_train_then_sample(corpus_file, tmp_path, capsys):
    out_dir = tmp_path / "out"
    code, out, err = run(capsys, "train", "--data", corpus_file, "--out", out_dir, "--max-iters", 10, *TINY)
    assert code == 0, err
    assert re.fullmatch(r"final: step 10 train_loss \d+\.\d{4} val_loss \d+\.\d{4}", out.splitlines()[-1])
    assert out.count("step ") == 4  # evaluations at 0, 5, 10 and the final line
    assert sorted(os.listdir(out_dir)) == ["best.npz", "ckpt.npz", "metrics.jsonl"]

    code, out, err = run(capsys, "train", "--data", corpus_file, "--out", out_dir, "--max-iters", 15,
                         "--resume", "--no-progress")
    assert code == 0, err
    assert out.splitlines()[-1].startswith("final: step 15 ")

    code, out, err = run(capsys, "sample", "--checkpoint", out_dir, "--prompt", "the king",
                         "--max-new-tokens", 30, "--temperature", 0)
    assert code == 0, err
    text = out[:-1]  # print's newline
    assert text.startswith("the king") and len(text) == len("the king") + 30
    code, again, _ = run(capsys, "sample", "--checkpoint", out_dir / "ckpt.npz", "--prompt", "the king",
                         "--max-new-tokens", 30, "--temperature", 0)
    assert code == 0 and again.startswith("the king")
    code, out, _ = run(capsys, "sample", "--checkpoint", out_dir, "--prompt", "so", "--max-new-tokens", 20,
                       "--num-samples", 2, "--seed", 3, "--top-p", 0.9)
    assert code == 0 and out.count("---------------") == 1
    code, again, _ = run(capsys, "sample", "--checkpoint", out_dir, "--prompt", "so", "--max-new-tokens", 20,
                         "--num-samples", 2, "--seed", 3, "--top-p", 0.9, "--no-cache")
    assert code == 0 and again == out  # the cache changes the time, not the text


@pytest.mark.parametrize("setup, argv, message", [
    (None, ["train", "--data", "{tmp}/missing.txt", "--out", "{tmp}/o"], "cannot read"),
    ("empty", ["train", "--data", "{tmp}/empty.txt", "--out", "{tmp}/o"], "is empty"),
    ("short", ["train", "--data", "{tmp}/short.txt", "--out", "{tmp}/o", "--block-size", "64"],
     "block_size 64 does not fit the data"),
    ("trained", ["train", "--data", "{corpus}", "--out", "{tmp}/o", "--resume", "--n-layer", "3"],
     "from another config: n_layer is 1 there, 3 was asked"),
    ("trained", ["train", "--data", "{corpus}", "--out", "{tmp}/o"], "already holds a checkpoint"),
    (None, ["sample", "--checkpoint", "{tmp}"], "holds no checkpoint"),
    ("trained", ["sample", "--checkpoint", "{tmp}/o", "--prompt", "€"], "'€' at position 0 is not in the vocabulary"),
    ("trained", ["sample", "--checkpoint", "{tmp}/o", "--temperature", "-1"], "temperature"),
    ("trained", ["sample", "--checkpoint", "{tmp}/o", "--top-k", "-1"], "--top-k must be >= 0"),
    ("trained", ["sample", "--checkpoint", "{tmp}/o", "--top-p", "0"], "top_p must be"),
])
def test_errors_exit_non_zero_with_one_line(corpus_file, tmp_path, capsys, setup, argv, message):
    tmp = tmp_path / "w"
    tmp.mkdir()
    (tmp / "empty.txt").write_text("")
    (tmp / "short.txt").write_text("short text\n" * 20)
    if setup == "trained":
        assert main(["train", "--data", str(corpus_file), "--out", str(tmp / "o"), "--max-iters", "1", *TINY]) == 0
        capsys.readouterr()
    before = sorted(os.listdir(tmp))
    code, out, err = run(capsys, *[a.format(tmp=tmp, corpus=corpus_file) for a in argv])
    assert code == 1
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert sorted(os.listdir(tmp)) == before  # nothing half-written


def test_bad_command_line_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--data", "x"])  # --out missing
    assert e.value.code == 2


def test_module_and_console_script_run():
    done = subprocess.run([sys.executable, "-m", "fastattn", "train", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "--lr-decay-iters" in done.stdout and "--no-bias" in done.stdout
    script = shutil.which("fastattn")
    if script is None:
        pytest.skip("the fastattn console script is not installed (a source-tree run)")
    done = subprocess.run([script, "sample", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "--max-new-tokens" in done.stdout
