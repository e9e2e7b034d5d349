"""A Llama-family model's configuration, read from a Hugging Face config.json of model_type
llama, qwen2 or mistral, and the name and shape of every parameter it implies.

What differs between the three, as their transformers classes define them:
    llama    attention_bias (q/k/v biases; an o_proj bias is not supported), rope_scaling
             default or llama3, tie_word_embeddings (Llama 3.2 and SmolLM2 tie, Llama 2 does not)
    qwen2    q/k/v biases always, o_proj none; sliding windows only on the layers that
             layer_types marks "sliding_attention" (use_sliding_window)
    mistral  sliding_window W (or null) on every layer
Rotary settings come from rope_theta / rope_scaling (older files) or rope_parameters (newer).
"""
from dataclasses import dataclass, field

import numpy as np

MODEL_TYPES = ("llama", "qwen2", "mistral")


@dataclass
class LlamaConfig:
    vocab_size: int
    hidden_size: int = 128
    intermediate_size: int = 344
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 4
    head_dim: int = None  # None: hidden_size / num_attention_heads
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: dict = None
    attention_bias: bool = False  # biases on q_proj, k_proj, v_proj
    tie_word_embeddings: bool = False
    windows: list = field(default_factory=list)  # per layer: None or a sliding window W
    model_type: str = "llama"

    def __post_init__(self):
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                     "num_attention_heads", "num_key_value_heads", "max_position_embeddings"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"LlamaConfig.{name} must be a positive int, got {value!r}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(f"num_attention_heads {self.num_attention_heads} must be a multiple of "
                             f"num_key_value_heads {self.num_key_value_heads}")
        if self.head_dim is None:
            if self.hidden_size % self.num_attention_heads:
                raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of num_attention_heads "
                                 f"{self.num_attention_heads}: give head_dim")
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.head_dim % 2:
            raise ValueError(f"head_dim must be even (rotary embeddings rotate pairs), got {self.head_dim}")
        if not self.windows:
            self.windows = [None] * self.num_hidden_layers
        if len(self.windows) != self.num_hidden_layers:
            raise ValueError(f"windows has {len(self.windows)} entries for {self.num_hidden_layers} layers")
        if self.model_type not in MODEL_TYPES:
            raise ValueError(f"model_type {self.model_type!r} is not a Llama-family type {MODEL_TYPES}")

    @property
    def block_size(self):  # (what fastattn/models/generation.py calls the longest context)
        return self.max_position_embeddings

    @property
    def n_layer(self):  # (the GPT's names, for what draws either model's attention maps)
        return self.num_hidden_layers

    @property
    def n_head(self):
        return self.num_attention_heads


def _get(hf, name, default=None):
    value = hf.get(name)
    return default if value is None else value


def llama_config(hf):
    """A LlamaConfig from the fields of a Hugging Face config.json (a dict) of a Llama, Qwen2 or
    Mistral, or ValueError naming what is missing or not supported."""
    kind = hf.get("model_type")
    if kind not in MODEL_TYPES:
        raise ValueError(f"model_type {kind!r} is not a Llama-family type {MODEL_TYPES}")
    need = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
    missing = [k for k in need if k not in hf]
    if missing:
        raise ValueError(f"config.json lacks {missing}")
    if _get(hf, "hidden_act", "silu") != "silu":
        raise ValueError(f"hidden_act {hf['hidden_act']!r} is not supported (only 'silu')")
    if hf.get("mlp_bias"):
        raise ValueError("mlp_bias true is not supported")
    n_layers = hf["num_hidden_layers"]
    rope = hf.get("rope_parameters") or {}
    theta = _get(hf, "rope_theta", rope.get("rope_theta", 10000.0))
    scaling = hf.get("rope_scaling") or (rope if rope.get("rope_type", "default") != "default" else None)
    if kind == "llama":
        bias = bool(hf.get("attention_bias", False))
        if bias:
            raise ValueError("attention_bias true is not supported for llama (its o_proj bias)")
        windows = [None] * n_layers
    elif kind == "qwen2":
        bias = True
        types = hf.get("layer_types")
        if types is None and hf.get("use_sliding_window"):
            first = _get(hf, "max_window_layers", n_layers)
            types = ["sliding_attention" if i >= first else "full_attention" for i in range(n_layers)]
        types = types or ["full_attention"] * n_layers
        if len(types) != n_layers or not set(types) <= {"full_attention", "sliding_attention"}:
            raise ValueError(f"layer_types {types!r} must be {n_layers} of full_attention/sliding_attention")
        windows = [hf.get("sliding_window") if t == "sliding_attention" else None for t in types]
    else:
        bias = False
        windows = [hf.get("sliding_window")] * n_layers
    return LlamaConfig(
        vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"], intermediate_size=hf["intermediate_size"],
        num_hidden_layers=n_layers, num_attention_heads=hf["num_attention_heads"],
        num_key_value_heads=_get(hf, "num_key_value_heads", hf["num_attention_heads"]),
        head_dim=hf.get("head_dim"), max_position_embeddings=_get(hf, "max_position_embeddings", 2048),
        rms_norm_eps=float(_get(hf, "rms_norm_eps", 1e-6)), rope_theta=float(theta), rope_scaling=scaling,
        attention_bias=bias, tie_word_embeddings=bool(_get(hf, "tie_word_embeddings", False)),
        windows=windows, model_type=kind)


def parameter_shapes(config):
    """name -> shape of every parameter of Llama(config), Hugging Face's names."""
    E, I, D = config.hidden_size, config.intermediate_size, config.head_dim
    H, H_kv = config.num_attention_heads, config.num_key_value_heads
    shapes = {"model.embed_tokens.weight": (config.vocab_size, E)}
    for i in range(config.num_hidden_layers):
        p = f"model.layers.{i}."
        shapes[p + "input_layernorm.weight"] = (E,)
        for name, out in (("q_proj", H * D), ("k_proj", H_kv * D), ("v_proj", H_kv * D)):
            shapes[p + f"self_attn.{name}.weight"] = (out, E)
            if config.attention_bias:
                shapes[p + f"self_attn.{name}.bias"] = (out,)
        shapes[p + "self_attn.o_proj.weight"] = (E, H * D)
        shapes[p + "post_attention_layernorm.weight"] = (E,)
        shapes[p + "mlp.gate_proj.weight"] = (I, E)
        shapes[p + "mlp.up_proj.weight"] = (I, E)
        shapes[p + "mlp.down_proj.weight"] = (E, I)
    shapes["model.norm.weight"] = (E,)
    if not config.tie_word_embeddings:
        shapes["lm_head.weight"] = (config.vocab_size, E)
    return shapes
