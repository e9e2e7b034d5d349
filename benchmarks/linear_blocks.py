"""Measure the block shapes of the compiled linear: python benchmarks/linear_blocks.py [--threads N]

F.linear (and, with --backward, F.linear_backward) on the products of linear_sweep.SHAPES with
M > 1, each cut into blocks of at most BLOCK_ROWS x BLOCK_COLS outputs for every pair of the
candidates below (fastattn._compiled.linear._set_block_shape; 1536 x 4096 is one call for every
product but GPT-2's widest), median microseconds. The block shapes take turns within each round,
so that the machine's drift falls on all of them alike. One row per block shape, one column per
product, '*' marking the fastest of each product, and the total over the products, also as a
ratio to the current default's. Run it on a quiet machine.
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
COLS = (64, 128, 256, 512, 4096)


def interleaved_us(fn, shapes, set_shape, rounds=11):
    """{block shape: median microseconds of fn()}, the shapes taking turns in every round."""
    times = {shape: [] for shape in shapes}
    for _ in range(rounds):
        for shape in shapes:
            set_shape(*shape)
            fn()  # (the first call after a change of shape: not timed)
            t = time.perf_counter()
            fn()
            times[shape].append(time.perf_counter() - t)
    return {shape: statistics.median(t) * 1e6 for shape, t in times.items()}


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
    shapes = sorted({(rows, cols) for rows in ROWS for cols in COLS} | {default})
    per_case = [interleaved_us(fn, shapes, linear._set_block_shape) for _, fn in cases]
    linear._set_block_shape(*default)
    results = {shape: [times[shape] for times in per_case] for shape in shapes}
    best = [min(r[i] for r in results.values()) for i in range(len(cases))]
    for shape, times in results.items():
        cells = " ".join(f"{t:14.0f}{'*' if t == b else ' '}" for t, b in zip(times, best))
        print(f"{shape[0]:>4d} x {shape[1]:<4d} {cells} {sum(times):9.0f} "
              f"({sum(times) / sum(results[default]):.3f})")
    print(f"total of the per-product best: {sum(best):.0f}; default {default}: {sum(results[default]):.0f}")


if __name__ == "__main__":
    main()
