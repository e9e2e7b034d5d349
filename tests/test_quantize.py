"""Module.quantize (int8 / bfloat16 weights in the models): what is converted, what it costs in
memory, and that the quantized models run (their products are checked in test_linear_lowp.py)."""
import numpy as np
import pytest

import fastattn
from fastattn import _lowp, nn
from fastattn.models.gpt import GPT, GPTConfig
from fastattn.models.seq2seq import Seq2SeqTransformer


def _needs(compute_type):
    try:
        _lowp.check_compute_type(compute_type)
    except ValueError as exc:
        pytest.skip(str(exc))


def _gpt(seed=0):
    return GPT(GPTConfig(block_size=32, vocab_size=97, n_layer=2, n_head=2, n_embd=32), seed=seed)


def _weight_bytes(model):
    return sum(p.data.nbytes for p in model.parameters())


def _expected_bytes(model, compute_type):
    """int8: a byte a weight and a float32 scale a row; bfloat16: 2 bytes; 1-D parameters stay float32.
    int8_bfloat16: the embedding tables (the token table is also the LM head) in bfloat16."""
    tables = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    total = 0
    for p in model.parameters():
        if p.data.ndim == 1:
            total += 4 * p.data.size
        elif compute_type == "int8" or (compute_type == "int8_bfloat16" and id(p) not in tables):
            total += p.data.size + 4 * p.data.shape[0]
        else:
            total += 2 * p.data.size
    return total


@pytest.mark.parametrize("compute_type", ["int8", "bfloat16", "int8_bfloat16"])
def test_gpt_weights_shrink_and_stay_tied(backend, compute_type):
    _needs(compute_type)
    model = _gpt()
    expected = _expected_bytes(model, compute_type)
    idx = np.arange(24).reshape(2, 12)
    want, _ = model(idx)
    model.quantize(compute_type)
    t = model.transformer
    table = t.wte.weight.data
    assert isinstance(table, _lowp.Int8Weight if compute_type == "int8" else _lowp.BFloat16Weight)
    assert isinstance(t.h[0].mlp.c_fc.weight.data, _lowp.BFloat16Weight if compute_type == "bfloat16"
                      else _lowp.Int8Weight)
    assert t.ln_f.weight.data.dtype == np.float32  # (layer norms stay float32)
    assert _weight_bytes(model) == expected
    assert model.num_parameters() == _gpt().num_parameters()
    got, _ = model(idx)
    # (a loose sanity check: every product rounds its inputs to 8 (bfloat16) or 7 bits (int8) and
    # the logits move by a small part of their spread; the bounds that matter are per product,
    # in test_linear_lowp.py)
    assert np.abs(got - want).max() < 0.05 * want.std() * np.sqrt(want.shape[-1])
    assert model.generate(idx[:1], 4, temperature=0).shape == (1, 16)
    model(idx, targets=idx)
    with pytest.raises(TypeError, match="inference only"):
        model.backward()


def test_generation_with_and_without_cache_agree(backend):
    _needs("int8")
    model = _gpt(1).quantize("int8")
    idx = np.arange(5)[None]
    np.testing.assert_array_equal(model.generate(idx, 6, temperature=0),
                                  model.generate(idx, 6, temperature=0, use_cache=False))


def test_seq2seq_and_multihead_attention(backend):
    _needs("int8")
    from fastattn.models import seq2seq_decoding

    def build():
        return Seq2SeqTransformer(40, 41, d_model=32, nhead=4, num_encoder_layers=1, num_decoder_layers=1,
                                  dim_feedforward=64, seed=0).eval()
    model, src = build(), np.arange(3, 12).reshape(1, 9)
    q = build()
    q.load_state_dict(model.state_dict())
    q.quantize("int8")
    assert isinstance(q.transformer.encoder.layers[0].self_attn.in_proj_weight.data, _lowp.Int8Weight)
    want, got = model(src, src[:, :5]), q(src, src[:, :5])
    assert np.abs(got - want).max() < 0.05 * want.std() * np.sqrt(want.shape[-1])
    out = seq2seq_decoding.greedy(q, src, max_len=6)
    np.testing.assert_array_equal(out[0], seq2seq_decoding.greedy(q, src, max_len=6, use_cache=False)[0])
    seq2seq_decoding.beam_search(q, src, max_len=6)


def test_quantize_refuses_float64_and_unknown_types():
    with fastattn.use_backend("reference"):  # (NumPy runs int8 anywhere)
        with pytest.raises(TypeError, match="float64"):
            nn.Linear(4, 3, dtype=np.float64).quantize("int8")
    with pytest.raises(ValueError, match="compute_type must be one of"):
        nn.Linear(4, 3).quantize("fp8")
    layer = nn.Linear(4, 3)
    before = layer.weight.data
    assert layer.quantize("float32").weight.data is before  # float32: nothing changes


def test_linear_module_matches_functional(backend, rng):
    _needs("int8")
    layer = nn.Linear(20, 7, seed=0)
    w = layer.weight.data.copy()
    layer.quantize("int8")
    x = rng.standard_normal((5, 20)).astype(np.float32)
    np.testing.assert_array_equal(layer(x), fastattn.functional.linear(x, _lowp.quantize_int8(w), layer.bias.data))


def test_bert_qkv_blocks_share_the_fused_weight():
    _needs("int8")
    from fastattn.models.bert import BertConfig, Encoder

    cfg = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=20, type_vocab_size=2)
    from fastattn.models.bert import _parameter_shapes

    rng = np.random.default_rng(0)
    shapes = _parameter_shapes(cfg)
    enc = Encoder(cfg, {n: (rng.standard_normal(s) * 0.1).astype(np.float32) for n, s in shapes.items()})
    ids = rng.integers(0, 50, (2, 7))
    want = enc(ids)
    enc.quantize("int8")
    sa = enc.encoder.layer[0].attention.self
    assert isinstance(sa._qkv_weight, _lowp.Int8Weight)
    assert np.shares_memory(sa.key.weight.data.q, sa._qkv_weight.q)
    got = enc(ids)
    assert np.abs(got - want).max() < 0.05 * want.std() * np.sqrt(want.shape[-1])


# -- quantized files (fastattn quantize) -------------------------------------------------------

def _run(capsys, *argv):
    from fastattn.cli import main

    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


TINY_GPT = ["--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--block-size", "16", "--batch-size", "4",
            "--eval-iters", "1", "--eval-interval", "5", "--warmup-iters", "1", "--no-progress"]


@pytest.mark.parametrize("compute_type", ["int8", "bfloat16", "int8_bfloat16"])
def test_quantize_a_gpt_checkpoint_then_sample(corpus_file, tmp_path, capsys, compute_type):
    _needs(compute_type)
    assert _run(capsys, "train", "--data", corpus_file, "--out", tmp_path / "o", "--max-iters", 2, *TINY_GPT)[0] == 0
    code, out, err = _run(capsys, "quantize", "--checkpoint", tmp_path / "o", "--compute-type", compute_type,
                          "--out", tmp_path / "q")
    assert code == 0, err
    assert f"a {compute_type} GPT" in out
    sample = ["--prompt", "the", "--max-new-tokens", 8, "--temperature", 0]
    code, from_file, err = _run(capsys, "sample", "--checkpoint", tmp_path / "q", *sample)
    assert code == 0, err
    code, direct, err = _run(capsys, "sample", "--checkpoint", tmp_path / "o", "--compute-type", compute_type, *sample)
    assert code == 0, err
    assert from_file == direct  # the stored weights are the ones quantizing at load gives
    code, _, err = _run(capsys, "sample", "--checkpoint", tmp_path / "q", "--compute-type", "bfloat16"
                        if compute_type != "bfloat16" else "int8", *sample)
    assert code == 1 and "cannot apply" in err


def test_quantize_a_bert_dir_then_embed(tmp_path, capsys):
    _needs("int8")
    from test_encoder import CONFIG, WORDS, random_weights, write_bert_dir, write_wordpiece

    cfg = {**CONFIG, "vocab_size": 4 + len(WORDS)}
    src = write_bert_dir(tmp_path / "m", random_weights(cfg, seed=1), cfg)
    write_wordpiece(src, WORDS)
    code, _, err = _run(capsys, "quantize", "--checkpoint", src, "--compute-type", "int8", "--out", tmp_path / "q")
    assert code == 0, err
    assert not (tmp_path / "q" / "model.safetensors").exists()
    texts = ["the king speaks", "fair night", "so the queen"]
    stored = fastattn.SentenceEncoder(str(tmp_path / "q")).encode(texts)
    np.testing.assert_array_equal(stored, fastattn.SentenceEncoder(str(src), compute_type="int8").encode(texts))
    assert fastattn.SentenceEncoder(str(tmp_path / "q")).encoder.compute_type == "int8"


def _rewrite(path, change):
    """quantized.npz with change(arrays dict) applied (meta.json included)."""
    import json
    import zipfile

    with zipfile.ZipFile(path) as zf:
        arrays = {n[:-4]: np.load(zf.open(n), allow_pickle=False) for n in zf.namelist()}
    change(arrays, json)
    np.savez(path, **arrays)


@pytest.mark.parametrize("change, message", [
    (lambda a, j: a.pop("model/transformer.wpe.weight.int8"), "wpe.weight.int8 is missing"),
    (lambda a, j: [a.pop(k) for k in list(a) if k.startswith("model/transformer.wpe.")], "stored once"),
    (lambda a, j: a.__setitem__("model/transformer.h.0.mlp.c_fc.weight.int8",
                                a["model/transformer.h.0.mlp.c_fc.weight.int8"].astype(np.int16)), "int16"),
    (lambda a, j: a.__setitem__("model/transformer.wte.weight.scale",
                                -a["model/transformer.wte.weight.scale"]), "scales must be finite"),
    (lambda a, j: a.__setitem__("model/extra", np.zeros(3, np.float32)), "no parameter"),
    (lambda a, j: a.__setitem__("meta.json", np.frombuffer(j.dumps({**j.loads(a["meta.json"].tobytes()),
                                                                      "compute_type": "int4"}).encode(), np.uint8)),
     "compute_type must be"),
], ids=["half", "missing", "dtype", "scale", "extra", "compute_type"])
def test_bad_quantized_files(corpus_file, tmp_path, capsys, change, message):
    _needs("int8")
    from fastattn.inference.quantized_files import load_quantized

    assert _run(capsys, "train", "--data", corpus_file, "--out", tmp_path / "o", "--max-iters", 1, *TINY_GPT)[0] == 0
    assert _run(capsys, "quantize", "--checkpoint", tmp_path / "o", "--compute-type", "int8", "--out", tmp_path / "q")[0] == 0
    path = tmp_path / "q" / "quantized.npz"
    _rewrite(path, change)
    with pytest.raises(ValueError, match=message) as info:
        load_quantized(str(tmp_path / "q"))
    assert "quantized.npz" in str(info.value) or message == "scales must be finite"
    code, _, err = _run(capsys, "sample", "--checkpoint", tmp_path / "q", "--max-new-tokens", 2)
    assert code == 1 and err.count("\n") == 1


@pytest.mark.parametrize("tied, bias", [(True, False), (False, True)])
def test_llama_fused_weights(backend, tied, bias):
    _needs("int8")
    from fastattn.models.llama import Llama
    from fastattn.models.llama_config import LlamaConfig

    cfg = LlamaConfig(vocab_size=61, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=tied, attention_bias=bias)
    model, idx = Llama(cfg, seed=0), np.arange(10)[None]
    want = model(idx)
    model.quantize("int8")
    layer = model.model.layers[0]
    assert isinstance(layer._qkv[0], _lowp.Int8Weight) and isinstance(layer.mlp._gate_up, _lowp.Int8Weight)
    assert np.shares_memory(layer.self_attn.k_proj.weight.data.q, layer._qkv[0].q)
    assert np.shares_memory(layer.mlp.up_proj.weight.data.q, layer.mlp._gate_up.q)
    assert isinstance(layer.self_attn.o_proj.weight.data, _lowp.Int8Weight)
    got = model(idx)  # (the full forward: the per-module path, not the fused one)
    assert np.abs(got - want).max() < 0.05 * want.std() * np.sqrt(want.shape[-1])
    np.testing.assert_array_equal(model.generate(idx[:, :4], 5, temperature=0),
                                  model.generate(idx[:, :4], 5, temperature=0, use_cache=False))


def test_translate_and_attention_map_take_a_compute_type(tmp_path, capsys, monkeypatch, corpus_file):
    _needs("int8")
    import io
    import sys

    from test_seq2seq_cli import TINY, _pairs_file
    data = _pairs_file(tmp_path / "pairs.tsv")
    assert _run(capsys, "train-seq2seq", "--data", data, "--out", tmp_path / "s", "--max-iters", 5, *TINY)[0] == 0
    outputs = {}
    for compute_type in ("float32", "int8"):
        monkeypatch.setattr(sys, "stdin", io.StringIO("abc\nde\n"))
        code, outputs[compute_type], err = _run(capsys, "translate", "--checkpoint", tmp_path / "s", "--beam-size", 1,
                                                "--compute-type", compute_type)
        assert code == 0, err
    assert len(outputs["int8"].splitlines()) == 2
    pytest.importorskip("matplotlib")
    assert _run(capsys, "train", "--data", corpus_file, "--out", tmp_path / "o", "--max-iters", 1, *TINY_GPT)[0] == 0
    code, _, err = _run(capsys, "attention-map", "--checkpoint", tmp_path / "o", "--prompt", "the", "--out",
                        tmp_path / "map.png", "--compute-type", "int8")
    assert code == 0, err
    assert (tmp_path / "map.png").stat().st_size > 0
