"""Hugging Face model directories (config.json + model.safetensors, what save_pretrained writes),
read with the safetensors package's NumPy API and checked before they are trusted. Nothing is
ever downloaded. This module knows the files, not the models: fastattn/models/gpt2_files.py and
fastattn/models/bert.py map their tensors onto a GPT and an Encoder.
"""
import json
import os

import numpy as np

def _need(module, extra="hf"):
    try:
        return __import__(module, fromlist=["_"])
    except ImportError:
        raise ImportError(f"reading Hugging Face checkpoints needs the {module.split('.')[0]} package: "
                          f"pip install '.[{extra}]' in fastattn's clone") from None


INDEX = "model.safetensors.index.json"  # a sharded checkpoint's map: tensor name -> shard file


def is_pretrained_dir(path):
    """Whether path is a directory in Hugging Face's layout (config.json + model.safetensors, or
    the shards that model.safetensors.index.json names)."""
    return os.path.isfile(os.path.join(path, "config.json")) and any(
        os.path.isfile(os.path.join(path, f)) for f in ("model.safetensors", INDEX))


def _weight_files(path):
    """The .safetensors files of a model directory: model.safetensors, else the shards that its
    index names (each a file of the directory itself), or ValueError naming the index."""
    single = os.path.join(path, "model.safetensors")
    if os.path.isfile(single):
        return [single]
    index_path = os.path.join(path, INDEX)
    weight_map = read_json(index_path, dict).get("weight_map")
    if not isinstance(weight_map, dict) or not all(isinstance(f, str) for f in weight_map.values()):
        raise ValueError(f"{index_path}: weight_map must map each tensor name to a file name")
    files = sorted(set(weight_map.values()))
    for f in files:
        if os.path.basename(f) != f or not f.endswith(".safetensors") or not os.path.isfile(os.path.join(path, f)):
            raise ValueError(f"{index_path} names {f!r}: not a .safetensors file of this directory")
    return [os.path.join(path, f) for f in files]


def read_json(path, kind=None):
    """The JSON file at path, or ValueError naming it when it is not valid JSON (or, with kind
    dict or list, not a JSON object or array)."""
    with open(path, encoding="utf-8") as f:
        try:
            data = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path} is not valid JSON: {e}") from None
    if kind is not None and not isinstance(data, kind):
        raise ValueError(f"{path} must hold a JSON {'object' if kind is dict else 'array'}, "
                         f"got a {type(data).__name__}")
    return data


def read_hf_dir(path, check=None):
    """(config.json as a dict, model.safetensors as name -> array) of a Hugging Face model
    directory (GPT-2's, BERT's, ...; the tensors of every shard for a sharded checkpoint), or
    FileNotFoundError when it is not one.

    Nothing is trusted before it is checked: config.json must be a JSON object, and the header
    of model.safetensors must describe tensors that lie inside the file (so that loading them
    allocates no more than the file holds); check(config, shapes), shapes name -> declared
    shape, may raise ValueError before any tensor is read. Errors name the file."""
    if not is_pretrained_dir(path):
        missing = [f for f in ("config.json", "model.safetensors") if not os.path.isfile(os.path.join(path, f))
                   and not (f == "model.safetensors" and os.path.isfile(os.path.join(path, INDEX)))]
        what = f"lacks {' and '.join(missing)}" if os.path.isdir(path) else "is not a directory"
        raise FileNotFoundError(f"{path} {what}: a Hugging Face model directory holds config.json and "
                                "model.safetensors (fastattn never downloads)")
    config = read_json(os.path.join(path, "config.json"), dict)
    files = _weight_files(path)
    shapes = {}
    for tensors_path in files:
        for name, shape in safetensors_shapes(tensors_path).items():
            if name in shapes:
                raise ValueError(f"{path}: tensor {name!r} is in two shards (the second: {tensors_path})")
            shapes[name] = shape
    if check is not None:
        try:
            check(config, shapes)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
    tensors = {}
    for tensors_path in files:
        tensors.update(_read_tensors(tensors_path))
    return config, tensors


def _read_tensors(tensors_path):
    """name -> array of one .safetensors file whose header safetensors_shapes has checked."""
    if "BF16" in _header_dtypes(tensors_path):  # (NumPy has no bfloat16: read those here)
        return _read_with_bfloat16(tensors_path)
    load_file = _need("safetensors.numpy").load_file
    try:
        return load_file(tensors_path)
    except Exception as e:  # safetensors raises its own SafetensorError (and others) for a bad file
        raise ValueError(f"{tensors_path} is not a readable safetensors file: {type(e).__name__}: {e}") from None


MAX_SAFETENSORS_HEADER = 100 << 20  # the JSON header of model.safetensors (safetensors' own limit)
_SAFETENSORS_ITEMSIZE = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2,
                         "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}


def safetensors_shapes(path):
    """name -> shape of the tensors a .safetensors file declares, read from its header alone
    (8 bytes of little-endian header length, then a JSON object), or ValueError naming the file
    when the header is not one or a tensor's bytes do not lie inside the file."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        start = f.read(8)
        n = int.from_bytes(start, "little") if len(start) == 8 else -1
        if not 0 < n <= min(MAX_SAFETENSORS_HEADER, size - 8):
            raise ValueError(f"{path} is not a safetensors file (header length {n}, file size {size})")
        try:
            header = json.loads(f.read(n).decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            raise ValueError(f"{path} is not a safetensors file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path} is not a safetensors file (its header is not a JSON object)")
    data = size - 8 - n
    shapes = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        ok = (isinstance(t, dict) and t.get("dtype") in _SAFETENSORS_ITEMSIZE and isinstance(t.get("shape"), list)
              and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in t["shape"])
              and isinstance(t.get("data_offsets"), list) and len(t["data_offsets"]) == 2
              and all(isinstance(o, int) and not isinstance(o, bool) for o in t["data_offsets"]))
        if ok:
            begin, end = t["data_offsets"]
            nbytes = _SAFETENSORS_ITEMSIZE[t["dtype"]] * int(np.prod(t["shape"], dtype=object))
            ok = 0 <= begin <= end <= data and end - begin == nbytes
        if not ok:
            raise ValueError(f"{path}: the header's entry for tensor {name!r} is not a tensor inside "
                             f"the file ({data} bytes of data): {str(t)[:200]}")
        shapes[name] = tuple(t["shape"])
    return shapes


def _header(path):
    """(the JSON header of a .safetensors file, the offset of its data): the file's header was
    checked by safetensors_shapes before this is called."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        return json.loads(f.read(n).decode("utf-8")), 8 + n


def _header_dtypes(path):
    return {t["dtype"] for name, t in _header(path)[0].items() if name != "__metadata__"}


_NUMPY_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
                 "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?"}


def _read_with_bfloat16(path):
    """name -> array of a .safetensors file that holds bfloat16 tensors (what Llama 3.2, SmolLM2
    and Qwen2.5 ship): each bfloat16 widened to the float32 with the same value (its bits are
    the high half of that float32's), the other tensors as stored."""
    header, start = _header(path)
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=start)
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        begin, end = t["data_offsets"]
        raw = np.asarray(data[begin:end])
        if t["dtype"] == "BF16":
            a = (raw.view("<u2").astype(np.uint32) << 16).view(np.float32)
        elif t["dtype"] in _NUMPY_DTYPES:
            a = raw.view(_NUMPY_DTYPES[t["dtype"]]).copy()
        else:
            raise ValueError(f"{path}: tensor {name!r} has dtype {t['dtype']}, which fastattn does not read")
        out[name] = a.reshape(t["shape"])
    del data
    return out


def positive_ints(hf, names):
    """ValueError unless each of these config.json fields is an int >= 1."""
    for k in names:
        v = hf[k]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"config.json's {k} must be an int >= 1, got {v!r}")


def a_number(hf, name, default):
    """config.json's field `name` (default if absent) as a float, or ValueError."""
    v = hf.get(name, default)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
        raise ValueError(f"config.json's {name} must be a number > 0, got {v!r}")
    return float(v)
