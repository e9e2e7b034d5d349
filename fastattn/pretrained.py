"""GPT-2 checkpoints in Hugging Face's layout: a directory with config.json and model.safetensors
(what transformers' GPT2LMHeadModel.save_pretrained writes), read with the safetensors package's
NumPy API. Nothing is ever downloaded.

    model = fastattn.GPT.from_pretrained("path/to/gpt2")
    tokenizer = fastattn.load_tokenizer("path/to/gpt2")   # its tokenizer.json (byte-level BPE)

Hugging Face stores GPT-2's linear layers as Conv1D, weight (in, out): they are transposed to
fastattn's (out, in), nanoGPT's layout. Tensor names may have the "transformer." prefix or not
(the original OpenAI conversion has none); the causal-mask buffers some files hold
(attn.bias, attn.masked_bias) are skipped, and lm_head.weight is the tied token embedding.
"""
import json
import os

import numpy as np

# config.json's activation_function -> GPTConfig.gelu_approximate
_ACTIVATIONS = {"gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu": "none"}
_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def _need(module, extra="hf"):
    try:
        return __import__(module, fromlist=["_"])
    except ImportError:
        raise ImportError(f"reading Hugging Face checkpoints needs the {module.split('.')[0]} package: "
                          f"pip install '.[{extra}]' in fastattn's clone") from None


def is_pretrained_dir(path):
    """Whether path is a directory in Hugging Face's layout (config.json + model.safetensors)."""
    return all(os.path.isfile(os.path.join(path, f)) for f in ("config.json", "model.safetensors"))


def read_json(path):
    """The JSON file at path, or ValueError naming it when it is not valid JSON."""
    with open(path, encoding="utf-8") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON: {e}") from None


def read_hf_dir(path):
    """(config.json as a dict, model.safetensors as name -> array) of a Hugging Face model
    directory (GPT-2's, BERT's, ...), or FileNotFoundError when it is not one."""
    if not is_pretrained_dir(path):
        missing = [f for f in ("config.json", "model.safetensors") if not os.path.isfile(os.path.join(path, f))]
        what = f"lacks {' and '.join(missing)}" if os.path.isdir(path) else "is not a directory"
        raise FileNotFoundError(f"{path} {what}: a Hugging Face model directory holds config.json and "
                                "model.safetensors (fastattn never downloads)")
    config = read_json(os.path.join(path, "config.json"))
    return config, _need("safetensors.numpy").load_file(os.path.join(path, "model.safetensors"))


def gpt_config(hf):
    """A GPTConfig from the fields of a Hugging Face GPT-2 config.json (a dict)."""
    from fastattn.model import GPTConfig
    if hf.get("model_type", "gpt2") != "gpt2":
        raise ValueError(f"not a GPT-2 config: model_type is {hf.get('model_type')!r}")
    missing = [k for k in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head") if k not in hf]
    if missing:
        raise ValueError(f"config.json lacks {missing}")
    act = hf.get("activation_function", "gelu_new")
    if act not in _ACTIVATIONS:
        raise ValueError(f"activation_function {act!r} is not supported (only {sorted(_ACTIVATIONS)})")
    if hf.get("n_inner") not in (None, 4 * hf["n_embd"]):
        raise ValueError(f"n_inner {hf['n_inner']} is not supported: the MLP is 4 x n_embd = {4 * hf['n_embd']}")
    if hf.get("tie_word_embeddings", True) is not True:
        raise ValueError("tie_word_embeddings false is not supported: the LM head is the token embedding")
    return GPTConfig(vocab_size=hf["vocab_size"], block_size=hf["n_positions"], n_layer=hf["n_layer"],
                     n_head=hf["n_head"], n_embd=hf["n_embd"], bias=True, gelu_approximate=_ACTIVATIONS[act],
                     layer_norm_eps=float(hf.get("layer_norm_epsilon", 1e-5)))


def load_gpt2(path, dtype=np.float32):
    """GPT.from_pretrained: the GPT stored in the directory `path` (see the module's doc)."""
    from fastattn.model import GPT
    hf_config, tensors = read_hf_dir(path)
    config = gpt_config(hf_config)
    state = {}
    for name, array in tensors.items():
        key = name if name.startswith("transformer.") else "transformer." + name
        if key.endswith((".attn.bias", ".attn.masked_bias")) or name == "lm_head.weight":
            continue  # causal-mask buffers; the tied head (checked below)
        if key.endswith(_CONV1D):
            array = array.T  # Conv1D (in, out) -> (out, in)
        if key in state:
            raise ValueError(f"model.safetensors holds {key} twice (with and without 'transformer.')")
        state[key] = array
    model = GPT(config, dtype=dtype)
    names = {n for n, _ in model.named_parameters()}
    unexpected = sorted(set(state) - names)
    if unexpected:
        raise ValueError(f"model.safetensors has tensors a GPT-2 does not: {unexpected}")
    head = tensors.get("lm_head.weight")
    if head is not None and "transformer.wte.weight" in state and not np.array_equal(head, state["transformer.wte.weight"]):
        raise ValueError("lm_head.weight differs from transformer.wte.weight: untied heads are not supported")
    model.load_state_dict(state)  # names what is missing or mis-shaped
    return model
