"""Batched decode: a decode step of B rows, on the few-row kernel and on the GEMM, in turns.

    python benchmarks/batched_decode.py [--threads N] [--batches 1,2,4,8] [--repeats 3]

GPT-2 small's shapes (12 layers, 768 channels, 50257 tokens; random weights, frozen as
inference freezes them), B prompts of 64 tokens (the rows after the first with 10 tokens of left
padding), 24 greedy tokens. A step's products have B rows: from 2 to 8 rows they run on
fastattn's few-row kernel (src_cython/gemv_rows.h), which reads each weight once, as the single
row's gemv does; "gemm" is the same step with that kernel switched off (the products on the GEMM
engine, which packs the weights first). Prints the median step in ms, tokens per second (B per
step) and gemm / few-row.
"""
import argparse
import importlib
import time

import numpy as np

import fastattn
from fastattn import GPT, GPTConfig

linear = importlib.import_module("fastattn._compiled.linear")


def step_seconds(model, B, rng):
    """The decode steps' times of one generate_stream run of B padded prompts."""
    idx = rng.integers(0, model.config.vocab_size, (B, 64))
    mask = np.ones((B, 64), int)
    mask[1:, :10] = 0
    stamps, t0 = [], time.perf_counter()
    for _ in model.generate_stream(idx, 24, temperature=0, attention_mask=mask):
        stamps.append(time.perf_counter() - t0)
    return np.diff(stamps)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=fastattn.get_num_threads())
    p.add_argument("--batches", default="1,2,4,8")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    fastattn.set_num_threads(args.threads)
    batches = [int(b) for b in args.batches.split(",")]
    model = GPT(GPTConfig(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768,
                          gelu_approximate="tanh"), seed=0).freeze()
    rng = np.random.default_rng(0)
    few_rows = linear._set_gemv_max_rows(0)  # (each run sets it; restored at the end)
    print(f"# {fastattn.build_info()['gemm']} engine, {args.threads} threads, GPT-2 small shapes, "
          f"few-row kernel up to {few_rows} rows; median decode step over {args.repeats} runs each, in turns")
    print(f"{'B':>3} {'few-row ms':>11} {'gemm ms':>9} {'few-row tok/s':>14} {'gemm tok/s':>11} {'gemm/few-row':>13}")
    try:
        for B in batches:
            times = {"few": [], "gemm": []}
            step_seconds(model, B, rng)  # warm up
            for _ in range(args.repeats):
                for name, rows in (("few", few_rows), ("gemm", 0)):
                    linear._set_gemv_max_rows(rows)
                    times[name].extend(step_seconds(model, B, rng))
            few, gemm = (float(np.median(times[n])) for n in ("few", "gemm"))
            print(f"{B:>3} {few * 1e3:>11.2f} {gemm * 1e3:>9.2f} {B / few:>14.1f} {B / gemm:>11.1f} {gemm / few:>13.2f}")
    finally:
        linear._set_gemv_max_rows(few_rows)


if __name__ == "__main__":
    main()
