"""AdamW over fastattn Parameters (torch.optim.AdamW's semantics), and clipping by global norm.

    opt = AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                lr=1e-3, betas=(0.9, 0.99))
    clip_grad_norm_(model.parameters(), 1.0)
    opt.step()

A parameter is anything with .data and .grad arrays of one shape and dtype (fastattn.nn.Parameter).
The update itself is F.adamw_step, so it runs on the active backend.
"""
import math

import numpy as np

from fastattn import functional as F


class AdamW:
    """params: an iterable of Parameters, or of dicts {"params": [...], <hyperparameter>: value}
    (param groups, as torch: a group's values override the defaults). Each group's "lr" may be
    changed between steps (a learning-rate schedule does so)."""

    _defaults = ("lr", "betas", "eps", "weight_decay")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        params = list(params)
        if not params:
            raise ValueError("AdamW got an empty parameter list")
        if not isinstance(params[0], dict):
            params = [{"params": params}]
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)
        self.param_groups = []
        seen = set()
        for group in params:
            unknown = set(group) - set(self._defaults) - {"params"}
            if unknown:
                raise ValueError(f"unknown AdamW group options {sorted(unknown)}")
            group = {**defaults, **group, "params": list(group["params"])}
            for p in group["params"]:
                if id(p) in seen:
                    raise ValueError("a parameter appears in more than one group")
                seen.add(id(p))
            self._check_group(group)
            self.param_groups.append(group)
        self.step_count = 0  # steps taken so far
        self.state = [(np.zeros_like(p.data), np.zeros_like(p.data)) for p in self.params]

    @staticmethod
    def _check_group(group):
        b1, b2 = group["betas"]
        if not (0 <= b1 < 1 and 0 <= b2 < 1):
            raise ValueError(f"betas must be in [0, 1), got {group['betas']}")
        for name in ("lr", "eps", "weight_decay"):
            if not group[name] >= 0:
                raise ValueError(f"{name} must be >= 0, got {group[name]}")

    @property
    def params(self):
        """Every parameter, group by group: the order of `state` and of state_dict()'s arrays."""
        return [p for group in self.param_groups for p in group["params"]]

    def zero_grad(self):
        for p in self.params:
            p.grad[...] = 0

    def step(self):
        self.step_count += 1
        state = iter(self.state)
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                m, v = next(state)
                F.adamw_step(p.data, p.grad, m, v, self.step_count, lr=group["lr"], beta1=b1, beta2=b2,
                             eps=group["eps"], weight_decay=group["weight_decay"])

    def state_dict(self):
        """{"step": int, "param_groups": [hyperparameters per group], "exp_avg": [arrays],
        "exp_avg_sq": [arrays]}: the moment arrays are copies, in the order of `params`."""
        return {"step": self.step_count,
                "param_groups": [{k: (list(g[k]) if k == "betas" else g[k]) for k in self._defaults}
                                 for g in self.param_groups],
                "exp_avg": [m.copy() for m, _ in self.state],
                "exp_avg_sq": [v.copy() for _, v in self.state]}

    def load_state_dict(self, state):
        """Restores state_dict()'s output; the groups and moment shapes must match this optimizer's."""
        groups, m, v = state["param_groups"], state["exp_avg"], state["exp_avg_sq"]
        params = self.params
        if len(groups) != len(self.param_groups) or len(m) != len(params) or len(v) != len(params):
            raise ValueError(f"optimizer state has {len(groups)} groups and {len(m)} moments; this "
                             f"optimizer has {len(self.param_groups)} groups and {len(params)} parameters")
        wrong = [f"{i}: {np.shape(a)} / {np.shape(b)} != {p.data.shape}"
                 for i, (p, a, b) in enumerate(zip(params, m, v))
                 if np.shape(a) != p.data.shape or np.shape(b) != p.data.shape]
        if wrong:
            raise ValueError(f"optimizer moments do not fit the parameters: {wrong}")
        for group, saved in zip(self.param_groups, groups):
            new = {**group, **{k: saved[k] for k in self._defaults}, "betas": tuple(saved["betas"])}
            self._check_group(new)
            group.update(new)
        for (dst_m, dst_v), src_m, src_v in zip(self.state, m, v):
            dst_m[...] = src_m
            dst_v[...] = src_v
        self.step_count = int(state["step"])


def clip_grad_norm_(params, max_norm):
    """Scales every grad in place so that their global L2 norm is at most max_norm (as
    torch.nn.utils.clip_grad_norm_, with its 1e-6 guard); returns the norm before clipping.
    A non-finite norm leaves the grads as they are (and is returned, so the caller can tell)."""
    params = list(params)
    # One BLAS dot per parameter (in its dtype, as torch), summed in Python floats.
    total = math.sqrt(sum(float(np.vdot(p.grad, p.grad)) for p in params))
    coef = max_norm / (total + 1e-6)
    if coef < 1 and math.isfinite(total):
        for p in params:
            p.grad *= p.grad.dtype.type(coef)
    return total
