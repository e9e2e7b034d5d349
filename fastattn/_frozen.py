"""Weights frozen by Module.freeze, and what the compiled backend keeps for each of them (its
linear products keep a copy packed in oneDNN's layout: src_cython/linear.pyx).

A frozen array is read-only, and so is every array its memory belongs to (its .base, down to the
owner, or to immutable bytes): nothing writes its values until Module.unfreeze, which lets what
was kept for it go. Only the arrays given to freeze() have anything kept, not the bases it made
read-only on the way (another view of a base, made before, may still write into it), and not an
array made read-only by hand: such a flag says nothing about the values staying as they are.
"""
import weakref

import numpy as np

_UNSET = object()
_kept = {}  # id(array) -> [weakref to the array, what the backend keeps for it, or _UNSET]


def _chain(a):
    """a and the arrays its memory belongs to (a.base, its base, ...); [] for a weight that is
    not an ndarray (an int8 or bfloat16 one), and the last base (None for an owner)."""
    chain = []
    while isinstance(a, np.ndarray):
        chain.append(a)
        a = a.base
    return chain, a


def freeze(a):
    """Makes a, and the arrays its memory belongs to, read-only, and registers a."""
    chain, _ = _chain(a)
    for x in chain:
        x.flags.writeable = False
    if chain:
        key = id(a)
        entry = _kept.get(key)
        if entry is None or entry[0]() is not a:
            _kept[key] = [weakref.ref(a, lambda _, key=key: _kept.pop(key, None)), _UNSET]


def unfreeze(a):
    """Undoes freeze(a): what was kept for these arrays is let go; they are writable again (those
    whose memory is)."""
    chain, _ = _chain(a)
    for x in reversed(chain):
        _kept.pop(id(x), None)
        try:
            x.flags.writeable = True
        except ValueError:  # (memory that was never writable, e.g. of read-only bytes)
            pass


def kept(a, make):
    """What is kept for a frozen array a (make(a) the first time it is asked), or None when a was
    not frozen here or has become writable since (a.flags changed by hand)."""
    entry = _kept.get(id(a))
    if entry is None or entry[0]() is not a:
        return None
    chain, last = _chain(a)
    if any(x.flags.writeable for x in chain) or not (last is None or isinstance(last, bytes)):
        entry[1] = _UNSET  # (it may be written now: made again if it is read-only again)
        return None
    if entry[1] is _UNSET:
        entry[1] = make(a)
    return entry[1]


def kept_values():
    """Everything kept now (for tests and memory reports)."""
    return [entry[1] for entry in _kept.values() if entry[1] is not _UNSET and entry[1] is not None]
