"""Grouped-query and sliding-window attention, timed against what they replace.

    python benchmarks/gqa_window.py gqa      # H = 32 query heads on H_kv = 4 K/V heads (enable_gqa)
    python benchmarks/gqa_window.py repeat   # the same attention on K/V repeated to 32 heads by hand
    python benchmarks/gqa_window.py window   # causal, T = 16384, each query on its last W = 1024 keys
    python benchmarks/gqa_window.py causal   # the same without the window (all T keys)

Each prints its median time over --reps calls (after one warm-up) and the peak traced memory of
one call (tracemalloc: NumPy's allocations), on the compiled backend, float32, --threads threads.
--vs CASE times a second case in the same process, the calls alternating (A B A B ...), and
prints the median of the pairwise ratios B / A: on a busy machine a drift in speed moves both.
    python benchmarks/gqa_window.py window --vs causal --reps 5
    python benchmarks/gqa_window.py gqa --vs repeat --reps 20
"""
import argparse
import time
import tracemalloc

import numpy as np

import fastattn
from fastattn import functional as F


def case(name, rng):
    """(call, what it allocates per call that is not the output) for the named case."""
    if name in ("gqa", "repeat"):
        B, H, H_kv, T, D = 1, 32, 4, 1024, 64
        q = rng.standard_normal((B, H, T, D), dtype=np.float32)
        k, v = (rng.standard_normal((B, H_kv, T, D), dtype=np.float32) for _ in range(2))
        out = np.empty_like(q)
        if name == "gqa":
            return lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True, out=out)
        # (the repeat is part of the call: it is what enable_gqa saves)
        return lambda: F.scaled_dot_product_attention(q, np.repeat(k, H // H_kv, axis=1),
                                                      np.repeat(v, H // H_kv, axis=1), is_causal=True, out=out)
    B, H, T, D, W = 1, 2, 16384, 64, 1024
    q, k, v = (rng.standard_normal((B, H, T, D), dtype=np.float32) for _ in range(3))
    out = np.empty_like(q)
    window = W if name == "window" else None
    return lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, window=window, out=out)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("case", choices=["gqa", "repeat", "window", "causal"])
    p.add_argument("--vs", choices=["gqa", "repeat", "window", "causal"])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    fastattn.set_backend("compiled")
    fastattn.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    names = [args.case] + ([args.vs] if args.vs else [])
    calls = {name: case(name, rng) for name in names}
    times = {name: [] for name in names}
    for name, call in calls.items():
        call()  # warm-up
        tracemalloc.start()
        call()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        print(f"{name}: peak traced memory of one call {peak / 2**20:.2f} MiB")
    for _ in range(args.reps):
        for name, call in calls.items():
            t0 = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - t0)
    for name in names:
        print(f"{name}: median {1e3 * np.median(times[name]):.1f} ms over {args.reps} calls, {args.threads} threads")
    if args.vs:
        ratio = np.median(np.array(times[args.vs]) / np.array(times[args.case]))
        print(f"{args.vs} / {args.case}: median pairwise ratio {ratio:.2f}")

if __name__ == "__main__":
    main()
