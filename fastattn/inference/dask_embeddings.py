"""Sentence embeddings over a Dask cluster: SentenceEncoder.encode(texts, client=client) and
fastattn.embed(..., client=client) send their length-sorted batches to the workers of a
dask.distributed.Client, one task per batch (pip install "fastattn[dask]").

    from dask.distributed import Client
    vectors = fastattn.embed(texts, model_dir, client=Client("tcp://scheduler:8786"))

This process tokenizes (it must, to sort the texts by token count into the batches that a local
run makes) and ships each batch as its padded token ids, uint16 for a vocabulary of up to 65,536
ids (BERT's 30,522), with the lengths, rather than its texts: the worker need not tokenize again,
and the ids are smaller (1000 two-line texts of Tiny Shakespeare, 18,903 tokens with
all-MiniLM-L6-v2's tokenizer: 39 kB of ids against 64 kB of UTF-8; 54 against 67 kB pickled in
batches of 32). Either is small beside the vectors that come back (1.5 MB there). Each worker process loads the model from
model_dir the first time a batch of it comes (so that path must hold the model on every worker)
and keeps it for the next batches and jobs (_LOADED). A batch's vectors are computed by the same
SentenceEncoder._forward as a local run, on the backend that is active here.

A job never waits forever: when the cluster has had no worker for worker_timeout seconds (every
worker killed, nanny included) or the connection to the scheduler is lost, the iteration raises
an OSError that says which (the batches not yet done are lost with the cluster).

A worker that dies mid-job loses nothing: the scheduler reruns its unfinished batches, and those
finished whose results it held, on the other workers (up to distributed.scheduler.allowed-failures
times a batch); a batch that raises is retried (RETRIES). Each batch's vectors come back exactly
once, as their future completes (distributed.as_completed).

This module imports Dask, so it is imported only when a client is given. It does not import
embeddings.py (which imports it): the SentenceEncoder class comes as an argument.
"""
import os
import threading
import time
import uuid

from distributed import Client, as_completed

from fastattn._backend import get_backend, set_backend

RETRIES = 2  # reruns of a batch that raised (a dead worker's batches are rerun by the scheduler)
WORKER_TIMEOUT = 60.0  # seconds a job waits in a cluster without a worker before it fails
_POLL = 0.05  # seconds between looks for completed batches; the cluster is checked every _CHECK
_CHECK = 1.0

_LOADED = {}  # in each worker process: model_dir -> (its model.safetensors' mtime, SentenceEncoder)
_LOCK = threading.Lock()  # a worker with several threads loads a model once


def _loaded(load, model_dir):
    """The SentenceEncoder of model_dir in this (worker) process, loaded once; loaded again if its
    model.safetensors has changed since."""
    weights = os.path.join(model_dir, "model.safetensors")
    if os.path.isfile(os.path.join(model_dir, "quantized.npz")):  # (a `fastattn quantize` output)
        weights = os.path.join(model_dir, "quantized.npz")
    stamp = os.stat(weights).st_mtime_ns
    # (load is SentenceEncoder, or a partial of it with a compute_type: kept apart)
    key = model_dir if isinstance(load, type) else f"{model_dir} compute_type={load.keywords['compute_type']}"
    with _LOCK:
        kept = _LOADED.get(key)
        if kept is None or kept[0] != stamp:
            kept = _LOADED[key] = (stamp, load(model_dir))
        return kept[1]


def _embed_batch(load, model_dir, backend, batch, lengths, normalize):
    """On a worker: batch (B, T) padded token ids, lengths (B,) -> (B, dimension) float32."""
    if get_backend() != backend:  # the driver's: the same kernels as a local run
        set_backend(backend)
    return _loaded(load, model_dir)._forward(batch, lengths, normalize)


def embedded_batches(client, load, model_dir, batches, normalize, retries=RETRIES, worker_timeout=WORKER_TIMEOUT):
    """Submit each of batches, (rows, batch, lengths) triples of SentenceEncoder.encode_batches, to
    client's workers as a task, and return an iterator of (rows, vectors) as each completes.
    load(model_dir) -> a SentenceEncoder, called once on each worker. The tasks are submitted when
    the iteration starts; stopping early (or an error) cancels those still to come. OSError when
    the cluster has no worker for worker_timeout seconds, or the scheduler is lost."""
    if not isinstance(client, Client):
        raise TypeError(f"client must be a dask.distributed.Client (or None), got {type(client).__name__}")
    if not worker_timeout > 0:
        raise ValueError(f"worker_timeout must be > 0 seconds, got {worker_timeout!r}")
    return _completed(client, load, model_dir, batches, normalize, retries, float(worker_timeout))


def _completed(client, load, model_dir, batches, normalize, retries, worker_timeout):
    job = uuid.uuid4().hex[:12]
    backend = get_backend()
    pending = {}  # key -> (future, rows) of the batches not yet yielded
    try:
        for i, (rows, batch, lengths) in enumerate(batches):
            # the key names the batch's number (in the dashboard; a test kills the worker of one)
            future = client.submit(_embed_batch, load, model_dir, backend, batch, lengths, normalize,
                                   key=f"fastattn-embed-{job}-{i}", retries=retries)
            pending[future.key] = future, rows
        total = len(pending)
        done = as_completed([future for future, _ in pending.values()])
        watch = _Watch(client, worker_timeout)
        while not done.is_empty():
            ready = done.next_batch(block=False)
            if not ready:  # (as_completed alone would wait forever for a cluster that has no worker)
                watch.check(len(pending), total)
                time.sleep(_POLL)
                continue
            for future in ready:
                while True:  # (a result held by a worker that died is computed again: it waits for one)
                    try:
                        vectors = future.result(timeout=_CHECK)
                        break
                    except TimeoutError:
                        watch.check(len(pending), total)
                    except Exception as e:  # CommClosedError, or cancelled "for reason: scheduler-connection-lost"
                        if not watch.is_loss(e):
                            raise
                        raise watch.lost(len(pending), total) from None
                _, rows = pending.pop(future.key)  # the last reference here: the cluster frees the result
                yield rows, vectors
    finally:
        if pending and client.status == "running":  # stopped early or failed: the rest are not wanted
            client.cancel([future for future, _ in pending.values()])


class _Watch:
    """check(): OSError once the scheduler is lost, or the cluster has had no worker for
    worker_timeout seconds; looks at most every _CHECK seconds."""

    def __init__(self, client, worker_timeout):
        self.client, self.timeout = client, worker_timeout
        self.last = self.alone_since = None
        self.address = getattr(client.scheduler, "address", None) or "the scheduler"

    def is_loss(self, error):
        """Whether Dask's error says that the scheduler is gone."""
        return type(error).__module__.startswith("distributed") and (
            isinstance(error, OSError) or self.client.status != "running" or "connection-lost" in str(error))

    def lost(self, left, total):
        return OSError(f"lost the connection to the Dask scheduler at {self.address} ({left} of {total} "
                       "batches not done): was it stopped or killed?")

    def check(self, left, total):
        now = time.monotonic()
        if self.last is not None and now - self.last < _CHECK:
            return
        self.last = now
        if self.client.status != "running":
            raise self.lost(left, total)
        try:
            workers = len(self.client.nthreads())
        except OSError:  # (CommClosedError: the scheduler went away between two looks)
            raise self.lost(left, total) from None
        if workers:
            self.alone_since = None
        elif self.alone_since is None:
            self.alone_since = now
        elif now - self.alone_since >= self.timeout:
            raise OSError(f"the Dask cluster at {self.address} has had no worker for {self.timeout:g} s "
                          f"({left} of {total} batches not done): every worker left or was killed; start "
                          "workers, or allow longer (worker_timeout, --worker-timeout)")
