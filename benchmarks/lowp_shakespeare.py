"""Validation loss of a trained GPT (fastattn train) in float32 and with lower-precision weights.

    fastattn train --data shakespeare --out out-shakespeare-char    # the tutorial's recipe
    python benchmarks/lowp_shakespeare.py --checkpoint out-shakespeare-char

The same evaluation batches as the trainer's (its seed, block size, batch size and eval_iters,
from the checkpoint's settings), each compute type's model built from the same best.npz:
int8 / bfloat16 change only the weights of the linear products and the embedding tables
(docs/lower-precision.md). Prints one line per compute type: train and val loss, and the
difference to float32's.
"""
import argparse
import dataclasses
import os
import sys

import fastattn
from fastattn import _lowp
from fastattn.training.checkpoint import checkpoint_file, load_checkpoint
from fastattn.training.trainer import TrainConfig, estimate_loss, load_splits


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="a fastattn train output directory or .npz")
    p.add_argument("--data", default="shakespeare",
                   help="the text it was trained on (default: Tiny Shakespeare, from the package)")
    p.add_argument("--compute-types", default="int8,bfloat16,int8_bfloat16")
    p.add_argument("--eval-iters", type=int, help="batches per split (default: the run's)")
    p.add_argument("--threads", type=int, default=fastattn.get_num_threads())
    args = p.parse_args()
    fastattn.set_num_threads(args.threads)
    ckpt = load_checkpoint(checkpoint_file(args.checkpoint))
    settings = ckpt.meta.get("train_config", {})
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in settings.items() if k in fields})
    if args.eval_iters:
        cfg = dataclasses.replace(cfg, eval_iters=args.eval_iters)
    splits, _ = load_splits(args.data, cfg.block_size, ckpt.tokenizer)
    print(f"# {os.path.abspath(checkpoint_file(args.checkpoint))}, step {ckpt.step}, {cfg.eval_iters} batches "
          f"of {cfg.batch_size} x {cfg.block_size} per split, seed {cfg.seed}, {args.threads} threads")
    base = None
    for compute_type in ["float32"] + args.compute_types.split(","):
        try:
            _lowp.check_compute_type(compute_type)
        except ValueError as e:
            print(f"{compute_type:14s} skipped: {e}")
            continue
        losses = estimate_loss(ckpt.build_model(compute_type), splits, cfg)
        base = base or losses
        print(f"{compute_type:14s} train {losses['train']:.4f} ({losses['train'] - base['train']:+.4f})   "
              f"val {losses['val']:.4f} ({losses['val'] - base['val']:+.4f})", flush=True)


if __name__ == "__main__":
    sys.exit(main())
