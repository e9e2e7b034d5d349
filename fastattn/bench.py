"""Benchmark table: reference vs compiled vs PyTorch, on the standard shapes, in one run.

    fastattn bench [--threads N] [--repeat R] [--json FILE] [--markdown FILE] [--quick] [--only TEXT]
    python -m fastattn.bench ...   (the same, from outside the source tree)

Each cell is the median wall time in ms of up to R runs after one warm-up run (float32 inputs from
a seeded RNG). A cell stops early, after at least 3 runs, once it has used BUDGET_S seconds, so the
slow NumPy reference cells cost about 3 runs each. The ratios are reference / compiled and
torch / compiled: above 1, the compiled kernel is faster. The torch column is blank when PyTorch
is not installed; torch runs at the same thread count as fastattn (--threads). The reference
backend is NumPy: its matrix products use NumPy's BLAS at that library's own thread count.
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

torch = None  # PyTorch, imported when the table runs (_import_torch); the column stays blank without it


def _import_torch():
    """Import PyTorch if it is installed. Not at import time: it takes seconds, and the command
    line (`fastattn bench --help`, `fastattn sample`) builds this module's flags."""
    global torch
    try:
        import torch as installed
    except ImportError:
        return
    torch = installed

BUDGET_S = 5.0  # time per cell after which no further runs start (once 3 are done)
# Pause before timing. BLAS and OpenMP worker threads keep spinning for a while after their last
# call: measured here, attention run right after the NumPy reference took 13.6 ms instead of 8.7
# (torch likewise 19.4 instead of 12.5).
SETTLE_S = 1.0
# --quick, a smoke test that takes seconds: shorter pauses and minimum times (noisier cells)
QUICK_SETTLE_S, QUICK_MIN_TIME_S = 0.2, 0.1


# Each setup(rng) makes the inputs of one case and returns {"ours": callable on the active
# fastattn backend, "torch": callable or None, "bytes": bytes the kernel must read (or None)};
# attention also gives "scores_bytes", the size of the (B, H, Tq, Tk) scores the reference builds.

def _attention(B, H, Tq, D, Tk=None, causal=True, padding=False):
    Tk = Tk or Tq

    def setup(rng):
        q = rng.standard_normal((B, H, Tq, D), dtype=np.float32)
        k = rng.standard_normal((B, H, Tk, D), dtype=np.float32)
        v = rng.standard_normal((B, H, Tk, D), dtype=np.float32)
        mask = None
        if padding:  # each sequence keeps a prefix of random length, from half to all of the keys
            lengths = rng.integers(Tk // 2, Tk + 1, size=B)
            mask = np.arange(Tk)[None, None, None, :] < lengths[:, None, None, None]  # (B,1,1,Tk)
        case = {"ours": lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal),
                "torch": None, "bytes": k.nbytes + v.nbytes, "scores_bytes": B * H * Tq * Tk * 4}
        if torch is not None:
            # torch's is_causal is aligned top-left, fastattn's bottom-right (queries = the last Tq
            # positions). They agree for Tq == Tk; for one query (decode) fastattn's hides nothing.
            assert not causal or Tq in (Tk, 1), "give torch an explicit causal mask for this shape"
            tq, tk, tv = (torch.from_numpy(a) for a in (q, k, v))
            tmask = None if mask is None else torch.from_numpy(mask)
            t_causal = causal and Tq == Tk
            case["torch"] = lambda: torch.nn.functional.scaled_dot_product_attention(
                tq, tk, tv, attn_mask=tmask, is_causal=t_causal)
        return case
    return setup


def _masked_softmax(shape):
    def setup(rng):
        x = rng.standard_normal(shape, dtype=np.float32)
        mask = np.tril(np.ones(shape[-2:], dtype=bool))  # causal, broadcast over the batch
        case = {"ours": lambda: F.masked_softmax(x, mask), "torch": None, "bytes": None}
        if torch is not None:
            tx, hidden = torch.from_numpy(x), torch.from_numpy(~mask)
            case["torch"] = lambda: torch.softmax(tx.masked_fill(hidden, float("-inf")), dim=-1)
        return case
    return setup


def _layer_norm(shape):
    def setup(rng):
        x = rng.standard_normal(shape, dtype=np.float32)
        w, b = (rng.standard_normal(shape[-1], dtype=np.float32) for _ in range(2))
        case = {"ours": lambda: F.layer_norm(x, w, b), "torch": None, "bytes": None}
        if torch is not None:
            tx, tw, tb = (torch.from_numpy(a) for a in (x, w, b))
            case["torch"] = lambda: torch.nn.functional.layer_norm(tx, (shape[-1],), tw, tb)
        return case
    return setup


def _gelu(shape, approximate="none"):
    def setup(rng):
        x = rng.standard_normal(shape, dtype=np.float32)
        case = {"ours": lambda: F.gelu(x, approximate), "torch": None, "bytes": None}
        if torch is not None:
            tx = torch.from_numpy(x)
            case["torch"] = lambda: torch.nn.functional.gelu(tx, approximate=approximate)
        return case
    return setup


# (kernel, shape label, setup, flags). Flags: "quick" = also in the --quick subset; "quick-only" =
# only there (small stand-ins for the big shapes); "bandwidth" = note the GB/s at which compiled
# reads K and V; "memory" = note the extra memory of compiled (and of the reference, if it runs);
# "no-reference" = do not run the reference (its T x T scores would not fit in a sane budget).
CASES = [
    ("attention causal", "(8,8,256,64)", _attention(8, 8, 256, 64), "quick"),
    ("attention causal", "(1,12,1024,64)", _attention(1, 12, 1024, 64), ""),
    ("attention causal", "(1,1,4096,64)", _attention(1, 1, 4096, 64), ""),
    ("attention causal", "(16,4,64,32)", _attention(16, 4, 64, 32), "quick"),
    ("attention causal", "(1,4,512,64)", _attention(1, 4, 512, 64), "quick-only"),
    ("attention", "(1,12,1024,64)", _attention(1, 12, 1024, 64, causal=False), ""),
    ("attention", "(1,1,4096,64)", _attention(1, 1, 4096, 64, causal=False), ""),
    ("attention", "(1,4,512,64)", _attention(1, 4, 512, 64, causal=False), "quick-only"),
    ("attention padding mask", "(8,8,256,64)", _attention(8, 8, 256, 64, causal=False, padding=True), "quick"),
    ("attention decode", "q (8,8,1,64) kv 1024", _attention(8, 8, 1, 64, Tk=1024), "quick bandwidth"),
    ("attention causal", "(1,1,16384,64)", _attention(1, 1, 16384, 64), "memory no-reference"),
    ("attention causal", "(1,1,2048,64)", _attention(1, 1, 2048, 64), "quick-only memory"),
    ("masked_softmax causal", "(64,1024,1024)", _masked_softmax((64, 1024, 1024)), ""),
    ("masked_softmax causal", "(8,256,256)", _masked_softmax((8, 256, 256)), "quick-only"),
    ("layer_norm", "(32768,768)", _layer_norm((32768, 768)), ""),
    ("layer_norm", "(1024,768)", _layer_norm((1024, 768)), "quick-only"),
    ("gelu", "(32768,3072)", _gelu((32768, 3072)), ""),
    ("gelu tanh", "(32768,3072)", _gelu((32768, 3072), "tanh"), ""),
    ("gelu", "(1024,3072)", _gelu((1024, 3072)), "quick-only"),
    ("gelu tanh", "(1024,3072)", _gelu((1024, 3072), "tanh"), "quick-only"),
]


MIN_TIME_S = 0.5  # fast cells keep running until this much time is spent (at most 1000 runs)


def medians_ms(fns, repeat, budget_s=BUDGET_S, settle_s=SETTLE_S, min_time_s=MIN_TIME_S):
    """{name: (median ms, runs)} for the callables in `fns` ({name: callable}), timed in turn
    (a, b, a, b, ...) so that noise from the rest of the machine falls on all of them alike.

    A pause (settle_s) and one warm-up each first; then `repeat` rounds, and more for fast
    kernels until min_time_s has passed (a median of many runs is steadier for sub-ms cells);
    no round starts after budget_s once min(3, repeat) are done."""
    time.sleep(settle_s)
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    start, rounds = time.perf_counter(), 0
    while True:
        elapsed = time.perf_counter() - start
        if rounds >= repeat and (elapsed >= min_time_s or rounds >= 1000):
            break
        if rounds >= min(3, repeat) and elapsed >= budget_s:
            break
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
        rounds += 1
    return {name: (1e3 * float(np.median(t)), len(t)) for name, t in times.items()}


def _on_backend(name, fn):
    def call():
        with fastattn.use_backend(name):
            return fn()
    return call


def _in_torch(fn):
    def call():
        with torch.inference_mode():
            return fn()
    return call


def extra_memory_mib(fn):
    """Peak memory allocated during fn() (NumPy reports its arrays to tracemalloc), less the result."""
    tracemalloc.start()
    try:
        out = fn()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return (peak - out.nbytes) / 2**20


def machine(threads):
    """The header: what ran where."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import scipy

    compiled = "compiled" in fastattn.available_backends()
    return {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "threads": threads,
        "compiled": compiled,
        "openmp": compiled and bool(fastattn._backend._compiled.openmp_enabled()),
        "gemm": _gemm_line(),
        "int8": fastattn.build_info()["int8"] if compiled else None,
        "fastattn": fastattn.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "torch": torch.__version__ if torch is not None else None,
        "date": datetime.datetime.now().isoformat(timespec="minutes"),
    }


def _gemm_line():
    """Which engine runs the float32 linear products, e.g. "oneDNN 3.2.0 (avx512_core_bf16)"."""
    info = fastattn.build_info()
    if info["gemm"] == "onednn":
        return f"oneDNN {info['onednn']} ({info['onednn_isa']})"
    return info["blas"] + (f" (oneDNN: {info['onednn_unavailable']})" if info["onednn_unavailable"] else "")


def header_lines(info):
    return [
        f"# cpu: {info['cpu']}, {info['logical_cores']} logical cores",
        f"# threads: {info['threads']} (fastattn and torch); compiled backend: "
        + (f"OpenMP {'on' if info['openmp'] else 'off'}, linear products on {info['gemm']}"
           f", int8 on {info['int8'] or 'nothing here'}" if info["compiled"] else "not available"),
        f"# fastattn {info['fastattn']}, numpy {info['numpy']}, scipy {info['scipy']}, "
        + (f"torch {info['torch']}" if info["torch"] else "torch: not installed"),
        f"# date: {info['date']}",
        "# medians in ms, float32; ratios above 1: compiled is faster",
    ]


def run_case(kernel, shape, setup, flags, repeat, earlier=(), quick=False):
    """Time one case on each backend; returns its row (dict). `earlier`: the rows so far; quick:
    --quick's shorter pauses."""
    pace = {"settle_s": QUICK_SETTLE_S, "min_time_s": QUICK_MIN_TIME_S} if quick else {}
    case = setup(np.random.default_rng(0))
    row = {"kernel": kernel, "shape": shape, "reference_ms": None, "compiled_ms": None,
           "torch_ms": None, "runs": {}, "note": ""}
    notes = []
    # The reference alone: its BLAS threads spin after each call and would slow what runs next.
    # Then compiled and torch in turn, so that they share whatever else the machine is doing.
    timed = {}
    if "no-reference" not in flags:
        timed.update(medians_ms({"reference": _on_backend("reference", case["ours"])}, repeat, **pace))
    peers = {}
    if "compiled" in fastattn.available_backends():
        peers["compiled"] = _on_backend("compiled", case["ours"])
    if case["torch"] is not None:
        peers["torch"] = _in_torch(case["torch"])
    if peers:
        timed.update(medians_ms(peers, repeat, **pace))
    for name, (ms, runs) in timed.items():
        row[f"{name}_ms"], row["runs"][name] = ms, runs
    if "compiled" in fastattn.available_backends():
        with fastattn.use_backend("compiled"):
            if "bandwidth" in flags:  # memory-bound: K and V are read once
                row["compiled_GBps"] = case["bytes"] / (row["compiled_ms"] / 1e3) / 1e9
                notes.append(f"compiled reads K,V at {row['compiled_GBps']:.1f} GB/s")
            if "memory" in flags:
                row["compiled_extra_MiB"] = extra_memory_mib(case["ours"])
                notes.append(f"extra memory: compiled {row['compiled_extra_MiB']:.2f} MiB")
    if "memory" in flags:
        if "no-reference" in flags:
            notes.append(f"reference not run: its scores alone would be {case['scores_bytes'] / 2**30:g} GiB")
        else:
            with fastattn.use_backend("reference"):
                row["reference_extra_MiB"] = extra_memory_mib(case["ours"])
            notes.append(f"reference {row['reference_extra_MiB']:.1f} MiB")
    if kernel == "attention":  # not causal: how much the causal twin of this shape saved
        twin = next((r for r in earlier if r["kernel"] == "attention causal" and r["shape"] == shape), None)
        if twin is not None:
            notes.append("full/causal time: " + ", ".join(
                f"{who} {row[key] / twin[key]:.2f}x" for who, key in
                (("compiled", "compiled_ms"), ("torch", "torch_ms")) if row[key] and twin[key]))
    row["note"] = "; ".join(notes)
    return row


def run(threads, repeat, quick=False, only=None, out=print):
    """Time the selected cases, printing each row as it completes; returns the rows."""
    _import_torch()
    fastattn.set_num_threads(threads)
    if torch is not None:
        torch.set_num_threads(threads)
    rows = []
    for kernel, shape, setup, flags in CASES:
        flags = set(flags.split())
        if (quick and not flags & {"quick", "quick-only"}) or (not quick and "quick-only" in flags):
            continue
        if only and only not in f"{kernel} {shape}":
            continue
        rows.append(run_case(kernel, shape, setup, flags, repeat, rows, quick))
        out(_format_row(_cells(rows[-1])))
    return rows


def _ratio(a, b):
    return a / b if a is not None and b else None


HEADER = ("kernel", "shape", "reference ms", "compiled ms", "torch ms", "ref/comp", "torch/comp", "note")
WIDTHS = (22, 20, 12, 11, 9, 8, 10, 0)


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
    """The table as Markdown (as in docs/performance.md)."""
    lines = [f"{info['cpu']}, {info['logical_cores']} logical cores, {info['threads']} threads "
             f"(OpenMP {'on' if info['openmp'] else 'off'}), linear products on {info['gemm']}, "
             f"numpy {info['numpy']}, scipy {info['scipy']}, "
             f"torch {info['torch'] or 'not installed'}, {info['date']}. Medians in ms, float32; "
             "ratios above 1: compiled is faster.", "",
             "| " + " | ".join(HEADER) + " |", "|" + "---|" * 2 + "---:|" * 5 + "---|"]
    lines += ["| " + " | ".join(_cells(r)) + " |" for r in rows]
    return "\n".join(lines)


def _at_least_1(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_arguments(p):
    """The benchmark's flags, on an argparse parser (also `fastattn bench`'s)."""
    p.add_argument("--threads", type=_at_least_1, default=fastattn.get_num_threads(),
                   help="threads for fastattn and torch (default: %(default)s)")
    p.add_argument("--repeat", type=_at_least_1, default=7,
                   help="timed runs per cell, median reported (default: %(default)s; "
                        f"fewer, at least 3, once a cell has used {BUDGET_S:g} s)")
    p.add_argument("--json", metavar="FILE", help="also write the machine header and the rows as JSON")
    p.add_argument("--markdown", metavar="FILE", help="also write the table as Markdown")
    p.add_argument("--quick", action="store_true", help="small shapes, 3 runs per cell: a smoke test")
    p.add_argument("--only", metavar="TEXT", help="only the cases whose 'kernel shape' contains TEXT")


def run_command(args):
    """Print the table for parsed add_arguments() flags; write --json / --markdown if given."""
    _import_torch()
    info = machine(args.threads)
    print("\n".join(header_lines(info)))
    print(_format_row(HEADER), flush=True)
    repeat = min(args.repeat, 3) if args.quick else args.repeat
    rows = run(args.threads, repeat, args.quick, args.only, out=lambda line: print(line, flush=True))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "repeat": repeat, "budget_s": BUDGET_S, "rows": rows}, f, indent=1)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(markdown(info, rows) + "\n")


DESCRIPTION = __doc__.split("\n\n")[0]


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m fastattn.bench", description=DESCRIPTION)
    add_arguments(p)
    run_command(p.parse_args(argv))


if __name__ == "__main__":
    main()
