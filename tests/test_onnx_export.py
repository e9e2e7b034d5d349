"""`fastattn export --format onnx`: a GPT trained by `fastattn train` and all-MiniLM-L6-v2 as opset-17
graphs that onnx.checker accepts, with dynamic batch and length, run by ONNX Runtime within 1e-4 of
fastattn. Skips without onnx (the graphs) or onnxruntime (running them)."""
import sys

import numpy as np
import pytest

import fastattn
from fastattn.cli import main
from fastattn.io.onnx_export import gpt_onnx
from fastattn.training.checkpoint import load_checkpoint

onnx = pytest.importorskip("onnx")


def _session(path):
    ort = pytest.importorskip("onnxruntime")
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _check(path, inputs):
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [17]
    assert [i.name for i in model.graph.input] == inputs
    for i in model.graph.input:  # dynamic batch and length
        assert [d.dim_param for d in i.type.tensor_type.shape.dim] == ["batch", "sequence"]
    assert not any(n.domain for n in model.graph.node)  # standard operators only
    return model


@pytest.mark.parametrize("flags", [(), ("--bias",)], ids=["no-bias", "bias"])
def test_gpt_trained_here(corpus_file, tmp_path, flags, rng):
    run = tmp_path / "run"
    argv = ["train", "--data", corpus_file, "--out", run, "--n-layer", "2", "--n-head", "2", "--n-embd", "16",
            "--block-size", "16", "--batch-size", "4", "--max-iters", "3", "--eval-iters", "1", "--no-progress", *flags]
    assert main([str(a) for a in argv]) == 0
    out = tmp_path / "gpt.onnx"
    assert main(["export", "--checkpoint", str(run), "--format", "onnx", "--out", str(out)]) == 0
    model = _check(out, ["input_ids"])
    assert {n.op_type for n in model.graph.node} >= {"MatMul", "LayerNormalization", "Softmax", "Trilu"}
    gpt = load_checkpoint(run / "best.npz").build_model()
    gpt.eval()
    session = _session(out)
    V = gpt.config.vocab_size
    for B, T in ((1, 1), (3, 16), (2, 7)):
        ids = rng.integers(0, V, (B, T))
        got, = session.run(None, {"input_ids": ids})
        np.testing.assert_allclose(got, gpt(ids)[0], rtol=0, atol=1e-4)


@pytest.mark.parametrize("gelu", ["none", "tanh"])
def test_gpt_float64_and_gelu_forms(gelu, rng):
    cfg = fastattn.GPTConfig(vocab_size=13, block_size=9, n_layer=1, n_head=3, n_embd=12, gelu_approximate=gelu)
    gpt = fastattn.GPT(cfg, seed=4, dtype=np.float64)
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(gpt_onnx(gpt).SerializeToString(), providers=["CPUExecutionProvider"])
    ids = rng.integers(0, 13, (2, 9))
    np.testing.assert_allclose(session.run(None, {"input_ids": ids})[0], gpt(ids)[0], rtol=0, atol=1e-4)


def test_minilm(tmp_path):
    from test_encoder import SENTENCES, minilm_dir
    from fastattn.io.tokenizer import load_tokenizer
    src = minilm_dir()
    out = tmp_path / "bert.onnx"
    assert main(["export", "--checkpoint", src, "--format", "onnx", "--out", str(out)]) == 0
    _check(out, ["input_ids", "attention_mask"])
    enc = fastattn.Encoder.from_pretrained(src)
    rows = load_tokenizer(src).encode_batch(SENTENCES[:7])
    T = max(len(r) for r in rows)
    ids, mask = np.zeros((len(rows), T), np.int64), np.zeros((len(rows), T), np.int64)
    for i, r in enumerate(rows):
        ids[i, :len(r)], mask[i, :len(r)] = r, 1
    got, sentences = _session(out).run(None, {"input_ids": ids, "attention_mask": mask})
    np.testing.assert_allclose(got, enc(ids, mask), rtol=0, atol=1e-4)  # padding rows: 0 in both
    np.testing.assert_allclose(sentences, fastattn.embed(SENTENCES[:7], src), rtol=0, atol=1e-4)  # mean, unit


@pytest.mark.parametrize("modes", [["cls"], ["max"], ["mean_sqrt_len"], ["cls", "mean", "max"]])
@pytest.mark.parametrize("normalize", [False, True])
def test_encoder_pooling_modes(modes, normalize, rng):
    from test_encoder import CONFIG, random_weights
    from fastattn.inference.embeddings import pool
    from fastattn.io.onnx_export import encoder_onnx
    from fastattn.models.bert import BertConfig
    enc = fastattn.Encoder(BertConfig.from_hf(CONFIG), random_weights(CONFIG))
    ort = pytest.importorskip("onnxruntime")
    model = encoder_onnx(enc, pooling=modes, normalize=normalize)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ids = rng.integers(0, CONFIG["vocab_size"], (3, 6))
    mask = np.array([[1] * 6, [1] * 3 + [0] * 3, [1] + [0] * 5])
    want = pool(enc(ids, mask), mask, modes)
    if normalize:
        want = want / np.linalg.norm(want, axis=1, keepdims=True)
    np.testing.assert_allclose(session.run(None, {"input_ids": ids, "attention_mask": mask})[1], want,
                               rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="pooling mode 'sum'"):
        encoder_onnx(enc, pooling=["sum"])


def test_bad_input(tmp_path, capsys, monkeypatch):
    model = fastattn.GPT(fastattn.GPTConfig(vocab_size=5, block_size=4, n_layer=1, n_head=1, n_embd=4))
    from fastattn.io.tokenizer import CharTokenizer
    from fastattn.training.checkpoint import save_checkpoint
    save_checkpoint(tmp_path / "m.npz", model, CharTokenizer("abcde"))
    (tmp_path / "taken.onnx").write_text("")
    assert main(["export", "--checkpoint", str(tmp_path / "m.npz"), "--format", "onnx",
                 "--out", str(tmp_path / "taken.onnx")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("fastattn export: error: ") and "exists" in err and err.count("\n") == 1
    monkeypatch.setitem(sys.modules, "onnx", None)  # as if onnx were not installed
    assert main(["export", "--checkpoint", str(tmp_path / "m.npz"), "--format", "onnx",
                 "--out", str(tmp_path / "new.onnx")]) == 1
    err = capsys.readouterr().err
    assert "needs the onnx package" in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz", "taken.onnx"]
