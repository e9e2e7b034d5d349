"""fastattn.Llama against transformers: randomly initialised LlamaForCausalLM (grouped-query,
llama3 rope scaling, untied head), Qwen2ForCausalLM (q/k/v biases, tied embeddings) and
MistralForCausalLM (a sliding window shorter than the prompt), saved with save_pretrained and
read by fastattn.from_pretrained: logits within 1e-4 on both backends, the same 64 greedy
tokens, and (float64) the same gradients. Skips without torch and transformers."""
import os

import numpy as np
import pytest

import fastattn

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

COMMON = dict(vocab_size=300, hidden_size=48, intermediate_size=80, num_hidden_layers=2, num_attention_heads=6,
              num_key_value_heads=2, max_position_embeddings=256, initializer_range=0.3)
LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 32}


def _build(kind):
    torch.manual_seed(0)
    if kind == "llama":
        cfg = transformers.LlamaConfig(**COMMON, tie_word_embeddings=False, rope_theta=5000.0, rope_scaling=dict(LLAMA3))
        model = transformers.LlamaForCausalLM(cfg)
    elif kind == "qwen2":
        cfg = transformers.Qwen2Config(**COMMON, tie_word_embeddings=True)
        model = transformers.Qwen2ForCausalLM(cfg)
        with torch.no_grad():  # (biases start at 0: give them values to check)
            for name, p in model.named_parameters():
                if name.endswith("bias"):
                    p.normal_(0, 0.3)
    else:
        cfg = transformers.MistralConfig(**{**COMMON, "num_key_value_heads": 3}, sliding_window=7)
        model = transformers.MistralForCausalLM(cfg)
    return model.eval()


@pytest.fixture(scope="module", params=["llama", "qwen2", "mistral"])
def saved(request, tmp_path_factory):
    model = _build(request.param)
    path = str(tmp_path_factory.mktemp(request.param))
    model.save_pretrained(path)
    return request.param, model, path


PROMPT = np.random.default_rng(0).integers(0, 300, (2, 23))  # longer than Mistral's window of 7


def test_logits_match_transformers(backend, saved):
    kind, theirs, path = saved
    ours = fastattn.from_pretrained(path)
    assert isinstance(ours, fastattn.Llama) and ours.config.model_type == kind
    with torch.no_grad():
        want = theirs(torch.tensor(PROMPT)).logits.numpy()
    got = ours(PROMPT)
    assert got.shape == (2, 23, 300)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)


def test_64_greedy_tokens_match_transformers(backend, saved):
    kind, theirs, path = saved
    ours = fastattn.from_pretrained(path)
    prompt = PROMPT[:1, :9]
    with torch.no_grad():
        want = theirs.generate(torch.tensor(prompt), max_new_tokens=64, min_new_tokens=64, do_sample=False,
                               pad_token_id=0).numpy()
    got = ours.generate(prompt, 64, temperature=0)
    assert len(set(want[0, 9:].tolist())) > 5, "the model is too degenerate to tell anything"
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(ours.generate(prompt, 20, temperature=0, use_cache=False), want[:, :29])


def test_cache_is_sized_by_kv_heads(saved):
    from fastattn.models.generation import KVCache
    _, theirs, path = saved
    ours = fastattn.from_pretrained(path)
    cache = KVCache(ours.config, 2, 10, np.float32)
    assert cache.k.shape == (2, 2, theirs.config.num_key_value_heads, 10, 8)


def test_batched_prompts_stream_and_sampling(saved):
    _, _, path = saved
    ours = fastattn.from_pretrained(path)
    short, long = PROMPT[0, :4], PROMPT[1, :11]
    batch = np.zeros((2, 11), np.int64)
    batch[0, 7:], batch[1] = short, long
    mask = np.zeros((2, 11), np.int64)
    mask[0, 7:], mask[1] = 1, 1
    together = ours.generate(batch, 12, temperature=0, attention_mask=mask)
    np.testing.assert_array_equal(together[0, 11:], ours.generate(short[None], 12, temperature=0)[0, 4:])
    np.testing.assert_array_equal(together[1, 11:], ours.generate(long[None], 12, temperature=0)[0, 11:])
    streamed = np.stack(list(ours.generate_stream(long[None], 12, temperature=0)), axis=1)
    np.testing.assert_array_equal(streamed[0], together[1, 11:])
    a = ours.generate(long[None], 10, temperature=0.8, top_k=5, top_p=0.9, seed=3)
    b = ours.generate(long[None], 10, temperature=0.8, top_k=5, top_p=0.9, seed=3)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ours.generate(long[None], 10, top_k=1, seed=1),
                                  ours.generate(long[None], 10, temperature=0))


def test_gradients_match_transformers(backend, saved):
    kind, theirs, path = saved
    ours = fastattn.from_pretrained(path, dtype=np.float64)
    theirs = _build(kind).double()
    theirs.load_state_dict({k: v.double() for k, v in transformers.AutoModelForCausalLM.from_pretrained(
        path).state_dict().items()})
    idx, targets = PROMPT[:, :-1], PROMPT[:, 1:]
    out = theirs(torch.tensor(idx), labels=None).logits
    loss = torch.nn.functional.cross_entropy(out.reshape(-1, 300), torch.tensor(targets).reshape(-1))
    loss.backward()
    _, our_loss = ours(idx, targets)
    ours.backward()
    # (transformers computes its rotary tables in float32 even in a float64 model: rel 1e-6)
    assert our_loss == pytest.approx(loss.item(), rel=1e-6)
    # (the float32 rotary tables move the gradients by ~1e-6 of their size: the layers' float64
    # twins at rel 1e-6 are tests/test_nn_llama.py and tests/test_llama_kernels.py)
    grads = {n: p.grad.numpy() for n, p in theirs.named_parameters()}
    for name, p in ours.named_parameters():
        want = grads[name]
        np.testing.assert_allclose(p.grad, want, rtol=0, atol=1e-4 * np.abs(want).max(), err_msg=name)


def test_from_pretrained_names_other_model_types(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "phi3"}')
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="phi3"):
        fastattn.from_pretrained(str(tmp_path))


def test_mismatched_file_is_named(tmp_path, saved):
    import json
    _, theirs, _ = saved
    theirs.save_pretrained(str(tmp_path))
    config = json.loads((tmp_path / "config.json").read_text())
    config["num_hidden_layers"] = 3  # config.json says 3 layers, the weights hold 2
    config.pop("layer_types", None)
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="missing.*model.layers.2"):
        fastattn.from_pretrained(str(tmp_path))


def test_sample_cli_with_tokenizer_json(saved, capsys):
    tokenizers = pytest.importorskip("tokenizers")
    from fastattn import cli
    _, _, path = saved
    if not os.path.exists(os.path.join(path, "tokenizer.json")):
        tok = tokenizers.Tokenizer(tokenizers.models.BPE())
        tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = tokenizers.decoders.ByteLevel()
        trainer = tokenizers.trainers.BpeTrainer(vocab_size=300, show_progress=False,
                                                 initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
        tok.train_from_iterator(["the king and the queen speak to the lord"] * 50, trainer)
        tok.save(os.path.join(path, "tokenizer.json"))
    cli.main(["sample", "--checkpoint", path, "--prompt", "the king", "--max-new-tokens", "8",
              "--temperature", "0"])
    out = capsys.readouterr().out
    assert out.startswith("the king") and len(out.rstrip("\n")) > len("the king")


def test_config_mapping():
    from fastattn.models.llama_config import llama_config
    base = dict(vocab_size=10, hidden_size=16, intermediate_size=32, num_hidden_layers=4, num_attention_heads=4)
    qwen = llama_config({**base, "model_type": "qwen2", "use_sliding_window": True, "max_window_layers": 2,
                         "sliding_window": 5})
    assert qwen.windows == [None, None, 5, 5] and qwen.attention_bias
    assert llama_config({**base, "model_type": "qwen2", "sliding_window": 5}).windows == [None] * 4
    mistral = llama_config({**base, "model_type": "mistral", "sliding_window": 5, "num_key_value_heads": 2})
    assert mistral.windows == [5] * 4 and mistral.num_key_value_heads == 2 and not mistral.attention_bias
    newer = llama_config({**base, "model_type": "llama", "rope_parameters": {**LLAMA3, "rope_theta": 5e5}})
    assert newer.rope_theta == 5e5 and newer.rope_scaling["rope_type"] == "llama3"
    for bad, match in (({"hidden_act": "gelu"}, "hidden_act"), ({"attention_bias": True}, "attention_bias"),
                       ({"model_type": "phi3"}, "phi3"), ({"num_key_value_heads": 3}, "multiple")):
        with pytest.raises(ValueError, match=match):
            llama_config({**base, "model_type": "llama", **bad})


def test_attention_maps(saved):
    kind, theirs, path = saved
    ours = fastattn.from_pretrained(path)
    maps = ours.attention_maps(PROMPT[:1, :12])
    assert len(maps) == 2 and maps[0].shape == (1, 6, 12, 12)
    np.testing.assert_allclose(maps[0].sum(axis=-1), 1, rtol=1e-5)
    assert np.all(np.triu(maps[1][0, 0], 1) == 0)  # causal
    if kind == "mistral":  # window 7: query 11 sees keys 5 .. 11
        assert np.all(maps[1][0, :, 11, :5] == 0) and np.all(maps[1][0, :, 11, 5:] > 0)


def test_fused_inference_weights_follow_training(saved):
    """q/k/v and gate/up are single products at inference, over row views of the Linears'
    weights: after an optimizer step the cached path still equals the training forward."""
    from fastattn.models.generation import KVCache
    _, _, path = saved
    ours = fastattn.from_pretrained(path)
    opt = ours.configure_optimizers(0.1, 1e-2, (0.9, 0.95))
    ours(PROMPT[:, :-1], PROMPT[:, 1:])
    ours.backward()
    opt.step()
    idx = PROMPT[:1, :15]
    cache = KVCache(ours.config, 1, 15, np.float32)
    last = ours._forward_cached(idx, np.arange(15)[None], np.ones((1, 15), bool), cache)
    np.testing.assert_allclose(last, ours(idx)[:, -1], rtol=1e-4, atol=1e-4)


def test_layer_weights_are_one_array_in_decode_order(saved):
    """Every layer's weights are views of one array, laid out in the order a decode step reads
    them; freeze() makes it read-only (and the fused q/k/v and gate/up views), and the frozen
    model generates the same tokens."""
    _, _, path = saved
    ours = fastattn.from_pretrained(path)
    want = ours.generate(PROMPT[:1], 8, temperature=0)
    order = []
    for layer in ours.model.layers:
        a, mlp = layer.self_attn, layer.mlp
        order += [a.q_proj, a.k_proj, a.v_proj, a.o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj]
    arena = order[0].weight.data.base
    assert all(m.weight.data.base is arena for m in order)
    starts = [m.weight.data.__array_interface__["data"][0] for m in order]
    assert all(b - a == m.weight.data.nbytes for a, b, m in zip(starts, starts[1:], order))
    ours.freeze()
    assert not arena.flags.writeable
    assert not any(layer._qkv[0].flags.writeable or layer.mlp._gate_up.flags.writeable
                   for layer in ours.model.layers)
    np.testing.assert_array_equal(ours.generate(PROMPT[:1], 8, temperature=0), want)
    ours.unfreeze()
    assert arena.flags.writeable and ours.model.layers[0]._qkv[0].flags.writeable


def test_bfloat16_file(tmp_path):
    """A checkpoint saved in bfloat16 (as SmolLM2, Llama 3.2 and Qwen2.5 ship) loads as the
    float32 values of its bfloat16 weights: logits equal transformers' on the same upcast weights."""
    stored = _build("llama").to(torch.bfloat16)
    stored.save_pretrained(str(tmp_path))
    theirs = _build("llama")  # (float32 rotary tables: .to(bfloat16) rounds those too)
    theirs.load_state_dict({k: v.float() for k, v in stored.state_dict().items()})
    ours = fastattn.from_pretrained(str(tmp_path))
    for name, p in ours.named_parameters():
        np.testing.assert_array_equal(p.data, theirs.state_dict()[name].numpy(), err_msg=name)
    with torch.no_grad():
        want = theirs(torch.tensor(PROMPT)).logits.numpy()
    np.testing.assert_allclose(ours(PROMPT), want, rtol=0, atol=1e-4)


def test_sharded_checkpoint(tmp_path):
    """save_pretrained's shards (model.safetensors.index.json + model-0000k-of-0000n.safetensors)
    load as one file does; an index naming a file outside the directory is refused."""
    import json
    theirs = _build("mistral")
    theirs.save_pretrained(str(tmp_path), max_shard_size="100KB")
    assert not (tmp_path / "model.safetensors").exists() and len(list(tmp_path.glob("model-*.safetensors"))) > 1
    ours = fastattn.from_pretrained(str(tmp_path))
    with torch.no_grad():
        want = theirs(torch.tensor(PROMPT)).logits.numpy()
    np.testing.assert_allclose(ours(PROMPT), want, rtol=0, atol=1e-4)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    index["weight_map"]["model.norm.weight"] = "../elsewhere.safetensors"
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="elsewhere"):
        fastattn.from_pretrained(str(tmp_path))
