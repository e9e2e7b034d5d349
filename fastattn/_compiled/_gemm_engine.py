"""Which library computes the float32 linear products: oneDNN where it is installed, else the BLAS.

oneDNN (the `onednn-cpu-gomp` wheel: CPU only, JIT kernels chosen at run time for SSE4.1 / AVX2 /
AVX-512 / AMX, threaded by the same GNU OpenMP as fastattn) is loaded with dlopen from the
installed wheel; nothing is linked at build time. Its row-major `dnnl_sgemm` takes the place of
the BLAS's sgemm in every block of fastattn's linear grid (src_cython/linear.pyx); a single row
(decode) stays on the BLAS's gemv, which streams the weights faster here.

FASTATTN_GEMM=openblas (read at import) keeps the BLAS; so does a build without OpenMP, where
oneDNN would start threads of its own that fastattn could not govern (results would then depend
on the thread count). float64 always runs on the BLAS: oneDNN has no double GEMM.
"""
import ctypes
import os

ENGINES = ("onednn", "openblas")
_SONAME = "libdnnl.so.3"
_DIST = "onednn-cpu-gomp"


class _Version(ctypes.Structure):
    _fields_ = [("major", ctypes.c_int), ("minor", ctypes.c_int), ("patch", ctypes.c_int),
                ("hash", ctypes.c_char_p), ("cpu_runtime", ctypes.c_uint), ("gpu_runtime", ctypes.c_uint)]


def _library_paths():
    """Where the oneDNN wheel put libdnnl.so.3: its installed files, then <prefix>/lib."""
    paths = []
    try:
        from importlib import metadata

        for f in metadata.distribution(_DIST).files or ():
            if f.name == _SONAME:
                paths.append(str(f.locate()))
    except Exception:  # not installed (another OS or CPU), or metadata unreadable
        pass
    import sys

    paths.append(os.path.join(sys.prefix, "lib", _SONAME))
    return [p for p in paths if os.path.isfile(p)]


def _load():
    """(the loaded library, "major.minor.patch") or (None, why not)."""
    if not _openmp_build():
        return None, "fastattn was built without OpenMP"
    for path in _library_paths():
        try:
            lib = ctypes.CDLL(path)
        except OSError as exc:
            return None, f"{path}: {exc}"
        lib.dnnl_version.restype = ctypes.POINTER(_Version)
        version = lib.dnnl_version().contents
        if version.cpu_runtime != 2:  # DNNL_RUNTIME_OMP: the other builds bring their own threads
            return None, f"{path} is not built on OpenMP (runtime {version.cpu_runtime})"
        return lib, f"{version.major}.{version.minor}.{version.patch}"
    return None, f"the {_DIST} wheel is not installed (pip install {_DIST})"


def _openmp_build():
    from fastattn._compiled.build_info import openmp_enabled

    return openmp_enabled()


_lib, _detail = _load()


def _wanted():
    wanted = os.environ.get("FASTATTN_GEMM", "").strip().lower() or "onednn"
    if wanted not in ENGINES:
        import warnings

        warnings.warn(f"FASTATTN_GEMM={wanted!r} is not a GEMM engine {ENGINES}; using the default",
                      RuntimeWarning, stacklevel=2)
        wanted = "onednn"
    return wanted


ENGINE = "onednn" if _lib is not None and _wanted() == "onednn" else "openblas"


def onednn_version():
    """oneDNN's version when it is loaded, else None."""
    return _detail if _lib is not None else None


def unavailable_reason():
    """Why oneDNN is not loaded (None when it is)."""
    return None if _lib is not None else _detail


# dnnl_cpu_isa_t values (oneapi/dnnl/dnnl_types.h): what oneDNN writes its kernels for here
_ISA = {0x1: "sse41", 0x3: "avx", 0x7: "avx2", 0xf: "avx2_vnni", 0x1f: "avx2_vnni_2",
        0x27: "avx512_core", 0x67: "avx512_core_vnni", 0xe7: "avx512_core_bf16",
        0x1ef: "avx512_core_fp16", 0xfef: "avx512_core_amx", 0x1fef: "avx512_core_amx_fp16"}


def onednn_isa():
    """The instruction set oneDNN's kernels use on this CPU (e.g. "avx2", "avx512_core_bf16"),
    or None when oneDNN is not loaded. ONEDNN_MAX_CPU_ISA caps it (oneDNN's own setting)."""
    if _lib is None:
        return None
    isa = _lib.dnnl_get_effective_cpu_isa()
    return _ISA.get(isa, hex(isa))


def onednn_has_vnni():
    """Whether oneDNN's kernels here have VNNI (avx2_vnni, avx512_core_vnni and above): its int8
    products without it multiply with vpmaddubsw, whose int16 sums saturate."""
    return _lib is not None and bool(int(_lib.dnnl_get_effective_cpu_isa()) & 0x48)


def sgemm_address(engine=None):
    """The address of the row-major sgemm the linear kernels call for `engine` (default: ENGINE),
    0 for the BLAS."""
    engine = ENGINE if engine is None else engine
    if engine not in ENGINES:
        raise ValueError(f"unknown GEMM engine {engine!r}; the engines are {ENGINES}")
    if engine == "openblas":
        return 0
    if _lib is None:
        raise ValueError(f"the oneDNN engine is not available: {_detail}")
    return ctypes.cast(_lib.dnnl_sgemm, ctypes.c_void_p).value
