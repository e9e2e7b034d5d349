"""Data-parallel training over MPI (mpi4py), and the one-process world it falls back to.

    world = get_world()          # MPIWorld under mpiexec / mpirun / srun, else SingleProcess
    grads = FlatGradients(model.parameters())
    ...backward of this rank's micro-batches...
    loss_sum = grads.allreduce(world, loss_sum)   # one in-place Allreduce: every rank holds the sum

Whether a launcher started this process is read from its environment variables (LAUNCHER_VARS):
without one, mpi4py is never imported, so a user on one machine needs neither it nor an MPI.
An exception on one rank of several would leave the others waiting in their next Allreduce
forever (and mpi4py's finalize waits for them too): the trainer calls world.abort(...), which
prints that rank's message and ends every process of the job.
"""
import os
import sys

import numpy as np

# Set by the launchers in each process they start: Open MPI's mpirun, MPICH's / Intel MPI's
# Hydra mpiexec (PMI), MVAPICH2, and PMIx (Open MPI 5, Slurm's srun --mpi=pmix).
LAUNCHER_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMI_RANK", "MV2_COMM_WORLD_SIZE", "PMIX_RANK")
_SIZE_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE")


class SingleProcess:
    """The world of a process that no launcher started: rank 0 of 1, every collective a no-op."""

    rank, size, local_size = 0, 1, 1

    def allreduce_sum_(self, buffer):
        return buffer

    def broadcast_(self, buffer):
        return buffer


class MPIWorld:
    """COMM_WORLD through mpi4py: rank, size, local_size (ranks on this machine), and the
    in-place collectives the trainer needs."""

    def __init__(self):
        try:
            from mpi4py import MPI
        except ImportError:
            raise ImportError("this process was started by an MPI launcher, and training over MPI needs "
                              "mpi4py: pip install 'fastattn[mpi]' (mpi4py and MPICH), or run without "
                              "mpiexec") from None
        self._MPI = MPI
        self.comm = MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.local_size = self.comm.Split_type(MPI.COMM_TYPE_SHARED).Get_size()
        wanted = _launcher_size()
        if wanted is not None and wanted != self.size:
            # the launcher of another MPI than mpi4py's: each process may start alone (a singleton)
            raise ValueError(f"the launcher started {wanted} processes, but mpi4py's MPI "
                             f"({MPI.Get_library_version().splitlines()[0].strip()}) sees a world of "
                             f"{self.size}: launch with the mpiexec of the MPI that mpi4py uses")

    def allreduce_sum_(self, buffer):
        """buffer (a contiguous array) becomes the sum of every rank's buffer, in place."""
        self.comm.Allreduce(self._MPI.IN_PLACE, buffer, op=self._MPI.SUM)
        return buffer

    def broadcast_(self, buffer):
        """buffer becomes rank 0's, in place."""
        self.comm.Bcast(buffer, root=0)
        return buffer

    def abort(self, message):
        """Prints message on stderr and ends every process of the job (MPI_Abort, status 1)."""
        print(message, file=sys.stderr, flush=True)
        sys.stdout.flush()
        self.comm.Abort(1)
        os._exit(1)  # (an MPI may return from MPI_Abort before its launcher ends the processes)


def launched():
    """Whether an MPI launcher started this process (one of LAUNCHER_VARS is set)."""
    return any(name in os.environ for name in LAUNCHER_VARS)


def _launcher_size():
    for name in _SIZE_VARS:
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return None


_world = None


def get_world():
    """This process's world, made once: MPIWorld under a launcher, else SingleProcess. A launcher
    that starts one process (mpiexec -n 1) runs without MPI when mpi4py is not installed. Made
    while the kernels' thread count is still fastattn's default, it becomes cores_per_rank
    (default_threads)."""
    global _world
    if _world is None:
        if not launched():
            _world = SingleProcess()
        else:
            from fastattn import _threads
            untouched = _threads.get_num_threads() == _threads._default_threads()
            try:
                _world = MPIWorld()
            except ImportError:
                if _launcher_size() != 1:
                    raise
                _world = SingleProcess()
            if untouched:
                default_threads(_world)
    return _world


def cores_per_rank(local_size):
    """The cores each rank of this machine may use: the CPUs this process may run on, shared
    among the local_size ranks here, unless the launcher has already bound it to fewer CPUs
    than the machine has (Open MPI's default binding, --map-by slot:PE=k): then all of those."""
    try:
        mine = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        mine = os.cpu_count() or 1
    if mine < (os.cpu_count() or mine):
        return mine
    return max(1, mine // max(1, local_size))


def default_threads(world):
    """Under a launcher, unless OMP_NUM_THREADS says otherwise, the kernels' threads become
    cores_per_rank (ranks sharing a machine would otherwise each start a thread per core).
    Returns the thread count set, or None."""
    if world.size == 1 or os.environ.get("OMP_NUM_THREADS", "").strip():
        return None
    from fastattn._threads import set_num_threads
    n = cores_per_rank(world.local_size)
    set_num_threads(n)
    return n


class FlatGradients:
    """One flat buffer holding every parameter's gradient, plus a last slot for the loss: each
    param.grad becomes a view into it (the model adds into .grad, clipping scales it and AdamW
    reads it, all in place), so a single Allreduce averages them all. params: one dtype."""

    def __init__(self, params):
        params = list(params)
        dtypes = {p.grad.dtype for p in params}
        if len(dtypes) != 1:
            raise ValueError(f"the parameters' gradients have several dtypes {sorted(map(str, dtypes))}: "
                             "one flat buffer needs one")
        sizes = [p.grad.size for p in params]
        self.buffer = np.zeros(sum(sizes) + 1, dtype=dtypes.pop())
        offset = 0
        for p, n in zip(params, sizes):
            view = self.buffer[offset:offset + n].reshape(p.grad.shape)
            view[...] = p.grad
            p.grad = view
            offset += n
        self.params = params

    def allreduce(self, world, loss_sum):
        """Sums every rank's gradients and loss_sum in place (one Allreduce); returns the total
        loss_sum."""
        if world.size == 1:
            return loss_sum
        self.buffer[-1] = loss_sum
        world.allreduce_sum_(self.buffer)
        return float(self.buffer[-1])

    def scale_(self, factor):
        self.buffer[:-1] *= self.buffer.dtype.type(factor)

    def owns(self, params):
        """Whether every param.grad is still a view into the buffer (nothing replaced one)."""
        return all(np.shares_memory(p.grad, self.buffer) for p in params)


def broadcast_parameters(world, params):
    """Every rank's parameters become rank 0's (one Bcast of a flat copy)."""
    if world.size == 1:
        return
    params = list(params)
    flat = np.concatenate([p.data.reshape(-1) for p in params])
    world.broadcast_(flat)
    offset = 0
    for p in params:
        p.data[...] = flat[offset:offset + p.data.size].reshape(p.data.shape)
        offset += p.data.size
