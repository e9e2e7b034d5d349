"""Benchmark table: reference vs compiled vs PyTorch, on the standard shapes, in one run.

    python -m fastattn.bench [--threads N] [--repeat R] [--json FILE] [--quick] [--only TEXT]

Each cell is the median wall time in ms of R runs (after one warm-up run), float32. The ratios
are reference / compiled and torch / compiled: above 1, the compiled kernel is faster. The torch
column is blank when PyTorch is not installed; it runs at the same thread count as fastattn.
"""
import argparse
import datetime
import json
import os
import platform
import time
import tracemalloc

import numpy as np

import fastattn
from fastattn import functional as F

try:
    import torch
except ImportError:  # the torch column stays blank
    torch = None


def _attention(B, H, Tq, D, Tk=None, causal=True, padding=False):
    """Inputs of one attention case, and how fastattn and torch run it."""
    def setup(rng):
        q = rng.standard_normal((B, H, Tq, D), dtype=np.float32)
        k = rng.standard_normal((B, H, Tk or Tq, D), dtype=np.float32)
        v = rng.standard_normal((B, H, Tk or Tq, D), dtype=np.float32)
        mask = None
        if padding:  # each sequence keeps a prefix of random length, from half to all keys
            lengths = rng.integers((Tk or Tq) // 2, (Tk or Tq) + 1, size=B)
            mask = np.arange(Tk or Tq)[None, None, None, :] < lengths[:, None, None, None]
        ours = lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)  # noqa: E731
        if torch is None:
            return ours, None
        tq, tk, tv = (torch.from_numpy(a) for a in (q, k, v))
        tmask = None if mask is None else torch.from_numpy(mask)
        # torch aligns is_causal top-left: with Tq < Tk its queries would see only the first keys.
        # Ours are the last Tq positions (bottom-right); for decode (Tq = 1) that is every key,
        # which torch computes with is_causal=False.
        torch_causal = causal and (Tk is None or Tk == Tq)
        return ours, lambda: torch.nn.functional.scaled_dot_product_attention(
            tq, tk, tv, attn_mask=tmask, is_causal=torch_causal)
    return setup


def _masked_softmax(shape):
    def setup(rng):
        x = rng.standard_normal(shape, dtype=np.float32)
        mask = np.tril(np.ones(shape[-2:], dtype=bool))  # causal, broadcast over the batch
        ours = lambda: F.masked_softmax(x, mask)  # noqa: E731
        if torch is None:
            return ours, None
        tx, tmask = torch.from_numpy(x), torch.from_numpy(~mask)
        return ours, lambda: torch.softmax(tx.masked_fill(tmask, float("-inf")), dim=-1)
    return setup


def _layer_norm(shape):
    def setup(rng):
        x = rng.standard_normal(shape, dtype=np.float32)
        w, b = (rng.standard_normal(shape[-1], dtype=np.float32) for _ in range(2))
        ours = lambda: F.layer_norm(x, w, b)  # noqa: E731
        if torch is None:
            return ours, None
        tx, tw, tb = (torch.from_numpy(a) for a in (x, w, b))
        return ours, lambda: torch.nn.functional.layer_norm(tx, (shape[-1],), tw, tb)
    return setup


def _gelu(shape, approximate):
    def setup(rng):
        x = rng.standard_normal(shape, dtype=np.float32)
        ours = lambda: F.gelu(x, approximate)  # noqa: E731
        if torch is None:
            return ours, None
        tx = torch.from_numpy(x)
        return ours, lambda: torch.nn.functional.gelu(tx, approximate=approximate)
    return setup


# (kernel, shape label, setup, run the reference?, in --quick?)
CASES = [
    ("attention causal", "(8,8,256,64)", _attention(8, 8, 256, 64), True, True),
    ("attention causal", "(1,12,1024,64)", _attention(1, 12, 1024, 64), True, False),
    ("attention causal", "(1,1,4096,64)", _attention(1, 1, 4096, 64), True, False),
    ("attention causal", "(16,4,64,32)", _attention(16, 4, 64, 32), True, True),
    ("attention", "(1,12,1024,64)", _attention(1, 12, 1024, 64, causal=False), True, False),
    ("attention", "(1,1,4096,64)", _attention(1, 1, 4096, 64, causal=False), True, False),
    ("attention padding mask", "(8,8,256,64)", _attention(8, 8, 256, 64, causal=False, padding=True),
     True, True),
    ("attention decode", "q (8,8,1,64) kv 1024", _attention(8, 8, 1, 64, Tk=1024), True, True),  # see DECODE_BYTES
    ("attention causal", "(1,1,16384,64)", _attention(1, 1, 16384, 64), False, False),
    ("masked_softmax causal", "(64,1024,1024)", _masked_softmax((64, 1024, 1024)), True, False),
    ("masked_softmax causal", "(8,256,256)", _masked_softmax((8, 256, 256)), True, True),
    ("layer_norm", "(32768,768)", _layer_norm((32768, 768)), True, False),
    ("layer_norm", "(1024,768)", _layer_norm((1024, 768)), True, True),
    ("gelu", "(32768,3072)", _gelu((32768, 3072), "none"), True, False),
    ("gelu tanh", "(32768,3072)", _gelu((32768, 3072), "tanh"), True, False),
    ("gelu", "(1024,3072)", _gelu((1024, 3072), "none"), True, True),
]


DECODE_BYTES = 2 * 8 * 8 * 1024 * 64 * 4  # K and V of the decode case: what it must read at least


def median_ms(fn, repeat, budget_s=20.0):
    """Median of `repeat` timed runs after one warm-up; fewer (>= 3) if they exceed budget_s."""
    fn()
    times = []
    start = time.perf_counter()
    while len(times) < repeat and (len(times) < 3 or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def extra_memory_mb(fn):
    """Peak memory NumPy allocates during fn() (traced by tracemalloc), less the result itself."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        out = fn()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return (peak - out.nbytes) / 2**20


def machine(threads):
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import scipy

    compiled = "compiled" in fastattn.available_backends()
    openmp = compiled and fastattn._backend._compiled.openmp_enabled()
    return {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "threads": threads,
        "openmp": openmp,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "torch": torch.__version__ if torch is not None else None,
        "fastattn": fastattn.__version__,
        "date": datetime.date.today().isoformat(),
    }


def run(threads, repeat, quick=False, only=None):
    """Time every case; returns a list of row dicts."""
    fastattn.set_num_threads(threads)
    if torch is not None:
        torch.set_num_threads(threads)
    rows = []
    for kernel, shape, setup, with_reference, in_quick in CASES:
        name = f"{kernel} {shape}"
        if (quick and not in_quick) or (only and only not in name):
            continue
        ours, theirs = setup(np.random.default_rng(0))
        row = {"kernel": kernel, "shape": shape, "reference_ms": None, "compiled_ms": None,
               "torch_ms": None, "note": ""}
        if with_reference:
            with fastattn.use_backend("reference"):
                row["reference_ms"] = median_ms(ours, min(repeat, 3) if not quick else 3)
        else:
            row["note"] = "reference skipped (its T x T scores would need 1 GiB)"
        if "compiled" in fastattn.available_backends():
            with fastattn.use_backend("compiled"):
                row["compiled_ms"] = median_ms(ours, repeat)
                if kernel == "attention decode":  # memory-bound: K and V are read once
                    gbs = DECODE_BYTES / (row["compiled_ms"] / 1e3) / 1e9
                    row["note"] = f"reads K,V at {gbs:.1f} GB/s"
                if not with_reference:
                    row["note"] += f"; compiled extra memory {extra_memory_mb(ours):.1f} MB"
        if theirs is not None:
            with torch.inference_mode():
                row["torch_ms"] = median_ms(theirs, repeat)
        rows.append(row)
        print(_format_row(_cells(row)), flush=True)
    _causal_notes(rows)
    return rows


def _ratio(a, b):
    return a / b if a is not None and b else None


def _causal_notes(rows):
    """Non-causal rows say how much longer they took than the same causal shape."""
    causal = {r["shape"]: r for r in rows if r["kernel"] == "attention causal"}
    for r in rows:
        c = causal.get(r["shape"])
        if r["kernel"] == "attention" and c is not None:
            parts = [f"{who} causal/full {c[key] / r[key]:.2f}" for who, key in
                     (("compiled", "compiled_ms"), ("torch", "torch_ms")) if c[key] and r[key]]
            r["note"] = ", ".join(parts)


HEADER = ("kernel", "shape", "reference ms", "compiled ms", "torch ms", "ref/comp", "torch/comp", "note")
WIDTHS = (23, 21, 12, 11, 9, 8, 10, 0)


def _cells(r):
    def cell(x, fmt):
        return "" if x is None else format(x, fmt)

    return (r["kernel"], r["shape"], cell(r["reference_ms"], ".2f"), cell(r["compiled_ms"], ".2f"),
            cell(r["torch_ms"], ".2f"), cell(_ratio(r["reference_ms"], r["compiled_ms"]), ".1f"),
            cell(_ratio(r["torch_ms"], r["compiled_ms"]), ".2f"), r["note"])


def _format_row(cells):
    return "  ".join(c.ljust(w) if i < 2 else c.rjust(w) if w else c
                     for i, (c, w) in enumerate(zip(cells, WIDTHS))).rstrip()


def markdown(info, rows):
    """The table as Markdown, as the README shows it."""
    lines = [f"{info['cpu']}, {info['logical_cores']} logical cores, {info['threads']} threads "
             f"(OpenMP {'on' if info['openmp'] else 'off'}), numpy {info['numpy']}, scipy {info['scipy']}, "
             f"torch {info['torch'] or 'not installed'}, {info['date']}. Medians in ms, float32; "
             "ratios above 1: compiled is faster.", "",
             "| " + " | ".join(HEADER) + " |", "|" + "---|" * 2 + "---:|" * 5 + "---|"]
    lines += ["| " + " | ".join(_cells(r)) + " |" for r in rows]
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m fastattn.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=fastattn.get_num_threads(),
                   help="threads for fastattn and torch (default: %(default)s)")
    p.add_argument("--repeat", type=int, default=9, help="timed runs per cell, median reported")
    p.add_argument("--json", metavar="FILE", help="also write the numbers as JSON")
    p.add_argument("--markdown", metavar="FILE", help="also write the table as Markdown")
    p.add_argument("--quick", action="store_true", help="small shapes only, a smoke test")
    p.add_argument("--only", metavar="TEXT", help="only the cases whose name contains TEXT")
    args = p.parse_args(argv)
    if args.threads < 1 or args.repeat < 1:
        p.error("--threads and --repeat must be >= 1")

    info = machine(args.threads)
    print(f"# {info['cpu']} | {info['logical_cores']} logical cores | {args.threads} threads | "
          f"OpenMP {'on' if info['openmp'] else 'off'} | numpy {info['numpy']} | scipy {info['scipy']} | "
          f"torch {info['torch'] or 'not installed'} | {info['date']}")
    print("# medians in ms, float32; ratios above 1: compiled is faster")
    print(_format_row(HEADER))
    rows = run(args.threads, args.repeat, args.quick, args.only)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "rows": rows}, f, indent=1)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(markdown(info, rows) + "\n")


if __name__ == "__main__":
    main()
