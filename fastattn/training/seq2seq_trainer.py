"""Train a Seq2SeqTransformer on sentence pairs, with the recipe of "Attention Is All You Need".

    from fastattn.training.seq2seq_trainer import train_seq2seq
    record = train_seq2seq("pairs.tsv", "out", d_model=128, nhead=4, num_encoder_layers=2,
                           num_decoder_layers=2, dim_feedforward=512, max_iters=2000)

The data: one `source<TAB>target` pair a line (fastattn/io/pairs.py); the last 10% validate.
Character vocabularies by default (one per side, or one for both with share_embeddings), or the
tokens of DIR/tokenizer.json (tokenizer=DIR: one vocabulary for both sides). Each iteration
draws batch_size random training pairs, pads them (fastattn.io.seq2seq_vocab's PAD) and takes one
AdamW step (betas (0.9, 0.98), eps 1e-9, no weight decay: the paper's Adam) on the cross-entropy
with label smoothing, padding ignored, at the paper's learning rate
lr = lr_factor * d_model^-0.5 * min(step^-0.5, step * warmup^-1.5) (step counted from 1).

Every eval_interval iterations (and after the last) the mean cross-entropy per target token
(without label smoothing, eval mode) of the first eval_pairs pairs of each split goes to
out/metrics.jsonl, the whole state to out/ckpt.npz (for resume) and the best weights by
validation loss to out/best.npz, as `fastattn train` does (fastattn/training/trainer.py).
"""
import dataclasses
import json
import math
import os
import time

import numpy as np

from fastattn import functional as F
from fastattn.io.pairs import read_pairs, split_pairs
from fastattn.io.seq2seq_vocab import BOS, EOS, PAD, Seq2SeqVocab
from fastattn.models.presets import SEQ2SEQ_PRESETS, preset_settings
from fastattn.models.seq2seq import Seq2SeqTransformer
from fastattn.optim import AdamW
from fastattn.training.checkpoint import remove_stale_temporaries
from fastattn.training.seq2seq_checkpoint import load_seq2seq_checkpoint, save_seq2seq_checkpoint
from fastattn.training.schedules import SCHEDULES, check_schedule, learning_rate
from fastattn.training.trainer import (_at_least, _check_types, _finite, _finite_evaluation, _read_metrics, _save_evaluation,
                                       _start_run)

# what a resumed run cannot change: the model's shapes, its vocabularies, and the seed
FIXED_ON_RESUME = ("d_model", "nhead", "num_encoder_layers", "num_decoder_layers", "dim_feedforward",
                   "share_embeddings", "tokenizer", "seed")


@dataclasses.dataclass
class Seq2SeqTrainConfig:
    """The model's arguments (Seq2SeqTransformer's defaults: the paper's base model) and the
    training's (the paper's label smoothing, warmup and Adam)."""
    d_model: int = 512
    nhead: int = 8
    num_encoder_layers: int = 6
    num_decoder_layers: int = 6
    dim_feedforward: int = 2048
    dropout: float = 0.1
    share_embeddings: bool = False
    label_smoothing: float = 0.1
    warmup: int = 4000
    lr_factor: float = 1.0
    lr_schedule: str = dataclasses.field(default="noam", metadata={"choices": ("noam",) + SCHEDULES})
    min_lr: float = 0.0  # where the linear, cosine and exponential schedules end (at max_iters)
    batch_size: int = 32
    max_iters: int = 2000
    eval_interval: int = 250
    eval_pairs: int = 500
    seed: int = 1337
    tokenizer: str = None  # a directory holding tokenizer.json; None: characters

    def __post_init__(self):
        _check_types(self)
        _finite(self)
        _at_least(self, 1, "d_model", "nhead", "num_encoder_layers", "num_decoder_layers", "dim_feedforward",
                  "warmup", "batch_size", "eval_interval", "eval_pairs")
        _at_least(self, 0, "max_iters", "seed")
        if not 0 <= self.label_smoothing <= 1 or not 0 <= self.dropout < 1:
            raise ValueError(f"label_smoothing must be in [0, 1] and dropout in [0, 1), got "
                             f"{self.label_smoothing} and {self.dropout}")
        if not self.lr_factor > 0:
            raise ValueError(f"lr_factor must be > 0, got {self.lr_factor}")
        _at_least(self, 0, "min_lr")
        if self.lr_schedule not in ("noam",) + SCHEDULES:
            raise ValueError(f"lr_schedule must be one of noam, {', '.join(SCHEDULES)}; got {self.lr_schedule!r}")
        if self.lr_schedule != "noam":
            check_schedule(self.lr_schedule, noam_lr(self.warmup, self.d_model, self.warmup, self.lr_factor),
                           self.min_lr)

    @classmethod
    def preset(cls, name, **overrides):
        """The config of preset `name` (small, default, large: fastattn/models/presets.py) with
        any field in overrides (they win over the preset's)."""
        return cls(**{**preset_settings(SEQ2SEQ_PRESETS, name), **overrides})


def noam_lr(step, d_model, warmup, lr_factor=1.0):
    """The paper's schedule (section 5.3) at step >= 1: linear warmup for `warmup` steps, then
    proportional to step^-0.5; peak lr_factor * (d_model * warmup)^-0.5 at step = warmup."""
    return lr_factor * d_model ** -0.5 * min(step ** -0.5, step * warmup ** -1.5)


def pad_batch(sequences, extra_front=(), extra_back=()):
    """A list of 1-D id arrays -> (N, L) int64, each row the extras and the ids, right-padded with PAD."""
    front, back = np.asarray(extra_front, np.int64), np.asarray(extra_back, np.int64)
    rows = [np.concatenate([front, s, back]) for s in sequences]
    out = np.full((len(rows), max((len(r) for r in rows), default=0)), PAD, np.int64)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return out


def make_batch(pairs):
    """Encoded pairs [(src ids, tgt ids), ...] -> (src (N, S), tgt_in (N, T), tgt_out (N, T)):
    tgt_in = BOS + target, tgt_out = target + EOS, all right-padded with PAD."""
    srcs, tgts = zip(*pairs)
    return pad_batch(srcs), pad_batch(tgts, extra_front=[BOS]), pad_batch(tgts, extra_back=[EOS])


def train_step(model, optimizer, batch, lr, label_smoothing):
    """One AdamW step at learning rate lr on a (src, tgt_in, tgt_out) batch; returns the loss
    (with label smoothing, padding ignored)."""
    src, tgt_in, tgt_out = batch
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad()
    logits = model(src, tgt_in)
    loss = F.cross_entropy(logits, tgt_out, ignore_index=PAD, label_smoothing=label_smoothing)
    model.backward(F.cross_entropy_backward(logits, tgt_out, ignore_index=PAD, label_smoothing=label_smoothing))
    optimizer.step()
    return float(loss)


def mean_loss(model, pairs, batch_size):
    """The cross-entropy per target token (eos included, no label smoothing) over pairs, in
    eval mode (the model's mode is restored)."""
    was_training, total, count = model.training, 0.0, 0
    model.eval()
    try:
        for i in range(0, len(pairs), batch_size):
            src, tgt_in, tgt_out = make_batch(pairs[i:i + batch_size])
            n = int((tgt_out != PAD).sum())
            total += float(F.cross_entropy(model(src, tgt_in), tgt_out, ignore_index=PAD)) * n
            count += n
    finally:
        model.train(was_training)
    return total / count


def _vocabularies(cfg, train_pairs):
    if cfg.tokenizer is not None:
        vocab = Seq2SeqVocab.from_tokenizer_dir(cfg.tokenizer)
        return vocab, vocab
    if cfg.share_embeddings:
        vocab = Seq2SeqVocab.from_texts([s for s, _ in train_pairs] + [t for _, t in train_pairs])
        return vocab, vocab
    return Seq2SeqVocab.from_texts(s for s, _ in train_pairs), Seq2SeqVocab.from_texts(t for _, t in train_pairs)


def _encode(numbered, src_vocab, tgt_vocab, path, max_len):
    """[(src ids, tgt ids), ...] of numbered pairs [(line, source, target), ...] of the file at
    path, all checked before any training: a character outside a character vocabulary (a resumed
    run's data with new ones) and a pair longer than the model's max_len (target + bos or eos)
    are ValueErrors naming the file and the line."""
    out = []
    for line, source, target in numbered:
        ids = []
        for side, vocab, text, extra in (("source", src_vocab, source, 0), ("target", tgt_vocab, target, 1)):
            try:
                ids.append(vocab.encode(text, strict=True))
            except ValueError as e:
                raise ValueError(f"{path} line {line}: the {side}'s {e}") from None
            if len(ids[-1]) + extra > max_len:
                raise ValueError(f"{path} line {line}: the {side} is {len(ids[-1])} tokens"
                                 f"{' (with bos or eos, ' + str(len(ids[-1]) + 1) + ')' if extra else ''}: "
                                 f"the model takes at most {max_len}")
        out.append(tuple(ids))
    return out


def train_seq2seq(data_path, out_dir, resume=False, progress=True, log=print, **settings):
    """Trains on the pairs file data_path, writing to out_dir (see the module's doc); settings
    are Seq2SeqTrainConfig fields. resume=True continues from out_dir/ckpt.npz with its saved
    settings updated by `settings` (e.g. a larger max_iters); a FIXED_ON_RESUME field may not
    change. Returns the last evaluation's record (step, train_loss, val_loss, lr, elapsed_s)."""
    from tqdm import tqdm  # (here: `import fastattn` stays light)
    ckpt_path = os.path.join(out_dir, "ckpt.npz")
    metrics_path = os.path.join(out_dir, "metrics.jsonl")
    train_text, val_text = split_pairs(read_pairs(data_path, line_numbers=True))  # [(line, source, target)]
    if resume:
        ckpt = load_seq2seq_checkpoint(ckpt_path)
        saved = ckpt.meta.get("train_config")
        if saved is None:
            raise ValueError(f"{ckpt_path} was not written by train-seq2seq: cannot resume from it")
        for name, value in settings.items():
            if name in FIXED_ON_RESUME and value != saved[name]:
                raise ValueError(f"the checkpoint in {out_dir} is from another config: {name} is "
                                 f"{saved[name]!r} there, {value!r} was asked")
        cfg = Seq2SeqTrainConfig(**{**saved, **settings})
        src_vocab, tgt_vocab = ckpt.src_vocab, ckpt.tgt_vocab
        model = ckpt.build_model(dropout=cfg.dropout)
        step, records = ckpt.step, _read_metrics(metrics_path, ckpt.step)
    else:
        cfg = Seq2SeqTrainConfig(**settings)
        if os.path.exists(ckpt_path):
            raise ValueError(f"{out_dir} already holds a checkpoint: pass --resume (resume=True in Python) "
                             "to continue it, or choose another output directory")
        # the characters of every pair (validation's too, as the GPT trainer's of the whole text)
        src_vocab, tgt_vocab = _vocabularies(cfg, [(s, t) for _, s, t in train_text + val_text])
        model = Seq2SeqTransformer(src_vocab.vocab_size, tgt_vocab.vocab_size, cfg.d_model, cfg.nhead,
                                   cfg.num_encoder_layers, cfg.num_decoder_layers, cfg.dim_feedforward,
                                   cfg.dropout, cfg.share_embeddings, pad_idx=PAD, seed=cfg.seed)
        step, records = 0, []
    max_len = model.config["max_len"]
    train_pairs, val_pairs = (_encode(text, src_vocab, tgt_vocab, data_path, max_len)
                              for text in (train_text, val_text))
    os.makedirs(out_dir, exist_ok=True)
    remove_stale_temporaries(out_dir)
    with open(os.path.join(out_dir, "config.json"), "w") as f:  # itself a --config file: repeats the run
        json.dump(dataclasses.asdict(cfg), f, indent=1)

    optimizer = AdamW(model.parameters(), lr=0.0, betas=(0.9, 0.98), eps=1e-9, weight_decay=0.0)
    batch_rng = np.random.default_rng([cfg.seed, 0])
    elapsed_before, best_val = _start_run(ckpt if resume else None, optimizer, batch_rng, model._rng,
                                          metrics_path, records)
    # the training pairs evaluated: a fixed sample, the same at every evaluation
    seen = np.random.default_rng([cfg.seed, 1]).permutation(len(train_pairs))[:cfg.eval_pairs]
    eval_splits = {"train": [train_pairs[i] for i in seen], "val": val_pairs[:cfg.eval_pairs]}

    def lr_at(step):  # the learning rate of iteration `step` (from 0)
        if cfg.lr_schedule == "noam":  # the paper's, at step + 1
            return noam_lr(step + 1, cfg.d_model, cfg.warmup, cfg.lr_factor)
        # another schedule, from the paper's peak (at `warmup`) to min_lr at max_iters
        peak = noam_lr(cfg.warmup, cfg.d_model, cfg.warmup, cfg.lr_factor)
        return learning_rate(cfg.lr_schedule, step, peak, cfg.warmup, cfg.max_iters, cfg.min_lr)

    def evaluate_and_save(step):
        nonlocal best_val
        losses = {name: mean_loss(model, pairs, cfg.batch_size) for name, pairs in eval_splits.items()}
        record = {"step": step, "train_loss": losses["train"], "val_loss": losses["val"], "lr": lr_at(step),
                  "elapsed_s": elapsed_before + time.perf_counter() - t0}
        _finite_evaluation(record)
        best_val = _save_evaluation(
            out_dir, record, best_val, cfg, batch_rng, model._rng, log,
            lambda path, meta, opt: save_seq2seq_checkpoint(path, model, src_vocab, tgt_vocab, opt, step, meta),
            optimizer)
        return record

    t0 = time.perf_counter()
    record = records[-1] if records and records[-1]["step"] == step else None
    model.train()
    with tqdm(total=cfg.max_iters, initial=min(step, cfg.max_iters), unit="it", disable=not progress,
              dynamic_ncols=True) as bar:
        while step < cfg.max_iters:
            if step % cfg.eval_interval == 0 and record is None:
                record = evaluate_and_save(step)
                bar.unpause()  # the bar's rate and ETA count iterations, not the evaluation's time
            batch = make_batch([train_pairs[i] for i in batch_rng.integers(0, len(train_pairs), cfg.batch_size)])
            loss = train_step(model, optimizer, batch, lr_at(step), cfg.label_smoothing)
            if not math.isfinite(loss):
                raise FloatingPointError(f"the training loss is {loss} at step {step}: try a lower --lr-factor")
            step += 1
            record = None
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}")
    if record is None:
        record = evaluate_and_save(step)
    return record
