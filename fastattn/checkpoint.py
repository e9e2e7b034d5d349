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

import numpy as np

from fastattn.model import GPT, GPTConfig
from fastattn.tokenizer import CharTokenizer

FORMAT = "fastattn-checkpoint"
VERSION = 1


@dataclasses.dataclass
class Checkpoint:
    """What load_checkpoint returns: config (GPTConfig), dtype, model_state (name -> array),
    step, tokenizer (CharTokenizer or None), optimizer_state (AdamW.state_dict() form or None),
    meta (the caller's JSON-able dict)."""
    config: GPTConfig
    dtype: np.dtype
    model_state: dict
    step: int
    tokenizer: object
    optimizer_state: dict
    meta: dict

    def build_model(self):
        """A GPT of this config and dtype holding these weights."""
        model = GPT(self.config, dtype=self.dtype)
        model.load_state_dict(self.model_state)
        return model


def save_checkpoint(path, model, tokenizer=None, optimizer=None, step=0, meta=None):
    """Writes `model` (a GPT), its tokenizer, the optimizer's state (AdamW) and step to `path`
    atomically; meta is any JSON-able dict stored alongside (the trainer keeps its settings,
    random states and best loss there)."""
    header = {"format": FORMAT, "version": VERSION,
              "config": dataclasses.asdict(model.config),
              "dtype": np.dtype(model.wte.data.dtype).name,
              "step": int(step),
              "tokenizer": None if tokenizer is None else tokenizer.to_json(),
              "meta": meta or {}}
    arrays = {f"model/{name}": p.data for name, p in model.named_parameters()}
    if optimizer is not None:
        state = optimizer.state_dict()
        header["optimizer"] = {"step": state["step"], "param_groups": state["param_groups"]}
        for i, (m, v) in enumerate(zip(state["exp_avg"], state["exp_avg_sq"])):
            arrays[f"optimizer/exp_avg/{i}"] = m
            arrays[f"optimizer/exp_avg_sq/{i}"] = v
    arrays["meta.json"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)

    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; a checkpoint is an ordinary file
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def load_checkpoint(path):
    """Reads a file written by save_checkpoint; a file that is not one raises ValueError saying why."""
    path = os.fspath(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except FileNotFoundError:
        raise FileNotFoundError(f"no checkpoint at {path}") from None
    except (OSError, ValueError) as e:  # not a zip, truncated, or holding pickled objects
        raise ValueError(f"{path} is not a readable fastattn checkpoint: {e}") from None
    try:
        header = json.loads(arrays.pop("meta.json").tobytes().decode())
    except (KeyError, ValueError, UnicodeDecodeError):
        raise ValueError(f"{path} is not a fastattn checkpoint (no readable meta.json)") from None
    if header.get("format") != FORMAT:
        raise ValueError(f"{path} is not a fastattn checkpoint (format {header.get('format')!r})")
    if header.get("version") != VERSION:
        raise ValueError(f"{path} is a version {header.get('version')} checkpoint; this fastattn reads "
                         f"version {VERSION}")
    try:
        config = GPTConfig(**header["config"])
    except TypeError as e:
        raise ValueError(f"{path}: the checkpoint's config does not fit GPTConfig: {e}") from None
    model_state = {k[len("model/"):]: a for k, a in arrays.items() if k.startswith("model/")}
    optimizer_state = None
    if "optimizer" in header:
        n = sum(k.startswith("optimizer/exp_avg/") for k in arrays)
        try:
            optimizer_state = {**header["optimizer"],
                               "exp_avg": [arrays[f"optimizer/exp_avg/{i}"] for i in range(n)],
                               "exp_avg_sq": [arrays[f"optimizer/exp_avg_sq/{i}"] for i in range(n)]}
        except KeyError as e:
            raise ValueError(f"{path}: the optimizer state lacks {e}") from None
    tok = header.get("tokenizer")
    return Checkpoint(config=config, dtype=np.dtype(header["dtype"]), model_state=model_state,
                      step=int(header["step"]), tokenizer=None if tok is None else CharTokenizer.from_json(tok),
                      optimizer_state=optimizer_state, meta=header.get("meta", {}))
