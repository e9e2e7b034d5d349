"""Measure the compiled attention's tile sizes: python benchmarks/tune_attention_tiles.py [--threads N]

Sweeps block_q (query rows per task) x block_k (keys per score tile) on the standard causal shapes,
two non-causal ones and decode, calling fastattn._compiled.attention._forward directly, and prints the median ms of
each combination: one row per (block_q, block_k), one column per shape, '*' marking the fastest
of each shape. Blocks larger than the sequence act as the whole sequence (the kernel clamps them),
so such combinations are timed once. The last lines compare the kernel's default choice,
block_q = min(BLOCK_Q, Tq) (BLOCK_Q_FULL when not causal) and block_k = min(max(BLOCK_K, TILE_AREA // block_q), Tk), with the
best: BLOCK_Q / BLOCK_K in src_cython/attention.pyx come from this table. --engines instead
times the default tiles with their products on each GEMM engine (OpenBLAS's sgemm, oneDNN's), the
engines taking turns, and prints the ratio.
Run it on a quiet machine; it takes about a minute on 2 cores (--quick: a few seconds).
"""
import argparse
import time

import numpy as np

import fastattn
from fastattn._compiled import attention

SHAPES = [  # (label, B*H, Tq, Tk, D, causal)
    ("(8,8,256,64)", 64, 256, 256, 64, True),
    ("(1,12,1024,64)", 12, 1024, 1024, 64, True),
    ("(1,1,4096,64)", 1, 4096, 4096, 64, True),
    ("full (1,12,1024,64)", 12, 1024, 1024, 64, False),  # not causal: an encoder's attention
    ("full (1,8,2048,64)", 8, 2048, 2048, 64, False),
    ("(16,4,64,32)", 64, 64, 64, 32, True),
    ("decode kv1024", 64, 1, 1024, 64, True),  # q (8,8,1,64), k/v (8,8,1024,64)
]
BLOCKS_Q = (32, 64, 128, 256)
BLOCKS_K = (128, 256, 512, 1024)


def median_ms(fn, repeat):
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def default_blocks(Tq, Tk, causal=True):
    """The tiles scaled_dot_product_attention picks (see attention.pyx)."""
    bq = min(attention.BLOCK_Q if causal else attention.BLOCK_Q_FULL, Tq)
    return bq, min(max(attention.BLOCK_K, attention.TILE_AREA // bq), Tk)


def sweep(shape, threads, repeat, rng):
    """{(block_q, block_k) as passed to the kernel (clamped to the sizes): median ms}."""
    label, N, Tq, Tk, D, causal = shape
    q = rng.standard_normal((N, Tq, D), dtype=np.float32)
    k, v = (rng.standard_normal((N, Tk, D), dtype=np.float32) for _ in range(2))
    out = np.empty((N, Tq, D), dtype=np.float32)
    nthreads = max(1, min(threads, N * Tq))  # as the kernel does
    combos = {(min(bq, Tq), min(bk, Tk)) for bq in BLOCKS_Q for bk in BLOCKS_K}
    combos.add(default_blocks(Tq, Tk, causal))
    times = {}
    for bq, bk in sorted(combos):
        times[bq, bk] = median_ms(lambda: attention._forward(
            q, k, v, out, D ** -0.5, causal, None, None, None, 0, 0, bq, bk, nthreads), repeat)
    return times


def compare_engines(shapes, threads, repeat, rng):
    """The default tiles with their products on OpenBLAS and on oneDNN, in turns: one line a shape."""
    from fastattn._compiled import _gemm_engine

    if _gemm_engine.ENGINE != "onednn":
        raise SystemExit(f"--engines needs the oneDNN engine ({_gemm_engine.unavailable_reason() or 'FASTATTN_GEMM'})")
    previous = attention._use_tile_engine("openblas")
    try:
        for label, N, Tq, Tk, D, causal in shapes:
            q = rng.standard_normal((N, Tq, D), dtype=np.float32)
            k, v = (rng.standard_normal((N, Tk, D), dtype=np.float32) for _ in range(2))
            out = np.empty((N, Tq, D), dtype=np.float32)
            bq, bk = default_blocks(Tq, Tk, causal)
            times = {"openblas": [], "onednn": []}
            for _ in range(5):
                for engine in times:
                    attention._use_tile_engine(engine)
                    times[engine].append(median_ms(lambda: attention._forward(
                        q, k, v, out, D ** -0.5, causal, None, None, None, 0, 0, bq, bk,
                        max(1, min(threads, N * Tq))), repeat))
            a, b = (float(np.median(times[e])) for e in ("openblas", "onednn"))
            print(f"  {label:20} openblas {a:8.2f} ms  onednn {b:8.2f} ms  onednn/openblas {b / a:.2f}")
    finally:
        attention._use_tile_engine(previous)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=fastattn.get_num_threads())
    p.add_argument("--repeat", type=int, default=7, help="timed runs per combination (median)")
    p.add_argument("--quick", action="store_true", help="3 runs, without the (1,1,4096,64) shape")
    p.add_argument("--engines", action="store_true", help="the default tiles on OpenBLAS and on oneDNN, in turns")
    args = p.parse_args(argv)
    repeat = 3 if args.quick else args.repeat
    shapes = [s for s in SHAPES if not (args.quick and s[2] >= 4096)]

    rng = np.random.default_rng(0)
    if args.engines:
        print(f"threads {args.threads}; median ms of 5 turns of {repeat} runs, float32, the default tiles")
        compare_engines(shapes, args.threads, repeat, rng)
        return
    print(f"threads {args.threads}; BLOCK_Q {attention.BLOCK_Q} (not causal: {attention.BLOCK_Q_FULL}), BLOCK_K {attention.BLOCK_K}, "
          f"TILE_AREA {attention.TILE_AREA}; median ms of {repeat} runs, float32")
    results = [(s, sweep(s, args.threads, repeat, rng)) for s in shapes]

    print(f"{'block_q x block_k':>18}" + "".join(f"{s[0]:>16}" for s, _ in results))
    for bq in BLOCKS_Q:
        for bk in BLOCKS_K:
            cells = []
            for (_, _, Tq, Tk, _, _), times in results:
                key = (min(bq, Tq), min(bk, Tk))
                star = "*" if times[key] == min(times.values()) else " "
                cells.append(f"{times[key]:>15.2f}{star}")
            print(f"{bq:>9} x {bk:<6}" + "".join(cells))
    print("default vs best:")
    for (label, _, Tq, Tk, _, causal), times in results:
        dq, dk = default_blocks(Tq, Tk, causal)
        bq, bk = min(times, key=times.get)
        print(f"  {label:16} default ({dq}, {dk}) {times[dq, dk]:.2f} ms; best ({bq}, {bk}) "
              f"{times[bq, bk]:.2f} ms; default/best {times[dq, dk] / times[bq, bk]:.2f}")


if __name__ == "__main__":
    main()
