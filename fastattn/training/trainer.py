"""Train a character-level GPT on a text file, as nanoGPT's train.py does (on fastattn's kernels).

    from fastattn.training.trainer import train
    record = train("input.txt", "out", max_iters=2000)   # settings: TrainConfig's fields

The text's first 90% trains, the last 10% validates. Every eval_interval iterations (and after
the last) both splits are evaluated on eval_iters random batches; the record goes to
out/metrics.jsonl, the whole state (weights, AdamW moments, random generators, step) to
out/ckpt.npz, and the weights with the best validation loss so far to out/best.npz. A run resumed
from out/ckpt.npz continues the curve it would have followed without the interruption.
"""
import dataclasses
import json
import math
import os
import time

import numpy as np

from fastattn.training.checkpoint import load_checkpoint, remove_stale_temporaries, save_checkpoint
from fastattn import nn
from fastattn.models.gpt import GPT, GPTConfig
from fastattn.optim import clip_grad_norm_
from fastattn.io.tokenizer import CharTokenizer

# The fields a resumed run cannot change: the model's shapes, and the seed (it picks the
# evaluation batches).
FIXED_ON_RESUME = ("n_layer", "n_head", "n_embd", "block_size", "bias", "seed")


@dataclasses.dataclass
class TrainConfig:
    """nanoGPT's settings; the defaults are its CPU run of Tiny Shakespeare (characters)."""
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 64
    dropout: float = 0.0
    bias: bool = False
    batch_size: int = 12
    max_iters: int = 2000
    lr_decay_iters: int = None  # None: max_iters
    learning_rate: float = 1e-3
    min_lr: float = 1e-4
    beta1: float = 0.9
    beta2: float = 0.99
    warmup_iters: int = 100
    weight_decay: float = 0.1
    grad_clip: float = 1.0  # 0: no clipping
    eval_interval: int = 250
    eval_iters: int = 200
    seed: int = 1337

    def __post_init__(self):
        if self.lr_decay_iters is None:
            self.lr_decay_iters = self.max_iters
        for name in ("batch_size", "eval_interval", "eval_iters"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_iters", "lr_decay_iters", "warmup_iters", "seed"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("learning_rate", "min_lr", "weight_decay", "grad_clip"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    def model_config(self, vocab_size):
        return GPTConfig(vocab_size=vocab_size, block_size=self.block_size, n_layer=self.n_layer,
                         n_head=self.n_head, n_embd=self.n_embd, dropout=self.dropout, bias=self.bias)


def get_lr(it, cfg):
    """nanoGPT's schedule: linear warmup over warmup_iters, cosine decay to min_lr at
    lr_decay_iters, min_lr after."""
    if it < cfg.warmup_iters:
        return cfg.learning_rate * (it + 1) / (cfg.warmup_iters + 1)
    if it > cfg.lr_decay_iters or cfg.lr_decay_iters <= cfg.warmup_iters:
        return cfg.min_lr
    ratio = (it - cfg.warmup_iters) / (cfg.lr_decay_iters - cfg.warmup_iters)
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (cfg.learning_rate - cfg.min_lr)


def get_batch(data, block_size, batch_size, rng):
    """batch_size random windows of data: x (B, T) and y (B, T), y the next token of each x."""
    starts = rng.integers(0, len(data) - block_size, batch_size)
    windows = data[starts[:, None] + np.arange(block_size + 1)]  # (B, T + 1)
    return windows[:, :-1], windows[:, 1:]


def train_step(model, optimizer, x, y, lr, grad_clip):
    """One iteration: forward, backward, clip the global gradient norm to grad_clip (0: don't),
    AdamW at learning rate lr. Returns the loss of the batch."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad()
    _, loss = model(x, y)
    model.backward()
    if grad_clip:
        clip_grad_norm_(optimizer.params, grad_clip)
    optimizer.step()
    return loss


def estimate_loss(model, splits, cfg, on_batch=None):
    """The mean loss over cfg.eval_iters batches of each split, in eval mode. The batches come
    from a generator seeded by cfg.seed alone: every evaluation sees the same windows, so the
    curve's steps are not evaluation noise, and training's random stream is left alone.
    on_batch(): called after each batch (for a progress bar)."""
    rng = np.random.default_rng([cfg.seed, 1])
    out = {}
    with model._eval_mode():
        for name, data in splits.items():
            losses = []
            for _ in range(cfg.eval_iters):
                losses.append(model(*get_batch(data, cfg.block_size, cfg.batch_size, rng))[1])
                if on_batch is not None:
                    on_batch()
            out[name] = float(np.mean(losses))
    return out


def read_text(path):
    """The file's text (UTF-8), or a ValueError that says what is wrong with it."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text: {e}") from None
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror or e}") from None
    if not text:
        raise ValueError(f"{path} is empty")
    return text


def _splits(text, tokenizer, block_size):
    data = tokenizer.encode(text)
    n = int(0.9 * len(data))
    splits = {"train": data[:n], "val": data[n:]}
    for name, split in splits.items():
        if len(split) <= block_size:
            raise ValueError(f"block_size {block_size} does not fit the data: the {name} split has "
                             f"{len(split)} characters ({len(data)} in all, 90% train / 10% val); "
                             f"it needs more than block_size")
    return splits


def _read_metrics(path, up_to_step):
    """The records of an earlier run that the resumed one continues (steps <= up_to_step)."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        records = [json.loads(line) for line in f if line.strip()]
    return [r for r in records if r["step"] <= up_to_step]


def _start_run(ckpt, optimizer, batch_rng, model_rng, metrics_path, records):
    """The state of a run resumed from ckpt (None: a new run) restored into optimizer and the
    two generators, and metrics_path rewritten with the records it continues. Returns
    (elapsed seconds before, best validation loss so far)."""
    elapsed_before, best_val = 0.0, math.inf
    if ckpt is not None:
        optimizer.load_state_dict(ckpt.optimizer_state)
        batch_rng.bit_generator.state = ckpt.meta["batch_rng"]
        model_rng.bit_generator.state = ckpt.meta["model_rng"]
        elapsed_before, best_val = ckpt.meta["elapsed_s"], ckpt.meta["best_val_loss"]
    with open(metrics_path, "w") as f:  # the resumed run's log continues the kept records
        f.writelines(json.dumps(r) + "\n" for r in records)
    return elapsed_before, best_val


def _save_evaluation(out_dir, record, best_val, cfg, batch_rng, model_rng, log, save, optimizer):
    """Logs an evaluation's record, appends it to out_dir/metrics.jsonl and saves the run:
    save(path, meta, optimizer) to out_dir/ckpt.npz, and without the optimizer to best.npz when
    the validation loss is the best so far. Returns the best validation loss."""
    log(f"step {record['step']}: train loss {record['train_loss']:.4f}, val loss {record['val_loss']:.4f}")
    meta = {"train_config": dataclasses.asdict(cfg), "batch_rng": batch_rng.bit_generator.state,
            "model_rng": model_rng.bit_generator.state, "elapsed_s": record["elapsed_s"],
            "best_val_loss": min(best_val, record["val_loss"]), "last": record}
    if record["val_loss"] < best_val:
        best_val = record["val_loss"]
        save(os.path.join(out_dir, "best.npz"), meta, None)
    save(os.path.join(out_dir, "ckpt.npz"), meta, optimizer)
    with open(os.path.join(out_dir, "metrics.jsonl"), "a") as f:
        f.write(json.dumps(record) + "\n")
    return best_val


def train(data_path, out_dir, resume=False, progress=True, log=print, **settings):
    """Trains on the text file data_path, writing to out_dir (see the module's doc); settings
    are TrainConfig fields. With resume=True, continues from out_dir/ckpt.npz with the settings
    saved there updated by `settings` (e.g. a larger max_iters); changing a FIXED_ON_RESUME field
    is an error. log(str) receives the evaluation lines; progress=False hides the progress bar.
    Returns the last evaluation's record (step, train_loss, val_loss, lr, elapsed_s)."""
    from tqdm import tqdm  # (here: `import fastattn` stays light)
    ckpt_path = os.path.join(out_dir, "ckpt.npz")
    metrics_path = os.path.join(out_dir, "metrics.jsonl")
    text = read_text(data_path)
    if resume:
        ckpt = load_checkpoint(ckpt_path)
        saved = ckpt.meta.get("train_config")
        if saved is None or ckpt.tokenizer is None:
            raise ValueError(f"{ckpt_path} was not written by fastattn's trainer: cannot resume from it")
        for name, value in settings.items():
            if name in FIXED_ON_RESUME and value != saved[name]:
                raise ValueError(f"the checkpoint in {out_dir} is from another config: {name} is "
                                 f"{saved[name]!r} there, {value!r} was asked")
        cfg = TrainConfig(**{**saved, **settings})
        tokenizer = ckpt.tokenizer
        try:
            splits = _splits(text, tokenizer, cfg.block_size)
        except ValueError as e:
            raise ValueError(f"{data_path} does not fit the checkpoint's tokenizer: {e}") from None
        model = ckpt.build_model()
        model.config.dropout = cfg.dropout
        for m in model.modules():
            if isinstance(m, nn.Dropout):
                m.p = cfg.dropout
        step = ckpt.step
        records = _read_metrics(metrics_path, step)
    else:
        cfg = TrainConfig(**settings)
        if os.path.exists(ckpt_path):
            raise ValueError(f"{out_dir} already holds a checkpoint: pass resume to continue it, or "
                             "choose another output directory")
        tokenizer = CharTokenizer.from_text(text)
        splits = _splits(text, tokenizer, cfg.block_size)
        model = GPT(cfg.model_config(tokenizer.vocab_size), seed=cfg.seed)
        step, records = 0, []
    os.makedirs(out_dir, exist_ok=True)
    remove_stale_temporaries(out_dir)  # what a killed run's saves left behind

    optimizer = model.configure_optimizers(cfg.weight_decay, cfg.learning_rate, (cfg.beta1, cfg.beta2))
    batch_rng = np.random.default_rng([cfg.seed, 0])
    elapsed_before, best_val = _start_run(ckpt if resume else None, optimizer, batch_rng, model.rng,
                                          metrics_path, records)

    def evaluate_and_save(step):
        nonlocal best_val
        # an evaluation takes a while (2 x eval_iters forward passes): show it under the main bar
        with tqdm(total=len(splits) * cfg.eval_iters, desc=f"evaluating step {step}", unit="batch",
                  leave=False, disable=not progress, dynamic_ncols=True) as eval_bar:
            losses = estimate_loss(model, splits, cfg, on_batch=eval_bar.update)
        record = {"step": step, "train_loss": losses["train"], "val_loss": losses["val"],
                  "lr": get_lr(step, cfg), "elapsed_s": elapsed_before + time.perf_counter() - t0}
        best_val = _save_evaluation(out_dir, record, best_val, cfg, batch_rng, model.rng, log,
                                    lambda path, meta, opt: save_checkpoint(path, model, tokenizer, opt, step, meta),
                                    optimizer)
        return record

    t0 = time.perf_counter()
    record = records[-1] if records and records[-1]["step"] == step else None
    tokens_per_iter, dt_avg = cfg.batch_size * cfg.block_size, None  # dt_avg: smoothed s/iteration
    model.train()
    with tqdm(total=cfg.max_iters, initial=min(step, cfg.max_iters), unit="it", disable=not progress,
              dynamic_ncols=True) as bar:
        while step < cfg.max_iters:
            if step % cfg.eval_interval == 0 and record is None:
                record = evaluate_and_save(step)
            x, y = get_batch(splits["train"], cfg.block_size, cfg.batch_size, batch_rng)
            t_iter = time.perf_counter()
            loss = train_step(model, optimizer, x, y, get_lr(step, cfg), cfg.grad_clip)
            dt = time.perf_counter() - t_iter
            dt_avg = dt if dt_avg is None else 0.9 * dt_avg + 0.1 * dt
            if not math.isfinite(loss):
                raise FloatingPointError(f"the training loss is {loss} at step {step}: try a lower "
                                         "learning_rate or a smaller grad_clip")
            step += 1
            record = None
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tokens_per_iter / dt_avg:.0f}")
    if record is None:
        record = evaluate_and_save(step)
    return record
