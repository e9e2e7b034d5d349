"""Data-parallel scaling of fastattn's trainer: tokens/s of whole optimizer steps, and how much
of each step the gradient Allreduce takes, alone or under mpiexec.

    python benchmarks/scaling.py --data input.txt --threads 2                    # 1 rank x 2 threads
    mpiexec -n 2 python benchmarks/scaling.py --data input.txt --threads 1       # 2 ranks x 1 thread

Each rank runs nanoGPT's Tiny Shakespeare (character) configuration (4 layers, 4 heads, 128
channels, block 64, batch 12 per micro-batch, one micro-batch per rank and step: the trainer's own
train_step and FlatGradients), --warmup steps untimed, then --iters timed steps. The thread count
is fixed (adaptive=False), so that a busy machine shows as slower steps, not as fewer threads.
Rank 0 prints the medians: the step, the Allreduce inside it (the gradient buffer, summed in
place), the tokens/s of the whole job, and an Allreduce of the same buffer timed alone.
"""
import argparse
import time

import numpy as np

import fastattn
from fastattn.training import distributed
from fastattn.training.datasets import load_splits
from fastattn.training.trainer import TrainConfig, micro_batches, train_step


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="shakespeare",
                   help="a text file (characters are the tokens; default: Tiny Shakespeare, from the package)")
    p.add_argument("--threads", type=int, default=1, help="threads per rank (default: 1)")
    p.add_argument("--iters", type=int, default=20, help="timed steps (default: 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (default: 3)")
    args = p.parse_args()
    fastattn.set_num_threads(args.threads, adaptive=False)
    world = distributed.get_world()
    cfg = TrainConfig()
    splits, tok = load_splits(args.data, cfg.block_size)
    model = fastattn.GPT(cfg.model_config(tok.vocab_size), seed=cfg.seed)
    distributed.broadcast_parameters(world, model.parameters())
    grads = distributed.FlatGradients(model.parameters())
    optimizer = model.configure_optimizers(cfg.weight_decay, cfg.learning_rate, (cfg.beta1, cfg.beta2))

    reduce_times = []
    allreduce = world.allreduce_sum_

    def timed_allreduce(buffer):
        t = time.perf_counter()
        allreduce(buffer)
        reduce_times.append(time.perf_counter() - t)
        return buffer

    world.allreduce_sum_ = timed_allreduce
    steps = []
    for step in range(args.warmup + args.iters):
        t = time.perf_counter()
        train_step(model, optimizer, micro_batches(model, splits["train"], cfg, step, [world.rank]),
                   cfg.learning_rate, cfg.grad_clip, world, grads)
        steps.append(time.perf_counter() - t)
    world.allreduce_sum_ = allreduce
    alone = []
    for _ in range(args.iters):
        buffer = grads.buffer.copy()
        t = time.perf_counter()
        world.allreduce_sum_(buffer)
        alone.append(time.perf_counter() - t)

    step_s = float(np.median(steps[args.warmup:]))
    reduce_s = float(np.median(reduce_times[args.warmup:])) if reduce_times else 0.0
    alone_s = float(np.median(alone)) if world.size > 1 else 0.0
    if world.rank == 0:
        tokens = world.size * cfg.batch_size * cfg.block_size
        mb = grads.buffer.nbytes / 1e6
        print(f"{world.size} rank(s) x {args.threads} thread(s): {step_s * 1e3:.1f} ms/step "
              f"(median of {args.iters}), {tokens / step_s:.0f} tokens/s; allreduce of {mb:.2f} MB in the "
              f"step {reduce_s * 1e3:.2f} ms ({100 * reduce_s / step_s:.1f}%), alone {alone_s * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
