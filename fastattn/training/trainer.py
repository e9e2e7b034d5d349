"""Train a GPT on a text file or a token dataset, as nanoGPT's train.py does (on fastattn's kernels).

    from fastattn.training.trainer import train
    record = train("input.txt", "out", max_iters=2000)   # settings: TrainConfig's fields
    record = train("data/shakespeare", "out-ft", init_from="path/to/gpt2", block_size=256)

The data's first 90% trains, the last 10% validates (fastattn/training/datasets.py). An optimizer
step is gradient_accumulation_steps micro-batches of batch_size windows on each process; the
windows of micro-batch m of step s (and its dropout masks) depend on the seed, s and m alone, so
N processes under mpiexec with k micro-batches each take the same steps as one process with N x k
(fastattn/training/distributed.py). Every eval_interval iterations (and after the last) both
splits are evaluated on eval_iters batches fixed by the seed; the record goes to out/metrics.jsonl,
the whole state (weights, AdamW moments, step) to out/ckpt.npz, the weights with the best
validation loss so far to out/best.npz, and the settings to out/config.json. A run resumed from
out/ckpt.npz continues the curve it would have followed without the interruption.
"""
import dataclasses
import json
import math
import os
import time
import traceback

import numpy as np

from fastattn import nn
from fastattn.training import distributed
from fastattn.training.checkpoint import checkpoint_file, load_checkpoint, remove_stale_temporaries, save_checkpoint
from fastattn.training.schedules import SCHEDULES, check_schedule, learning_rate
from fastattn.training.datasets import eval_batch_rng, load_splits, micro_batch_rng, read_text  # noqa: F401
from fastattn.models.gpt import GPT, GPTConfig
from fastattn.models.llama import Llama
from fastattn.models.llama_config import LlamaConfig
from fastattn.models.presets import GPT_PRESETS, preset_settings
from fastattn.optim import clip_grad_norm_

# The fields a resumed run cannot change: the model's shapes, and the seed (it picks the
# evaluation batches).
FIXED_ON_RESUME = ("arch", "n_layer", "n_head", "n_kv_head", "n_embd", "block_size", "bias", "seed")
ARCHS = ("gpt", "llama")
# The fields that a model to start from (init_from) fixes.
MODEL_SHAPE = ("n_layer", "n_head", "n_embd", "bias")


def _finite(config):
    """ValueError naming the first float field of config that is inf or NaN."""
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{field.name} must be finite, got {value}")


def _finite_evaluation(record):
    """FloatingPointError when an evaluation's loss is not finite: the weights diverged, and the
    run must not end as if it succeeded (nor save them)."""
    for split in ("train", "val"):
        if not math.isfinite(record[f"{split}_loss"]):
            raise FloatingPointError(f"the {split} loss is {record[f'{split}_loss']} at step {record['step']}: "
                                     "the weights diverged (try a lower learning rate)")


def _at_least(config, low, *names):
    """ValueError naming the first of config's fields `names` that is not >= low (NaN is not)."""
    for name in names:
        if not getattr(config, name) >= low:
            raise ValueError(f"{name} must be >= {low}, got {getattr(config, name)}")


@dataclasses.dataclass
class TrainConfig:
    """nanoGPT's settings; the defaults are its CPU run of Tiny Shakespeare (characters).
    arch "llama": the same sizes as a Llama (RoPE, RMSNorm, a SwiGLU MLP of the width that keeps
    the GPT's 8 n_embd^2 parameters, tied embeddings, no biases), n_kv_head key/value heads."""
    arch: str = dataclasses.field(default="gpt", metadata={"choices": ARCHS})
    n_layer: int = 4
    n_head: int = 4
    n_kv_head: int = None  # arch llama: key/value heads (grouped-query), None: n_head
    n_embd: int = 128
    block_size: int = 64
    dropout: float = 0.0
    bias: bool = False
    batch_size: int = 12
    gradient_accumulation_steps: int = 1  # micro-batches of batch_size per step, on each process
    max_iters: int = 2000
    lr_decay_iters: int = None  # None: max_iters
    learning_rate: float = 1e-3
    min_lr: float = 1e-4
    lr_schedule: str = dataclasses.field(default="cosine", metadata={"choices": SCHEDULES})
    beta1: float = 0.9
    beta2: float = 0.99
    warmup_iters: int = 100
    weight_decay: float = 0.1
    grad_clip: float = 1.0  # 0: no clipping
    eval_interval: int = 250
    eval_iters: int = 200
    seed: int = 1337

    def __post_init__(self):
        _check_types(self)
        if self.lr_decay_iters is None:
            self.lr_decay_iters = self.max_iters
        _finite(self)
        _at_least(self, 1, "batch_size", "gradient_accumulation_steps", "eval_interval", "eval_iters")
        _at_least(self, 0, "max_iters", "lr_decay_iters", "warmup_iters", "seed", "learning_rate", "min_lr",
                  "weight_decay", "grad_clip")
        check_schedule(self.lr_schedule, self.learning_rate, self.min_lr)
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}, got {self.arch!r}")
        if self.arch == "gpt" and self.n_kv_head not in (None, self.n_head):
            raise ValueError("n_kv_head (grouped-query attention) needs arch llama")
        if self.arch == "llama" and (self.dropout or self.bias):
            raise ValueError("arch llama has no dropout and no biases: leave dropout 0 and bias false")

    @classmethod
    def preset(cls, name, **overrides):
        """The settings of preset `name` (small, default, large: fastattn/models/presets.py) with
        any field in overrides (they win over the preset's)."""
        return cls(**{**preset_settings(GPT_PRESETS, name), **overrides})

    def model_config(self, vocab_size):
        if self.arch == "llama":
            # SwiGLU's three (I, C) matrices hold the GPT MLP's 8 C^2 parameters at I = 8 C / 3
            width = max(8, int(round(8 * self.n_embd / 3 / 8)) * 8)
            return LlamaConfig(vocab_size=vocab_size, hidden_size=self.n_embd, intermediate_size=width,
                               num_hidden_layers=self.n_layer, num_attention_heads=self.n_head,
                               num_key_value_heads=self.n_kv_head or self.n_head,
                               max_position_embeddings=self.block_size, rms_norm_eps=1e-5,
                               tie_word_embeddings=True)
        return GPTConfig(vocab_size=vocab_size, block_size=self.block_size, n_layer=self.n_layer,
                         n_head=self.n_head, n_embd=self.n_embd, dropout=self.dropout, bias=self.bias)


def _kind(field):
    """(what field takes, in words; a test of a value) from its annotation: bool, a number for
    float, int, str (a name from metadata["choices"] when it has them); None too when that is
    the default."""
    choices = field.metadata.get("choices")
    if field.type is bool:
        kind, fits = "a bool", lambda v: isinstance(v, bool)
    elif field.type is float:
        kind, fits = "a number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
    elif field.type is int:
        kind, fits = "an int", lambda v: isinstance(v, int) and not isinstance(v, bool)
    elif choices:
        kind, fits = f"one of {', '.join(choices)}", lambda v: isinstance(v, str) and v in choices
    else:
        kind, fits = "a str", lambda v: isinstance(v, str)
    if field.default is None:
        return f"{kind} or null", lambda v: v is None or fits(v)
    return kind, fits


def _check_types(config):
    """ValueError naming the first field of a config dataclass whose value is not of its type
    (bias="no", max_iters=2.5, learning_rate="0.1"): the Python call checks what a config file does.
    NumPy scalars become Python ones and a path a str (the settings are saved as JSON)."""
    for field in dataclasses.fields(config):
        kind, fits = _kind(field)
        value = getattr(config, field.name)
        if isinstance(value, np.generic):
            value = value.item()
        if field.type is str and isinstance(value, os.PathLike):
            value = os.fspath(value)
        if not fits(value):
            raise ValueError(f"{field.name} must be {kind}, got {value!r}")
        setattr(config, field.name, value)


def check_settings(settings, where, config_class=None):
    """ValueError unless settings (a dict) holds config_class's (default: TrainConfig's) field
    names only, each with a value of its type; `where` names the source in the message."""
    config_class = TrainConfig if config_class is None else config_class
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    unknown = sorted(set(settings) - set(fields))
    if unknown:
        raise ValueError(f"{where}: unknown settings {unknown}; the settings are {config_class.__name__}'s fields: "
                         f"{', '.join(fields)}")
    for name, value in settings.items():
        kind, fits = _kind(fields[name])
        if not fits(value):
            raise ValueError(f"{where}: {name} must be {kind}, got {value!r}")
    return dict(settings)


def read_config_file(path, config_class=None):
    """config_class's (default: TrainConfig's) settings, a dict, from a JSON file, or a TOML one
    (by its .toml suffix; tomllib, Python 3.11+, or the tomli package). Unknown keys and values of
    the wrong type: ValueError."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ValueError(f"cannot read the config {path}: {e.strerror or e}") from None
    if path.endswith(".toml"):
        try:
            import tomllib
        except ImportError:  # Python < 3.11
            try:
                import tomli as tomllib
            except ImportError:
                raise ImportError(f"reading the TOML config {path} needs Python 3.11+ or the tomli package "
                                  "(pip install tomli); or write it as JSON") from None
        try:
            data = tomllib.loads(raw.decode("utf-8-sig"))  # (a BOM, as an editor may write, is not TOML's)
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise ValueError(f"{path} is not TOML: {e}") from None
    else:
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{path} is not JSON ({e}); a TOML config needs the .toml suffix") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold one table (a JSON object) of settings, got {type(data).__name__}")
    return check_settings(data, path, config_class)


def get_lr(it, cfg):
    """The learning rate of iteration it: cfg.lr_schedule (nanoGPT's default: cosine) from
    learning_rate to min_lr at lr_decay_iters, after warmup_iters of linear warmup
    (fastattn/training/schedules.py)."""
    return learning_rate(cfg.lr_schedule, it, cfg.learning_rate, cfg.warmup_iters, cfg.lr_decay_iters, cfg.min_lr)


def get_batch(data, block_size, batch_size, rng):
    """batch_size random windows of data: x (B, T) and y (B, T), y the next token of each x."""
    starts = rng.integers(0, len(data) - block_size, batch_size)
    windows = data[starts[:, None] + np.arange(block_size + 1)]  # (B, T + 1)
    return windows[:, :-1], windows[:, 1:]


def micro_batches(model, data, cfg, step, micros):
    """(x, y) of each micro-batch number in `micros` of step `step`, from micro_batch_rng; as
    each is yielded, the model's dropout generator is set to continue that micro-batch's stream."""
    for m in micros:
        rng = micro_batch_rng(cfg.seed, step, m)
        x, y = get_batch(data, cfg.block_size, cfg.batch_size, rng)
        model.rng.bit_generator.state = rng.bit_generator.state
        yield x, y


def train_step(model, optimizer, batches, lr, grad_clip, world=None, grads=None):
    """One optimizer step: forward and backward of each (x, y) in batches (this process's
    micro-batches; the gradients add up), then, with a world of several processes, the sum over
    all of them (grads: the distributed.FlatGradients of the model), scaled to the mean over
    every micro-batch, the global norm clipped to grad_clip (0: don't), AdamW at learning rate
    lr. Returns the mean loss of the micro-batches (over every process)."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad()
    loss_sum, count = 0.0, 0
    for x, y in batches:
        _, loss = model(x, y)
        model.backward()
        loss_sum, count = loss_sum + loss, count + 1
    if world is not None and world.size > 1:
        if grads is None:
            raise ValueError("train_step over several processes needs the model's FlatGradients")
        loss_sum = grads.allreduce(world, loss_sum)
        count *= world.size
    if count > 1:  # the mean over the micro-batches: one step as for one batch of them all
        if grads is not None:
            grads.scale_(1.0 / count)
        else:
            for p in optimizer.params:
                p.grad *= p.grad.dtype.type(1.0 / count)
    if grad_clip:
        clip_grad_norm_(optimizer.params, grad_clip)
    optimizer.step()
    return loss_sum / count


def estimate_loss(model, splits, cfg, world=None, on_batch=None):
    """The mean loss over cfg.eval_iters batches of each split, in eval mode. Batch i of split k
    comes from eval_batch_rng(cfg.seed, k, i): every evaluation sees the same windows, so the
    curve's steps are not evaluation noise. With a world of N processes, process r runs batches
    r, r + N, ... and the sums are added over all. on_batch(): called after each batch."""
    world = world or distributed.SingleProcess()
    sums = np.zeros(len(splits))
    with model._eval_mode():
        for k, data in enumerate(splits.values()):
            for i in range(world.rank, cfg.eval_iters, world.size):
                sums[k] += model(*get_batch(data, cfg.block_size, cfg.batch_size, eval_batch_rng(cfg.seed, k, i)))[1]
                if on_batch is not None:
                    on_batch()
    world.allreduce_sum_(sums)
    return {name: float(total / cfg.eval_iters) for name, total in zip(splits, sums)}


def _read_metrics(path, up_to_step):
    """The records of an earlier run that the resumed one continues (steps <= up_to_step)."""
    if not os.path.exists(path):
        return []
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().split("\n")
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            if number == len(lines):  # a torn last line (no newline after it): what a kill leaves
                break
            raise ValueError(f"{path} line {number} is not a JSON record: {e}") from None
        step = record.get("step") if isinstance(record, dict) else None
        if isinstance(step, bool) or not isinstance(step, int):
            raise ValueError(f"{path} line {number} is not an evaluation record (an object with an int "
                             f"\"step\"): {line[:80]!r}")
        records.append(record)
    return [r for r in records if r["step"] <= up_to_step]


def _initial_model(path):
    """(model, tokenizer) to start from: a Hugging Face GPT-2 directory, or a fastattn checkpoint
    (a .npz file, or a training directory's best.npz / ckpt.npz)."""
    from fastattn.io.hf_files import is_pretrained_dir
    from fastattn.io.tokenizer import load_tokenizer
    if os.path.isdir(path) and is_pretrained_dir(path):
        return GPT.from_pretrained(path), load_tokenizer(path)
    ckpt = load_checkpoint(checkpoint_file(path))
    if ckpt.tokenizer is None:
        raise ValueError(f"{path} holds no tokenizer: cannot tokenize the data for it")
    return ckpt.build_model(), ckpt.tokenizer


def _set_dropout(model, p):
    if isinstance(model.config, LlamaConfig):  # (no dropout: TrainConfig holds it at 0)
        return
    model.config.dropout = p
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = p


def _start_run(ckpt, optimizer, batch_rng, model_rng, metrics_path, records):
    """The state of a run resumed from ckpt (None: a new run) restored into optimizer and the
    two generators (None: nothing to restore; the GPT trainer seeds each micro-batch instead),
    and metrics_path rewritten with the records it continues (None: not written, on ranks other
    than 0). Returns (elapsed seconds before, best validation loss so far)."""
    elapsed_before, best_val = 0.0, math.inf
    if ckpt is not None:
        optimizer.load_state_dict(ckpt.optimizer_state)
        for rng, key in ((batch_rng, "batch_rng"), (model_rng, "model_rng")):
            if rng is not None:
                rng.bit_generator.state = ckpt.meta[key]
        elapsed_before, best_val = ckpt.meta["elapsed_s"], ckpt.meta["best_val_loss"]
    if metrics_path is not None:
        with open(metrics_path, "w") as f:  # the resumed run's log continues the kept records
            f.writelines(json.dumps(r) + "\n" for r in records)
    return elapsed_before, best_val


def _save_evaluation(out_dir, record, best_val, cfg, batch_rng, model_rng, log, save, optimizer):
    """Logs an evaluation's record, appends it to out_dir/metrics.jsonl and saves the run:
    save(path, meta, optimizer) to out_dir/ckpt.npz, and without the optimizer to best.npz when
    the validation loss is the best so far (the generators' states, unless None, go into meta).
    Returns the best validation loss."""
    log(f"step {record['step']}: train loss {record['train_loss']:.4f}, val loss {record['val_loss']:.4f}")
    meta = {"train_config": dataclasses.asdict(cfg), "elapsed_s": record["elapsed_s"],
            "best_val_loss": min(best_val, record["val_loss"]), "last": record}
    for rng, key in ((batch_rng, "batch_rng"), (model_rng, "model_rng")):
        if rng is not None:
            meta[key] = rng.bit_generator.state
    if record["val_loss"] < best_val:
        best_val = record["val_loss"]
        save(os.path.join(out_dir, "best.npz"), meta, None)
    save(os.path.join(out_dir, "ckpt.npz"), meta, optimizer)
    with open(os.path.join(out_dir, "metrics.jsonl"), "a") as f:
        f.write(json.dumps(record) + "\n")
    return best_val


_ERRORS = (ValueError, TypeError, OSError, FloatingPointError, ImportError, MemoryError)


def _abort(world, error):
    """Ends every process of the job, with this rank's message (and traceback, for a bug)."""
    where = f"rank {world.rank} of {world.size}"
    if isinstance(error, KeyboardInterrupt):
        message = f"fastattn train: interrupted on {where}"
    elif isinstance(error, _ERRORS):
        message = f"fastattn train: error on {where}: {error}"
    else:
        traceback.print_exc()
        message = f"fastattn train: error on {where}: {type(error).__name__}: {error}"
    world.abort(message)


def train(data_path, out_dir, resume=False, progress=True, log=print, init_from=None, **settings):
    """Trains on data_path (a UTF-8 text file, whose characters are the tokens unless init_from
    brings a tokenizer, or a directory that `fastattn prepare` wrote), writing to out_dir (see the
    module's doc); settings are TrainConfig fields. With resume=True, continues from
    out_dir/ckpt.npz with the settings saved there updated by `settings` (e.g. a larger
    max_iters); changing a FIXED_ON_RESUME field is an error. init_from: a Hugging Face GPT-2
    directory or a fastattn checkpoint to start from, with its tokenizer (its shape fixes
    n_layer, n_head, n_embd and bias; a smaller block_size crops its position table).
    log(str) receives the evaluation lines; progress=False hides the progress bar.

    Under an MPI launcher (mpiexec -n N), every process runs this with the same arguments: rank
    0's initial weights are broadcast, gradients summed over the ranks, and rank 0 alone logs and
    writes; an exception on any rank ends the whole job (MPI_Abort) with that rank's message.
    Returns the last evaluation's record (step, train_loss, val_loss, lr, elapsed_s)."""
    world = distributed.get_world()
    try:
        return _train(world, data_path, out_dir, resume, progress, log, init_from, settings)
    except BaseException as e:
        if world.size > 1:
            _abort(world, e)
        raise


def _train(world, data_path, out_dir, resume, progress, log, init_from, settings):
    from tqdm import tqdm  # (here: `import fastattn` stays light)
    writer = world.rank == 0  # rank 0 alone prints and writes
    progress = progress and writer
    ckpt_path = os.path.join(out_dir, "ckpt.npz")
    metrics_path = os.path.join(out_dir, "metrics.jsonl")
    if resume:
        if init_from is not None:
            raise ValueError("resume continues the run in the output directory, init_from starts a new one: "
                             "pass one of them")
        ckpt = load_checkpoint(ckpt_path)
        saved = ckpt.meta.get("train_config")
        if saved is None or ckpt.tokenizer is None:
            raise ValueError(f"{ckpt_path} was not written by fastattn's trainer: cannot resume from it")
        for name, value in settings.items():
            if name in FIXED_ON_RESUME and value != saved[name]:
                raise ValueError(f"the checkpoint in {out_dir} is from another config: {name} is "
                                 f"{saved[name]!r} there, {value!r} was asked")
        cfg = TrainConfig(**{**saved, **settings})
        splits, tokenizer = load_splits(data_path, cfg.block_size, ckpt.tokenizer,
                                        source=f"the checkpoint in {out_dir}")
        model = ckpt.build_model()
        _set_dropout(model, cfg.dropout)
        step = ckpt.step
        records = _read_metrics(metrics_path, step)
    else:
        cfg = TrainConfig(**settings)
        if os.path.exists(ckpt_path):
            raise ValueError(f"{out_dir} already holds a checkpoint: pass --resume (resume=True in Python) "
                             "to continue it, or choose another output directory")
        if init_from is not None:
            if cfg.arch != "gpt":
                raise ValueError("init_from starts from a GPT: it does not combine with arch llama")
            model, tokenizer = _initial_model(init_from)
            shape = {name: getattr(model.config, name) for name in MODEL_SHAPE}
            for name, value in shape.items():
                if name in settings and settings[name] != value:
                    raise ValueError(f"the model in {init_from} has {name} {value!r}: {settings[name]!r} "
                                     "was asked (init_from fixes the model's shape)")
            cfg = TrainConfig(**{**settings, **shape, "block_size": settings.get("block_size", model.config.block_size)})
            if cfg.block_size != model.config.block_size:
                model.crop_block_size(cfg.block_size)  # (a larger one: ValueError)
            _set_dropout(model, cfg.dropout)
            splits, _ = load_splits(data_path, cfg.block_size, tokenizer, source=init_from)
        else:
            splits, tokenizer = load_splits(data_path, cfg.block_size)
            model = (Llama if cfg.arch == "llama" else GPT)(cfg.model_config(tokenizer.vocab_size), seed=cfg.seed)
        step, records = 0, []
    if writer:
        os.makedirs(out_dir, exist_ok=True)
        remove_stale_temporaries(out_dir)  # what a killed run's saves left behind

    distributed.broadcast_parameters(world, model.parameters())
    grads = distributed.FlatGradients(model.parameters())  # every param.grad: a view into one buffer
    optimizer = model.configure_optimizers(cfg.weight_decay, cfg.learning_rate, (cfg.beta1, cfg.beta2))
    elapsed_before, best_val = _start_run(ckpt if resume else None, optimizer, None, None,
                                          metrics_path if writer else None, records)
    if writer:
        with open(os.path.join(out_dir, "config.json"), "w") as f:
            json.dump(dataclasses.asdict(cfg), f, indent=1)

    def evaluate_and_save(step):
        nonlocal best_val
        # an evaluation takes a while (2 x eval_iters forward passes): show it under the main bar
        with tqdm(total=len(splits) * len(range(world.rank, cfg.eval_iters, world.size)),
                  desc=f"evaluating step {step}", unit="batch", leave=False, disable=not progress,
                  dynamic_ncols=True) as eval_bar:
            losses = estimate_loss(model, splits, cfg, world, on_batch=eval_bar.update)
        record = {"step": step, "train_loss": losses["train"], "val_loss": losses["val"],
                  "lr": get_lr(step, cfg), "elapsed_s": elapsed_before + time.perf_counter() - t0}
        _finite_evaluation(record)  # (every rank has the same losses: every rank raises)
        if writer:
            best_val = _save_evaluation(out_dir, record, best_val, cfg, None, None, log,
                                        lambda path, meta, opt: save_checkpoint(path, model, tokenizer, opt, step, meta),
                                        optimizer)
        else:  # (the same losses on every rank: the same best)
            best_val = min(best_val, record["val_loss"])
        return record

    t0 = time.perf_counter()
    record = records[-1] if records and records[-1]["step"] == step else None
    # rank r runs micro-batches r, r + N, ... of the N x gradient_accumulation_steps of each step
    n_micro = cfg.gradient_accumulation_steps * world.size
    mine = range(world.rank, n_micro, world.size)
    tokens_per_iter, dt_avg = n_micro * cfg.batch_size * cfg.block_size, None  # dt_avg: smoothed s/iteration
    model.train()
    with tqdm(total=cfg.max_iters, initial=min(step, cfg.max_iters), unit="it", disable=not progress,
              dynamic_ncols=True) as bar:
        while step < cfg.max_iters:
            if step % cfg.eval_interval == 0 and record is None:
                record = evaluate_and_save(step)
                bar.unpause()  # the bar's rate and ETA count iterations, not the evaluation's time
            t_iter = time.perf_counter()
            loss = train_step(model, optimizer, micro_batches(model, splits["train"], cfg, step, mine),
                              get_lr(step, cfg), cfg.grad_clip, world, grads)
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
