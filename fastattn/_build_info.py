"""build_info(): how this fastattn was built and what runs its kernels here, for bug reports and
benchmark headers."""
from fastattn import _backend


def _blas():
    """SciPy's BLAS (the one the compiled kernels call), as its build records it."""
    try:
        import scipy

        blas = scipy.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"{blas.get('name', '?')} {blas.get('version', '')}".strip()
    except Exception:  # an older SciPy, or one built without that record
        return "unknown"


def build_info():
    """A dict: whether the compiled backend imported (else why not);
    OpenMP; the engine of the float32 linear products ("onednn" or "openblas", see
    FASTATTN_GEMM), oneDNN's version and the instruction set its kernels use here (or why it is
    not loaded); the engine of the int8 products ("onednn": its VNNI / AMX kernels; "avx2":
    fastattn's own; None: int8 does not run here); the BLAS."""
    compiled = _backend._compiled
    info = {"compiled": compiled is not None,
            "compiled_error": _backend._compiled_error, "openmp": False, "gemm": None,
            "onednn": None, "onednn_isa": None, "onednn_unavailable": None, "int8": None,
            "blas": _blas()}
    if compiled is not None:
        from importlib import import_module

        from fastattn._compiled import _gemm_engine

        info["openmp"] = bool(compiled.openmp_enabled())
        linear = import_module("fastattn._compiled.linear")
        info["gemm"] = linear._current_engine()
        info["int8"] = linear.int8_engine()
        info["onednn"] = _gemm_engine.onednn_version()
        info["onednn_isa"] = _gemm_engine.onednn_isa()
        info["onednn_unavailable"] = _gemm_engine.unavailable_reason()
    return info
