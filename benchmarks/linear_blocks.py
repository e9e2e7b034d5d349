"""Measure the block shapes of the compiled linear: python benchmarks/linear_blocks.py [--threads N]

F.linear (and, with --backward, F.linear_backward) on the products of linear_sweep.SHAPES with
M > 1, each cut into blocks of at most BLOCK_ROWS x BLOCK_COLS outputs for every pair of the
candidates below (fastattn._compiled.linear._set_block_shape), median microseconds; one row per
block shape, one column per product, '*' marking the fastest of each product, and the last line
the total over the products against the current default's. Run it on a quiet machine.
"""
import argparse
import importlib
import os
import statistics
import sys
import time

import numpy as np

import fastattn
from fastattn import functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from linear_sweep import SHAPES, cpu_model  # noqa: E402

ROWS = (192, 384, 768, 1536)
COLS = (64, 128, 256, 512)


def median_us(fn, repeat=15):
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e6


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--backward", action="store_true")
    args = p.parse_args()
    fastattn.set_num_threads(args.threads, adaptive=False)
    linear = importlib.import_module("fastattn._compiled.linear")
    default = linear._set_block_shape(1, 1)
    linear._set_block_shape(*default)
    rng = np.random.default_rng(0)
    cases = []
    for model, name, M, K, N in SHAPES:
        if M == 1:
            continue
        x = rng.standard_normal((M, K), dtype=np.float32)
        w = rng.standard_normal((N, K), dtype=np.float32)
        dy = rng.standard_normal((M, N), dtype=np.float32)
        fn = (lambda x=x, w=w, dy=dy: F.linear_backward(dy, x, w)) if args.backward else \
             (lambda x=x, w=w: F.linear(x, w))
        cases.append((f"{model[:5]} {name[:8]}", fn))
    print(f"# {cpu_model()}, {args.threads} threads, float32, {'backward' if args.backward else 'forward'}; "
          f"median microseconds; default block {default}")
    print(f"{'block':>10s} " + " ".join(f"{label:>15s}" for label, _ in cases) + f" {'total':>9s}")
    results = {}
    for rows in ROWS:
        for cols in COLS:
            linear._set_block_shape(rows, cols)
            results[rows, cols] = [median_us(fn) for _, fn in cases]
    linear._set_block_shape(*default)
    best = [min(r[i] for r in results.values()) for i in range(len(cases))]
    for shape, times in results.items():
        cells = " ".join(f"{t:14.0f}{'*' if t == b else ' '}" for t, b in zip(times, best))
        print(f"{shape[0]:>4d} x {shape[1]:<4d} {cells} {sum(times):9.0f}")
    print(f"total of the per-product best: {sum(best):.0f}; default {default}: {sum(results[default]):.0f}")


if __name__ == "__main__":
    main()
