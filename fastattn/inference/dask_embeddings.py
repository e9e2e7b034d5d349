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

A worker that dies mid-job loses nothing: the scheduler reruns its unfinished batches, and those
finished whose results it held, on the other workers (up to distributed.scheduler.allowed-failures
times a batch); a batch that raises is retried (RETRIES). Each batch's vectors come back exactly
once, as their future completes (distributed.as_completed).

This module imports Dask, so it is imported only when a client is given. It does not import
embeddings.py (which imports it): the SentenceEncoder class comes as an argument.
"""
import os
import threading
import uuid

from distributed import Client, as_completed

from fastattn._backend import get_backend, set_backend

RETRIES = 2  # reruns of a batch that raised (a dead worker's batches are rerun by the scheduler)

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


def embedded_batches(client, load, model_dir, batches, normalize, retries=RETRIES):
    """Submit each of batches, (rows, batch, lengths) triples of SentenceEncoder.encode_batches, to
    client's workers as a task, and return an iterator of (rows, vectors) as each completes.
    load(model_dir) -> a SentenceEncoder, called once on each worker. The tasks are submitted when
    the iteration starts; stopping early (or an error) cancels those still to come."""
    if not isinstance(client, Client):
        raise TypeError(f"client must be a dask.distributed.Client (or None), got {type(client).__name__}")
    return _completed(client, load, model_dir, batches, normalize, retries)


def _completed(client, load, model_dir, batches, normalize, retries):
    job = uuid.uuid4().hex[:12]
    backend = get_backend()
    pending = {}  # key -> (future, rows) of the batches not yet yielded
    try:
        for i, (rows, batch, lengths) in enumerate(batches):
            # the key names the batch's number (in the dashboard; a test kills the worker of one)
            future = client.submit(_embed_batch, load, model_dir, backend, batch, lengths, normalize,
                                   key=f"fastattn-embed-{job}-{i}", retries=retries)
            pending[future.key] = future, rows
        for future in as_completed([future for future, _ in pending.values()]):
            vectors = future.result()
            _, rows = pending.pop(future.key)  # the last reference here: the cluster frees the result
            yield rows, vectors
    finally:
        if pending:  # stopped early or failed: the rest are not wanted
            client.cancel([future for future, _ in pending.values()])
