"""Learning-rate schedules: the learning rate of iteration `it` (from 0), each with a linear warmup.

    lr = learning_rate("cosine", it, lr=1e-3, warmup_iters=100, decay_iters=2000, min_lr=1e-4)

Every schedule warms up as nanoGPT does, lr * (it + 1) / (warmup_iters + 1) for it < warmup_iters,
and is at lr at it = warmup_iters. After the warmup, with t = it - warmup_iters and
T = decay_iters - warmup_iters:

    constant      lr
    linear        lr + (min_lr - lr) * t / T, then min_lr              (torch's LinearLR)
    cosine        min_lr + (lr - min_lr) * (1 + cos(pi t / T)) / 2, then min_lr  (CosineAnnealingLR)
    exponential   lr * gamma^t with gamma = (min_lr / lr)^(1 / T), then min_lr   (ExponentialLR)
    inverse_sqrt  lr * sqrt((warmup_iters + 1) / (it + 1)): "Attention Is All You Need"'s decay,
                  proportional to step^-0.5 (step = it + 1); min_lr and decay_iters unused

(T <= 0: min_lr from the end of the warmup.) The trainers take one by name (--lr-schedule).
"""
import math

SCHEDULES = ("constant", "linear", "cosine", "exponential", "inverse_sqrt")


def check_schedule(schedule, lr, min_lr):
    """ValueError unless schedule is one of SCHEDULES and lr, min_lr suit it (finite; a decay
    does not rise: min_lr <= lr for linear, cosine and exponential)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {', '.join(SCHEDULES)}; got {schedule!r}")
    for name, value in (("the learning rate", lr), ("min_lr", min_lr)):
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value}")
    if schedule in ("linear", "cosine") and min_lr > lr:
        raise ValueError(f"the {schedule} schedule decays from the learning rate to min_lr: min_lr {min_lr} "
                         f"is above the learning rate {lr} (lower min_lr)")
    if schedule == "exponential" and not 0 < min_lr <= lr:
        raise ValueError(f"the exponential schedule decays from the learning rate to min_lr: it needs "
                         f"0 < min_lr <= learning rate, got min_lr {min_lr} and learning rate {lr}")


def learning_rate(schedule, it, lr, warmup_iters, decay_iters, min_lr):
    """The learning rate at iteration it >= 0 (see the module's doc)."""
    if it < warmup_iters:
        return lr * (it + 1) / (warmup_iters + 1)
    if schedule == "constant":
        return lr
    if schedule == "inverse_sqrt":
        return lr * math.sqrt((warmup_iters + 1) / (it + 1))
    t, total = it - warmup_iters, decay_iters - warmup_iters
    if t >= total:
        return min_lr
    ratio = t / total
    if schedule == "linear":
        return lr + (min_lr - lr) * ratio
    if schedule == "cosine":
        return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)
    if schedule == "exponential":
        return lr * (min_lr / lr) ** ratio
    raise ValueError(f"lr_schedule must be one of {', '.join(SCHEDULES)}; got {schedule!r}")
