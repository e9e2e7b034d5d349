"""Find the BLAS's per-thread thread-count setter, so kernels can keep BLAS serial inside their threads.

The compiled kernels call BLAS from inside their own OpenMP threads, one tile product per call. A
threaded BLAS would start its own threads for each of those calls as well: 2 x 2 threads fighting
over 2 cores made attention 6x slower here. OpenBLAS (>= 0.3.27) and MKL have a thread-local
setting for exactly this: `openblas_set_num_threads_local(n)` / `MKL_Set_Num_Threads_Local(n)`,
both returning the previous value. The kernels set 1 in each of their threads and restore it after.

In scipy's OpenBLAS 0.3.30 that setting is in fact process-wide (a thread that restores it
restores it for everyone), so `serial_blas` (fastattn._compiled.serial_blas) also wraps every
kernel call: the first caller in saves the setting and sets 1, the last one out restores it,
however Python threads interleave.
"""
import ctypes
import glob
import os

_SETTERS = (
    "openblas_set_num_threads_local",
    "scipy_openblas_set_num_threads_local",
    "MKL_Set_Num_Threads_Local",
)


def _loaded_blas_paths():
    """Paths of the shared libraries in this process that look like a BLAS (Linux), then the
    libraries that scipy's wheels bundle."""
    paths = []
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.split()[-1]
                name = os.path.basename(path).lower()
                if path.startswith("/") and ("blas" in name or "mkl" in name) and path not in paths:
                    paths.append(path)
    except OSError:
        pass
    import scipy

    libs = os.path.join(os.path.dirname(os.path.dirname(scipy.__file__)), "scipy.libs")
    return paths + sorted(glob.glob(os.path.join(libs, "*blas*")))


def local_setter_address():
    """Address of the BLAS's thread-local set_num_threads (int f(int)), or 0 if it has none."""
    import scipy.linalg.cython_blas  # noqa: F401  (loads the BLAS the kernels call)

    for path in _loaded_blas_paths():
        try:
            lib = ctypes.CDLL(path)  # already loaded: the same instance scipy uses
        except OSError:
            continue
        for name in _SETTERS:
            fn = getattr(lib, name, None)
            if fn is not None:
                return ctypes.cast(fn, ctypes.c_void_p).value
    return 0
