"""Speed on a busy machine: the GPT training step and generation beside a CPU-bound competitor.

    python benchmarks/busy_machine.py [--threads N] [--iters 20] [--tokens 100]

Runs each case in a fresh process: the Tiny Shakespeare GPT (nanoGPT's CPU configuration),
--iters training iterations (forward, backward, AdamW) on random batches, then --tokens tokens
generated with the KV cache, at 1 thread and at --threads (default: the usable cores), with
fastattn's adaptive thread count (the default) and without it (FASTATTN_ADAPTIVE_THREADS=0);
first on the quiet machine, then beside one busy-looping process per core but one (another
program keeping cores busy). Prints seconds, one run each; the point of the table is the ratio
of the default's time to 1 thread's on the busy machine (<= 1: the extra threads do not hurt).
"""
import argparse
import multiprocessing
import os
import subprocess
import sys
import time

CASE = r"""
import sys, time
import numpy as np
import fastattn
from fastattn import GPT, GPTConfig
threads, iters, tokens = (int(a) for a in sys.argv[1:4])
fastattn.set_num_threads(threads)
model = GPT(GPTConfig(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128, bias=False), seed=0)
opt = model.configure_optimizers(0.1, 1e-3, (0.9, 0.99))
rng = np.random.default_rng(0)
x, y = rng.integers(0, 65, (12, 64)), rng.integers(0, 65, (12, 64))
t0 = time.perf_counter()
for _ in range(iters):
    model(x, y)
    model.backward()
    opt.step()
    model.zero_grad()
t1 = time.perf_counter()
model.generate(np.zeros((1, 1), np.int64), tokens, seed=0)
print(t1 - t0, time.perf_counter() - t1)
"""


def spin(stop):
    while not stop.is_set():
        sum(range(10000))


def run(threads, adaptive, args):
    env = dict(os.environ, FASTATTN_ADAPTIVE_THREADS="1" if adaptive else "0")
    out = subprocess.run([sys.executable, "-c", CASE, str(threads), str(args.iters), str(args.tokens)],
                         env=env, capture_output=True, text=True, check=True).stdout
    return [float(v) for v in out.split()]


def main():
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=cores)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--tokens", type=int, default=100)
    args = p.parse_args()
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from linear_sweep import cpu_model
    print(f"# {cpu_model()}, {cores} cores; seconds for {args.iters} training iterations | "
          f"{args.tokens} generated tokens; one run each")
    cases = [(1, True), (args.threads, True), (args.threads, False)]
    for busy in (False, True):
        stop = multiprocessing.Event()
        competitors = [multiprocessing.Process(target=spin, args=(stop,), daemon=True)
                       for _ in range(max(1, cores - 1) if busy else 0)]
        for c in competitors:
            c.start()
        time.sleep(0.5 if busy else 0)
        try:
            results = {case: run(*case, args) for case in cases}
        finally:
            stop.set()
            for c in competitors:
                c.join()
        label = f"beside {len(competitors)} busy process(es)" if busy else "quiet machine"
        base = results[(1, True)]
        for (threads, adaptive), (train, gen) in results.items():
            mode = "adaptive" if adaptive else "fixed"
            print(f"{label:28s} {threads} thread(s), {mode:8s}  train {train:6.2f} s ({train / base[0]:4.2f}x 1 thread)"
                  f"   generate {gen:6.2f} s ({gen / base[1]:4.2f}x 1 thread)")


if __name__ == "__main__":
    main()
