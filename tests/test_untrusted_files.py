"""Loading files that may be broken or hostile (issue 13, items 9 to 11): every failure is a
ValueError (TypeError for a wrong type) naming the file and what is wrong, decided from headers
and the config before anything large is allocated or inflated; the CLI prints one line."""
import io
import json
import os
import subprocess
import sys
import tracemalloc
import zipfile

import numpy as np
import pytest

from fastattn import GPT, GPTConfig
from fastattn.training.checkpoint import (load_checkpoint, parameter_shapes, remove_stale_temporaries,
                                 save_checkpoint)
from fastattn.cli import main
from fastattn.io.tokenizer import CharTokenizer

CFG = GPTConfig(vocab_size=9, block_size=8, n_layer=2, n_head=2, n_embd=8)


@pytest.fixture
def good(tmp_path):
    """A real checkpoint with an optimizer state and a tokenizer."""
    model = GPT(CFG, seed=1)
    path = tmp_path / "good.npz"
    save_checkpoint(path, model, CharTokenizer("abcdefghi"), model.configure_optimizers(0.1, 1e-3, (0.9, 0.99)),
                    step=3)
    return path


def rewrite(src, dst, header=None, arrays=None, drop=()):
    """A copy of checkpoint src with meta.json's fields updated from `header` (None values
    delete), some arrays replaced or added, and some dropped."""
    with np.load(src) as npz:
        contents = {n: npz[n] for n in npz.files}
    meta = json.loads(contents.pop("meta.json").tobytes())
    for k, v in (header or {}).items():
        if v is None:
            meta.pop(k, None)
        else:
            meta[k] = v
    contents.update(arrays or {})
    for name in drop:
        contents.pop(name)
    contents["meta.json"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(dst, **contents)
    return dst


def peak_mib(fn):
    """The peak NumPy/Python allocation (MiB) while fn() runs; fn must raise ValueError."""
    tracemalloc.start()
    try:
        with pytest.raises(ValueError) as info:
            fn()
        return tracemalloc.get_traced_memory()[1] / 2 ** 20, str(info.value)
    finally:
        tracemalloc.stop()


def test_parameter_shapes_are_the_models(backend):
    for cfg in (CFG, GPTConfig(vocab_size=5, block_size=3, n_layer=3, n_head=1, n_embd=4, bias=False)):
        assert parameter_shapes(cfg) == {n: p.data.shape for n, p in GPT(cfg).named_parameters()}


def test_a_good_checkpoint_loads(good):
    ck = load_checkpoint(good)
    assert ck.config == CFG and ck.step == 3 and len(ck.optimizer_state["exp_avg"]) == len(parameter_shapes(CFG))


def test_truncated_npy_and_directory(good, tmp_path):
    data = good.read_bytes()
    for cut in (len(data) // 2, len(data) - 30, 100):
        bad = tmp_path / f"cut{cut}.npz"
        bad.write_bytes(data[:cut])
        with pytest.raises(ValueError, match=f"{bad}.*"):
            load_checkpoint(bad)
    npy = tmp_path / "weights.npy"
    np.save(npy, np.zeros(3))
    with pytest.raises(ValueError, match=f"{npy} is not a readable fastattn checkpoint"):
        load_checkpoint(npy)


@pytest.mark.parametrize("header, message", [
    ({"config": None}, "needs a config"),
    ({"config": [1, 2]}, "config is a list"),
    ({"step": "3"}, "step is a str"),
    ({"step": -1}, "step >= 0"),
    ({"dtype": "int8"}, "dtype must be"),
    ({"dtype": ["float32"]}, "dtype must be"),
    ({"meta": [1]}, "meta is a list"),
    ({"tokenizer": "abc"}, "tokenizer is a str"),
    ({"tokenizer": {"type": "char", "chars": 5}}, "not a CharTokenizer"),
    ({"optimizer": {"step": 1}}, "param_groups"),
    ({"config": dict(vars(CFG), layer_norm_eps=None)}, "does not fit GPTConfig"),
    ({"config": dict(vars(CFG), n_head=0)}, "does not fit GPTConfig"),
    ({"config": dict(vars(CFG), colour="red")}, "does not fit GPTConfig"),
    ({"config": dict(vars(CFG), n_embd=16)}, r"transformer.wte.weight is float32 \(9, 8\); the config"),
    ({"format": "something"}, "not a fastattn checkpoint"),
], ids=lambda x: str(x)[:40])
def test_bad_headers(good, tmp_path, header, message):
    bad = rewrite(good, tmp_path / "bad.npz", header)
    with pytest.raises(ValueError, match=message) as info:
        load_checkpoint(bad)
    assert str(bad) in str(info.value)


def test_a_meta_json_that_is_a_list(good, tmp_path):
    bad = tmp_path / "list.npz"
    np.savez(bad, **{"meta.json": np.frombuffer(b"[1, 2]", np.uint8)})
    with pytest.raises(ValueError, match=f"{bad}: meta.json must be a JSON object, got list"):
        load_checkpoint(bad)


def test_missing_unexpected_and_mistyped_arrays(good, tmp_path):
    with pytest.raises(ValueError, match=r"missing \['model/transformer.ln_f.bias.npy'\]"):
        load_checkpoint(rewrite(good, tmp_path / "a.npz", drop=["model/transformer.ln_f.bias"]))
    with pytest.raises(ValueError, match=r"unexpected \['extra.npy'\]"):
        load_checkpoint(rewrite(good, tmp_path / "b.npz", arrays={"extra": np.zeros(2)}))
    with pytest.raises(ValueError, match="transformer.wpe.weight is float64"):
        load_checkpoint(rewrite(good, tmp_path / "c.npz", arrays={"model/transformer.wpe.weight": np.zeros((8, 8))}))
    with pytest.raises(ValueError, match="optimizer moments"):
        load_checkpoint(rewrite(good, tmp_path / "d.npz", arrays={"optimizer/exp_avg/0": np.zeros(3, np.float32)}))
    with pytest.raises(ValueError, match=r"transformer.wpe.weight is object \(1,\)"):
        load_checkpoint(rewrite(good, tmp_path / "e.npz",
                                arrays={"model/transformer.wpe.weight": np.array([{}], dtype=object)}))


def test_a_huge_config_is_refused_before_allocating(good, tmp_path):
    bad = rewrite(good, tmp_path / "huge.npz", {"config": dict(vars(CFG), vocab_size=10 ** 9)})
    peak, message = peak_mib(lambda: load_checkpoint(bad))
    assert "transformer.wte.weight is float32 (9, 8); the config and dtype say float32 (1000000000, 8)" in message
    assert peak < 5, f"{peak:.1f} MiB allocated"


def test_a_member_that_inflates_beyond_its_array_is_not_inflated(good, tmp_path):
    # the member's .npy header says (9, 8) float32, as the config does, but 64 MiB of zeros
    # follow it (deflated to 64 KiB): refused from the zip directory, before inflating
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (9, 8)})
    bomb = tmp_path / "bomb.npz"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            if info.filename == "model/transformer.wte.weight.npy":
                dst.writestr(info.filename, header.getvalue() + bytes(64 << 20))
            else:
                dst.writestr(info.filename, src.read(info))
    assert bomb.stat().st_size < 1 << 20
    peak, message = peak_mib(lambda: load_checkpoint(bomb))
    assert "model/transformer.wte.weight.npy inflates to 67108992 bytes" in message
    assert peak < 5, f"{peak:.1f} MiB allocated"


def test_a_corrupt_member_is_a_value_error(good, tmp_path):
    data = bytearray(good.read_bytes())
    at = data.index(b"transformer.h.1.mlp.c_fc.weight.npy")
    data[at + 200: at + 208] = b"\xff" * 8  # inside that member's data: a bad CRC
    bad = tmp_path / "crc.npz"
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=f"{bad}: the member .* (is unreadable|is not a readable array): Bad CRC"):
        load_checkpoint(bad)


def _dead_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_temporaries_are_removed(tmp_path):
    dead, alive = _dead_pid(), os.getppid()
    names = [f"ckpt.npz.{dead}.abc123.tmp", "ckpt.npz.k2j4h5g6.tmp", f"best.npz.{os.getpid()}.x.tmp",
             f"ckpt.npz.{alive}.abc123.tmp", "other.npz.1.a.tmp", "ckpt.npz", "notes.tmp"]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    removed = remove_stale_temporaries(tmp_path)
    assert sorted(os.path.basename(p) for p in removed) == sorted(names[:3])
    assert sorted(os.listdir(tmp_path)) == sorted(names[3:])


def test_a_training_run_removes_its_stale_temporaries(corpus_file, tmp_path):
    from fastattn.training.trainer import train
    out = tmp_path / "out"
    out.mkdir()
    stale = out / f"ckpt.npz.{_dead_pid()}.q1w2e3r4.tmp"
    stale.write_bytes(b"half a checkpoint")
    train(corpus_file, out, progress=False, log=lambda s: None, max_iters=1, eval_interval=1, eval_iters=1,
          n_layer=1, n_head=1, n_embd=8, block_size=8, batch_size=2)
    assert sorted(os.listdir(out)) == ["best.npz", "ckpt.npz", "config.json", "metrics.jsonl"]


# ---- Hugging Face directories (GPT-2 and BERT) and the command line ----

safetensors_numpy = pytest.importorskip("safetensors.numpy")
from test_encoder import CONFIG as BERT_CONFIG, model_dir, random_weights, write_bert_dir  # noqa: E402,F401
from test_pretrained import HF_CONFIG, byte_level_tokenizer, gpt2_like, write_hf_dir  # noqa: E402,F401


def one_line_error(capsys, argv):
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("change, message", [
    ({"n_head": 0}, "n_head must be an int >= 1, got 0"),
    ({"n_embd": "16"}, "n_embd must be an int >= 1, got '16'"),
    ({"n_head": 3}, "not a multiple of n_head"),
    ({"layer_norm_epsilon": None}, "layer_norm_epsilon must be a number > 0, got None"),
    ({"vocab_size": 10 ** 9}, r"wrong shapes \['transformer.wte.weight: \(61, 16\) != \(1000000000, 16\)'\]"),
    ({"n_layer": 3}, r"missing \['transformer.h.2.attn.c_attn.bias'"),
], ids=str)
def test_gpt2_configs_checked_before_allocating(gpt2_like, tmp_path, change, message):
    path = write_hf_dir(tmp_path / "m", gpt2_like, config={**HF_CONFIG, **change})
    peak, got = peak_mib(lambda: GPT.from_pretrained(str(path)))
    assert str(path) in got and __import__("re").search(message, got), got
    assert peak < 5, f"{peak:.1f} MiB allocated"


def test_a_config_json_that_is_a_list(gpt2_like, tmp_path):
    path = write_hf_dir(tmp_path / "m", gpt2_like)
    (path / "config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=f"{path / 'config.json'} must hold a JSON object, got a list"):
        GPT.from_pretrained(str(path))


# a tensor of 4 GB whose bytes would be 4 bytes of the file
BEYOND = b'{"w": {"dtype": "F32", "shape": [1000000, 1000], "data_offsets": [0, 4]}}'


@pytest.mark.parametrize("content, message", [
    (b"", "is not a safetensors file"),
    (b"garbage!" * 100, "is not a safetensors file"),
    ((20).to_bytes(8, "little") + b'{"a": 1}' + b" " * 12, "entry for tensor 'a'"),
    ((5).to_bytes(8, "little") + b"[1,2]", "not a JSON object"),
    ((2 ** 40).to_bytes(8, "little") + b"{}", "header length 1099511627776"),
    (len(BEYOND).to_bytes(8, "little") + BEYOND + b"\0" * 4, "entry for tensor 'w'"),
], ids=["empty", "garbage", "not-a-tensor", "list", "huge-header", "beyond-the-file"])
def test_a_bad_safetensors_file(gpt2_like, tmp_path, content, message):
    path = write_hf_dir(tmp_path / "m", gpt2_like)
    (path / "model.safetensors").write_bytes(content)
    with pytest.raises(ValueError, match=message) as info:
        GPT.from_pretrained(str(path))
    assert str(path / "model.safetensors") in str(info.value)


@pytest.mark.parametrize("change, message", [
    ({"num_attention_heads": 0}, "num_attention_heads must be an int >= 1, got 0"),
    ({"hidden_size": None}, "hidden_size must be an int >= 1, got None"),
    ({"layer_norm_eps": "x"}, "layer_norm_eps must be a number > 0"),
    ({"vocab_size": 10 ** 9}, r"wrong shapes \['embeddings.word_embeddings.weight"),
    ({"architectures": [1], "model_type": "x"}, "not a BERT config"),
], ids=str)
def test_bert_configs_checked_before_allocating(tmp_path, change, message):
    from fastattn import Encoder
    path = write_bert_dir(tmp_path / "b", random_weights(BERT_CONFIG), {**BERT_CONFIG, **change})
    peak, got = peak_mib(lambda: Encoder.from_pretrained(str(path)))
    assert str(path) in got and __import__("re").search(message, got), got
    assert peak < 5, f"{peak:.1f} MiB allocated"


def test_generating_too_many_tokens_is_a_value_error():
    model = GPT(CFG)
    with pytest.raises(ValueError, match="max_new_tokens=1000000000000 is too many"):
        model.generate(np.zeros((1, 1), int), 10 ** 12)


def test_the_sample_command_prints_one_line_for_every_bad_file(good, gpt2_like, tmp_path, capsys):
    data = good.read_bytes()
    cut = tmp_path / "cut.npz"
    cut.write_bytes(data[: len(data) // 2])
    npy = tmp_path / "w.npy"
    np.save(npy, np.zeros(3))
    configless = rewrite(good, tmp_path / "configless.npz", {"config": None})
    huge = rewrite(good, tmp_path / "huge.npz", {"config": dict(vars(CFG), vocab_size=10 ** 9)})
    for path, message in ((cut, "cut.npz"), (npy, "w.npy is not a readable"), (configless, "needs a config"),
                          (huge, "1000000000")):
        assert message in one_line_error(capsys, ["sample", "--checkpoint", path, "--max-new-tokens", 2])
    hf = write_hf_dir(tmp_path / "hf", gpt2_like)
    byte_level_tokenizer(hf)
    (hf / "model.safetensors").write_bytes(b"garbage!" * 10)
    assert "not a safetensors file" in one_line_error(capsys, ["sample", "--checkpoint", hf])
    hf = write_hf_dir(tmp_path / "hf2", gpt2_like)
    byte_level_tokenizer(hf)
    (hf / "config.json").write_text("[]")
    assert "must hold a JSON object" in one_line_error(capsys, ["sample", "--checkpoint", hf])


def test_the_embed_command_prints_one_line_for_a_bad_config(model_dir, monkeypatch, capsys):
    (model_dir / "config.json").write_text(json.dumps({**BERT_CONFIG, "vocab_size": 20, "num_attention_heads": 0}))
    monkeypatch.setattr("sys.stdin", io.StringIO("the king\n"))
    assert "num_attention_heads must be an int >= 1" in one_line_error(capsys, ["embed", "--model", model_dir])


@pytest.mark.parametrize("file, content, message", [
    ("modules.json", {"a": 1}, "modules.json must hold a JSON array, got a dict"),
    ("modules.json", [1], "each module must be a JSON object"),
    ("sentence_bert_config.json", [12], "sentence_bert_config.json must hold a JSON object, got a list"),
    ("1_Pooling/config.json", "mean", "config.json must hold a JSON object, got a str"),
], ids=lambda x: str(x)[:30])
def test_sentence_transformers_files_of_the_wrong_kind(model_dir, monkeypatch, capsys, file, content, message):
    (model_dir / file).write_text(json.dumps(content))
    monkeypatch.setattr("sys.stdin", io.StringIO("the king\n"))
    assert message in one_line_error(capsys, ["embed", "--model", model_dir])
