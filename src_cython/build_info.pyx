"""How this copy of the compiled kernels was built, for error reports and benchmark headers."""

cdef extern from "openmp_info.h":
    int fa_openmp_enabled()


def openmp_enabled():
    """True if the kernels were compiled with OpenMP (else they run on one thread)."""
    return bool(fa_openmp_enabled())
