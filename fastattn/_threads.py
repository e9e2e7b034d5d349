"""How many threads the compiled kernels use (one process-wide setting)."""
import operator
import os
import warnings


def _default_threads():
    env = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


_num_threads = _default_threads()


def set_num_threads(n):
    """Use `n` threads (>= 1) in the compiled kernels. Default: OMP_NUM_THREADS, else the usable cores."""
    global _num_threads
    try:
        n = operator.index(n)
    except TypeError:
        raise TypeError(f"set_num_threads: n must be an integer, got {type(n).__name__}") from None
    if n < 1:
        raise ValueError(f"set_num_threads: n must be >= 1, got {n}")
    _num_threads = n
    from fastattn._backend import _compiled  # (late: the compiled modules import this one)

    if n > 1 and _compiled is not None and not _compiled.openmp_enabled():
        warnings.warn("fastattn was built without OpenMP: the compiled kernels run on one thread",
                      RuntimeWarning, stacklevel=2)


def get_num_threads():
    """The number of threads the compiled kernels use."""
    return _num_threads


# A parallel region costs a few microseconds to start and join, more when the pool's threads
# have gone to sleep: a kernel call smaller than this (in rough floating-point operations) per
# thread runs on fewer threads. Decoding one token with a small GPT is mostly such calls: on 2
# cores it ran 1.7x faster on one thread than on two. (The results do not depend on the count.)
MIN_WORK_PER_THREAD = 1 << 18


def threads_for(work):
    """Threads for a kernel call of about `work` operations: get_num_threads(), fewer for small work."""
    return max(1, min(_num_threads, int(work) // MIN_WORK_PER_THREAD))
