"""Sentence embeddings over a Dask cluster (fastattn.embed(..., client=), SentenceEncoder.encode(...,
client=), `fastattn embed --scheduler/--out-dir`) against the local run, on one LocalCluster of 2
worker processes on 127.0.0.1 for the whole module; a worker killed mid-job; and, without a client,
no Dask imported at all. The cluster tests skip without dask.distributed (pip install ".[dask]")."""
import io
import json
import os
import socket
import subprocess
import sys
import time
import types

import numpy as np
import pytest

import fastattn
from fastattn import SentenceEncoder, embed
from fastattn.cli import main
from test_encoder import CONFIG, WORDS, random_weights, write_bert_dir, write_wordpiece


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A small random BERT with a WordPiece tokenizer; texts are cut to 12 tokens."""
    cfg = {**CONFIG, "vocab_size": 4 + len(WORDS)}
    path = write_bert_dir(tmp_path_factory.mktemp("dask") / "m", random_weights(cfg, seed=1), cfg)
    write_wordpiece(path, WORDS)
    (path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 12}))
    return str(path)


def texts(n, seed=0):
    """n texts of 0 to 14 random words (so 2 to 12 tokens once cut: batches of mixed lengths)."""
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, rng.integers(0, 15))) for _ in range(n)]


@pytest.fixture(scope="module")
def cluster():
    """(LocalCluster, Client): 2 worker processes of 1 thread each, everything on 127.0.0.1."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, host="127.0.0.1",
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        yield cluster, client


@pytest.fixture
def client(cluster):
    cluster[1].wait_for_workers(2, timeout=60)  # (a test may have killed one: its nanny restarts it)
    return cluster[1]


def test_without_a_client_dask_is_never_imported(model_dir, tmp_path):
    code = ("import sys, fastattn\n"
            f"v = fastattn.embed(['the king', 'so'], {model_dir!r})\n"
            f"w = fastattn.SentenceEncoder({model_dir!r}).encode(['the king'])\n"
            "assert v.shape == (2, 16) and w.shape == (1, 16)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')\n"
            "             or m == 'fastattn.inference.dask_embeddings'))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("n, batch_size", [(37, 4), (0, 4), (1, 4), (5, 32)])
def test_cluster_embedding_equals_the_local_one(backend, model_dir, client, n, batch_size):
    """Bitwise: the same batches through the same kernels (the driver's backend), the workers on 1
    thread and this process on its own count (the kernels' results do not depend on it)."""
    data = texts(n)
    local = embed(data, model_dir, batch_size=batch_size)
    got = embed(data, model_dir, batch_size=batch_size, client=client)
    assert got.shape == (n, 16) and got.dtype == np.float32
    np.testing.assert_array_equal(got, local)
    model = SentenceEncoder(model_dir)
    raw = model.encode(data, batch_size=batch_size, client=client)  # not normalised
    np.testing.assert_array_equal(raw, model.encode(data, batch_size=batch_size))
    if n:
        assert not np.allclose(np.linalg.norm(raw, axis=1), 1)
    one = model.encode("the fair queen", client=client)
    np.testing.assert_array_equal(one, model.encode("the fair queen"))


def test_all_minilm_on_the_cluster_equals_two_threads_here(client):
    """all-MiniLM-L6-v2 (when its package is installed): the workers on 1 thread, this process on
    2 threads exactly, on products big enough to be split over them: still bit for bit."""
    from test_encoder import SENTENCES, minilm_dir
    path = minilm_dir()
    from fastattn import _threads
    threads, adaptive = fastattn.get_num_threads(), _threads.ADAPTIVE
    fastattn.set_num_threads(2, adaptive=False)
    try:
        local = embed(SENTENCES[:20], path, batch_size=8)
    finally:
        fastattn.set_num_threads(threads, adaptive=adaptive)
    assert client.run(fastattn.get_num_threads) == {w: 1 for w in client.scheduler_info()["workers"]}
    np.testing.assert_array_equal(embed(SENTENCES[:20], path, batch_size=8, client=client), local)


def test_a_relative_model_dir_is_ours(model_dir, client, monkeypatch):
    """The workers get the absolute path: their working directory is not this process's."""
    monkeypatch.chdir(os.path.dirname(model_dir))
    data = texts(7)
    np.testing.assert_array_equal(embed(data, os.path.basename(model_dir), client=client), embed(data, model_dir))


def test_each_worker_loads_the_model_once(model_dir, client):
    from fastattn.inference import dask_embeddings
    embed(texts(9), model_dir, batch_size=2, client=client)
    first = client.run(lambda: {k: id(v[1]) for k, v in dask_embeddings._LOADED.items()})
    embed(texts(9, seed=1), model_dir, batch_size=2, client=client)
    assert client.run(lambda: {k: id(v[1]) for k, v in dask_embeddings._LOADED.items()}) == first
    assert all(model_dir in models for models in first.values())


def test_a_changed_model_is_loaded_again(tmp_path, client):
    cfg = {**CONFIG, "vocab_size": 4 + len(WORDS)}
    path = write_bert_dir(tmp_path / "m", random_weights(cfg, seed=2), cfg)
    write_wordpiece(path, WORDS)
    data = texts(6)
    first = embed(data, str(path), client=client)
    np.testing.assert_array_equal(first, embed(data, str(path)))
    write_bert_dir(path, random_weights(cfg, seed=3), cfg)  # other weights, at the same path
    weights = path / "model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))  # (a later mtime, surely)
    second = embed(data, str(path), client=client)
    np.testing.assert_array_equal(second, embed(data, str(path)))
    assert not np.allclose(first, second)


def test_encode_batches_yields_every_row_once(model_dir, client):
    data = texts(23)
    model = SentenceEncoder(model_dir)
    want = model.encode(data, batch_size=3, normalize_embeddings=True)
    for where in (None, client):
        seen = []
        for rows, vectors in model.encode_batches(data, 3, normalize_embeddings=True, client=where):
            assert vectors.shape == (len(rows), 16) and vectors.dtype == np.float32
            np.testing.assert_array_equal(vectors, want[rows])
            seen.extend(rows.tolist())
        assert sorted(seen) == list(range(23))


def test_a_worker_killed_mid_job_loses_nothing(model_dir, client, tmp_path):
    from distributed.diagnostics.plugin import WorkerPlugin

    class KillAtBatch(WorkerPlugin):
        """The worker that starts batch number `batch` of a job dies there (os._exit), once in
        all (the first to create `flag`); its nanny then starts a new worker process."""
        def __init__(self, batch, flag):
            self.batch, self.flag = batch, flag

        def transition(self, key, start, finish, **kwargs):
            if finish == "executing" and str(key).startswith("fastattn-embed-") and str(key).endswith(f"-{self.batch}"):
                try:
                    os.close(os.open(self.flag, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                except FileExistsError:
                    return
                os._exit(1)

    data = texts(41, seed=2)
    model = SentenceEncoder(model_dir)
    want = model.encode(data, batch_size=4, normalize_embeddings=True)
    before = set(client.run(os.getpid).values())
    flag = str(tmp_path / "killed")
    client.register_plugin(KillAtBatch(5, flag), name="kill-at-batch")  # batch 5 of 11: mid-job
    try:
        seen, got = [], np.full_like(want, np.nan)
        for rows, vectors in model.encode_batches(data, 4, normalize_embeddings=True, client=client):
            seen.extend(rows.tolist())
            got[rows] = vectors
    finally:
        client.unregister_worker_plugin("kill-at-batch")
    assert os.path.exists(flag)  # a worker did die, at batch 5
    assert sorted(seen) == list(range(41))  # every row, once
    np.testing.assert_array_equal(got, want)
    client.wait_for_workers(2, timeout=60)
    assert set(client.run(os.getpid).values()) != before  # the nanny started a new process


def test_a_client_that_is_not_one(model_dir, cluster):
    with pytest.raises(TypeError, match="client must be a dask.distributed.Client .or None., got str"):
        embed(["the king"], model_dir, client=cluster[0].scheduler_address)


def test_stopping_early_cancels_the_rest(model_dir, client):
    batches = SentenceEncoder(model_dir).encode_batches(texts(30), 2, client=client)
    next(batches)
    batches.close()
    deadline = time.monotonic() + 10  # the cancelled tasks leave the scheduler
    while client.run_on_scheduler(lambda dask_scheduler: sum(
            str(k).startswith("fastattn-embed-") for k in dask_scheduler.tasks)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.run_on_scheduler(lambda dask_scheduler: [
        k for k in dask_scheduler.tasks if str(k).startswith("fastattn-embed-")]) == []


def test_a_batch_that_fails_raises_here(tmp_path, model_dir, client):
    """The driver reads config.json and the tokenizer; a worker that cannot load the weights raises
    its error (after the retries) here."""
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "tokenizer.json", "sentence_bert_config.json"):
        (broken / name).write_bytes(open(os.path.join(model_dir, name), "rb").read())
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        embed(["the king"], str(broken), client=client)


def _lines(n):
    """n input lines, one blank (embedded as the empty text), and the texts that they are."""
    data = texts(n, seed=3)
    data[4] = ""
    return data, "".join(t + "\n" for t in data)


def _read_shards(out):
    """The (rows, 16) array that an --out-dir holds, checking that its index covers every line once."""
    index = json.loads((out / "index.json").read_text())
    lines = [line for shard in index["shards"] for line in shard["lines"]]
    assert sorted(lines) == list(range(index["rows"])), "each input line in exactly one shard"
    vectors = np.full((index["rows"], index["dimension"]), np.nan, np.float32)
    for shard in index["shards"]:
        rows = np.load(out / shard["file"])
        assert rows.shape == (len(shard["lines"]), index["dimension"]) and rows.dtype == np.float32
        vectors[shard["lines"]] = rows
    assert sorted(f.name for f in out.iterdir()) == sorted([s["file"] for s in index["shards"]] + ["index.json"])
    return vectors


def test_embed_command_with_a_scheduler_and_out_dir(model_dir, cluster, tmp_path, monkeypatch, capsys):
    address = cluster[0].scheduler_address
    data, stdin = _lines(19)
    want = embed(data, model_dir, batch_size=3)  # (bitwise equal for the same batches)
    for scheduler in (["--scheduler", address], []):  # on the cluster, and --out-dir alone (here)
        out = tmp_path / f"shards{len(scheduler)}"
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        assert main(["embed", "--model", model_dir, "--out-dir", str(out), "--batch-size", "3", *scheduler]) == 0
        assert f"wrote 19 vectors in 7 shards to {out}" in capsys.readouterr().out
        np.testing.assert_array_equal(_read_shards(out), want)
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))  # one .npy, as without a scheduler
    assert main(["embed", "--model", model_dir, "--out", str(tmp_path / "v.npy"), "--scheduler", address]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "v.npy"), embed(data, model_dir))
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    assert main(["embed", "--model", model_dir, "--out-dir", str(out)]) == 1  # not empty
    assert "is not empty" in capsys.readouterr().err
    assert main(["embed", "--model", model_dir, "--out-dir", str(out), "--out", "x.npy"]) == 1
    assert "not both" in capsys.readouterr().err


def test_embed_command_when_the_dask_job_fails(model_dir, cluster, tmp_path, monkeypatch, capsys):
    from distributed import KilledWorker

    def killed(*args, **kwargs):  # what the scheduler says of a batch whose workers all died
        raise KilledWorker("fastattn-embed-x-0", types.SimpleNamespace(address="tcp://127.0.0.1:1"), 3)
    monkeypatch.setattr(SentenceEncoder, "encode_batches", killed)
    monkeypatch.setattr("sys.stdin", io.StringIO("the king\n"))
    assert main(["embed", "--model", model_dir, "--out-dir", str(tmp_path / "v"),
                 "--scheduler", cluster[0].scheduler_address]) == 1
    err = capsys.readouterr().err
    assert err.startswith("fastattn embed: error: the Dask job failed: KilledWorker: ") and len(err.splitlines()) == 1
    assert os.listdir(tmp_path / "v") == []  # no index.json: nothing claims to be complete


def test_embed_command_without_dask(model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if not installed: import fails
    monkeypatch.setattr("sys.stdin", io.StringIO("the king\n"))
    assert main(["embed", "--model", model_dir, "--out", str(tmp_path / "v.npy"), "--scheduler", "tcp://x:1"]) == 1
    assert capsys.readouterr().err == 'fastattn embed: error: --scheduler needs Dask: pip install "fastattn[dask]"\n'


def test_embed_command_with_a_bad_scheduler_address(model_dir, tmp_path, monkeypatch, capsys):
    pytest.importorskip("distributed")
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for address, timeout in ((f"tcp://127.0.0.1:{port}", "1"), ("nonsense://x", "10")):
        monkeypatch.setattr("sys.stdin", io.StringIO("the king\n"))
        start = time.perf_counter()
        code = main(["embed", "--model", model_dir, "--out", str(tmp_path / "v.npy"),
                     "--scheduler", address, "--scheduler-timeout", timeout])
        assert code == 1 and time.perf_counter() - start < 8
        err = capsys.readouterr().err
        assert err.startswith(f"fastattn embed: error: cannot reach the Dask scheduler at {address}")
        assert len(err.splitlines()) == 1
        assert not (tmp_path / "v.npy").exists()
    monkeypatch.setattr("sys.stdin", io.StringIO("the king\n"))
    assert main(["embed", "--model", model_dir, "--scheduler", "tcp://127.0.0.1:1", "--scheduler-timeout", "0",
                 "--out", str(tmp_path / "v.npy")]) == 1
    assert "--scheduler-timeout must be > 0 seconds, got 0" in capsys.readouterr().err
