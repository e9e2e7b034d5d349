"""fastattn.from_pretrained(path): the model in a Hugging Face directory, its class picked by
config.json's model_type."""
import os

import numpy as np

from fastattn.io.hf_files import is_pretrained_dir, read_json
from fastattn.models.llama_config import MODEL_TYPES as LLAMA_TYPES

MODEL_TYPES = ("gpt2", "bert") + LLAMA_TYPES


def model_type(path):
    """config.json's model_type in the Hugging Face directory `path` (GPT-2 files may lack it:
    "gpt2"), or a clear error."""
    if not is_pretrained_dir(path):
        raise FileNotFoundError(f"{path} is not a Hugging Face model directory (config.json + model.safetensors)")
    kind = read_json(os.path.join(path, "config.json"), dict).get("model_type", "gpt2")
    if kind not in MODEL_TYPES:
        raise ValueError(f"{path}: model_type {kind!r} is not supported; fastattn reads {MODEL_TYPES}")
    return kind


def from_pretrained(path, dtype=np.float32, compute_type="float32"):
    """GPT (gpt2), Encoder (bert) or Llama (llama, qwen2, mistral) from the directory `path`;
    compute_type: the weights' precision (see Module.quantize)."""
    kind = model_type(path)
    if kind == "gpt2":
        from fastattn.models.gpt import GPT
        return GPT.from_pretrained(path, dtype, compute_type)
    if kind == "bert":
        from fastattn.models.bert import Encoder
        return Encoder.from_pretrained(path, dtype, compute_type)
    from fastattn.models.llama import Llama
    return Llama.from_pretrained(path, dtype, compute_type)
