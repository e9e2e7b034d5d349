import argparse
import json
import os
import pty
import re
import shutil
import subprocess
import sys

import pytest

import fastattn
from fastattn.cli import _parser, main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

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
    assert sorted(os.listdir(out_dir)) == ["best.npz", "ckpt.npz", "config.json", "metrics.jsonl"]

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
    ("trained", ["train", "--data", "{corpus}", "--out", "{tmp}/o"],
     "already holds a checkpoint: pass --resume (resume=True in Python) to continue it"),
    (None, ["sample", "--checkpoint", "{tmp}"], "holds no checkpoint: neither best.npz/ckpt.npz (fastattn train) "
     "nor config.json + model.safetensors (Hugging Face)"),
    (None, ["sample", "--checkpoint", "{tmp}/gpt2"], "gpt2: no such directory; fastattn never downloads: pass a "
     "local directory holding config.json and model.safetensors (Hugging Face) or best.npz/ckpt.npz"),
    (None, ["sample", "--checkpoint", "{tmp}/best.npz"], "best.npz: no such file; fastattn never downloads"),
    ("config-only", ["sample", "--checkpoint", "{tmp}/hf"], "has config.json but no model.safetensors"),
    ("config-only", ["attention-map", "--checkpoint", "{tmp}/hf", "--prompt", "a", "--out", "{tmp}/m.png"],
     "has config.json but no model.safetensors"),
    (None, ["bench", "--only", "no such kernel", "--json", "{tmp}/no/such/dir/b.json"],
     "No such file or directory"),
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
    if setup == "config-only":  # a Hugging Face directory without its safetensors weights
        (tmp / "hf").mkdir()
        (tmp / "hf" / "config.json").write_text("{}")
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


def test_every_default_is_in_the_help():
    """--help shows each flag's default, for every command (as train's always did)."""
    commands = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert set(commands) == {"bench", "prepare", "train", "sample", "attention-map", "embed", "train-seq2seq",
                             "translate", "export", "report", "viz", "launch", "quantize"}
    viz = next(a for a in commands["viz"]._actions if isinstance(a, argparse._SubParsersAction)).choices
    commands = {**commands, "viz embeddings": viz["embeddings"]}
    for name, parser in commands.items():
        for action in parser._actions:
            if action.option_strings and action.default not in (None, False, argparse.SUPPRESS):
                assert "default" in (action.help or ""), f"fastattn {name} {action.option_strings[0]}"
    help_text = commands["sample"].format_help()
    assert "(default: 500)" in help_text and "(default: 0.8)" in help_text and "(default: 1337)" in help_text
    help_text = commands["embed"].format_help()
    assert "(default: 32)" in help_text and "blank line" in help_text


def test_training_shows_its_evaluations(corpus_file, tmp_path, capsys):
    tiny = [a for a in TINY if a != "--no-progress"]
    code, out, err = run(capsys, "train", "--data", corpus_file, "--out", tmp_path / "o", "--max-iters", 5, *tiny)
    assert code == 0, err
    assert "evaluating step 0" in err and "evaluating step 5" in err  # the bar during estimate_loss
    assert "evaluating" not in out


def test_embed_refuses_to_write_to_a_terminal(tmp_path):
    # a real terminal on stdout (a pty); stdin has the text, so only the terminal is wrong
    leader, follower = pty.openpty()
    try:
        done = subprocess.run([sys.executable, "-m", "fastattn", "embed", "--model", str(tmp_path)],
                              input=b"the king\n", stdout=follower, stderr=subprocess.PIPE, cwd=tmp_path)
    finally:
        os.close(follower)
        os.close(leader)
    err = done.stderr.decode()
    assert done.returncode == 1
    assert err.strip().splitlines() == ["fastattn embed: error: refusing to write a binary .npy to a "
                                        "terminal: redirect stdout (> vectors.npy) or pass --out FILE"]


def test_bench_command_from_the_clone_root(tmp_path):
    """`fastattn bench` in the clone's root runs the installed, compiled kernels: the console script
    does not put the current directory first on sys.path (`python -m` would)."""
    script = shutil.which("fastattn")
    if script is None:
        pytest.skip("the fastattn console script is not installed (a source-tree run)")
    out = tmp_path / "bench.json"
    argv = [script, "bench", "--quick", "--only", "gelu (1024", "--repeat", "1", "--json", str(out)]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "Warning" not in done.stderr, done.stderr
    table = json.loads(out.read_text())
    assert table["machine"]["compiled"] is ("compiled" in fastattn.available_backends())
    assert [r["shape"] for r in table["rows"]] == ["(1024,3072)"]
    if table["machine"]["compiled"]:
        assert table["rows"][0]["compiled_ms"] > 0 and "compiled backend: OpenMP" in done.stdout


def test_help_texts_show_percent_signs_once(capsys):
    """argparse formats a help string with %: "90%%" in a description would print as is."""
    with pytest.raises(SystemExit):
        main(["prepare", "--help"])
    out = capsys.readouterr().out
    assert "first 90% of" in " ".join(out.split()) and "%%" not in out


def test_bench_quick_takes_short_pauses(monkeypatch):
    """--quick (the README's first command) pauses QUICK_SETTLE_S before each timing and needs
    QUICK_MIN_TIME_S per cell, not the full table's SETTLE_S and MIN_TIME_S."""
    from fastattn import bench
    seen = []

    def record(fns, repeat, budget_s=bench.BUDGET_S, settle_s=bench.SETTLE_S, min_time_s=bench.MIN_TIME_S):
        seen.append((settle_s, min_time_s))
        return {name: (1.0, 1) for name in fns}

    monkeypatch.setattr(bench, "medians_ms", record)
    bench.run(1, 1, quick=True, only="gelu (1024", out=lambda line: None)
    assert seen and set(seen) == {(bench.QUICK_SETTLE_S, bench.QUICK_MIN_TIME_S)}
    assert bench.QUICK_SETTLE_S < bench.SETTLE_S and bench.QUICK_MIN_TIME_S < bench.MIN_TIME_S
    seen.clear()
    bench.run(1, 1, quick=False, only="gelu (32768", out=lambda line: None)
    assert seen and set(seen) == {(bench.SETTLE_S, bench.MIN_TIME_S)}


def test_bench_module_keeps_working(tmp_path):
    done = subprocess.run([sys.executable, "-m", "fastattn.bench", "--help"], capture_output=True, text=True,
                          cwd=tmp_path)
    assert done.returncode == 0 and "--quick" in done.stdout and "(default: 7" in done.stdout
    done = subprocess.run([sys.executable, "-m", "fastattn.bench", "--repeat", "0"], capture_output=True,
                          text=True, cwd=tmp_path)
    assert done.returncode == 2 and "--repeat: must be >= 1, got 0" in done.stderr
