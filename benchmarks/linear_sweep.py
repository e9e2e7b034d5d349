"""Time F.linear and F.linear_backward on every product of the project's models.

For each (rows M, in K, out N) product of the Shakespeare GPT, all-MiniLM-L6-v2, GPT-2 small's
prefill and decode, side by side in one run at the same thread count:
  fastattn      F.linear (forward) and F.linear_backward (dx, dW, db), on each GEMM engine it has
                here: onednn (the default where installed) and openblas (FASTATTN_GEMM=openblas)
  frozen        F.linear forward on the weight frozen (Module.freeze: what inference runs, the
                weight packed once in oneDNN's layout), on the default engine
  int8          F.linear forward on the weight quantized to int8 (compute_type="int8", on the
                int8 engine of fastattn.build_info(); blank where int8 does not run here)
  torch         torch.nn.functional.linear, and its autograd backward (when torch is installed)
  numpy         one NumPy matmul x @ w.T (NumPy's BLAS, threaded as it likes)
  blas-1call    the whole product as one call of scipy's BLAS (the library fastattn calls),
                threaded by the BLAS at the same thread count
Prints medians in microseconds and fastattn's speed (on its default engine; "frz" on the frozen
weight) as a fraction of torch's (>= 1: faster).

    python benchmarks/linear_sweep.py --threads 2 [--repeat 30] [--only gpt2]
"""
import argparse
import platform
import statistics
import subprocess
import time

import numpy as np

# (model, product, M, K, N). M: rows of the activation (batch x tokens).
SHAPES = [
    ("shakespeare", "c_attn", 768, 128, 384),
    ("shakespeare", "attn.c_proj", 768, 128, 128),
    ("shakespeare", "c_fc", 768, 128, 512),
    ("shakespeare", "mlp.c_proj", 768, 512, 128),
    ("shakespeare", "lm_head", 768, 128, 65),
    ("shakespeare-gen", "c_fc", 1, 128, 512),
    ("shakespeare-gen", "c_fc (prompt 64)", 64, 128, 512),
    ("minilm", "qkv", 760, 384, 1152),
    ("minilm", "attn.out", 760, 384, 384),
    ("minilm", "intermediate", 760, 384, 1536),
    ("minilm", "output", 760, 1536, 384),
    ("gpt2-prefill", "c_attn", 128, 768, 2304),
    ("gpt2-prefill", "attn.c_proj", 128, 768, 768),
    ("gpt2-prefill", "c_fc", 128, 768, 3072),
    ("gpt2-prefill", "mlp.c_proj", 128, 3072, 768),
    ("smollm2-prefill", "qkv", 128, 576, 960),
    ("smollm2-prefill", "o_proj", 128, 576, 576),
    ("smollm2-prefill", "gate_up", 128, 576, 3072),
    ("smollm2-prefill", "down", 128, 1536, 576),
    ("gpt2-decode", "c_attn", 1, 768, 2304),
    ("gpt2-decode", "c_fc", 1, 768, 3072),
    ("gpt2-decode", "mlp.c_proj", 1, 3072, 768),
    ("gpt2-decode", "lm_head", 1, 768, 50257),
]


def cpu_model():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        return "%s (family %s, model %s)" % tuple(
            fields.get(k, "?").strip() for k in ("Model name", "CPU family", "Model"))
    except OSError:
        return platform.processor() or "unknown CPU"


def median_us(fn, repeat, min_time=0.05):
    fn()
    times = []
    start = time.perf_counter()
    while len(times) < repeat or time.perf_counter() - start < min_time:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
        if len(times) >= 20 * repeat:
            break
    return statistics.median(times) * 1e6


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=30)
    p.add_argument("--only", default=None, help="models whose name contains this")
    p.add_argument("--no-backward", action="store_true")
    args = p.parse_args()

    import importlib

    import fastattn
    from fastattn import _frozen, _lowp
    from fastattn import functional as F
    fastattn.set_num_threads(args.threads, adaptive=False)  # (exactly --threads, as torch)
    engine = importlib.import_module("fastattn._compiled.linear")
    default = engine._current_engine()
    engines = [default] + [e for e in ("onednn", "openblas") if e != default and (
        e == "openblas" or fastattn.build_info()["onednn"])]

    def on_each_engine(fn):
        """{engine: median us of fn on it}, the default engine last (it stays on)."""
        times = {}
        for name in engines[::-1]:
            engine._use_engine(name)
            times[name] = median_us(fn, args.repeat)
        return times
    try:
        import torch
        torch.set_num_threads(args.threads)
    except ImportError:
        torch = None
    try:
        import threadpoolctl
        limits = threadpoolctl.threadpool_limits(args.threads)
    except ImportError:
        limits = None
    from scipy.linalg import blas

    int8 = fastattn.build_info()["int8"]  # (what runs the int8 products here, or None)
    print(f"# {cpu_model()}, {args.threads} threads, float32 (int8: on {int8}); median microseconds; "
          f"speed = torch time / fastattn time on {default} (>= 1: fastattn faster)")
    cols = "".join(f" {e[:8]:>8s}" for e in engines)
    head = (f"{'model':16s} {'product':18s} {'M x K -> N':>18s} |{cols} {'frozen':>8s} {'int8':>8s} {'torch':>8s} {'numpy':>8s} "
            f"{'blas1':>8s} {'speed':>6s} {'frz':>5s}")
    if not args.no_backward:
        head += f" |{cols} {'torch':>8s} {'speed':>6s}"
    print(head)
    rng = np.random.default_rng(0)
    worst = []
    for model, name, M, K, N in SHAPES:
        if args.only and args.only not in model:
            continue
        x = rng.standard_normal((M, K), dtype=np.float32)
        w = rng.standard_normal((N, K), dtype=np.float32) * 0.05
        b = rng.standard_normal(N, dtype=np.float32)
        dy = rng.standard_normal((M, N), dtype=np.float32)
        fas = on_each_engine(lambda: F.linear(x, w, b))
        fa = fas[default]
        w_frozen = w.copy()
        w_int8 = _lowp.quantize_int8(w) if int8 else None
        _frozen.freeze(w_frozen)
        frz = median_us(lambda: F.linear(x, w_frozen, b), args.repeat)
        i8 = median_us(lambda: F.linear(x, w_int8, b), args.repeat) if int8 else None
        npy = median_us(lambda: x @ w.T, args.repeat)
        # scipy's sgemm is column-major: (x w^T)^T = w x^T, i.e. sgemm(w (N,K) as K x N^T ...)
        one = median_us(lambda: blas.sgemm(1.0, w, x, trans_b=True), args.repeat) if M > 1 else float("nan")
        row = (f"{model:16s} {name:18s} {f'{M}x{K}->{N}':>18s} |" + "".join(f" {fas[e]:8.1f}" for e in engines)
               + f" {frz:8.1f}" + (f" {i8:8.1f}" if i8 is not None else f" {'':8s}"))
        if torch is not None:
            tx, tw, tb = (torch.from_numpy(a) for a in (x, w, b))
            with torch.no_grad():
                tt = median_us(lambda: torch.nn.functional.linear(tx, tw, tb), args.repeat)
            row += f" {tt:8.1f} {npy:8.1f} {one:8.1f} {tt / fa:6.2f} {tt / frz:5.2f}"
            worst.append((tt / fa, f"{model} {name} forward"))
        else:
            row += f" {'':8s} {npy:8.1f} {one:8.1f} {'':6s} {'':5s}"
        if not args.no_backward:
            fbs = on_each_engine(lambda: F.linear_backward(dy, x, w))
            fb = fbs[default]
            row += " |" + "".join(f" {fbs[e]:8.1f}" for e in engines)
            if torch is not None:
                tx = torch.from_numpy(x).requires_grad_()
                tw = torch.from_numpy(w).requires_grad_()
                tb = torch.from_numpy(b).requires_grad_()
                tdy = torch.from_numpy(dy)
                out = torch.nn.functional.linear(tx, tw, tb)

                def torch_backward():
                    torch.autograd.grad(out, (tx, tw, tb), tdy, retain_graph=True)
                tbw = median_us(torch_backward, args.repeat)
                row += f" {tbw:8.1f} {tbw / fb:6.2f}"
                worst.append((tbw / fb, f"{model} {name} backward"))
        print(row, flush=True)
    if worst:
        worst.sort()
        print(f"# slowest relative to torch: {worst[0][1]} at {worst[0][0]:.2f}x torch's speed; "
              f"{sum(s >= 0.9 for s, _ in worst)} of {len(worst)} at >= 0.9x")
    if limits is not None:
        limits.unregister()


if __name__ == "__main__":
    main()
