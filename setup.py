"""Build the compiled kernels: every src_cython/*.pyx becomes fastattn._compiled.<name>.

Switches (environment variables, read at build time):
  FASTATTN_NO_OPENMP=1  build serial kernels even if the compiler supports OpenMP.
  FASTATTN_NATIVE=1     add -march=native (fastest on the build machine; the result is not portable).

src_cython/onednn.pyx (the float32 GEMM on oneDNN) is built where the onednn-devel-cpu-gomp wheel
is installed in the build environment (pyproject.toml asks for it on Linux x86-64): it brings
oneDNN's headers, and its dependency onednn-cpu-gomp the library linked to. Elsewhere the module
is left out and the products stay on the BLAS.

The default build is portable x86-64. AVX-512 and AVX2/FMA are still used where it matters: the
products go to oneDNN and the BLAS that scipy ships (both pick their kernels at run time), and the
row loops of src_cython/vector_math.h are compiled three times with target_clones (x86-64-v4,
x86-64-v3 and baseline), the loader picking one by CPU features.
"""
import os
import shutil
import tempfile
import warnings
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).parent
SRC = "src_cython"


def _flag(name):
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


OPENMP_PROBE = "#include <omp.h>\nint main(void) { return omp_get_max_threads() < 1; }\n"
PLAIN_PROBE = "int main(void) { return 0; }\n"


def _compiler_accepts(compiler, flags, source):
    """Compile and link `source` with `flags`; True if that works."""
    tmp = tempfile.mkdtemp(prefix="fastattn-probe-")
    try:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write(source)
        objs = compiler.compile([src], output_dir=tmp, extra_postargs=flags)
        compiler.link_executable(objs, "probe", output_dir=tmp, extra_postargs=flags)
        return True
    except Exception:
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _cores():
    """The cores this process may run on (a container's share, not the host's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class BuildExt(build_ext):
    def finalize_options(self):
        super().finalize_options()
        # One compiler per core: the extensions are independent, and each takes 10-50 s (the
        # row loops are compiled three times, see target_clones). `build_ext -j N` still wins.
        if not self.parallel:
            self.parallel = _cores()

    def build_extensions(self):
        msvc = self.compiler.compiler_type == "msvc"
        compile_args = ["/O2"] if msvc else ["-O3", "-fno-math-errno", "-fno-trapping-math"]
        link_args = []
        if _flag("FASTATTN_NATIVE") and not msvc:
            compile_args.append("-march=native")

        omp = ["/openmp"] if msvc else ["-fopenmp"]
        if _flag("FASTATTN_NO_OPENMP"):
            print("fastattn: FASTATTN_NO_OPENMP=1, building serial kernels")
            openmp = False
        else:
            openmp = _compiler_accepts(self.compiler, omp, OPENMP_PROBE)
            if not openmp:
                warnings.warn(
                    "fastattn: the C compiler does not support OpenMP (-fopenmp failed); "
                    "building serial kernels. set_num_threads() will have no effect."
                )
        if openmp:
            compile_args += omp
            link_args += [] if msvc else omp
        elif not msvc and _compiler_accepts(self.compiler, ["-fopenmp-simd"], PLAIN_PROBE):
            # no threads, but keep the `omp simd` reductions of row_ops_template.h vectorised
            compile_args.append("-fopenmp-simd")
        for ext in self.extensions:
            # (the int8 / bfloat16 row loops must round as the reference does: no fused multiply-add)
            ext.extra_compile_args = compile_args + (["-ffp-contract=off"] if ext.name.endswith(
                ("linear_lowp", "linear_int8")) and not msvc else [])
            ext.extra_link_args = link_args + ext.extra_link_args  # (onednn's own, see extensions())
        if not msvc and "-g" not in os.environ.get("CFLAGS", "").split():
            # Python's own CFLAGS carry -g: debug information for about 1.5 MB of generated C
            # per module costs a fifth of the compile time and is not needed to run the kernels
            # (CFLAGS=-g keeps it).
            self.compiler.compiler_so = [a for a in self.compiler.compiler_so if a != "-g"]
        super().build_extensions()


def _installed_file(dist, name):
    """The path of the file `name` (a path ending) that the installed wheel `dist` holds, or None."""
    from importlib import metadata

    try:
        files = metadata.distribution(dist).files or ()
    except metadata.PackageNotFoundError:
        return None
    for f in files:
        if str(f).replace(os.sep, "/").endswith(name):
            return Path(f.locate()).resolve()
    return None


def _onednn():
    """(include dir, library dir) of the oneDNN wheels in this build environment, or None."""
    header = _installed_file("onednn-devel-cpu-gomp", "oneapi/dnnl/dnnl.h")
    library = _installed_file("onednn-cpu-gomp", "/libdnnl.so.3")
    if header is None or library is None:
        return None
    return str(header.parent.parent.parent), str(library.parent)


def extensions():
    from Cython.Build import cythonize

    onednn = _onednn()
    exts = []
    for pyx in sorted((HERE / SRC).glob("*.pyx")):
        ext = Extension(
            f"fastattn._compiled.{pyx.stem}",
            [f"{SRC}/{pyx.name}"],
            include_dirs=[SRC],
            # setuptools does not see #include and cimport: list them so that editing one rebuilds
            depends=sorted(str(p) for pattern in ("*.h", "*.pxd") for p in (HERE / SRC).glob(pattern)),
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        )
        if pyx.stem in ("onednn", "linear_lowp"):
            if onednn is None:
                print("fastattn: the onednn-devel-cpu-gomp wheel is not installed: building without "
                      "the oneDNN GEMM (the linear products run on the BLAS)")
                continue
            ext.include_dirs.append(onednn[0])
            ext.library_dirs = [onednn[1]]
            # the wheel's soname; found at run time beside the package (<prefix>/lib, as the
            # wheel installs it), else loaded by fastattn/_compiled/_gemm_engine.py first
            ext.extra_link_args = ["-l:libdnnl.so.3", "-Wl,-rpath,$ORIGIN/../../../.."]
        exts.append(ext)
    return cythonize(
        exts,
        nthreads=_cores(),  # translate the .pyx files in parallel too (about 12 s serially)
        include_path=[SRC],
        compiler_directives={
            "language_level": 3,
            "boundscheck": False,
            "wraparound": False,
            "initializedcheck": False,
            "cdivision": True,
            "nonecheck": False,
        },
    )


setup(ext_modules=extensions(), cmdclass={"build_ext": BuildExt})
