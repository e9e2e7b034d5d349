"""Quantized models on disk: `fastattn quantize` writes them, sample / embed / SentenceEncoder load
them as they are (no float32 weights read, nothing quantized again).

A quantized directory holds quantized.npz and, for a model that came from a Hugging Face
directory, that directory's other files (config.json, tokenizer.json, modules.json, 1_Pooling/,
...; not its weights). quantized.npz holds one member per parameter, under the parameter's name:
    model/<name>.int8 (N, K) int8 and model/<name>.scale (N,) float32   an int8 weight
    model/<name>.bfloat16 (N, K) uint16                                  a bfloat16 weight
    model/<name> float32                                                 a float32 one
and meta.json (bytes of JSON): format "fastattn-quantized", version, kind ("gpt" or "bert"),
compute_type, config (GPTConfig's fields or BERT's config.json) and tokenizer (a fastattn train
checkpoint's, else null). The files are read as training checkpoints are
(fastattn/training/checkpoint.py): every member's header checked against the parameters of the
model that the config builds before any array is read; a file that does not fit is a ValueError
naming it and what is wrong.
"""
import dataclasses
import os
import shutil

import numpy as np

from fastattn import _lowp
from fastattn.io.hf_files import read_json
from fastattn.io.tokenizer import tokenizer_from_json
from fastattn.models.bert import BertConfig, Encoder
from fastattn.models.gpt import GPT, GPTConfig
from fastattn.nn.module import _skip_init
from fastattn.training import checkpoint as _ckpt

FORMAT = "fastattn-quantized"
VERSION = 1
FILE = "quantized.npz"
# a Hugging Face directory's weights, not copied beside quantized.npz
_WEIGHT_FILES = (".safetensors", ".bin", ".h5", ".msgpack", ".onnx", ".ot", ".pt", ".pth", ".ckpt", ".npz")


def is_quantized_dir(path):
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, FILE))


def save_quantized(model, out_dir, source_dir=None, tokenizer=None):
    """Writes a quantized GPT or Encoder (after model.quantize(...)) to out_dir; source_dir: the
    Hugging Face directory it came from (its other files are copied); tokenizer: a fastattn
    train checkpoint's (stored in meta.json)."""
    compute_type = getattr(model, "compute_type", None)
    if compute_type not in ("int8", "bfloat16", "int8_bfloat16"):
        raise ValueError("save_quantized: quantize the model first (model.quantize('int8'))")
    if isinstance(model, GPT):
        kind, config = "gpt", dataclasses.asdict(model.config)
    elif isinstance(model, Encoder):
        if source_dir is None:
            raise ValueError("save_quantized: an Encoder needs the directory it came from (its config.json)")
        kind, config = "bert", read_json(os.path.join(source_dir, "config.json"), dict)
    else:
        raise TypeError(f"save_quantized: a GPT or an Encoder, got {type(model).__name__}")
    arrays = {}
    for name, p in model.named_parameters():
        d = p.data
        if isinstance(d, _lowp.Int8Weight):
            arrays[f"model/{name}.int8"], arrays[f"model/{name}.scale"] = d.q, d.scale
        elif isinstance(d, _lowp.BFloat16Weight):
            arrays[f"model/{name}.bfloat16"] = d.bits
        else:
            arrays[f"model/{name}"] = d
    header = {"format": FORMAT, "version": VERSION, "kind": kind, "compute_type": compute_type,
              "config": config, "tokenizer": None if tokenizer is None else tokenizer.to_json()}
    os.makedirs(out_dir, exist_ok=True)
    if source_dir is not None and os.path.abspath(source_dir) != os.path.abspath(out_dir):
        for entry in os.listdir(source_dir):
            src, dst = os.path.join(source_dir, entry), os.path.join(out_dir, entry)
            if os.path.isdir(src):
                shutil.copytree(src, dst, dirs_exist_ok=True, ignore=_ignore_weights)
            elif not entry.endswith(_WEIGHT_FILES):
                shutil.copyfile(src, dst)
    _ckpt._write(os.path.join(out_dir, FILE), header, arrays)


def _ignore_weights(folder, names):
    return [n for n in names if n.endswith(_WEIGHT_FILES)]


def _check_header(path, header):
    if header.get("format") != FORMAT:
        raise ValueError(f"{path} is not a fastattn quantized model (format {header.get('format')!r})")
    if header.get("version") != VERSION:
        raise ValueError(f"{path} is a version {header.get('version')} quantized model; this fastattn reads "
                         f"version {VERSION}")
    if header.get("kind") not in ("gpt", "bert"):
        raise ValueError(f"{path}: kind must be 'gpt' or 'bert', got {header.get('kind')!r}")
    if header.get("compute_type") not in ("int8", "bfloat16", "int8_bfloat16"):
        raise ValueError(f"{path}: compute_type must be int8, bfloat16 or int8_bfloat16, got "
                         f"{header.get('compute_type')!r}")
    if not isinstance(header.get("config"), dict) or not isinstance(header.get("tokenizer"), (dict, type(None))):
        raise ValueError(f"{path}: meta.json needs a config object and a tokenizer object or null")


def _build(path, header):
    """The model of the header's kind and config, its weights zeros never written."""
    try:
        if header["kind"] == "gpt":
            with _skip_init():
                return GPT(GPTConfig(**header["config"]))
        return Encoder(BertConfig.from_hf(header["config"]), None)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: the config does not fit a {header['kind']} model: {e}") from None


def _expected(path, zf, members, name, p):
    """(form, {member: (shape, dtype)}) of parameter `name`: whichever form the file holds."""
    shape = tuple(p.data.shape)
    forms = {"int8": {f"model/{name}.int8.npy": (shape, np.int8), f"model/{name}.scale.npy": (shape[:1], np.float32)},
             "bfloat16": {f"model/{name}.bfloat16.npy": (shape, np.uint16)},
             "float32": {f"model/{name}.npy": (shape, np.float32)}}
    present = [form for form, want in forms.items() if any(m in members for m in want)]
    if len(present) != 1 or (present[0] != "float32" and len(shape) != 2):
        raise ValueError(f"{path}: the parameter {name} {shape} must be stored once, as int8 + scale, bfloat16 "
                         f"(2-D weights) or float32; found {present or 'nothing'}")
    want = forms[present[0]]
    for member, (s, dtype) in want.items():
        if member not in members:
            raise ValueError(f"{path}: {member[:-4]} is missing")
        got_shape, got_dtype = _ckpt._npy_header(path, zf, members[member])
        if tuple(got_shape) != s or got_dtype != np.dtype(dtype):
            raise ValueError(f"{path}: {member[:-4]} is {got_dtype} {tuple(got_shape)}; the config says "
                             f"{np.dtype(dtype)} {s}")
    return present[0], {m: (s, np.dtype(dt)) for m, (s, dt) in want.items()}


def load_quantized(path):
    """(kind "gpt" or "bert", the model, the stored tokenizer or None) of a quantized directory
    (or its quantized.npz). The compiled backend must be able to run its compute_type here
    (ValueError naming what this CPU lacks)."""
    file = os.path.join(path, FILE) if os.path.isdir(path) else os.fspath(path)
    with _ckpt._open(file) as zf:
        members = {info.filename: info for info in zf.infolist()}
        info = members.get("meta.json.npy")
        if info is None or info.file_size > _ckpt.MAX_HEADER_BYTES:
            raise ValueError(f"{file} is not a fastattn quantized model (no readable meta.json)")
        shape, dtype = _ckpt._npy_header(file, zf, info)
        if dtype != np.uint8 or len(shape) != 1:
            raise ValueError(f"{file}: meta.json is {dtype} {shape}, not bytes")
        import json
        try:
            header = json.loads(_ckpt._read_member(file, zf, info, shape, dtype).tobytes().decode())
        except (ValueError, UnicodeDecodeError):
            raise ValueError(f"{file}: meta.json is not JSON") from None
        if not isinstance(header, dict):
            raise ValueError(f"{file}: meta.json must be a JSON object")
        _check_header(file, header)
        _lowp.check_compute_type(header["compute_type"])
        model = _build(file, header)
        params = list(model.named_parameters())
        plan, used = [], {"meta.json.npy"}
        for name, p in params:
            form, want = _expected(file, zf, members, name, p)
            plan.append((p, form, want))
            used.update(want)
        unexpected = sorted(set(members) - used)
        if unexpected:
            raise ValueError(f"{file}: arrays that are no parameter of the model: {unexpected[:5]}")
        for p, form, want in plan:
            arrays = [_ckpt._read_member(file, zf, members[m], s, dt) for m, (s, dt) in want.items()]
            if form == "int8":
                p.data = _lowp.Int8Weight(*arrays)  # (ValueError for a scale < 0, NaN or inf)
            elif form == "bfloat16":
                p.data = _lowp.BFloat16Weight(arrays[0])
            else:
                p.data = arrays[0]
            if form != "float32":
                p.grad = np.zeros(0, np.float32)
    if header["kind"] == "bert":
        for layer in model.encoder.layer:
            layer.attention.self._fuse_quantized()
    object.__setattr__(model, "compute_type", header["compute_type"])
    try:
        tokenizer = None if header["tokenizer"] is None else tokenizer_from_json(header["tokenizer"])
    except ValueError as e:
        raise ValueError(f"{file}: {e}") from None
    return header["kind"], model, tokenizer
