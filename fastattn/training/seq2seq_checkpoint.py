"""Checkpoints of a Seq2SeqTransformer: its weights, constructor arguments, both vocabularies,
the optimizer's state and the step, in the .npz layout of fastattn/training/checkpoint.py (the
same atomic write and the same checks before anything large is read), marked kind "seq2seq" so
that neither reader takes the other's file: `fastattn sample` refuses a seq2seq checkpoint and
`fastattn translate` a GPT's, each with one line saying which it is.
"""
import dataclasses
import os

import numpy as np

from fastattn.io.seq2seq_vocab import Seq2SeqVocab
from fastattn.models.seq2seq import Seq2SeqTransformer
from fastattn.training.checkpoint import FORMAT, VERSION, _header, _open, _read_state, _state_arrays, _write


@dataclasses.dataclass
class Seq2SeqCheckpoint:
    """What load_seq2seq_checkpoint returns. config: Seq2SeqTransformer's arguments (a dict)."""
    config: dict
    dtype: np.dtype
    model_state: dict
    step: int
    src_vocab: Seq2SeqVocab
    tgt_vocab: Seq2SeqVocab
    optimizer_state: dict
    meta: dict

    def build_model(self, compute_type="float32", **overrides):
        """The model with these weights; overrides: constructor arguments to change (dropout).
        compute_type: the weights' precision for inference (Module.quantize)."""
        model = Seq2SeqTransformer(**{**self.config, **overrides}, dtype=self.dtype, seed=0)
        # the file holds a tied Parameter once, under its first name; state_dict() names it under each
        first, state = {}, dict(self.model_state)
        for name, p in model.named_parameters(remove_duplicate=False):
            state.setdefault(name, state[first.setdefault(id(p), name)])
        model.load_state_dict(state)
        return model.quantize(compute_type)


def save_seq2seq_checkpoint(path, model, src_vocab, tgt_vocab, optimizer=None, step=0, meta=None):
    """Writes model (a Seq2SeqTransformer), its two vocabularies, the optimizer (AdamW) and the
    step to path, atomically; meta: any JSON-able dict kept alongside."""
    header = {"format": FORMAT, "version": VERSION, "kind": "seq2seq", "config": model.config,
              "dtype": np.dtype(model.generator.weight.data.dtype).name, "step": int(step),
              "vocab": {"src": src_vocab.to_json(), "tgt": tgt_vocab.to_json()}, "meta": meta or {}}
    _write(path, header, _state_arrays(model, optimizer, header))


def load_seq2seq_checkpoint(path):
    """Reads a file written by save_seq2seq_checkpoint, or ValueError naming the file and what
    is wrong (a GPT checkpoint, arrays that do not fit the config, ...)."""
    path = os.fspath(path)
    with _open(path) as zf:
        members = {info.filename: info for info in zf.infolist()}
        header = _header(path, zf, members, kind="seq2seq")
        dtype = np.dtype(header["dtype"])
        try:  # (built for its parameter shapes; the weights are then read over the initial ones)
            shapes = {n: p.data.shape for n, p in
                      Seq2SeqTransformer(**header["config"], dtype=dtype, seed=0).named_parameters()}
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: the checkpoint's config does not fit Seq2SeqTransformer: {e}") from None
        model_state, optimizer_state = _read_state(path, zf, members, header, shapes)
    vocab = header.get("vocab")
    try:
        src_vocab, tgt_vocab = (Seq2SeqVocab.from_json(vocab[side]) for side in ("src", "tgt"))
    except (TypeError, KeyError, ValueError) as e:
        raise ValueError(f"{path}: no readable vocabularies: {e}") from None
    config = header["config"]
    if (src_vocab.vocab_size, tgt_vocab.vocab_size) != (config["src_vocab_size"], config["tgt_vocab_size"]):
        raise ValueError(f"{path}: the vocabularies ({src_vocab.vocab_size}, {tgt_vocab.vocab_size} ids) do not "
                         f"fit the model ({config['src_vocab_size']}, {config['tgt_vocab_size']})")
    return Seq2SeqCheckpoint(config=config, dtype=dtype, model_state=model_state, step=header["step"],
                             src_vocab=src_vocab, tgt_vocab=tgt_vocab, optimizer_state=optimizer_state,
                             meta=header.get("meta", {}))
