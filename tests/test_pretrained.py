"""GPT.from_pretrained on Hugging Face GPT-2 directories, load_tokenizer, and `fastattn sample` on them.

The directories are written here in Hugging Face's layout (Conv1D weights (in, out), names with or
without "transformer.", mask buffers, a tied lm_head); when transformers and torch are installed,
a real GPT2LMHeadModel's save_pretrained output is checked against transformers' own logits.
"""
import dataclasses
import json

import numpy as np
import pytest

import fastattn
from fastattn import GPT, GPTConfig, load_tokenizer
from fastattn.cli import main

safetensors_numpy = pytest.importorskip("safetensors.numpy")

CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
HF_CONFIG = dict(model_type="gpt2", vocab_size=61, n_positions=12, n_embd=16, n_layer=2, n_head=2,
                 layer_norm_epsilon=1e-5, activation_function="gelu_new")


def write_hf_dir(path, model, prefix="transformer.", extra=None, config=None):
    """model's weights as Hugging Face stores a GPT2LMHeadModel."""
    tensors = {}
    for name, p in model.named_parameters():
        array = p.data.T if name.endswith(CONV1D) else p.data
        tensors[prefix + name[len("transformer."):]] = np.ascontiguousarray(array)
    T = model.config.block_size
    for i in range(model.config.n_layer):  # the causal-mask buffer older files hold
        tensors[f"{prefix}h.{i}.attn.bias"] = np.tril(np.ones((1, 1, T, T), np.float32))
    tensors.update(extra or {})
    path.mkdir(exist_ok=True)
    safetensors_numpy.save_file(tensors, str(path / "model.safetensors"))
    (path / "config.json").write_text(json.dumps(config or HF_CONFIG))
    return path


@pytest.fixture
def gpt2_like():
    cfg = GPTConfig(vocab_size=61, block_size=12, n_layer=2, n_head=2, n_embd=16, bias=True,
                    gelu_approximate="tanh")
    model = GPT(cfg, seed=3)
    rng = np.random.default_rng(0)
    for _, p in model.named_parameters():  # biases and norms away from 0 and 1 as well
        p.data[...] = rng.standard_normal(p.data.shape).astype(np.float32) * 0.3
    return model


@pytest.mark.parametrize("prefix", ["transformer.", ""])
def test_loads_the_weights_and_config(backend, gpt2_like, tmp_path, prefix):
    path = write_hf_dir(tmp_path / "m", gpt2_like, prefix,
                       extra={"lm_head.weight": gpt2_like.transformer.wte.weight.data.copy()} if prefix else None)
    model = GPT.from_pretrained(str(path))
    assert model.config == gpt2_like.config
    idx = np.random.default_rng(1).integers(0, 61, (2, 12))
    np.testing.assert_array_equal(model(idx)[0], gpt2_like(idx)[0])


@pytest.mark.parametrize("change, message", [
    (lambda t: t.pop("transformer.h.1.mlp.c_fc.bias"), r"missing \['transformer.h.1.mlp.c_fc.bias'\]"),
    (lambda t: t.update({"transformer.h.0.ln_1.weight": np.ones(15, np.float32)}),
     r"transformer.h.0.ln_1.weight: \(15,\) != \(16,\)"),
    (lambda t: t.update({"transformer.h.0.attn.c_proj.weight": np.ones((16, 17), np.float32)}),
     r"transformer.h.0.attn.c_proj.weight: \(17, 16\) != \(16, 16\)"),
    (lambda t: t.update({"transformer.h.9.mlp.c_fc.weight": np.ones((2, 2), np.float32)}),
     r"does not: \['transformer.h.9.mlp.c_fc.weight'\]"),
    (lambda t: t.update({"lm_head.weight": np.zeros((61, 16), np.float32)}), "untied"),
])
def test_tensors_that_do_not_fit_are_named(gpt2_like, tmp_path, change, message):
    path = write_hf_dir(tmp_path / "m", gpt2_like)
    tensors = safetensors_numpy.load_file(str(path / "model.safetensors"))
    change(tensors)
    safetensors_numpy.save_file(tensors, str(path / "model.safetensors"))
    with pytest.raises(ValueError, match=message):
        GPT.from_pretrained(str(path))


@pytest.mark.parametrize("change, message", [
    ({"activation_function": "relu"}, "activation_function 'relu' is not supported"),
    ({"model_type": "bert"}, "not a GPT-2 config"),
    ({"n_inner": 50}, "n_inner 50 is not supported"),
    ({"n_head": None}, None),
])
def test_configs_that_do_not_fit(gpt2_like, tmp_path, change, message):
    config = {**HF_CONFIG, **change}
    if message is None:  # a missing field
        del config["n_head"]
        message = r"config.json lacks \['n_head'\]"
    path = write_hf_dir(tmp_path / "m", gpt2_like, config=config)
    with pytest.raises(ValueError, match=message):
        GPT.from_pretrained(str(path))


def test_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json and model.safetensors"):
        GPT.from_pretrained(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no tokenizer.json; write one with transformers: "
                                                "AutoTokenizer.from_pretrained"):
        load_tokenizer(str(tmp_path))
    (tmp_path / "vocab.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"it has vocab.json: a slow tokenizer's files"):
        load_tokenizer(str(tmp_path))


def test_a_hub_name_is_not_downloaded(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="gpt2: no such directory; fastattn never downloads: pass the "
                                                "path of a local model directory holding tokenizer.json"):
        load_tokenizer("gpt2")
    with pytest.raises(FileNotFoundError, match="never downloads"):
        GPT.from_pretrained("gpt2")


def byte_level_tokenizer(path):
    """A small byte-level BPE (GPT-2's kind) trained here, saved as tokenizer.json."""
    tokenizers = pytest.importorskip("tokenizers")
    tok = tokenizers.Tokenizer(tokenizers.models.BPE())
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=300, initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["to be or not to be, that is the question"] * 20, trainer)
    tok.save(str(path / "tokenizer.json"))
    return tok.get_vocab_size()


def test_tokenizer_json_round_trip(tmp_path):
    vocab = byte_level_tokenizer(tmp_path)
    tok = load_tokenizer(str(tmp_path))
    assert tok.vocab_size == vocab
    for text in ("to be or not", "naïve — 東京\n", ""):
        ids = tok.encode(text)
        assert ids.dtype == np.int64 and tok.decode(ids) == text
    assert len(tok.encode("to be or not to be")) < len("to be or not to be")  # merges happened
    with pytest.raises(ValueError, match="ids must be in"):
        tok.decode([vocab])
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(ValueError, match="cannot read the tokenizer"):
        load_tokenizer(str(tmp_path))


def test_sample_command_on_a_hugging_face_dir(gpt2_like, tmp_path, capsys):
    (tmp_path / "m").mkdir()
    vocab = byte_level_tokenizer(tmp_path / "m")
    cfg = dataclasses.replace(gpt2_like.config, vocab_size=vocab)
    write_hf_dir(tmp_path / "m", GPT(cfg, seed=1), config={**HF_CONFIG, "vocab_size": vocab})
    assert main(["sample", "--checkpoint", str(tmp_path / "m"), "--prompt", "to be", "--max-new-tokens", "8",
                 "--temperature", "0"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("to be") and len(out) > len("to be\n")


def test_matches_transformers(backend, tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=61, n_positions=16, n_embd=32, n_layer=2, n_head=4)).eval()
    hf.save_pretrained(str(tmp_path))
    model = GPT.from_pretrained(str(tmp_path))
    idx = np.random.default_rng(0).integers(0, 61, (2, 16))
    with torch.no_grad():
        want = hf(torch.from_numpy(idx)).logits.numpy()
    np.testing.assert_allclose(model(idx)[0], want, atol=1e-4, rtol=0)
    prompt = idx[:1, :4]
    with torch.no_grad():
        hf_tokens = hf.generate(torch.from_numpy(prompt), max_new_tokens=10, do_sample=False,
                                pad_token_id=0).numpy()
    assert model.generate(prompt, 10, temperature=0).tolist() == hf_tokens.tolist()
    assert fastattn.get_backend() == backend
