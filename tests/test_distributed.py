"""Data-parallel training over MPI: `mpiexec -n 2 fastattn train` against gradient accumulation in one
process, a failing rank, resume under MPI; and the pieces (flat gradients, threads per rank) without MPI.

The MPI tests need mpi4py and an mpiexec (pip install '.[mpi]': mpi4py and the MPICH wheel); they
skip without them. Each launch is bounded by a timeout: a hang fails the test instead of the suite.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import fastattn
from fastattn.cli import main
from fastattn.training import distributed
from fastattn.training.trainer import train_step

TINY = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "16", "--batch-size", "4",
        "--eval-iters", "3", "--eval-interval", "2", "--warmup-iters", "2", "--dropout", "0.1",
        "--no-progress", "--threads", "1"]


def _mpiexec():
    """The launcher beside this Python (the MPICH wheel's, which mpi4py's wheel uses), else PATH's
    mpiexec. MPICH's gforker starts the ranks by fork, without Hydra's TCP control port."""
    if distributed.launched():
        pytest.skip("the suite itself runs under an MPI launcher")
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        pytest.skip("needs mpi4py: pip install '.[mpi]'")
    here = os.path.dirname(sys.executable)
    for name in ("mpiexec.gforker", "mpiexec"):
        if os.path.exists(os.path.join(here, name)):
            return os.path.join(here, name)
    if shutil.which("mpiexec") is None:
        pytest.skip("needs an mpiexec: pip install '.[mpi]' (the mpich wheel brings one)")
    return shutil.which("mpiexec")


# Everything stays on this machine: shared memory between the ranks (UCX, MPICH's transport), no
# network device; and Open MPI's consent to run as root, should PATH's mpiexec be Open MPI's.
LOCAL_ONLY = {"UCX_TLS": "self,sm", "UCX_NET_DEVICES": "lo", "HYDRA_IFACE": "lo",
              "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}


def mpi_init_failed(stderr):
    """Whether a job died in MPI_Init itself, in MPICH's UCX transport (once in a few hundred
    launches here: "MPIDI_UCX_comm_addr_exchange ... Invalid parameter"), before any of fastattn's
    code ran: the machine's MPI failing, not what a test checks. Such a launch is run again once."""
    return "MPI_Init" in stderr and "MPIDI_UCX" in stderr


def launch(n, argv, cwd, timeout=90):
    """Runs argv under `mpiexec -n n` in its own process group (killed whole on a timeout)."""
    env = {k: v for k, v in os.environ.items() if k not in distributed.LAUNCHER_VARS}
    env.update(LOCAL_ONLY)
    for attempt in range(2):
        proc = subprocess.Popen([_mpiexec(), "-n", str(n), *argv], cwd=cwd, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            pytest.fail(f"mpiexec -n {n} {' '.join(argv)} did not end within {timeout} s")
        if not (proc.returncode and mpi_init_failed(err)):
            break
    return proc.returncode, out, err


def fastattn_train(*args):
    return [sys.executable, "-m", "fastattn", "train", *map(str, args)]


def weights(out_dir):
    return fastattn.load_checkpoint(os.path.join(out_dir, "ckpt.npz")).model_state


def curve(out_dir):
    with open(os.path.join(out_dir, "metrics.jsonl")) as f:
        return [(r["step"], r["train_loss"], r["val_loss"]) for r in map(json.loads, f)]


def assert_same_run(a, b):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:  # the gradient sums differ in float32 rounding only
        np.testing.assert_allclose(wa[name], wb[name], rtol=0, atol=1e-5, err_msg=name)
    ca, cb = curve(a), curve(b)
    assert [c[0] for c in ca] == [c[0] for c in cb]
    np.testing.assert_allclose([c[1:] for c in ca], [c[1:] for c in cb], rtol=1e-6)


def test_two_ranks_take_the_steps_of_accumulation_in_one_process(corpus_file, tmp_path, capsys):
    code, out, err = launch(2, fastattn_train("--data", corpus_file, "--out", tmp_path / "mpi", "--max-iters", 4,
                                              "--gradient-accumulation-steps", 1, *TINY), tmp_path)
    assert code == 0, err
    assert out.count("final: step 4 ") == 1  # rank 0 alone prints
    assert main(["train", "--data", str(corpus_file), "--out", str(tmp_path / "one"), "--max-iters", "4",
                 "--gradient-accumulation-steps", "2", *TINY]) == 0
    assert_same_run(tmp_path / "mpi", tmp_path / "one")
    assert sorted(os.listdir(tmp_path / "mpi")) == ["best.npz", "ckpt.npz", "config.json", "metrics.jsonl"]

    # 2 ranks x 2 micro-batches == 1 process x 4
    code, _, err = launch(2, fastattn_train("--data", corpus_file, "--out", tmp_path / "mpi2x2", "--max-iters", 3,
                                            "--gradient-accumulation-steps", 2, *TINY), tmp_path)
    assert code == 0, err
    assert main(["train", "--data", str(corpus_file), "--out", str(tmp_path / "one1x4"), "--max-iters", "3",
                 "--gradient-accumulation-steps", "4", *TINY]) == 0
    assert_same_run(tmp_path / "mpi2x2", tmp_path / "one1x4")


def test_resume_under_mpi_continues_the_run(corpus_file, tmp_path):
    """On a prepared directory (np.memmap), stopped at step 4 and resumed to 6, under mpiexec -n 2;
    against one process on the text file itself (the same tokens), straight to 6."""
    assert main(["prepare", "--data", str(corpus_file), "--out", str(tmp_path / "d")]) == 0
    schedule = ["--lr-decay-iters", "6", *TINY]
    code, _, err = launch(2, fastattn_train("--data", tmp_path / "d", "--out", tmp_path / "r", "--max-iters", 4,
                                            *schedule), tmp_path)
    assert code == 0, err
    code, out, err = launch(2, fastattn_train("--data", tmp_path / "d", "--out", tmp_path / "r", "--max-iters", 6,
                                              "--resume", "--no-progress"), tmp_path)
    assert code == 0, err
    assert out.splitlines()[-1].startswith("final: step 6 ")
    assert main(["train", "--data", str(corpus_file), "--out", str(tmp_path / "straight"), "--max-iters", "6",
                 "--gradient-accumulation-steps", "2", *schedule]) == 0
    assert_same_run(tmp_path / "r", tmp_path / "straight")


OTHER_INIT_ON_RANK_1 = """
import sys
import numpy as np
from fastattn.cli import main
from fastattn.training import distributed, trainer

if distributed.get_world().rank == 1:  # rank 1 builds other weights: the broadcast must replace them
    class Other(trainer.GPT):
        def __init__(self, config, seed=0, dtype=np.float32):
            super().__init__(config, seed=seed + 99, dtype=dtype)
    trainer.GPT = Other
sys.exit(main(sys.argv[1:]))
"""


def test_rank_0s_weights_are_broadcast(corpus_file, tmp_path):
    script = tmp_path / "other_init.py"
    script.write_text(textwrap.dedent(OTHER_INIT_ON_RANK_1))
    args = ["train", "--data", corpus_file, "--out", tmp_path / "mpi", "--max-iters", 2, *TINY]
    code, _, err = launch(2, [sys.executable, str(script), *map(str, args)], tmp_path)
    assert code == 0, err
    assert main(["train", "--data", str(corpus_file), "--out", str(tmp_path / "one"), "--max-iters", "2",
                 "--gradient-accumulation-steps", "2", *TINY]) == 0
    assert_same_run(tmp_path / "mpi", tmp_path / "one")


FAILING_RANK = """
import sys
import fastattn
from fastattn.training import distributed, trainer

if distributed.get_world().rank == 1:  # rank 1 raises at its third step; rank 0 waits in the Allreduce
    real, calls = trainer.train_step, []
    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("rank 1 fails on purpose")
        return real(*args, **kwargs)
    trainer.train_step = failing
fastattn.train(sys.argv[1], sys.argv[2], progress=False, max_iters=1000, eval_interval=1000, eval_iters=1,
               n_layer=1, n_head=2, n_embd=16, block_size=16, batch_size=4)
"""


def test_a_failing_rank_ends_the_whole_job(corpus_file, tmp_path):
    script = tmp_path / "failing_rank.py"
    script.write_text(textwrap.dedent(FAILING_RANK))
    start = time.perf_counter()
    code, out, err = launch(2, [sys.executable, str(script), str(corpus_file), str(tmp_path / "o")], tmp_path,
                            timeout=60)
    assert code != 0
    assert "fastattn train: error on rank 1 of 2: RuntimeError: rank 1 fails on purpose" in err
    assert time.perf_counter() - start < 30  # ended, not waiting for the dead rank (1000 steps is far longer)


def test_a_bad_command_line_under_mpi_is_one_error(corpus_file, tmp_path):
    code, _, err = launch(2, fastattn_train("--data", tmp_path / "missing.txt", "--out", tmp_path / "o", *TINY),
                          tmp_path)
    assert code != 0 and "cannot read" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_without_a_launcher_mpi4py_is_never_imported(corpus_file, tmp_path):
    code = ("import sys, fastattn\n"
            f"fastattn.train({str(corpus_file)!r}, {str(tmp_path / 'o')!r}, progress=False, log=lambda s: None, "
            "max_iters=1, n_layer=1, n_head=1, n_embd=8, block_size=8, batch_size=2, eval_iters=1)\n"
            "assert 'mpi4py' not in sys.modules, 'mpi4py was imported'\n"
            "print('ok')\n")
    env = {k: v for k, v in os.environ.items() if k not in distributed.LAUNCHER_VARS}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=120)
    assert done.returncode == 0 and done.stdout == "ok\n", done.stderr


def test_flat_gradients_stay_views_through_a_step(backend):
    """The model adds into .grad, clipping scales it and AdamW reads it: all in place, so the one
    buffer that the Allreduce sums is every parameter's gradient, step after step."""
    model = fastattn.GPT(fastattn.GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8), seed=0)
    grads = distributed.FlatGradients(model.parameters())
    optimizer = model.configure_optimizers(0.1, 1e-2, (0.9, 0.99))
    rng = np.random.default_rng(0)
    x = rng.integers(0, 11, (3, 8))
    for _ in range(2):
        train_step(model, optimizer, [(x, (x + 1) % 11)], 1e-2, 0.5, distributed.SingleProcess(), grads)
        assert grads.owns(model.parameters()) and grads.owns(optimizer.params)
    assert np.any(grads.buffer[:-1] != 0)
    model.zero_grad()
    assert grads.owns(model.parameters()) and not np.any(grads.buffer[:-1])
    train_step(model, optimizer, [(x, (x + 1) % 11)], 1e-2, 0.5, distributed.SingleProcess(), grads)
    sizes = sum(p.data.size for p in model.parameters())
    assert grads.buffer.shape == (sizes + 1,) and grads.buffer.dtype == np.float32
    np.testing.assert_array_equal(grads.buffer[:model.transformer.wte.weight.data.size], model.transformer.wte.weight.grad.reshape(-1))


def test_cores_per_rank(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    assert distributed.cores_per_rank(2) == 4 and distributed.cores_per_rank(3) == 2
    assert distributed.cores_per_rank(16) == 1  # oversubscribed: at least one
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {2, 3}, raising=False)
    assert distributed.cores_per_rank(4) == 2  # the launcher bound this rank to 2 cores: all of them


def test_a_launcher_without_mpi4py_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(distributed, "_world", None)
    monkeypatch.setenv("PMI_SIZE", "2")
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # (import mpi4py fails)
    with pytest.raises(ImportError, match=r"needs mpi4py: pip install 'fastattn\[mpi\]'"):
        distributed.get_world()
    monkeypatch.setenv("PMI_SIZE", "1")  # mpiexec -n 1: runs alone
    assert isinstance(distributed.get_world(), distributed.SingleProcess)


def test_threads_default_to_the_cores_of_each_rank(tmp_path):
    code = ("import fastattn\nfrom fastattn.training.distributed import get_world\n"
            "import os\nw = get_world()\n"
            # one write of one line per rank: print() under PYTHONUNBUFFERED writes its items one
            # by one, and the two ranks' pieces then interleave on the shared pipe
            "os.write(1, f'{w.rank} {w.size} {w.local_size} {fastattn.get_num_threads()}\\n'.encode())\n")
    env_threads = os.environ.pop("OMP_NUM_THREADS", None)
    try:
        status, out, err = launch(2, [sys.executable, "-c", code], tmp_path)
    finally:
        if env_threads is not None:
            os.environ["OMP_NUM_THREADS"] = env_threads
    assert status == 0, err
    want = distributed.cores_per_rank(2)  # (the ranks run where this test runs, unbound)
    assert sorted(out.splitlines()) == [f"0 2 2 {want}", f"1 2 2 {want}"]
