"""How many threads the compiled kernels use (one process-wide setting, and what the machine allows).

OpenMP threads that wait for each other at the end of every parallel region are only fast while
each has a core. When another process keeps a core busy, a kernel's region waits for a thread
that is not running: on 2 cores, with one taken, 2 threads ran generation 18x and training 7x
slower than 1 thread (benchmarks/busy_machine.py). So by default the kernels look at how busy
the machine is (Linux: /proc/stat, at most every LOAD_INTERVAL seconds, minus this process's own
CPU time) and use no more threads than there are cores the other processes leave free, never
fewer than 1. FASTATTN_ADAPTIVE_THREADS=0 (or `adaptive=False` in set_num_threads) turns that
off: then exactly get_num_threads() threads run, however busy the machine is. Results never
depend on the thread count, so none of this changes a result.
"""
import operator
import os
import time
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
ADAPTIVE = os.environ.get("FASTATTN_ADAPTIVE_THREADS", "1").strip().lower() not in ("0", "false", "no", "off")


def set_num_threads(n, adaptive=None):
    """Use up to `n` threads (>= 1) in the compiled kernels. Default: OMP_NUM_THREADS, else the
    usable cores. adaptive: True to use fewer while other processes keep cores busy (the
    default, from FASTATTN_ADAPTIVE_THREADS), False for exactly n; None keeps the setting."""
    global _num_threads, ADAPTIVE
    try:
        n = operator.index(n)
    except TypeError:
        raise TypeError(f"set_num_threads: n must be an integer, got {type(n).__name__}") from None
    if n < 1:
        raise ValueError(f"set_num_threads: n must be >= 1, got {n}")
    if adaptive is not None:
        if not isinstance(adaptive, bool):
            raise TypeError(f"set_num_threads: adaptive must be a bool or None, got {type(adaptive).__name__}")
        ADAPTIVE = adaptive
    _num_threads = n
    if _forked and n > 1:
        warnings.warn("fastattn: this process was forked after its parent ran kernels on several "
                      "threads, and GNU OpenMP cannot start threads in such a child: the kernels "
                      "stay on one thread here", RuntimeWarning, stacklevel=2)
        _num_threads = 1
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


LOAD_INTERVAL = 0.25  # seconds between two looks at /proc/stat (its clock ticks are 10 ms)


class _FreeCores:
    """How many cores the other processes have left free over the last interval: (busy time of
    all cores - this process's CPU time) / wall time, from /proc/stat (Linux), rounded. None
    where /proc/stat cannot be read."""

    def __init__(self):
        self.cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        self.tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.free = None
        self.last = self._sample()
        self.due = time.monotonic() + LOAD_INTERVAL / 2  # a first look soon after the import

    def _sample(self):
        try:
            with open("/proc/stat", "rb") as f:
                fields = f.readline().split()[1:]
        except (OSError, IndexError):
            return None
        # user nice system idle iowait irq softirq steal ...: all but idle and iowait are busy
        ticks = [int(x) for x in fields[:8]]
        return time.monotonic(), sum(ticks) - ticks[3] - ticks[4], time.process_time()

    def __call__(self):
        now = time.monotonic()
        if now >= self.due and self.last is not None:
            self.due = now + LOAD_INTERVAL
            sample = self._sample()
            if sample is not None:
                wall = sample[0] - self.last[0]
                others = (sample[1] - self.last[1]) / self.tick - (sample[2] - self.last[2])
                self.free = self.cores - max(0.0, others) / wall
                self.last = sample
        return self.free


_free_cores = _FreeCores()


def threads_for(work):
    """Threads for a kernel call of about `work` operations: get_num_threads(), fewer for small
    work, and (adaptive) no more than the cores that other processes leave free."""
    global _pool_used
    n = min(_num_threads, int(work) // MIN_WORK_PER_THREAD)
    if ADAPTIVE and n > 1:
        free = _free_cores()
        if free is not None:
            n = min(n, int(free + 0.3))  # a thread needs most of a core to itself
    if n > 1:
        _pool_used = True
    return max(1, n)


# Fork safety. GNU OpenMP (libgomp) is not fork-safe: a child forked after its parent ran a
# parallel region on more than one thread inherits a thread pool whose threads do not exist in
# the child, and its first region of more than one thread waits for them forever. A region of
# one thread does not use the pool. So, as PyTorch does (with pthread_atfork), a child forked
# after that runs every kernel on one thread (threads_for caps at get_num_threads() = 1, and
# set_num_threads keeps 1). A child forked before any threaded kernel ran keeps its threads.
_pool_used = False  # a kernel has been given more than one thread in this process
_forked = False     # this process was forked after that: one thread, from now on


def _after_fork_in_child():
    global _forked, _num_threads
    if _pool_used:
        _forked = True
        _num_threads = 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
