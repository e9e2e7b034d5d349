"""`fastattn export --format hf`: a GPT trained by `fastattn train` (character and byte-level BPE
tokenizers, with and without biases) and all-MiniLM-L6-v2 read and re-exported, loaded by
transformers (logits / hidden states within 1e-4 of fastattn's), by tokenizers (the same ids as
fastattn's tokenizer) and back by fastattn's loaders. Skips without transformers / tokenizers."""
import json
import os

import numpy as np
import pytest

import fastattn
from fastattn.cli import main
from fastattn.io.hf_export import char_tokenizer_json, save_gpt2_dir
from fastattn.io.tokenizer import CharTokenizer, load_tokenizer
from fastattn.training.checkpoint import load_checkpoint

pytest.importorskip("safetensors")
tokenizers = pytest.importorskip("tokenizers")
TEXTS = ["the king speaks.", "fair night\nand day", "", " so  "]


def _train(tmp_path, data, name, *flags):
    out = tmp_path / name
    argv = ["train", "--data", data, "--out", out, "--n-layer", "2", "--n-head", "2", "--n-embd", "16",
            "--block-size", "16", "--batch-size", "4", "--max-iters", "3", "--eval-iters", "1", "--no-progress", *flags]
    assert main([str(a) for a in argv]) == 0
    return out


def _export(src, out):
    assert main(["export", "--checkpoint", str(src), "--format", "hf", "--out", str(out)]) == 0
    assert sorted(os.listdir(out)) == ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]


def _torch_logits(torch, hf, ids):
    with torch.no_grad():
        return hf(torch.from_numpy(ids)).logits.numpy()


@pytest.mark.parametrize("flags", [(), ("--bias", "--dropout", "0.1")], ids=["no-bias", "bias"])
def test_gpt_char_round_trip(corpus_file, tmp_path, capsys, flags):
    run = _train(tmp_path, corpus_file, "run", *flags)
    ckpt = load_checkpoint(run / "best.npz")
    model, tok = ckpt.build_model(), ckpt.tokenizer
    model.eval()  # (no dropout)
    out = tmp_path / "hf"
    _export(run, out)
    assert "wrote" in capsys.readouterr().out

    hf_tok = tokenizers.Tokenizer.from_file(str(out / "tokenizer.json"))
    for text in TEXTS:
        assert hf_tok.encode(text, add_special_tokens=False).ids == tok.encode(text).tolist()
        assert hf_tok.decode(tok.encode(text).tolist()) == text
    ids = np.stack([tok.encode("the king speaks."), tok.encode("her lord and fai")])

    back = fastattn.from_pretrained(out)  # GPT-2's layout, read by fastattn
    assert isinstance(back, fastattn.GPT)
    np.testing.assert_allclose(back(ids)[0], model(ids)[0], rtol=0, atol=1e-6)
    assert load_tokenizer(out).encode(TEXTS[1]).tolist() == tok.encode(TEXTS[1]).tolist()

    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    hf = transformers.GPT2LMHeadModel.from_pretrained(out).eval()
    np.testing.assert_allclose(_torch_logits(torch, hf, ids), model(ids)[0], rtol=0, atol=1e-4)
    fast = transformers.PreTrainedTokenizerFast.from_pretrained(out)
    assert fast(TEXTS[0])["input_ids"] == tok.encode(TEXTS[0]).tolist()


def test_gpt_bpe_round_trip(corpus_file, tmp_path):
    data = tmp_path / "bpe"
    assert main(["prepare", "--data", str(corpus_file), "--out", str(data), "--tokenizer", "bpe",
                 "--vocab-size", "300"]) == 0
    run = _train(tmp_path, data, "run")
    ckpt = load_checkpoint(run / "best.npz")
    out = tmp_path / "hf"
    _export(run / "best.npz", out)
    hf_tok = tokenizers.Tokenizer.from_file(str(out / "tokenizer.json"))
    for text in TEXTS:
        assert hf_tok.encode(text, add_special_tokens=False).ids == ckpt.tokenizer.encode(text).tolist()
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    ids = ckpt.tokenizer.encode("the queen speaks to his lord")[None]
    hf = transformers.GPT2LMHeadModel.from_pretrained(out).eval()
    np.testing.assert_allclose(_torch_logits(torch, hf, ids), ckpt.build_model()(ids)[0], rtol=0, atol=1e-4)
    # ... and re-exported from Hugging Face's layout: the same files' tensors
    again = tmp_path / "again"
    _export(out, again)
    from safetensors.numpy import load_file
    a, b = load_file(out / "model.safetensors"), load_file(again / "model.safetensors")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("kv_heads", [2, 1], ids=["gqa-2", "mqa"])
def test_llama_round_trip(corpus_file, tmp_path, capsys, kv_heads):
    """A Llama trained by `fastattn train --arch llama` (grouped-query heads, RoPE, RMSNorm,
    SwiGLU), exported: transformers' LlamaForCausalLM and fastattn.from_pretrained read it back."""
    run = _train(tmp_path, corpus_file, "run", "--arch", "llama", "--n-kv-head", kv_heads)
    ckpt = load_checkpoint(run / "best.npz")
    model, tok = ckpt.build_model(), ckpt.tokenizer
    out = tmp_path / "hf"
    _export(run, out)
    assert "a Hugging Face Llama" in capsys.readouterr().out
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "llama" and config["num_key_value_heads"] == kv_heads
    ids = np.stack([tok.encode("the king speaks."), tok.encode("her lord and fai")])
    back = fastattn.from_pretrained(out)
    assert isinstance(back, fastattn.Llama)
    np.testing.assert_array_equal(back(ids), model(ids))  # (B, T, V) logits
    assert load_tokenizer(out).encode(TEXTS[1]).tolist() == tok.encode(TEXTS[1]).tolist()
    with pytest.raises(SystemExit):  # (no ONNX graph for a Llama: a one-line error)
        raise SystemExit(main(["export", "--checkpoint", str(run), "--format", "onnx", "--out",
                               str(tmp_path / "l.onnx")]))
    assert "export it with --format hf" in capsys.readouterr().err
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    hf = transformers.LlamaForCausalLM.from_pretrained(out).eval()
    np.testing.assert_allclose(_torch_logits(torch, hf, ids), model(ids), rtol=0, atol=1e-4)


def test_qwen2_and_mistral_configs_read_back(tmp_path):
    """The config.json of each Llama-family type is what fastattn reads back: windows included."""
    from fastattn.io.hf_export import llama_config_json
    from fastattn.models.llama_config import LlamaConfig, llama_config
    for kind, windows in (("qwen2", [None, 8, 8]), ("mistral", [8, 8, 8]), ("llama", [None] * 3)):
        cfg = LlamaConfig(vocab_size=11, hidden_size=16, intermediate_size=24, num_hidden_layers=3,
                          num_attention_heads=4, num_key_value_heads=2, attention_bias=kind == "qwen2",
                          tie_word_embeddings=kind != "mistral", windows=windows, model_type=kind)
        assert llama_config(json.loads(json.dumps(llama_config_json(cfg, np.float32)))) == cfg
    with pytest.raises(ValueError, match="no sliding windows"):
        llama_config_json(LlamaConfig(vocab_size=11, hidden_size=16, num_hidden_layers=2,
                                      windows=[4, None]), np.float32)


def test_char_tokenizer_json_edge_cases():
    tok = CharTokenizer("\n\r\t é😀\u0301ab")
    hf_tok = tokenizers.Tokenizer.from_str(char_tokenizer_json(tok))
    text = "a\r\nb 😀e\u0301\t"[:-1] + "\t"
    text = text.replace("e", "é")
    assert hf_tok.encode(text, add_special_tokens=False).ids == tok.encode(text).tolist()
    with pytest.raises(Exception, match="UNK"):
        hf_tok.encode("z")  # outside the vocabulary: an error, as in fastattn
    with pytest.raises(TypeError, match="CharTokenizer"):
        char_tokenizer_json("abc")


def test_a_vocabulary_that_does_not_fit(tmp_path):
    model = fastattn.GPT(fastattn.GPTConfig(vocab_size=5, block_size=4, n_layer=1, n_head=1, n_embd=4))
    with pytest.raises(ValueError, match="the tokenizer has 3 tokens, the model 5"):
        save_gpt2_dir(model, CharTokenizer("abc"), tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_minilm_re_exported(tmp_path):
    from test_encoder import SENTENCES, minilm_dir
    src = minilm_dir()
    out = tmp_path / "bert"
    assert main(["export", "--checkpoint", src, "--out", str(out)]) == 0
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(os.listdir(out))
    enc = fastattn.Encoder.from_pretrained(src)
    tok = load_tokenizer(src)
    rows = tok.encode_batch(SENTENCES[:6])
    T = max(len(r) for r in rows)
    ids = np.zeros((len(rows), T), np.int64)
    mask = np.zeros((len(rows), T), np.int64)
    for i, r in enumerate(rows):
        ids[i, :len(r)], mask[i, :len(r)] = r, 1
    want = enc(ids, mask)
    back = fastattn.from_pretrained(out)
    assert isinstance(back, fastattn.Encoder)
    np.testing.assert_array_equal(back(ids, mask), want)
    assert [r.tolist() for r in load_tokenizer(out).encode_batch(SENTENCES[:6])] == [r.tolist() for r in rows]
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    hf = transformers.BertModel.from_pretrained(out, add_pooling_layer=False).eval()
    with torch.no_grad():
        got = hf(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).last_hidden_state.numpy()
    real = mask.astype(bool)
    np.testing.assert_allclose(got[real], want[real], rtol=0, atol=1e-4)


def test_bad_input_one_line_exit_1(corpus_file, tmp_path, capsys):
    def error(*argv):
        assert main(["export", *map(str, argv)]) == 1
        err = capsys.readouterr().err
        assert err.startswith("fastattn export: error: ") and err.count("\n") == 1, err
        return err
    assert "no such directory" in error("--checkpoint", tmp_path / "nothing", "--out", tmp_path / "o")
    run = _train(tmp_path, corpus_file, "run")
    capsys.readouterr()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f").write_text("x")
    assert "not an empty directory" in error("--checkpoint", run, "--out", tmp_path / "full")
    t5 = tmp_path / "t5"
    t5.mkdir()
    (t5 / "config.json").write_text(json.dumps({"model_type": "t5"}))
    (t5 / "model.safetensors").write_bytes(b"")
    assert "model_type 't5' is not supported" in error("--checkpoint", t5, "--out", tmp_path / "o2")
    with pytest.raises(SystemExit) as e:
        main(["export", "--checkpoint", str(run), "--format", "tflite", "--out", str(tmp_path / "o3")])
    assert e.value.code == 2
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".export")) == []
