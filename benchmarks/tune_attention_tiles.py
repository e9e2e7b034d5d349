"""Measure the compiled attention's tile sizes: python benchmarks/tune_attention_tiles.py

Sweeps the query block (rows per task) and key block (keys per BLAS call) on the standard causal
shapes and decode, calling the kernel directly, and prints median ms per combination; '*' marks the
fastest per shape. BLOCK_Q / BLOCK_K in src_cython/attention.pyx come from this table.
"""
import argparse
import time

import numpy as np

import fastattn
from fastattn._compiled import attention

SHAPES = [  # (label, N = B*H, Tq, Tk, D, causal)
    ("(8,8,256,64) causal", 64, 256, 256, 64, True),
    ("(1,12,1024,64) causal", 12, 1024, 1024, 64, True),
    ("(1,1,4096,64) causal", 1, 4096, 4096, 64, True),
    ("(1,12,1024,64) full", 12, 1024, 1024, 64, False),
    ("decode q 1 kv 1024", 64, 1, 1024, 64, True),
]


def median_ms(fn, repeat):
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=fastattn.get_num_threads())
    p.add_argument("--repeat", type=int, default=7)
    args = p.parse_args()
    blocks_q, blocks_k = (32, 64, 128, 256), (128, 256, 512, 1024)
    rng = np.random.default_rng(0)
    print(f"threads {args.threads}; current BLOCK_Q {attention.BLOCK_Q}, BLOCK_K {attention.BLOCK_K}")
    print(f"{'shape':24s}" + "".join(f"{bq:>5d}/{bk:<5d}" for bq in blocks_q for bk in blocks_k))
    for label, N, Tq, Tk, D, causal in SHAPES:
        q = rng.standard_normal((N, Tq, D), dtype=np.float32)
        k, v = (rng.standard_normal((N, Tk, D), dtype=np.float32) for _ in range(2))
        out = np.empty_like(q)
        times = {}
        for bq in blocks_q:
            for bk in blocks_k:
                times[bq, bk] = median_ms(lambda: attention._forward(
                    q, k, v, out, D ** -0.5, causal, None, None, None, 0, 0, min(bq, Tq), bk,
                    args.threads), args.repeat)
        best = min(times, key=times.get)
        print(f"{label:24s}" + "".join(f"{times[c]:>9.2f}{'*' if c == best else ' '} " for c in times))


if __name__ == "__main__":
    main()
