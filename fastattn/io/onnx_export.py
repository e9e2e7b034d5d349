"""A fastattn GPT or BERT encoder as a standard ONNX graph (opset 17), built with the onnx package alone.

    save_onnx(gpt_onnx(gpt), "gpt.onnx")          # input_ids (batch, sequence) int64 -> logits
    save_onnx(encoder_onnx(encoder), "bert.onnx") # input_ids, attention_mask (batch, sequence) int64
                                                  #   -> last_hidden_state (batch, sequence, hidden)
    encoder_onnx(encoder, pooling=["mean"])       # and sentence_embedding (batch, hidden), unit length

Batch and sequence are dynamic. The graph uses standard operators only (Gather, MatMul, Add,
LayerNormalization, Softmax, Erf or Tanh for the GELU, Trilu for the causal mask, Where,
Reshape, Transpose, Split, Slice), so ONNX Runtime or any opset-17 runtime runs it. The weights are
float32 initializers in the file. The encoder's token types are all 0 (its type embedding's row 0
is added), padding keys are masked with float32's lowest value, and padding rows of the output are
0, as fastattn's Encoder returns them. A sequence longer than the position table (the GPT's
block_size, the encoder's max_position_embeddings) is an error in the runtime (a broadcast in Add).
"""
import math
import os

import numpy as np

OPSET = 17
IR_VERSION = 8  # the IR of opset 17: runtimes that predate newer IRs still read the file


def _onnx():
    try:
        import onnx
    except ImportError:
        raise ImportError("exporting to ONNX needs the onnx package: pip install '.[onnx]' in fastattn's "
                          "clone") from None
    return onnx


class _Graph:
    """Nodes and initializers, with a fresh name for every value: op(...) returns its output's name."""

    def __init__(self, onnx):
        self.onnx, self.nodes, self.inits, self._n = onnx, [], [], 0

    def const(self, array, name=None):
        self._n += 1
        name = name or f"c{self._n}"
        self.inits.append(self.onnx.numpy_helper.from_array(np.array(array, order="C"), name))  # (0-d stays 0-d)
        return name

    def weight(self, array, name):
        return self.const(np.asarray(array, np.float32), name)

    def op(self, op_type, *inputs, outputs=1, **attrs):
        self._n += 1
        names = [f"{op_type.lower()}{self._n}" + (f"_{i}" if outputs > 1 else "") for i in range(outputs)]
        self.nodes.append(self.onnx.helper.make_node(op_type, list(inputs), names, **attrs))
        return names[0] if outputs == 1 else names

    # --- the layers ---------------------------------------------------------------------------------
    def linear(self, x, weight, bias, name):
        """x (..., in) @ weight.T (weight (out, in), stored transposed) + bias (None: no bias)."""
        y = self.op("MatMul", x, self.weight(np.asarray(weight).T, name + ".weight_t"))
        return y if bias is None else self.op("Add", y, self.weight(bias, name + ".bias"))

    def layer_norm(self, x, weight, bias, eps, name):
        inputs = [x, self.weight(weight, name + ".weight")]
        if bias is not None:
            inputs.append(self.weight(bias, name + ".bias"))
        return self.op("LayerNormalization", *inputs, axis=-1, epsilon=float(eps))

    def gelu(self, x, approximate):
        half = self.const(np.float32(0.5))
        one = self.const(np.float32(1.0))
        if approximate == "tanh":  # 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))
            cube = self.op("Mul", self.op("Mul", x, x), x)
            inner = self.op("Add", x, self.op("Mul", cube, self.const(np.float32(0.044715))))
            t = self.op("Tanh", self.op("Mul", inner, self.const(np.float32(math.sqrt(2 / math.pi)))))
        else:  # 0.5 x (1 + erf(x / sqrt 2))
            t = self.op("Erf", self.op("Mul", x, self.const(np.float32(1 / math.sqrt(2)))))
        return self.op("Mul", self.op("Mul", x, half), self.op("Add", t, one))

    def attention(self, x, w_qkv, b_qkv, n_head, mask_bias, name):
        """Multi-head self-attention's heads, side by side: x (B, T, C) -> (B, T, C), with
        q, k, v = split(x W_qkv^T + b) and softmax(q k^T / sqrt(hs) + mask_bias) v per head."""
        C = np.shape(w_qkv)[1]
        hs = C // n_head
        qkv = self.linear(x, w_qkv, b_qkv, name + ".qkv")
        q, k, v = self.op("Split", qkv, self.const(np.array([C, C, C], np.int64)), axis=-1, outputs=3)
        heads = self.const(np.array([0, 0, n_head, hs], np.int64))  # (B, T, C) -> (B, T, nh, hs)
        q = self.op("Transpose", self.op("Reshape", q, heads), perm=[0, 2, 1, 3])  # (B, nh, T, hs)
        k = self.op("Transpose", self.op("Reshape", k, heads), perm=[0, 2, 3, 1])  # (B, nh, hs, T)
        v = self.op("Transpose", self.op("Reshape", v, heads), perm=[0, 2, 1, 3])
        scores = self.op("Mul", self.op("MatMul", q, k), self.const(np.float32(1 / math.sqrt(hs))))
        att = self.op("Softmax", self.op("Add", scores, mask_bias), axis=-1)  # (B, nh, T, T)
        y = self.op("Transpose", self.op("MatMul", att, v), perm=[0, 2, 1, 3])  # (B, T, nh, hs)
        return self.op("Reshape", y, self.const(np.array([0, 0, C], np.int64)))

    def pool(self, hidden, keep, modes, normalize):
        """hidden (B, T, H) with padding rows 0, keep (B, T, 1) 1.0 for tokens -> (B, len(modes) H)."""
        axis1 = self.const(np.array([1], np.int64))
        count = self.op("Max", self.op("ReduceSum", keep, axis1, keepdims=0), self.const(np.float32(1e-9)))  # (B, 1)
        parts = []
        for mode in modes:
            if mode == "cls":
                parts.append(self.op("Gather", hidden, self.const(np.int64(0)), axis=1))
            elif mode == "max":  # padding at -1e9, as pool() does
                real = self.op("Cast", keep, to=self.onnx.TensorProto.BOOL)
                masked = self.op("Where", real, hidden, self.const(np.float32(-1e9)))
                parts.append(self.op("ReduceMax", masked, axes=[1], keepdims=0))
            elif mode in ("mean", "mean_sqrt_len"):
                total = self.op("ReduceSum", hidden, axis1, keepdims=0)
                parts.append(self.op("Div", total, count if mode == "mean" else self.op("Sqrt", count)))
            else:
                raise ValueError(f"pooling mode {mode!r} is not one of cls, max, mean, mean_sqrt_len")
        v = parts[0] if len(parts) == 1 else self.op("Concat", *parts, axis=-1)
        if not normalize:
            return v
        norm = self.op("Sqrt", self.op("ReduceSum", self.op("Mul", v, v), self.const(np.array([-1], np.int64)),
                                       keepdims=1))
        return self.op("Div", v, self.op("Max", norm, self.const(np.float32(1e-12))))

    def positions(self, input_ids, table, name):
        """(the sequence length T as a (1,) int64 tensor, the first T rows of the position table
        (T, C): a Slice, which is Gather(table, Range(0, T)))."""
        length = self.op("Shape", input_ids, start=1, end=2)
        zero = self.const(np.array([0], np.int64))
        return length, self.op("Slice", self.weight(table, name), zero, length, zero)

    def model(self, name, inputs, outputs):
        onnx = self.onnx
        graph = onnx.helper.make_graph(self.nodes, name, inputs, outputs, self.inits)
        model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", OPSET)],
                                       producer_name="fastattn")
        model.ir_version = IR_VERSION
        onnx.checker.check_model(model, full_check=True)
        return model


def gpt_onnx(model):
    """The onnx.ModelProto of a fastattn GPT's forward: input_ids (batch, sequence) -> logits."""
    onnx = _onnx()
    cfg, state = model.config, model.state_dict()
    g = _Graph(onnx)
    ids = "input_ids"
    length, pos = g.positions(ids, state["transformer.wpe.weight"], "transformer.wpe.weight")
    wte = g.weight(state["transformer.wte.weight"], "transformer.wte.weight")
    x = g.op("Add", g.op("Gather", wte, ids), pos)
    # the causal mask (T, T): 0 on and below the diagonal, -inf above (every row keeps its diagonal)
    square = g.op("Concat", length, length, axis=0)
    ones = g.op("ConstantOfShape", square, value=onnx.numpy_helper.from_array(np.array([1], np.float32)))
    below = g.op("Cast", g.op("Trilu", ones, upper=0), to=onnx.TensorProto.BOOL)
    mask_bias = g.op("Where", below, g.const(np.float32(0)), g.const(np.float32(-np.inf)))
    eps = cfg.layer_norm_eps
    for i in range(cfg.n_layer):
        p = f"transformer.h.{i}."
        b = lambda n: state.get(p + n + ".bias")  # noqa: E731 (None without biases)
        h = g.layer_norm(x, state[p + "ln_1.weight"], b("ln_1"), eps, p + "ln_1")
        h = g.attention(h, state[p + "attn.c_attn.weight"], b("attn.c_attn"), cfg.n_head, mask_bias, p + "attn")
        x = g.op("Add", x, g.linear(h, state[p + "attn.c_proj.weight"], b("attn.c_proj"), p + "attn.c_proj"))
        h = g.layer_norm(x, state[p + "ln_2.weight"], b("ln_2"), eps, p + "ln_2")
        h = g.gelu(g.linear(h, state[p + "mlp.c_fc.weight"], b("mlp.c_fc"), p + "mlp.c_fc"), cfg.gelu_approximate)
        x = g.op("Add", x, g.linear(h, state[p + "mlp.c_proj.weight"], b("mlp.c_proj"), p + "mlp.c_proj"))
    x = g.layer_norm(x, state["transformer.ln_f.weight"], state.get("transformer.ln_f.bias"), eps, "transformer.ln_f")
    g.nodes.append(onnx.helper.make_node("MatMul", [x, g.op("Transpose", wte, perm=[1, 0])], ["logits"]))
    T = onnx.TensorProto
    return g.model("fastattn_gpt", [onnx.helper.make_tensor_value_info(ids, T.INT64, ["batch", "sequence"])],
                   [onnx.helper.make_tensor_value_info("logits", T.FLOAT, ["batch", "sequence", cfg.vocab_size])])


def encoder_onnx(encoder, pooling=None, normalize=True):
    """The onnx.ModelProto of a fastattn Encoder's forward: input_ids, attention_mask (batch,
    sequence) -> last_hidden_state (batch, sequence, hidden), and, with pooling (a list of
    sentence-transformers' modes: "mean", "cls", "max", "mean_sqrt_len", concatenated in that
    order), sentence_embedding (batch, len(pooling) x hidden): the pooled vectors as
    fastattn.inference.embeddings.pool computes them, scaled to unit length if normalize."""
    onnx = _onnx()
    cfg, state = encoder.config, encoder.state_dict()
    g = _Graph(onnx)
    ids, mask = "input_ids", "attention_mask"
    emb = "embeddings."
    _, pos = g.positions(ids, state[emb + "position_embeddings.weight"], emb + "position_embeddings.weight")
    words = g.weight(state[emb + "word_embeddings.weight"], emb + "word_embeddings.weight")
    x = g.op("Add", g.op("Gather", words, ids), pos)
    x = g.op("Add", x, g.weight(state[emb + "token_type_embeddings.weight"][0], emb + "token_type_embeddings.row0"))
    eps = cfg.layer_norm_eps
    x = g.layer_norm(x, state[emb + "LayerNorm.weight"], state[emb + "LayerNorm.bias"], eps, emb + "LayerNorm")
    # the key-padding mask (B, 1, 1, T): 0 for a token, float32's lowest for padding (finite: a row
    # of padding only stays finite, and is zeroed at the end)
    real = g.op("Cast", g.op("Unsqueeze", mask, g.const(np.array([1, 2], np.int64))), to=onnx.TensorProto.BOOL)
    mask_bias = g.op("Where", real, g.const(np.float32(0)), g.const(np.float32(np.finfo(np.float32).min)))
    for i in range(cfg.num_hidden_layers):
        p = f"encoder.layer.{i}."
        a = p + "attention."
        w_qkv = np.concatenate([state[a + f"self.{n}.weight"] for n in ("query", "key", "value")])
        b_qkv = np.concatenate([state[a + f"self.{n}.bias"] for n in ("query", "key", "value")])
        h = g.attention(x, w_qkv, b_qkv, cfg.num_attention_heads, mask_bias, a + "self")
        h = g.linear(h, state[a + "output.dense.weight"], state[a + "output.dense.bias"], a + "output.dense")
        x = g.layer_norm(g.op("Add", h, x), state[a + "output.LayerNorm.weight"], state[a + "output.LayerNorm.bias"],
                         eps, a + "output.LayerNorm")
        h = g.gelu(g.linear(x, state[p + "intermediate.dense.weight"], state[p + "intermediate.dense.bias"],
                            p + "intermediate.dense"), "none")
        h = g.linear(h, state[p + "output.dense.weight"], state[p + "output.dense.bias"], p + "output.dense")
        x = g.layer_norm(g.op("Add", h, x), state[p + "output.LayerNorm.weight"], state[p + "output.LayerNorm.bias"],
                         eps, p + "output.LayerNorm")
    keep = g.op("Cast", g.op("Unsqueeze", mask, g.const(np.array([2], np.int64))), to=onnx.TensorProto.FLOAT)
    g.nodes.append(onnx.helper.make_node("Mul", [x, keep], ["last_hidden_state"]))  # padding rows: 0
    T = onnx.TensorProto
    outputs = [onnx.helper.make_tensor_value_info("last_hidden_state", T.FLOAT, ["batch", "sequence", cfg.hidden_size])]
    if pooling:
        g.nodes.append(onnx.helper.make_node("Identity", [g.pool("last_hidden_state", keep, pooling, normalize)],
                                             ["sentence_embedding"]))
        outputs.append(onnx.helper.make_tensor_value_info("sentence_embedding", T.FLOAT,
                                                          ["batch", len(pooling) * cfg.hidden_size]))
    return g.model("fastattn_encoder",
                   [onnx.helper.make_tensor_value_info(n, T.INT64, ["batch", "sequence"]) for n in (ids, mask)],
                   outputs)


def save_onnx(model_proto, path):
    """Writes an onnx.ModelProto to the new file path (one file, the weights inside; an existing
    path is an error), through a temporary file beside it, renamed at the end."""
    path = os.fspath(path)
    if os.path.exists(path):
        raise FileExistsError(f"{path} exists: choose another --out")
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        _onnx().save_model(model_proto, tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
