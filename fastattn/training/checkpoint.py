"""Checkpoints: a GPT's weights, config, optimizer state, step and tokenizer in one .npz file.

The arrays are stored under "model/<nanoGPT name>", "optimizer/exp_avg/<i>" and
"optimizer/exp_avg_sq/<i>"; everything else (config, dtype, step, tokenizer, optimizer
hyperparameters, the caller's `meta`) is one JSON document stored as the bytes of "meta.json".
np.load(..., allow_pickle=False) reads it all back, so loading a file never runs code.
A save writes a temporary file beside the target and renames it over: a reader (or a crash)
sees the old checkpoint or the new one, never half of one.
"""
import dataclasses
import json
import os
import tempfile
import zipfile
import zlib

import numpy as np

from fastattn.io.atomic import named_error
from fastattn.io.tokenizer import tokenizer_from_json
from fastattn.models.gpt import GPT
from fastattn.models.gpt_config import GPTConfig, parameter_shapes
from fastattn.models.llama import Llama
from fastattn.models.llama_config import LlamaConfig, parameter_shapes as llama_shapes

FORMAT = "fastattn-checkpoint"
VERSION = 1


@dataclasses.dataclass
class Checkpoint:
    """What load_checkpoint returns: config (GPTConfig), dtype, model_state (name -> array),
    step, tokenizer (CharTokenizer, PretrainedTokenizer or None), optimizer_state (AdamW.state_dict() form or None),
    meta (the caller's JSON-able dict)."""
    config: GPTConfig
    dtype: np.dtype
    model_state: dict
    step: int
    tokenizer: object
    optimizer_state: dict
    meta: dict

    def build_model(self, compute_type="float32"):
        """A GPT (or Llama, for a LlamaConfig) of this config and dtype holding these weights
        (compute_type: their precision for inference, see Module.quantize)."""
        model = (Llama if isinstance(self.config, LlamaConfig) else GPT)(self.config, dtype=self.dtype)
        model.load_state_dict(self.model_state)
        return model.quantize(compute_type)


def save_checkpoint(path, model, tokenizer=None, optimizer=None, step=0, meta=None):
    """Writes `model` (a GPT), its tokenizer, the optimizer's state (AdamW) and step to `path`
    atomically; meta is any JSON-able dict stored alongside (the trainer keeps its settings,
    random states and best loss there)."""
    header = {"format": FORMAT, "version": VERSION,
              "kind": "llama" if isinstance(model.config, LlamaConfig) else "gpt",
              "config": dataclasses.asdict(model.config),
              "dtype": np.dtype(model.parameters()[0].data.dtype).name,
              "step": int(step),
              "tokenizer": None if tokenizer is None else tokenizer.to_json(),
              "meta": meta or {}}
    arrays = _state_arrays(model, optimizer, header)
    _write(path, header, arrays)


def _state_arrays(model, optimizer, header):
    """The arrays of the model's parameters and the optimizer's moments; the optimizer's step and
    hyperparameters go into header."""
    arrays = {f"model/{name}": p.data for name, p in model.named_parameters()}
    if optimizer is not None:
        state = optimizer.state_dict()
        header["optimizer"] = {"step": state["step"], "param_groups": state["param_groups"]}
        for i, (m, v) in enumerate(zip(state["exp_avg"], state["exp_avg_sq"])):
            arrays[f"optimizer/exp_avg/{i}"] = m
            arrays[f"optimizer/exp_avg_sq/{i}"] = v
    return arrays


def _write(path, header, arrays):
    """Writes arrays and the JSON header (as the bytes of "meta.json") to the .npz at path,
    atomically."""
    arrays = {**arrays, "meta.json": np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)}
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    # NAME.<pid>.<random>.tmp: the pid tells remove_stale_temporaries whether its writer still runs
    fd, tmp = tempfile.mkstemp(prefix=f"{os.path.basename(path)}.{os.getpid()}.", suffix=".tmp", dir=folder)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; a checkpoint is an ordinary file
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        os.unlink(tmp)
        raise named_error(e, path) from None  # (a full disk's error names no file)
    except BaseException:
        os.unlink(tmp)
        raise


NEVER_DOWNLOADS = ("fastattn never downloads: pass a local directory holding config.json and "
                   "model.safetensors (Hugging Face) or best.npz/ckpt.npz (fastattn train)")


def checkpoint_file(path):
    """The .npz file that --checkpoint PATH names: PATH itself, or a training directory's best.npz,
    else its ckpt.npz. (A Hugging Face directory is recognised before this is called.)"""
    if not os.path.exists(path):
        kind = "file" if path.endswith(".npz") else "directory"
        raise FileNotFoundError(f"{path}: no such {kind}; {NEVER_DOWNLOADS}")
    if not os.path.isdir(path):
        return path
    for name in ("best.npz", "ckpt.npz"):
        if os.path.exists(os.path.join(path, name)):
            return os.path.join(path, name)
    hf = [f for f in ("config.json", "model.safetensors") if os.path.isfile(os.path.join(path, f))]
    if hf:  # half a Hugging Face directory, e.g. PyTorch's pytorch_model.bin instead of safetensors
        missing = ({"config.json", "model.safetensors"} - set(hf)).pop()
        raise FileNotFoundError(f"{path} has {hf[0]} but no {missing}: a Hugging Face directory needs "
                                "both (the weights as safetensors; fastattn never downloads)")
    raise FileNotFoundError(f"{path} holds no checkpoint: neither best.npz/ckpt.npz (fastattn train) "
                            "nor config.json + model.safetensors (Hugging Face)")


def remove_stale_temporaries(folder, names=("ckpt.npz", "best.npz")):
    """Removes the temporary files that a save of one of these checkpoints left in `folder`
    when its process was killed before the rename: NAME.<pid>.<random>.tmp whose process no
    longer runs (or is this one, which is not saving now), and NAME.<random>.tmp, the older
    form that has no pid. Returns the paths removed."""
    removed = []
    for entry in os.listdir(folder):
        base = next((n for n in names if entry.startswith(n + ".") and entry.endswith(".tmp")), None)
        if base is None:
            continue
        parts = entry[len(base) + 1:-len(".tmp")].split(".")
        if len(parts) == 2 and parts[0].isdigit() and _running(int(parts[0])):
            continue  # another process is writing it right now
        try:
            os.unlink(os.path.join(folder, entry))
            removed.append(os.path.join(folder, entry))
        except FileNotFoundError:  # (its writer renamed or removed it meanwhile)
            pass
    return removed


def _running(pid):
    """Whether another process with this pid runs."""
    if pid == os.getpid() or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # (someone else's process)
        return True
    return True


MAX_HEADER_BYTES = 64 << 20  # meta.json: the config, the tokenizer, the trainer's settings
_UNREADABLE = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError)


def _npy_header(path, zf, info):
    """(shape, dtype) from the .npy header of a member, read alone (no data), or ValueError."""
    try:
        with zf.open(info) as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f".npy format version {version} is not supported")
    except _UNREADABLE as e:
        raise ValueError(f"{path}: the member {info.filename} is not a readable array: {e}") from None
    return shape, dtype


def _read_member(path, zf, info, shape, dtype):
    """The array of a member whose header says `shape` and `dtype`, or ValueError (truncated,
    a bad CRC, a size in the zip directory that does not fit the header)."""
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    # The decompression limit: the zip directory says how much the member inflates to, and
    # that must be its header and this array, no more (decided before anything is inflated).
    if not nbytes <= info.file_size <= nbytes + 65536:
        raise ValueError(f"{path}: the member {info.filename} inflates to {info.file_size} bytes, "
                         f"but an array {shape} of {dtype} is {nbytes} bytes")
    try:
        with zf.open(info) as f:
            return np.lib.format.read_array(f, allow_pickle=False)
    except _UNREADABLE as e:
        raise ValueError(f"{path}: the member {info.filename} is unreadable: {e}") from None


_KINDS = {"gpt": "a GPT checkpoint (fastattn train; read by fastattn sample)",
          "llama": "a Llama checkpoint (fastattn train --arch llama; read by fastattn sample)",
          "seq2seq": "a seq2seq checkpoint (fastattn train-seq2seq; read by fastattn translate)"}


def _header(path, zf, members, kind="gpt"):
    """The checked meta.json of a checkpoint: a dict with format, version, config, dtype, step."""
    info = members.get("meta.json.npy")
    if info is None:
        raise ValueError(f"{path} is not a readable fastattn checkpoint (no readable meta.json)")
    if info.file_size > MAX_HEADER_BYTES:
        raise ValueError(f"{path}: meta.json inflates to {info.file_size} bytes (at most {MAX_HEADER_BYTES})")
    shape, dtype = _npy_header(path, zf, info)
    if dtype != np.uint8 or len(shape) != 1:
        raise ValueError(f"{path} is not a fastattn checkpoint (meta.json is {dtype} {shape}, not bytes)")
    try:
        header = json.loads(_read_member(path, zf, info, shape, dtype).tobytes().decode())
    except (ValueError, UnicodeDecodeError):
        raise ValueError(f"{path} is not a fastattn checkpoint (no readable meta.json)") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: meta.json must be a JSON object, got {type(header).__name__}")
    if header.get("format") != FORMAT:
        raise ValueError(f"{path} is not a fastattn checkpoint (format {header.get('format')!r})")
    if header.get("version") != VERSION:
        raise ValueError(f"{path} is a version {header.get('version')} checkpoint; this fastattn reads "
                         f"version {VERSION}")
    found = header.get("kind", "gpt")  # (checkpoints from before seq2seq models are GPTs)
    kinds = (kind,) if isinstance(kind, str) else kind
    if found not in kinds:
        raise ValueError(f"{path} is {_KINDS.get(found, f'a {found!r} checkpoint')}, not "
                         f"{' or '.join(_KINDS[k] for k in kinds)}")
    for key, kinds in (("config", dict), ("meta", dict), ("optimizer", dict), ("step", int),
                       ("tokenizer", (dict, type(None)))):
        if key in header and (not isinstance(header[key], kinds) or isinstance(header[key], bool)):
            raise ValueError(f"{path}: meta.json's {key} is a {type(header[key]).__name__}")
    if "config" not in header or "step" not in header or header["step"] < 0:
        raise ValueError(f"{path}: meta.json needs a config and a step >= 0")
    if header.get("dtype") not in ("float32", "float64"):
        raise ValueError(f"{path}: dtype must be 'float32' or 'float64', got {header.get('dtype')!r}")
    opt = header.get("optimizer")
    if opt is not None and (isinstance(opt.get("step"), bool) or not isinstance(opt.get("step"), int)
                            or not isinstance(opt.get("param_groups"), list)):
        raise ValueError(f"{path}: the optimizer state needs an int step and a list of param_groups")
    return header


def _open(path):
    """The zip file of a checkpoint, or FileNotFoundError / ValueError naming it."""
    path = os.fspath(path)
    try:
        return zipfile.ZipFile(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"no checkpoint at {path}") from None
    except (zipfile.BadZipFile, EOFError, ValueError) as e:  # not a zip (a .npy, text, ...), truncated
        raise ValueError(f"{path} is not a readable fastattn checkpoint (a .npz file): {e}") from None


def _read_state(path, zf, members, header, shapes):
    """(model_state, optimizer_state or None) of a checkpoint whose parameters have `shapes`
    (name -> shape, in the optimizer's order), each array's header checked before it is read."""
    dtype = np.dtype(header["dtype"])
    expected = {f"model/{name}.npy": shape for name, shape in shapes.items()}
    if "optimizer" in header:  # one pair of moments per parameter, in the optimizer's order
        for i in range(len(shapes)):
            expected[f"optimizer/exp_avg/{i}.npy"] = expected[f"optimizer/exp_avg_sq/{i}.npy"] = None
    missing = sorted(set(expected) - set(members))
    unexpected = sorted(set(members) - set(expected) - {"meta.json.npy"})
    if missing or unexpected:
        raise ValueError(f"{path}: the arrays do not fit its config: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    declared = {}
    for name, want in expected.items():
        shape, dt = _npy_header(path, zf, members[name])
        if dt != dtype or (want is not None and shape != want):
            raise ValueError(f"{path}: {name[:-4]} is {dt} {shape}; the config and dtype say "
                             f"{dtype} {want if want is not None else 'a parameter shape'}")
        declared[name] = shape
    moments = sorted(s for n, s in declared.items() if n.startswith("optimizer/exp_avg/"))
    squares = sorted(s for n, s in declared.items() if n.startswith("optimizer/exp_avg_sq/"))
    if "optimizer" in header and not moments == squares == sorted(shapes.values()):
        raise ValueError(f"{path}: the optimizer moments' shapes do not fit the parameters")
    arrays = {name[:-4]: _read_member(path, zf, members[name], shape, dtype) for name, shape in declared.items()}
    model_state = {k[len("model/"):]: a for k, a in arrays.items() if k.startswith("model/")}
    optimizer_state = None
    if "optimizer" in header:
        n = len(shapes)
        optimizer_state = {**header["optimizer"],
                           "exp_avg": [arrays[f"optimizer/exp_avg/{i}"] for i in range(n)],
                           "exp_avg_sq": [arrays[f"optimizer/exp_avg_sq/{i}"] for i in range(n)]}
    return model_state, optimizer_state


def load_checkpoint(path):
    """Reads a file written by save_checkpoint; a file that is not one raises ValueError naming
    the file and what is wrong. Nothing large is read before it is known to fit: meta.json (at
    most MAX_HEADER_BYTES) first, then each array's header, checked against the shapes that the
    config implies, and the size each member inflates to (from the zip directory)."""
    path = os.fspath(path)
    with _open(path) as zf:
        members = {info.filename: info for info in zf.infolist()}
        header = _header(path, zf, members, ("gpt", "llama"))
        config_class, shapes = ((LlamaConfig, llama_shapes) if header.get("kind") == "llama"
                                else (GPTConfig, parameter_shapes))
        try:
            config = config_class(**header["config"])
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: the checkpoint's config does not fit {config_class.__name__}: {e}") from None
        model_state, optimizer_state = _read_state(path, zf, members, header, shapes(config))
    tok = header.get("tokenizer")
    try:
        tokenizer = None if tok is None else tokenizer_from_json(tok)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    if tokenizer is not None and tokenizer.vocab_size > config.vocab_size:
        raise ValueError(f"{path}: the tokenizer has {tokenizer.vocab_size} tokens, the model {config.vocab_size}")
    return Checkpoint(config=config, dtype=np.dtype(header["dtype"]), model_state=model_state, step=header["step"],
                      tokenizer=tokenizer, optimizer_state=optimizer_state, meta=header.get("meta", {}))
