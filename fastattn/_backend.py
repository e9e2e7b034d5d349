"""Which backend the functions in fastattn.functional run on.

The process-wide choice comes from FASTATTN_BACKEND at import (default "compiled") and from
set_backend(); use_backend() overrides it for one block of code, in the current thread or asyncio
task only (a contextvars.ContextVar), and restores it on exit, also on an exception.
"""
import contextlib
import contextvars
import os
import warnings

from fastattn import reference

try:
    from fastattn import _compiled
    _compiled_error = None
except Exception as exc:  # not built, or built for another Python / NumPy
    _compiled = None
    _compiled_error = f"{type(exc).__name__}: {exc}"

_BACKENDS = {"compiled": _compiled, "reference": reference}


def _source_tree():
    """The repository root when fastattn was imported from a source checkout (setup.py and
    src_cython/ beside the package), else None. Running Python there puts the current directory
    first on sys.path, so `import fastattn` finds the checkout, not the installed copy."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if os.path.isfile(os.path.join(root, "setup.py")) and os.path.isdir(os.path.join(root, "src_cython")):
        return root
    return None


def _compiled_advice():
    """What to do about a missing compiled backend, for the warning and set_backend's error."""
    root = _source_tree()
    if root is None:
        return "Reinstall fastattn from source (pip install .) with a C compiler present."
    return (f"This fastattn was imported from the source tree {os.path.join(root, 'fastattn')}, which "
            "holds no compiled extension (the installed copy, if any, is shadowed because Python "
            "puts the current directory first on sys.path). Run from another directory or use the "
            f"console script (fastattn bench), or build the extension in place: cd {root} && pip install -e .")
_override = contextvars.ContextVar("fastattn_backend", default=None)


def available_backends():
    """The names of the backends that can be used here, e.g. ("compiled", "reference")."""
    return tuple(name for name, module in _BACKENDS.items() if module is not None)


def _checked(name):
    if not isinstance(name, str):
        raise TypeError(f"backend name must be a str, got {type(name).__name__}")
    if name not in _BACKENDS:
        raise ValueError(f"unknown backend {name!r}; the backends are {tuple(_BACKENDS)}")
    if _BACKENDS[name] is None:
        raise RuntimeError(
            f"the compiled backend is not available: importing it failed with {_compiled_error}. "
            + _compiled_advice())
    return name


def set_backend(name):
    """Use backend `name` ("compiled" or "reference") from now on, in every thread.

    Inside a use_backend() block it also replaces that block's choice until the block ends."""
    global _default
    _default = _checked(name)
    if _override.get() is not None:
        _override.set(None)


def get_backend():
    """The name of the backend that fastattn.functional uses here and now."""
    return _override.get() or _default


@contextlib.contextmanager
def use_backend(name):
    """with use_backend("reference"): ... runs the block on that backend, then restores the choice."""
    token = _override.set(_checked(name))
    try:
        yield name
    finally:
        _override.reset(token)


def current():
    """The module of the active backend."""
    return _BACKENDS[get_backend()]


def _initial_backend():
    wanted = os.environ.get("FASTATTN_BACKEND", "").strip() or "compiled"
    if wanted not in _BACKENDS:
        warnings.warn(
            f"FASTATTN_BACKEND={wanted!r} is not a backend {tuple(_BACKENDS)}; using the default",
            RuntimeWarning, stacklevel=3)
        wanted = "compiled"
    if wanted == "compiled" and _compiled is None:
        warnings.warn(
            f"fastattn: the compiled backend failed to import ({_compiled_error}); "
            f"falling back to the reference (NumPy) backend. {_compiled_advice()}", RuntimeWarning, stacklevel=3)
        wanted = "reference"
    return wanted


_default = _initial_backend()
