"""Seconds per training iteration of each --preset (the table in docs/export.md), at the trainers'
default batch sizes: `fastattn train` (12 sequences of the preset's block_size, a 65-token
vocabulary: Tiny Shakespeare's characters) and `fastattn train-seq2seq` (32 pairs of 24 + 24
tokens, 40-token vocabularies). The median of --repeat iterations after one warm-up.

    python benchmarks/preset_costs.py [--repeat 3] [--threads N]
"""
import argparse
import time

import numpy as np

import fastattn
from fastattn.models.presets import PRESETS
from fastattn.optim import AdamW
from fastattn.training import seq2seq_trainer, trainer


def seconds(step, repeat):
    step()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def gpt_cost(name, repeat, rng):
    cfg = trainer.TrainConfig.preset(name)
    model = fastattn.GPT(cfg.model_config(65), seed=0)
    opt = model.configure_optimizers(cfg.weight_decay, cfg.learning_rate, (cfg.beta1, cfg.beta2))
    x = rng.integers(0, 65, (cfg.batch_size, cfg.block_size))
    y = rng.integers(0, 65, (cfg.batch_size, cfg.block_size))
    model.train()
    return seconds(lambda: trainer.train_step(model, opt, [(x, y)], 1e-3, cfg.grad_clip), repeat), model


def seq2seq_cost(name, repeat, rng):
    cfg = seq2seq_trainer.Seq2SeqTrainConfig.preset(name)
    model = fastattn.Seq2SeqTransformer(40, 40, cfg.d_model, cfg.nhead, cfg.num_encoder_layers,
                                           cfg.num_decoder_layers, cfg.dim_feedforward, cfg.dropout)
    opt = AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.98), eps=1e-9, weight_decay=0.0)
    batch = tuple(rng.integers(4, 40, (cfg.batch_size, 24)) for _ in range(3))
    model.train()
    return seconds(lambda: seq2seq_trainer.train_step(model, opt, batch, 1e-4, cfg.label_smoothing), repeat), model


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--threads", type=int)
    args = p.parse_args()
    if args.threads:
        fastattn.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    print("| trainer | preset | parameters | s / iteration |")
    print("|---|---|---|---|")
    for kind, cost in (("train", gpt_cost), ("train-seq2seq", seq2seq_cost)):
        for name in PRESETS:
            s, model = cost(name, args.repeat, rng)
            n = sum(p.data.size for p in model.parameters())
            print(f"| {kind} | {name} | {n / 1e6:.2f} M | {s:.3f} |", flush=True)


if __name__ == "__main__":
    main()
