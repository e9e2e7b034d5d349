"""`fastattn launch -n N COMMAND ...`: an MPI launcher's run of `fastattn COMMAND ...` on N ranks
whose exit status is non-zero unless every rank finished it.

    fastattn launch -n 2 --mpiexec mpiexec.gforker train --data data-char --out out-mpi

A launcher should end with a non-zero status when a rank dies, and Hydra's mpiexec does (the
signal's number, 9 for SIGKILL); MPICH's gforker does not always: with rank 0 SIGKILLed it ends
with 0 in most runs ("[0]0:Return code = 0, signaled with Killed"), so `mpiexec.gforker ... &&
next-step` would go on. Here each rank, once its command has returned 0, writes a marker file
(rank-R) in a directory named by FASTATTN_DONE_DIR; after the launcher ends, a missing marker
makes the status 1, with a line naming the ranks that did not finish. A launcher's own non-zero
status is passed on as it is. The markers' directory is a new one under $TMPDIR (tempfile's):
over several machines, point TMPDIR at a directory that every rank can write.
"""
import os
import shutil
import subprocess
import sys
import tempfile

DONE_DIR = "FASTATTN_DONE_DIR"
_RANK_VARS = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "MV2_COMM_WORLD_RANK")


def mark_done():
    """In a rank whose command succeeded: its marker in $FASTATTN_DONE_DIR (nothing when unset)."""
    folder = os.environ.get(DONE_DIR)
    if not folder:
        return
    rank = next((os.environ[v] for v in _RANK_VARS if os.environ.get(v, "").isdigit()), None)
    name = f"rank-{rank}" if rank is not None else f"pid-{os.getpid()}"
    with open(os.path.join(folder, name), "w") as f:
        f.write("done\n")


def find_mpiexec(name=None):
    """The launcher to use: name (a path, or a name beside this Python or on PATH), else the
    mpiexec beside this Python (the MPICH wheel's), else PATH's."""
    here = os.path.dirname(sys.executable)
    for candidate in ([name] if name else ["mpiexec"]):
        if os.sep in candidate and os.path.isfile(candidate):
            return candidate
        if os.path.isfile(os.path.join(here, candidate)):
            return os.path.join(here, candidate)
        if shutil.which(candidate):
            return shutil.which(candidate)
    raise FileNotFoundError(f"no MPI launcher {name or 'mpiexec'} beside {sys.executable} or on PATH: "
                            "pip install 'fastattn[mpi]' (the MPICH wheel brings mpiexec and mpiexec.gforker)")


def run(n, command, mpiexec=None, log=None):
    """Runs `mpiexec -n n python -m fastattn *command`; returns the exit status: the launcher's
    when non-zero, else 1 when a rank did not write its marker (log(message) is told which),
    else 0."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"-n must be an int >= 1, got {n!r}")
    if not command:
        raise ValueError("give the fastattn command to run on every rank, e.g. `fastattn launch -n 2 train ...`")
    launcher = find_mpiexec(mpiexec)
    folder = tempfile.mkdtemp(prefix="fastattn-launch-")
    try:
        env = {**os.environ, DONE_DIR: folder}
        status = subprocess.call([launcher, "-n", str(n), sys.executable, "-m", "fastattn", *command], env=env)
        if status != 0:
            return status
        done = sorted(os.listdir(folder))
        missing = [r for r in range(n) if f"rank-{r}" not in done]
        if len(done) < n:
            which = ", ".join(map(str, missing)) if len(missing) == n - len(done) else f"{n - len(done)} of {n}"
            plural = "s" if n - len(done) > 1 else ""
            (log or print)(f"fastattn launch: error: rank{plural} {which} of {n} did not finish `fastattn "
                           f"{command[0]}` (killed?), though {os.path.basename(launcher)} ended with status 0")
            return 1
        return 0
    finally:
        shutil.rmtree(folder, ignore_errors=True)
