"""Generation speed: fastattn with the KV cache, without it, and PyTorch (when installed).

    python benchmarks/generate.py [--threads N] [--checkpoint DIR] [--new-tokens 500] [--gpt2]

1. The Tiny Shakespeare model (nanoGPT's CPU configuration: 4 layers, 4 heads, 128 channels,
   block 64, 65 characters; trained weights from --checkpoint, else random ones: the time does
   not depend on them), batch 1, a one-character prompt, --new-tokens tokens (temperature 0.8,
   top-k 200, as nanoGPT's sample.py): tokens per second of fastattn with the cache, fastattn
   without it, and nanoGPT's generate() in PyTorch (no cache, the same weights).
2. --gpt2: GPT-2 small's shapes (124M parameters, random weights), ms per token of the decode
   step at a context of 1024 tokens (the cache full after a 1000-token prompt), and one step
   without the cache (a forward of the whole 1024-token window).

A model has learned positions up to block_size only: past that the context is a sliding window,
every position in it changes at each step, and the cache cannot be reused (see
fastattn/models/generation.py). 500 tokens from a 64-token model are mostly past it, so the table also gives
the tokens per second of the first block_size - 1 tokens, where the cache works.
"""
import argparse
import os
import sys
import time

import numpy as np

import fastattn
from fastattn import GPT, GPTConfig

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_shakespeare_char import CONFIG, torch, torch_model  # noqa: E402

TEMPERATURE, TOP_K = 0.8, 200


def shakespeare_model(checkpoint):
    if checkpoint:
        from fastattn.cli import _checkpoint_file
        from fastattn.training.checkpoint import load_checkpoint
        return load_checkpoint(_checkpoint_file(checkpoint)).build_model()
    return GPT(GPTConfig(vocab_size=65, **CONFIG), seed=0)


def torch_generate(model, idx, new_tokens, block_size):
    """nanoGPT's GPT.generate: the last block_size tokens through the whole model at each step."""
    with torch.no_grad():
        for _ in range(new_tokens):
            logits = model(idx[:, -block_size:]) / TEMPERATURE
            v, _ = torch.topk(logits, min(TOP_K, logits.size(-1)))
            logits[logits < v[:, [-1]]] = -float("inf")
            idx = torch.cat((idx, torch.multinomial(torch.softmax(logits, dim=-1), num_samples=1)), dim=1)
    return idx


def tokens_per_second(run, n):
    t0 = time.perf_counter()
    run(n)
    return n / (time.perf_counter() - t0)


def shakespeare(args):
    model = shakespeare_model(args.checkpoint)
    bs = model.config.block_size
    prompt = np.zeros((1, 1), np.int64)
    runners = {
        "fastattn, KV cache": lambda n: model.generate(prompt, n, TEMPERATURE, TOP_K, seed=0),
        "fastattn, no cache": lambda n: model.generate(prompt, n, TEMPERATURE, TOP_K, seed=0, use_cache=False),
    }
    if torch is not None:
        tmodel = torch_model(model.state_dict()).eval()
        torch.manual_seed(0)
        runners[f"pytorch {torch.__version__}"] = lambda n: torch_generate(tmodel, torch.zeros((1, 1), dtype=torch.long), n, bs)
    for run in runners.values():  # warm up
        run(5)
    print(f"# {args.threads} threads; batch 1, {args.new_tokens} new tokens from a 1-token prompt, "
          f"block_size {bs}; tokens/s (first {bs - 1} tokens: all within the block)")
    rates = {name: (tokens_per_second(run, args.new_tokens), tokens_per_second(run, bs - 1))
             for name, run in runners.items()}
    base = rates.get(f"pytorch {torch.__version__}" if torch is not None else None)
    for name, (full, first) in rates.items():
        vs = f"  ({full / base[0]:.2f}x / {first / base[1]:.2f}x pytorch)" if base and base is not rates[name] else ""
        print(f"{name:24s} {full:8.0f} tokens/s   {first:8.0f} tokens/s{vs}")


def gpt2(args):
    cfg = GPTConfig(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768,
                    gelu_approximate="tanh")
    model = GPT(cfg, seed=0)
    prompt = np.random.default_rng(0).integers(0, cfg.vocab_size, (1, 1000))
    times = []
    stream = model.generate_stream(prompt, 24, temperature=0)
    t0 = time.perf_counter()
    next(stream)  # the prefill of 1000 tokens, then one decode step per token up to context 1024
    t1 = time.perf_counter()
    prefill = t1 - t0
    for _ in stream:
        t0, t1 = t1, time.perf_counter()
        times.append(t1 - t0)
    t0 = time.perf_counter()
    model.generate(prompt[:, -1023:], 1, temperature=0, use_cache=False)
    full = time.perf_counter() - t0
    print(f"# GPT-2 small shapes ({model.num_params() / 1e6:.0f}M parameters, random weights), "
          f"{args.threads} threads, batch 1")
    print(f"prefill of 1000 tokens       {prefill * 1e3:8.1f} ms")
    print(f"decode, KV cache             {np.median(times) * 1e3:8.1f} ms/token  "
          f"(median of {len(times)} steps, contexts 1002 to 1024)")
    print(f"no cache (1024-token window) {full * 1e3:8.1f} ms/token")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=fastattn.get_num_threads())
    p.add_argument("--checkpoint", help="a `fastattn train` output directory or .npz (default: random weights)")
    p.add_argument("--new-tokens", type=int, default=500)
    p.add_argument("--gpt2", action="store_true", help="also time GPT-2 small's shapes at context 1024")
    args = p.parse_args()
    fastattn.set_num_threads(args.threads)
    if torch is not None:
        torch.set_num_threads(args.threads)
    with fastattn.use_backend("compiled"):
        shakespeare(args)
        if args.gpt2:
            gpt2(args)


if __name__ == "__main__":
    main()
