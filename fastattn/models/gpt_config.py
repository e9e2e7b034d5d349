"""A GPT's configuration (nanoGPT's GPTConfig) and the name and shape of every parameter it implies."""
from dataclasses import dataclass

import numpy as np

from fastattn.models.presets import GPT_PRESETS, preset_settings


@dataclass
class GPTConfig:
    vocab_size: int
    block_size: int
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = True  # biases in Linear and LayerNorm layers, like GPT-2
    gelu_approximate: str = "none"  # "none" (erf, as nanoGPT) or "tanh" (GPT-2 checkpoints)
    layer_norm_eps: float = 1e-5

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"GPTConfig.{name} must be a positive int, got {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be a multiple of n_head ({self.n_head})")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not self.layer_norm_eps > 0:
            raise ValueError(f"layer_norm_eps must be > 0, got {self.layer_norm_eps}")
        if self.gelu_approximate not in ("none", "tanh"):
            raise ValueError(f"gelu_approximate must be 'none' or 'tanh', got {self.gelu_approximate!r}")

    @classmethod
    def preset(cls, name, vocab_size, **overrides):
        """The GPTConfig of preset `name` (small, default, large: fastattn/models/presets.py), with
        vocab_size and any field in overrides (they win over the preset's)."""
        return cls(vocab_size=vocab_size, **{**preset_settings(GPT_PRESETS, name), **overrides})


def parameter_shapes(config):
    """name -> shape of every parameter of GPT(config), in named_parameters' order, without
    building the model (what a checkpoint's arrays are checked against before they are read)."""
    C, bias = config.n_embd, config.bias
    shapes = {"transformer.wte.weight": (config.vocab_size, C), "transformer.wpe.weight": (config.block_size, C)}
    for i in range(config.n_layer):
        for name, out, n_in in (("ln_1", C, None), ("attn.c_attn", 3 * C, C), ("attn.c_proj", C, C),
                                ("ln_2", C, None), ("mlp.c_fc", 4 * C, C), ("mlp.c_proj", C, 4 * C)):
            shapes[f"transformer.h.{i}.{name}.weight"] = (out,) if n_in is None else (out, n_in)
            if bias:
                shapes[f"transformer.h.{i}.{name}.bias"] = (out,)
    shapes["transformer.ln_f.weight"] = (C,)
    if bias:
        shapes["transformer.ln_f.bias"] = (C,)
    return shapes
