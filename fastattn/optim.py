"""AdamW, Adam and SGD over fastattn Parameters (torch.optim's semantics), and clipping by global norm.

    opt = AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                lr=1e-3, betas=(0.9, 0.99))
    opt = SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)
    clip_grad_norm_(model.parameters(), 1.0)
    opt.step()

A parameter is anything with .data and .grad arrays of one shape and dtype (fastattn.nn.Parameter).
The Adam updates are F.adamw_step, so they run on the active backend; SGD's is NumPy.
"""
import math

import numpy as np

from fastattn import functional as F


class _Optimizer:
    """Param groups as torch's: params is an iterable of Parameters, or of dicts
    {"params": [...], <hyperparameter>: value} (a group's values override the defaults). Each
    group's "lr" may be changed between steps (a learning-rate schedule does so)."""

    _defaults = ()  # the hyperparameters' names, in the order of __init__'s arguments

    def _set_groups(self, params, defaults):
        name = type(self).__name__
        params = list(params)
        if not params:
            raise ValueError(f"{name} got an empty parameter list")
        if not isinstance(params[0], dict):
            params = [{"params": params}]
        self.param_groups = []
        seen = set()
        for group in params:
            unknown = set(group) - set(self._defaults) - {"params"}
            if unknown:
                raise ValueError(f"unknown {name} group options {sorted(unknown)}")
            group = {**defaults, **group, "params": list(group["params"])}
            for p in group["params"]:
                if id(p) in seen:
                    raise ValueError("a parameter appears in more than one group")
                seen.add(id(p))
            self._check_group(group)
            self.param_groups.append(group)

    @staticmethod
    def _check_group(group):
        for name in ("lr", "eps", "weight_decay", "momentum", "dampening"):
            if name in group and not group[name] >= 0:
                raise ValueError(f"{name} must be >= 0, got {group[name]}")
        if "betas" in group:
            b1, b2 = group["betas"]
            if not (0 <= b1 < 1 and 0 <= b2 < 1):
                raise ValueError(f"betas must be in [0, 1), got {group['betas']}")

    @property
    def params(self):
        """Every parameter, group by group: the order of `state` and of state_dict()'s arrays."""
        return [p for group in self.param_groups for p in group["params"]]

    def zero_grad(self):
        for p in self.params:
            p.grad[...] = 0

    def _check_writable(self):
        """ValueError naming the first read-only parameter (of a frozen module: Module.freeze)."""
        for i, p in enumerate(self.params):
            if isinstance(p.data, np.ndarray) and not p.data.flags.writeable:
                raise ValueError(f"{type(self).__name__}.step: parameter {i} {p.data.shape} is read-only "
                                 "(a frozen module: call .unfreeze() on it before training)")


class AdamW(_Optimizer):
    """torch.optim.AdamW: Adam with the weight decay decoupled from the gradient
    (param *= 1 - lr * weight_decay before the Adam step)."""

    _defaults = ("lr", "betas", "eps", "weight_decay")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        self._set_groups(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))
        self.step_count = 0  # steps taken so far
        self.state = [(np.zeros_like(p.data), np.zeros_like(p.data)) for p in self.params]

    def step(self):
        self._check_writable()
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


class Adam(AdamW):
    """torch.optim.Adam: the weight decay is L2 regularization, added to the gradient
    (grad + weight_decay * param) before the Adam step; weight_decay defaults to 0."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)

    def step(self):
        self._check_writable()
        self.step_count += 1
        state = iter(self.state)
        for group in self.param_groups:
            b1, b2 = group["betas"]
            wd = group["weight_decay"]
            for p in group["params"]:
                m, v = next(state)
                grad = p.grad + p.grad.dtype.type(wd) * p.data if wd else p.grad  # (p.grad is left as it is)
                F.adamw_step(p.data, grad, m, v, self.step_count, lr=group["lr"], beta1=b1, beta2=b2,
                             eps=group["eps"], weight_decay=0.0)


class SGD(_Optimizer):
    """torch.optim.SGD, for each parameter:

        d = grad + weight_decay * param
        buf = d at the first step, then momentum * buf + (1 - dampening) * d   (if momentum > 0)
        d = d + momentum * buf if nesterov, else buf                           (if momentum > 0)
        param -= lr * d
    """

    _defaults = ("lr", "momentum", "dampening", "weight_decay", "nesterov")

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
        self._set_groups(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=bool(nesterov)))
        for group in self.param_groups:
            if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
                raise ValueError("nesterov needs momentum > 0 and dampening 0")
        self.step_count = 0
        self.momentum_buffer = [None] * len(self.params)  # in the order of `params`; None until used

    def step(self):
        self._check_writable()
        self.step_count += 1
        i = 0
        for group in self.param_groups:
            lr, mu, damp, wd = (group[k] for k in ("lr", "momentum", "dampening", "weight_decay"))
            for p in group["params"]:
                t = p.data.dtype.type
                d = p.grad + t(wd) * p.data if wd else p.grad.copy()
                if mu:
                    buf = self.momentum_buffer[i]
                    if buf is None:
                        buf = self.momentum_buffer[i] = d.copy()
                    else:
                        buf *= t(mu)
                        buf += t(1 - damp) * d
                    d = d + t(mu) * buf if group["nesterov"] else buf
                p.data -= t(lr) * d
                i += 1


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
