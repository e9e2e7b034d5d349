"""Parameter and Module: the base of fastattn.nn, after torch.nn.Module, without autograd.

A module's forward keeps what its backward needs; backward(grad_output) takes d(loss)/d(output),
ADDS the parameter gradients into every param.grad and returns d(loss)/d(input) (llm.c style).
"""
import contextlib
import copy
import numbers

import numpy as np

from fastattn import _frozen, _lowp

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


class Parameter:
    """A weight (.data) and its gradient (.grad): NumPy arrays of one shape and dtype."""

    __slots__ = ("data", "grad")

    def __init__(self, data):
        self.data = np.asarray(data)
        if self.data.dtype not in _FLOATS:
            raise TypeError(f"a Parameter must be float32 or float64, got dtype {self.data.dtype}")
        # (np.zeros: pages the OS zeroes on first touch, so a model that never trains, such as
        # a pretrained encoder, holds no memory for its gradients)
        self.grad = np.zeros(self.data.shape, self.data.dtype)

    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    def __repr__(self):
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype})"


_initialising = [True]


@contextlib.contextmanager
def _skip_init():
    """Modules built inside this block leave their weights zero instead of drawing their default
    initialisation (torch.nn.utils.skip_init's purpose): for a model that sets every weight itself
    right after, such as the GPT (normal(0, 0.02)) or one about to load a checkpoint."""
    _initialising.append(False)
    try:
        yield
    finally:
        _initialising.pop()


def _init_default():
    """Whether a module being built draws its default initialisation (see _skip_init)."""
    return _initialising[-1]


def _dtype(dtype):
    """np.float32 or np.float64 as a np.dtype, or TypeError."""
    try:
        d = np.dtype(dtype)
    except TypeError:
        d = None
    if d not in _FLOATS:
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}")
    return d


def _generator(seed):
    """A NumPy Generator from seed: None (fresh entropy), an int, or a Generator (used as is)."""
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
        raise TypeError(f"seed must be None, an int or a numpy.random.Generator, got {type(seed).__name__}")
    return np.random.default_rng(seed)


def _positive_int(name, value, zero=False):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < (0 if zero else 1):
        raise ValueError(f"{name} must be {'>= 0' if zero else '>= 1'}, got {value}")
    return int(value)


def _probability(name, p):
    if isinstance(p, (bool, np.bool_)) or not isinstance(p, numbers.Real):
        raise TypeError(f"{name} must be a float in [0, 1], got {type(p).__name__}")
    if not 0 <= p <= 1:
        raise ValueError(f"{name} must be in [0, 1], got {p}")
    return float(p)


class Module:
    """The base class: modules and Parameters assigned as attributes are registered, in order,
    and named as torch names them (submodule.param, ModuleList indices: layers.0.linear1.weight).

    Calling and backward: module(x, ...) runs forward(x, ...), which keeps what backward needs.
    backward(grad_output) returns the gradient with respect to the forward's array inputs (one
    array, or a tuple in input order; None for integer inputs such as token ids) and adds into
    every param.grad (call zero_grad() between steps). Each forward REPLACES the state kept by
    the previous one, and backward consumes it: after two calls, backward applies to the last
    call, and a second backward raises RuntimeError (a module used twice in one graph cannot be
    differentiated: use two modules that share Parameters instead). A forward whose backward is
    never called costs only the memory of its last call.

    Tying weights: assign one Parameter to two modules (decoder.weight = embedding.weight); both
    add into its .grad; named_parameters() and parameters() list it once, under its first name,
    and state_dict() under every name (both as torch).
    """

    def __init__(self):
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_saved", None)
        object.__setattr__(self, "_taken", True)

    def __setattr__(self, name, value):
        d = self.__dict__
        if "_parameters" not in d:
            raise RuntimeError(f"{type(self).__name__}.__init__ must call super().__init__() first")
        params, modules = d["_parameters"], d["_modules"]
        if type(value) is np.ndarray and name not in params and name not in modules:
            d[name] = value  # (the fast path for what a forward keeps for its backward)
            return
        params.pop(name, None)
        modules.pop(name, None)
        if isinstance(value, Parameter):
            params[name] = value
        elif isinstance(value, Module):
            modules[name] = value
        elif value is None and name in ("weight", "bias") + tuple(getattr(self, "_optional", ())):
            params[name] = None  # (a parameter switched off: listed by no one, as torch)
        object.__setattr__(self, name, value)

    # -- calling --------------------------------------------------------------------------------
    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} has no forward")

    def backward(self, grad_output):
        raise NotImplementedError(f"{type(self).__name__} has no backward")

    def _save(self, *state):
        object.__setattr__(self, "_saved", state)
        object.__setattr__(self, "_taken", False)

    def _take(self):
        """The state the last forward kept, once; RuntimeError if there is none."""
        state = self._saved
        if self._taken:
            raise RuntimeError(
                f"{type(self).__name__}.backward() needs a forward() first (each backward uses the "
                "state of the last forward once; a module called twice before backward keeps only "
                "the last call)")
        # The arrays stay referenced until the next forward replaces them: freed here, the next
        # step would allocate them again from fresh pages (6% of a GPT training step at 2
        # threads, most of it page faults), where kept, the allocator reuses the memory.
        object.__setattr__(self, "_taken", True)
        return state

    # -- parameters -----------------------------------------------------------------------------
    def named_modules(self, prefix="", remove_duplicate=True):
        """(name, module) of this module and every submodule, depth first; a module reachable
        by several names is listed once (remove_duplicate=False: under every name)."""
        seen = set()
        stack = [(prefix, self)]  # (a loop, not recursive generators: zero_grad walks every step)
        while stack:
            name, module = stack.pop()
            if remove_duplicate:
                if id(module) in seen:
                    continue
                seen.add(id(module))
            yield name, module
            stack.extend((f"{name}.{child_name}" if name else child_name, child)
                         for child_name, child in reversed(module._modules.items()))

    def _walk(self):
        """Every module once, in named_modules' order, without building the names (zero_grad and
        parameters() walk every training step)."""
        seen, stack = set(), [self]
        while stack:
            module = stack.pop()
            if id(module) not in seen:
                seen.add(id(module))
                yield module
                stack.extend(reversed(module._modules.values()))

    def modules(self):
        return list(self._walk())

    def children(self):
        return list(self._modules.values())

    def named_parameters(self, remove_duplicate=True):
        """(dotted name, Parameter): a module's own Parameters, then its submodules', in the
        order they were assigned; a Parameter shared by several modules is listed once, under
        its first name (remove_duplicate=False: under every name), as torch."""
        seen = set()
        for prefix, module in self.named_modules(remove_duplicate=remove_duplicate):
            for name, p in module._parameters.items():
                if p is None or (remove_duplicate and id(p) in seen):
                    continue
                seen.add(id(p))
                yield (f"{prefix}.{name}" if prefix else name), p

    def parameters(self):
        out, seen = [], set()
        for module in self._walk():
            for p in module._parameters.values():
                if p is not None and id(p) not in seen:
                    seen.add(id(p))
                    out.append(p)
        return out

    def num_parameters(self):
        """The number of weights (shared Parameters counted once)."""
        return sum(p.data.size for p in self.parameters())

    def zero_grad(self):
        for p in self.parameters():
            p.grad[...] = 0

    def state_dict(self):
        """{name: a copy of the array} under torch's names, in named_parameters() order. As in
        torch, a shared (tied) Parameter appears under each of its names."""
        return {name: p.data.copy() for name, p in self.named_parameters(remove_duplicate=False)}

    def load_state_dict(self, state_dict, strict=True):
        """Copies the arrays of state_dict (name -> array: NumPy, or anything np.asarray takes,
        e.g. a CPU torch tensor) into the Parameters, cast to their dtype. A mis-shaped entry
        is always an error; with strict=True so are missing and unexpected names. The error
        (ValueError) names every entry that does not fit; nothing is copied then. Returns
        (missing, unexpected) lists of names, as torch."""
        own = dict(self.named_parameters(remove_duplicate=False))  # (a tied weight: each name)
        frozen = [name for name, p in own.items() if isinstance(p.data, np.ndarray) and not p.data.flags.writeable]
        if frozen:
            raise ValueError(f"load_state_dict into {type(self).__name__}: {frozen[0]} is read-only "
                             "(a frozen module: call .unfreeze() first)")
        arrays = {name: np.asarray(value.detach().cpu().numpy() if hasattr(value, "detach") else value)
                  for name, value in state_dict.items()}
        missing = [n for n in own if n not in arrays]
        unexpected = [n for n in arrays if n not in own]
        misshaped = [f"{n}: {arrays[n].shape} != {own[n].data.shape}" for n in own
                     if n in arrays and arrays[n].shape != own[n].data.shape]
        problems = []
        if strict and missing:
            problems.append(f"missing {missing}")
        if strict and unexpected:
            problems.append(f"unexpected {unexpected}")
        if misshaped:
            problems.append(f"mis-shaped {misshaped}")
        if problems:
            raise ValueError(f"load_state_dict into {type(self).__name__}: " + "; ".join(problems))
        for name, p in own.items():
            if name in arrays:
                p.data[...] = arrays[name]
        return missing, unexpected

    # -- lower precision ------------------------------------------------------------------------
    def quantize(self, compute_type="int8"):
        """Stores the weights of the linear products (and the embedding tables) in fewer bytes, in
        place, for inference: compute_type "int8", "bfloat16", "int8_bfloat16" or "auto" (see
        fastattn/_lowp.py; "float32" changes nothing). Each weight is converted once and its
        float32 array let go; the module then runs forward only (backward raises). Modules
        built of nn.Linear, nn.Embedding and nn.MultiheadAttention are covered, as
        torch.ao.quantization.quantize_dynamic covers nn.Linear; a module with weights of its
        own converts them in its _quantize_own. Returns the module. ValueError when this CPU
        cannot run compute_type, TypeError for a float64 module."""
        compute_type = _lowp.check_compute_type(compute_type)
        if compute_type != "float32":
            for module in self._walk():
                module._quantize_own(compute_type)
            object.__setattr__(self, "compute_type", compute_type)
        return self

    def _quantize_own(self, compute_type):
        """Converts this module's own weights for compute_type (not its children's): nothing here."""

    def _quantize_param(self, name, kind):
        """Parameter `name` as a weight of kind "int8" or "bfloat16" (once: a tied Parameter that
        another module converted already stays as it is)."""
        p = self._parameters.get(name)
        if p is None or isinstance(p.data, _lowp.LOW_PRECISION):
            return
        if p.data.dtype != np.float32:
            raise TypeError(f"quantize: {type(self).__name__}.{name} is {p.data.dtype}; int8 and bfloat16 "
                            "weights replace float32 ones (build the model with dtype=np.float32)")
        p.data = _lowp.quantize(p.data, kind)
        p.grad = np.zeros(0, np.float32)  # (no training from here: no gradient kept)

    # -- frozen weights -------------------------------------------------------------------------
    def freeze(self):
        """Makes every weight read-only, for inference, and returns the module. The compiled
        backend then packs each float32 linear weight once into oneDNN's layout (on its first
        product of two rows or more; as many bytes again as the weight) and its products read the
        packed copy instead of re-packing the weight block by block on every call. Writing into a
        frozen weight raises NumPy's read-only error (an optimizer's step and load_state_dict a
        ValueError); unfreeze() makes the weights writable again and lets the packed copies go."""
        for p in self.parameters():
            _frozen.freeze(p.data)
        for module in self._walk():
            for a in module._fused_weights():
                _frozen.freeze(a)
        return self

    def unfreeze(self):
        """Undoes freeze(): the weights writable again (those whose memory is), and returns the module."""
        for module in self._walk():
            for a in module._fused_weights():
                _frozen.unfreeze(a)
        for p in self.parameters():
            _frozen.unfreeze(p.data)
        return self

    def _fused_weights(self):
        """Arrays of this module's own that its products read in place of its children's weights
        (one fused array whose row blocks they view): frozen with them. None here."""
        return []

    # -- modes ----------------------------------------------------------------------------------
    def train(self, mode=True):
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self):
        return self.train(False)

    def _clone(self, fresh, rng=None):
        """A deep copy of this module. Generators are shared with the original, not copied (so
        that the dropout of two copies draws different masks); fresh=True re-initialises every
        parameter of the copy from rng (default: the copy's own generators)."""
        memo = {}
        for m in self.modules():
            for value in vars(m).values():
                if isinstance(value, np.random.Generator):
                    memo[id(value)] = value
        clone = copy.deepcopy(self, memo)
        if fresh:
            _reset_tree(clone, rng)
        return clone

    def __repr__(self):
        lines = [f"  ({name}): " + repr(m).replace("\n", "\n  ") for name, m in self._modules.items()]
        head = f"{type(self).__name__}({self.extra_repr()}"
        return head + (")" if not lines else "\n" + "\n".join(lines) + "\n)")

    def extra_repr(self):
        return ""


def _reset_tree(module, rng):
    """reset_parameters(rng) on module, or else on each child: a module's own reset_parameters
    covers its children (MultiheadAttention zeroes out_proj.bias after Linear's init)."""
    if hasattr(module, "reset_parameters"):
        module.reset_parameters(rng)
    else:
        for child in module.children():
            _reset_tree(child, rng)
