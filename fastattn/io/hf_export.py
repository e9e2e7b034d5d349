"""Writing models out in Hugging Face's layout: a directory that transformers loads as its own.

    save_gpt2_dir(gpt, tokenizer, "out-hf")        # GPT2LMHeadModel.from_pretrained("out-hf")
    save_bert_dir(encoder, "out-bert", "all-MiniLM-L6-v2")   # BertModel.from_pretrained("out-bert")
    save_llama_dir(llama, tokenizer, "out-hf")      # LlamaForCausalLM (Qwen2..., Mistral...)

Each writes config.json, model.safetensors (the weights in the model's dtype) and the tokenizer:
a GPT's tokenizer.json is its PretrainedTokenizer's text as read, or, for a CharTokenizer, a
WordLevel model over the characters, split one character a piece, that tokenizers.Tokenizer
encodes to the same ids (and decodes without spaces); a BERT's tokenizer files are copied from
its source directory. Nothing is written unless the whole directory can be: the files go to a
temporary directory beside OUT, renamed into place at the end (OUT must not exist, or be empty).

GPT-2's linear layers are Conv1D, weight (in, out): fastattn's (out, in) weights are transposed.
A GPT without biases (bias=False, the trainer's default) gets zero biases, which GPT-2 always has;
its GELU is the erf form ("gelu") or the tanh one ("gelu_new"), as the GPT's config says.
lm_head.weight is left out: it is the token embedding (tied), as save_pretrained writes it.
A Llama-family model keeps Hugging Face's names and (out, in) layout: its config.json is the
inverse of fastattn/models/llama_config.py's reading (windows as Mistral's sliding_window or
Qwen2's layer_types).
"""
import json
import os
import shutil
import tempfile

import numpy as np

from fastattn.io.hf_files import _need
from fastattn.io.tokenizer import CharTokenizer, PretrainedTokenizer, _tokenizers

_CONV1D = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
# what a sentence-transformers / BERT directory holds beside its weights, copied as they are
BERT_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def char_tokenizer_json(tokenizer):
    """The tokenizer.json text of a CharTokenizer: character i of its vocabulary is token i."""
    if not isinstance(tokenizer, CharTokenizer):
        raise TypeError(f"tokenizer must be a CharTokenizer, got {type(tokenizer).__name__}")
    tk = _tokenizers()
    vocab = {c: i for i, c in enumerate(tokenizer.chars)}
    # A character outside the vocabulary: tokenizers raises "Missing [UNK] token" (fastattn a ValueError).
    tok = tk.Tokenizer(tk.models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = tk.pre_tokenizers.Split(tk.Regex(r"[\s\S]"), behavior="isolated")  # one code point each
    tok.decoder = tk.decoders.Fuse()  # tokens joined as they are (no spaces between them)
    return tok.to_str()


def tokenizer_json(tokenizer):
    """The tokenizer.json text of a fastattn tokenizer (CharTokenizer or PretrainedTokenizer)."""
    if isinstance(tokenizer, PretrainedTokenizer):
        return tokenizer.json
    return char_tokenizer_json(tokenizer)


def gpt2_config_json(config, dtype, tokenizer=None):
    """GPT-2's config.json (a dict) for a GPT of GPTConfig `config` whose weights are of `dtype`."""
    eos = None
    if isinstance(tokenizer, PretrainedTokenizer):
        eos = tokenizer._tok.token_to_id("<|endoftext|>")  # GPT-2's BPE has it; a trained one may not
    return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
            "vocab_size": config.vocab_size, "n_positions": config.block_size, "n_ctx": config.block_size,
            "n_embd": config.n_embd, "n_layer": config.n_layer, "n_head": config.n_head, "n_inner": None,
            "activation_function": {"none": "gelu", "tanh": "gelu_new"}[config.gelu_approximate],
            "resid_pdrop": config.dropout, "embd_pdrop": config.dropout, "attn_pdrop": config.dropout,
            "layer_norm_epsilon": config.layer_norm_eps, "initializer_range": 0.02,
            "scale_attn_weights": True, "tie_word_embeddings": True, "use_cache": True,
            "bos_token_id": eos, "eos_token_id": eos, "torch_dtype": np.dtype(dtype).name}


def gpt2_tensors(model):
    """name -> array of a fastattn GPT in GPT-2's layout (Conv1D weights (in, out), every bias)."""
    state = model.state_dict()
    C = model.config.n_embd
    out = {}
    for i in range(model.config.n_layer):
        p = f"transformer.h.{i}."
        for name, width in (("ln_1", C), ("attn.c_attn", 3 * C), ("attn.c_proj", C), ("ln_2", C),
                            ("mlp.c_fc", 4 * C), ("mlp.c_proj", C)):
            w = state[p + name + ".weight"]
            out[p + name + ".weight"] = w.T if name in _CONV1D else w
            out[p + name + ".bias"] = state.get(p + name + ".bias", np.zeros(width, w.dtype))
    for name in ("transformer.wte.weight", "transformer.wpe.weight", "transformer.ln_f.weight"):
        out[name] = state[name]
    w = state["transformer.ln_f.weight"]
    out["transformer.ln_f.bias"] = state.get("transformer.ln_f.bias", np.zeros(C, w.dtype))
    return {n: np.ascontiguousarray(a) for n, a in out.items()}


def save_gpt2_dir(model, tokenizer, out):
    """Writes the fastattn GPT `model` and its tokenizer (CharTokenizer or PretrainedTokenizer)
    to the new directory `out` as a Hugging Face GPT-2 (see the module's doc)."""
    tensors = gpt2_tensors(model)
    config = gpt2_config_json(model.config, tensors["transformer.wte.weight"].dtype, tokenizer)
    if tokenizer.vocab_size != model.config.vocab_size:
        raise ValueError(f"the tokenizer has {tokenizer.vocab_size} tokens, the model {model.config.vocab_size}")
    files = {"config.json": json.dumps(config, indent=2) + "\n", "tokenizer.json": tokenizer_json(tokenizer),
             "tokenizer_config.json": json.dumps({"tokenizer_class": "PreTrainedTokenizerFast",
                                                  "model_max_length": model.config.block_size}, indent=2) + "\n"}
    _write_dir(out, tensors, files)


_LLAMA_ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "mistral": "MistralForCausalLM"}


def llama_config_json(config, dtype, tokenizer=None):
    """The config.json (a dict) of a Llama, Qwen2 or Mistral for a Llama of LlamaConfig `config`."""
    kind = config.model_type
    hf = {"architectures": [_LLAMA_ARCHITECTURES[kind]], "model_type": kind, "vocab_size": config.vocab_size,
          "hidden_size": config.hidden_size, "intermediate_size": config.intermediate_size,
          "num_hidden_layers": config.num_hidden_layers, "num_attention_heads": config.num_attention_heads,
          "num_key_value_heads": config.num_key_value_heads, "head_dim": config.head_dim,
          "max_position_embeddings": config.max_position_embeddings, "rms_norm_eps": config.rms_norm_eps,
          "rope_theta": config.rope_theta, "rope_scaling": config.rope_scaling, "hidden_act": "silu",
          "tie_word_embeddings": config.tie_word_embeddings, "initializer_range": 0.02, "use_cache": True,
          "torch_dtype": np.dtype(dtype).name}
    windows = set(config.windows)
    if kind == "llama":
        if windows != {None}:
            raise ValueError("a llama model has no sliding windows; export it as mistral or qwen2")
        hf.update(attention_bias=config.attention_bias, mlp_bias=False)
    elif kind == "mistral":
        if len(windows) != 1:
            raise ValueError(f"a mistral model has one sliding window for every layer, not {config.windows}")
        hf["sliding_window"] = config.windows[0]
    else:  # qwen2: windows on the layers layer_types marks, all of one width
        widths = windows - {None}
        if len(widths) > 1:
            raise ValueError(f"a qwen2 model has one sliding window width, not {sorted(widths)}")
        hf.update(use_sliding_window=bool(widths), sliding_window=next(iter(widths), None),
                  layer_types=["full_attention" if w is None else "sliding_attention" for w in config.windows])
    if isinstance(tokenizer, PretrainedTokenizer):
        for name in ("<|endoftext|>", "</s>", "<|im_end|>"):
            if tokenizer._tok.token_to_id(name) is not None:
                hf["eos_token_id"] = tokenizer._tok.token_to_id(name)
                break
    return hf


def save_llama_dir(model, tokenizer, out):
    """Writes the fastattn Llama `model` (a Llama, Qwen2 or Mistral by its config's model_type)
    and its tokenizer to the new directory `out` as transformers' *ForCausalLM would."""
    if tokenizer.vocab_size > model.config.vocab_size:
        raise ValueError(f"the tokenizer has {tokenizer.vocab_size} tokens, the model {model.config.vocab_size}")
    tensors = {n: np.ascontiguousarray(a) for n, a in model.state_dict().items()}
    config = llama_config_json(model.config, tensors["model.embed_tokens.weight"].dtype, tokenizer)
    files = {"config.json": json.dumps(config, indent=2) + "\n", "tokenizer.json": tokenizer_json(tokenizer),
             "tokenizer_config.json": json.dumps({"tokenizer_class": "PreTrainedTokenizerFast",
                                                  "model_max_length": model.config.max_position_embeddings},
                                                 indent=2) + "\n"}
    _write_dir(out, tensors, files)


def bert_config_json(config, dtype):
    """BERT's config.json (a dict) for an Encoder of BertConfig `config`."""
    return {"architectures": ["BertModel"], "model_type": "bert", "vocab_size": config.vocab_size,
            "hidden_size": config.hidden_size, "num_hidden_layers": config.num_hidden_layers,
            "num_attention_heads": config.num_attention_heads, "intermediate_size": config.intermediate_size,
            "max_position_embeddings": config.max_position_embeddings, "type_vocab_size": config.type_vocab_size,
            "layer_norm_eps": config.layer_norm_eps, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
            "attention_probs_dropout_prob": 0.1, "position_embedding_type": "absolute", "pad_token_id": 0,
            "initializer_range": 0.02, "torch_dtype": np.dtype(dtype).name}


def save_bert_dir(encoder, out, tokenizer_dir=None):
    """Writes the fastattn Encoder `encoder` to the new directory `out` as a Hugging Face BERT
    (BertModel without its pooler), with tokenizer_dir's tokenizer files (BERT_TOKENIZER_FILES
    that it has; it must have tokenizer.json) copied as they are."""
    tensors = {n: np.ascontiguousarray(a) for n, a in encoder.state_dict().items()}
    dtype = tensors["embeddings.word_embeddings.weight"].dtype
    files = {"config.json": json.dumps(bert_config_json(encoder.config, dtype), indent=2) + "\n"}
    if tokenizer_dir is not None:
        if not os.path.isfile(os.path.join(tokenizer_dir, "tokenizer.json")):
            raise FileNotFoundError(f"{tokenizer_dir} has no tokenizer.json to export with the encoder")
        for name in BERT_TOKENIZER_FILES:
            path = os.path.join(tokenizer_dir, name)
            if os.path.isfile(path):
                with open(path, encoding="utf-8") as f:
                    files[name] = f.read()
    _write_dir(out, tensors, files)


def _write_dir(out, tensors, files):
    """model.safetensors (tensors) and the text files (name -> str) into the new directory out, all
    or nothing: written to a temporary directory beside it, then renamed."""
    out = os.fspath(out)
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise FileExistsError(f"{out} exists and is not an empty directory: choose another --out")
    save_file = _need("safetensors.numpy").save_file
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".export-", dir=parent)
    try:
        save_file(tensors, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
        for name, text in files.items():
            with open(os.path.join(tmp, name), "w", encoding="utf-8") as f:
                f.write(text)
        if os.path.isdir(out):
            os.rmdir(out)  # (empty)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
