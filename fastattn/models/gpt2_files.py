"""GPT-2 checkpoints in Hugging Face's layout: a directory with config.json and model.safetensors
(what transformers' GPT2LMHeadModel.save_pretrained writes), mapped onto fastattn's GPT.

    model = fastattn.GPT.from_pretrained("path/to/gpt2")
    tokenizer = fastattn.load_tokenizer("path/to/gpt2")   # its tokenizer.json (byte-level BPE)

Hugging Face stores GPT-2's linear layers as Conv1D, weight (in, out): they are transposed to
fastattn's (out, in), nanoGPT's layout. Tensor names may have the "transformer." prefix or not
(the original OpenAI conversion has none); the causal-mask buffers some files hold
(attn.bias, attn.masked_bias) are skipped, and lm_head.weight is the tied token embedding.
"""
import numpy as np

from fastattn.io.hf_files import a_number, positive_ints, read_hf_dir
from fastattn.models.gpt_config import GPTConfig, parameter_shapes

# config.json's activation_function -> GPTConfig.gelu_approximate
_ACTIVATIONS = {"gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu": "none"}
_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def gpt_config(hf):
    """A GPTConfig from the fields of a Hugging Face GPT-2 config.json (a dict)."""
    if hf.get("model_type", "gpt2") != "gpt2":
        raise ValueError(f"not a GPT-2 config: model_type is {hf.get('model_type')!r}")
    missing = [k for k in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head") if k not in hf]
    if missing:
        raise ValueError(f"config.json lacks {missing}")
    positive_ints(hf, ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head"))
    if hf["n_embd"] % hf["n_head"]:
        raise ValueError(f"config.json's n_embd {hf['n_embd']} is not a multiple of n_head {hf['n_head']}")
    act = hf.get("activation_function", "gelu_new")
    if act not in _ACTIVATIONS:
        raise ValueError(f"activation_function {act!r} is not supported (only {sorted(_ACTIVATIONS)})")
    if hf.get("n_inner") not in (None, 4 * hf["n_embd"]):
        raise ValueError(f"n_inner {hf['n_inner']} is not supported: the MLP is 4 x n_embd = {4 * hf['n_embd']}")
    if hf.get("tie_word_embeddings", True) is not True:
        raise ValueError("tie_word_embeddings false is not supported: the LM head is the token embedding")
    return GPTConfig(vocab_size=hf["vocab_size"], block_size=hf["n_positions"], n_layer=hf["n_layer"],
                     n_head=hf["n_head"], n_embd=hf["n_embd"], bias=True, gelu_approximate=_ACTIVATIONS[act],
                     layer_norm_eps=a_number(hf, "layer_norm_epsilon", 1e-5))


def _check_gpt2_shapes(hf, shapes):
    """ValueError unless model.safetensors declares every tensor of the GPT-2 that config.json
    describes, with its shape (Conv1D weights (in, out)): checked before the model is built."""
    want = parameter_shapes(gpt_config(hf))
    have = {}
    for name, shape in shapes.items():
        key = name if name.startswith("transformer.") else "transformer." + name
        have[key] = shape[::-1] if key.endswith(_CONV1D) else shape
    missing = sorted(set(want) - set(have))
    wrong = [f"{n}: {have[n]} != {s}" for n, s in want.items() if n in have and have[n] != s]
    if "lm_head.weight" in shapes and shapes["lm_head.weight"] != want["transformer.wte.weight"]:
        wrong.append(f"lm_head.weight: {shapes['lm_head.weight']} != {want['transformer.wte.weight']}")
    if missing or wrong:
        raise ValueError(f"model.safetensors does not fit config.json: missing {missing[:5]}, "
                         f"wrong shapes {wrong[:5]} (Conv1D weights as (out, in))")


def read_gpt2_dir(path):
    """(GPTConfig, state name -> array in fastattn's layout) of the GPT-2 stored in the directory
    `path` (see the module's doc); GPT.from_pretrained builds the model from them."""
    hf_config, tensors = read_hf_dir(path, _check_gpt2_shapes)
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
    unexpected = sorted(set(state) - set(parameter_shapes(config)))
    if unexpected:
        raise ValueError(f"model.safetensors has tensors a GPT-2 does not: {unexpected}")
    head = tensors.get("lm_head.weight")
    if head is not None and "transformer.wte.weight" in state and not np.array_equal(head, state["transformer.wte.weight"]):
        raise ValueError("lm_head.weight differs from transformer.wte.weight: untied heads are not supported")
    return config, state
