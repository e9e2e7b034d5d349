"""Processes killed (SIGKILL) in the middle of their work, as a crash or the OOM killer does:
`prepare` re-preparing a directory in place leaves the old dataset or a refused one, never a mix;
a Dask job whose every worker dies ends with a one-line error instead of waiting forever. (The
checkpoint ones are in test_untrusted_files.py: a killed run's temporaries are removed.)"""
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap

import numpy as np
import pytest

import fastattn
from fastattn.io.token_files import read_token_dir

OLD, NEW = "abcd\n" * 200, "wxyz\n" * 200  # the same sizes and vocabulary size, other characters


def _child(**kwargs):
    """subprocess keywords for a child that imports this process's fastattn: run from the clone's
    root, `python -c` / `-m` would put the source tree (no compiled extension) first."""
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(fastattn.__file__))}
    return {"cwd": tempfile.gettempdir(), **kwargs, "env": {**env, **kwargs.get("env", {})}}


def _prepare_killed_at(data, out, k):
    """Runs prepare(data, out) in a child that SIGKILLs itself at its k-th os.replace call
    (k beyond the last: not killed); returns the child's exit status."""
    code = textwrap.dedent(f"""
        import os, signal
        from fastattn.training.datasets import prepare
        real, calls = os.replace, [0]
        def replace(src, dst):
            if calls[0] == {k}:
                os.kill(os.getpid(), signal.SIGKILL)
            calls[0] += 1
            real(src, dst)
        os.replace = replace
        prepare({str(data)!r}, {str(out)!r})
    """)
    return subprocess.run([sys.executable, "-c", code], **_child(capture_output=True, timeout=120)).returncode


def _text(splits, tok):
    return tok.decode(np.concatenate([splits["train"][:], splits["val"][:]]))


@pytest.mark.parametrize("k", range(4))
def test_prepare_killed_in_place_leaves_the_old_dataset_or_a_refused_one(tmp_path, k):
    (tmp_path / "old.txt").write_text(OLD)
    (tmp_path / "new.txt").write_text(NEW)
    out = tmp_path / "data"
    assert _prepare_killed_at(tmp_path / "old.txt", out, 99) == 0
    status = _prepare_killed_at(tmp_path / "new.txt", out, k)
    try:
        splits, tok = read_token_dir(str(out))
    except (ValueError, FileNotFoundError) as e:
        assert status == -signal.SIGKILL
        assert "did not finish" in str(e) or "truncated" in str(e), e
    else:
        assert _text(splits, tok) in (OLD, NEW)  # whole, never old ids read as new characters or back
        assert _text(splits, tok) == NEW or status == -signal.SIGKILL
    assert _prepare_killed_at(tmp_path / "new.txt", out, 99) == 0  # the next run repairs it
    splits, tok = read_token_dir(str(out))
    assert _text(splits, tok) == NEW
    assert sorted(os.listdir(out)) == ["meta.json", "train.bin", "val.bin"]  # no temporaries left


def test_the_last_kill_point_is_before_meta_json(tmp_path):
    """(So the cases above include the one of the issue: killed just before meta.json is written.)"""
    (tmp_path / "old.txt").write_text(OLD)
    out = tmp_path / "data"
    assert _prepare_killed_at(tmp_path / "old.txt", out, 99) == 0
    assert _prepare_killed_at(tmp_path / "old.txt", out, 3) == 0  # 3 renames: train.bin, val.bin, meta.json
    assert _prepare_killed_at(tmp_path / "old.txt", out, 2) == -signal.SIGKILL


# ---- Dask: every worker killed (nanny included), the scheduler killed ----

def _bert_dir(path):
    from test_encoder import CONFIG, WORDS, random_weights, write_bert_dir, write_wordpiece
    cfg = {**CONFIG, "vocab_size": 4 + len(WORDS)}
    path = write_bert_dir(path, random_weights(cfg, seed=1), cfg)
    write_wordpiece(path, WORDS)
    return str(path)


@pytest.fixture
def standalone_cluster(tmp_path):
    """(address, scheduler process, worker process group leader): a `dask scheduler` and a `dask
    worker` (a nanny and its worker process, in a session of their own) on 127.0.0.1, each
    ending by itself (an idle or dead-scheduler timeout) and killed at the end of the test."""
    distributed = pytest.importorskip("distributed")
    info = tmp_path / "scheduler.json"
    scheduler = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                                  "--port", "0", "--no-dashboard", "--scheduler-file", str(info),
                                  "--idle-timeout", "300"], **_child(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    worker = None
    try:
        deadline = __import__("time").monotonic() + 60
        while not info.exists() and __import__("time").monotonic() < deadline:
            __import__("time").sleep(0.1)
        worker = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", "--scheduler-file", str(info),
                                   "--host", "127.0.0.1", "--nworkers", "1", "--nthreads", "1", "--no-dashboard",
                                   "--death-timeout", "20"], **_child(stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, start_new_session=True))
        import json
        address = json.loads(info.read_text())["address"]
        with distributed.Client(address, timeout=60) as client:
            client.wait_for_workers(1, timeout=60)
        yield address, scheduler, worker
    finally:
        for proc, group in ((worker, True), (scheduler, False)):
            if proc is not None and proc.poll() is None:
                (os.killpg if group else os.kill)(proc.pid, signal.SIGKILL)
                proc.wait()


def _register_killer(address, batch, kill):
    """The worker that starts batch number `batch` of a job runs kill() there (pickled by value)."""
    from distributed import Client
    from distributed.diagnostics.plugin import WorkerPlugin

    class KillAt(WorkerPlugin):
        def __init__(self, batch, kill):
            self.batch, self.kill = batch, kill

        def transition(self, key, start, finish, **kwargs):
            if finish == "executing" and str(key).startswith("fastattn-embed-") and str(key).endswith(f"-{self.batch}"):
                self.kill()
    with Client(address, timeout=60) as client:
        client.register_plugin(KillAt(batch, kill), name="kill-at")


def _embed_job(address, model, tmp_path, worker_timeout):
    lines = "".join(f"the king {'and the queen ' * (i % 5)}speaks\n" for i in range(60))
    return subprocess.run([sys.executable, "-m", "fastattn", "embed", "--model", model, "--batch-size", "2",
                           "--out", str(tmp_path / "v.npy"), "--scheduler", address,
                           "--worker-timeout", str(worker_timeout)],
                          **_child(input=lines, capture_output=True, text=True, timeout=240))


def test_a_dask_job_whose_every_worker_is_killed_fails(standalone_cluster, tmp_path):
    address, _, worker = standalone_cluster
    model = _bert_dir(tmp_path / "m")

    def kill_every_worker():  # the nanny and its worker: the whole session of `dask worker`
        import os
        import signal
        os.killpg(os.getpgrp(), signal.SIGKILL)
    _register_killer(address, 5, kill_every_worker)
    done = _embed_job(address, model, tmp_path, worker_timeout=3)
    assert worker.wait(timeout=30) == -signal.SIGKILL  # (they did die)
    assert done.returncode == 1, done.stderr
    err = done.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fastattn embed: error: the Dask cluster at ") \
        and "has had no worker for 3 s" in err[0], done.stderr
    assert not (tmp_path / "v.npy").exists()


def test_a_dask_job_whose_scheduler_is_killed_fails_in_one_line(standalone_cluster, tmp_path):
    address, scheduler, _ = standalone_cluster
    model = _bert_dir(tmp_path / "m")
    pid = scheduler.pid

    def kill_the_scheduler():
        import os
        import signal
        os.kill(pid, signal.SIGKILL)
    _register_killer(address, 5, kill_the_scheduler)
    done = _embed_job(address, model, tmp_path, worker_timeout=60)
    assert scheduler.wait(timeout=30) == -signal.SIGKILL
    assert done.returncode == 1, done.stderr
    err = done.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fastattn embed: error: lost the connection to the Dask "
                                               f"scheduler at {address}"), done.stderr
    assert not (tmp_path / "v.npy").exists()


# ---- MPI: rank 0 killed under mpiexec.gforker, which may end with status 0 ----

KILL_RANK_0 = """
    # sitecustomize of a rank: rank 0 SIGKILLs itself at training step 3, as the OOM killer would
    import os, signal
    if os.environ.get("PMI_RANK") == "0":
        from fastattn.training import trainer
        real, steps = trainer.train_step, [0]
        def train_step(*args, **kwargs):
            steps[0] += 1
            if steps[0] == 3:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(*args, **kwargs)
        trainer.train_step = train_step
"""


def _fastattn_launch(tmp_path, corpus, kill, *extra):
    from test_distributed import LOCAL_ONLY, TINY, _mpiexec, mpi_init_failed
    gforker = os.path.join(os.path.dirname(_mpiexec()), "mpiexec.gforker")
    if not os.path.exists(gforker):
        pytest.skip("needs MPICH's mpiexec.gforker")
    env = {k: v for k, v in os.environ.items() if k not in ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE")}
    env.update(LOCAL_ONLY)
    if kill:
        (tmp_path / "site").mkdir()
        (tmp_path / "site" / "sitecustomize.py").write_text(textwrap.dedent(KILL_RANK_0))
        env["PYTHONPATH"] = os.pathsep.join([str(tmp_path / "site"), env.get("PYTHONPATH", "")])
    argv = [sys.executable, "-m", "fastattn", "launch", "-n", "2", "--mpiexec", gforker, "train", "--data",
            str(corpus), "--out", str(tmp_path / "o"), "--max-iters", "6", *TINY, *extra]
    for attempt in range(2):
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=180, cwd=tmp_path)
        if not mpi_init_failed(done.stderr):
            return done
        shutil.rmtree(tmp_path / "o", ignore_errors=True)
    return done


def test_fastattn_launch_fails_when_gforker_hides_a_killed_rank_0(corpus_file, tmp_path):
    done = _fastattn_launch(tmp_path, corpus_file, kill=True)
    assert "signaled with Killed" in done.stderr and "usage:" not in done.stderr, done.stderr  # (killed, by gforker)
    assert done.returncode != 0, done.stdout + done.stderr
    assert "final:" not in done.stdout
    if done.returncode == 1:  # gforker said 0: the markers tell
        assert re.search(r"fastattn launch: error: ranks? (0|0, 1) of 2 did not finish `fastattn train` \(killed\?\), "
                         "though mpiexec.gforker ended with status 0", done.stderr), done.stderr


def test_fastattn_launch_passes_a_finished_job(corpus_file, tmp_path):
    done = _fastattn_launch(tmp_path, corpus_file, kill=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1].startswith("final: step 6 ")
    assert "did not finish" not in done.stderr
