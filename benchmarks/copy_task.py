"""The copy task of the Annotated Transformer, trained with fastattn: a 2 + 2 layer
Seq2SeqTransformer learns to output its input, then greedy decoding copies fresh sequences.

    python benchmarks/copy_task.py [--threads N] [--iters N] [--d-model N]

Vocabulary 11 (pad 0, bos 1, eos 2 and 8 symbols 3..10), sequences of 10 random symbols, the
target the source followed by eos. Trained as `fastattn train-seq2seq` trains (its train_step:
label smoothing 0.1 -- the Annotated Transformer's copy task uses 0.0; kept at the default here --,
AdamW betas (0.9, 0.98), eps 1e-9, the paper's schedule with warmup 400 as the Annotated
Transformer's). Prints the share of 100 fresh sequences copied exactly (the aim: >= 99%) and the
wall times.
"""
import argparse
import time

import numpy as np

import fastattn
from fastattn.models.seq2seq_decoding import greedy
from fastattn.optim import AdamW
from fastattn.training.seq2seq_trainer import make_batch, noam_lr, train_step

V, LENGTH, FIRST_SYMBOL = 11, 10, 3


def sequences(rng, n):
    return rng.integers(FIRST_SYMBOL, V, (n, LENGTH))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int)
    parser.add_argument("--iters", type=int, default=1200, help="training iterations (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        fastattn.set_num_threads(args.threads)
    model = fastattn.Seq2SeqTransformer(V, V, d_model=args.d_model, nhead=4, num_encoder_layers=2,
                                        num_decoder_layers=2, dim_feedforward=4 * args.d_model, dropout=0.1,
                                        seed=args.seed)
    optimizer = AdamW(model.parameters(), lr=0.0, betas=(0.9, 0.98), eps=1e-9, weight_decay=0.0)
    rng = np.random.default_rng([args.seed, 0])
    t0 = time.perf_counter()
    for step in range(args.iters):
        src = sequences(rng, args.batch_size)
        loss = train_step(model, optimizer, make_batch(list(zip(src, src))), noam_lr(step + 1, args.d_model, 400),
                          label_smoothing=0.1)
        if step % 100 == 0 or step == args.iters - 1:
            print(f"step {step}: loss {loss:.4f}", flush=True)
    train_s = time.perf_counter() - t0
    fresh = sequences(np.random.default_rng([args.seed, 1]), 100)
    t0 = time.perf_counter()
    out = greedy(model, fresh, max_len=LENGTH + 1)
    decode_s = time.perf_counter() - t0
    copied = sum(o.tolist() == s.tolist() for o, s in zip(out, fresh))
    print(f"copy task: {copied}/100 fresh sequences copied exactly by greedy decoding "
          f"({'meets' if copied >= 99 else 'misses'} the >= 99% aim); training {args.iters} iterations "
          f"of {args.batch_size}: {train_s:.1f} s ({1e3 * train_s / args.iters:.1f} ms/iteration), greedy "
          f"decoding of 100: {decode_s:.2f} s; d_model {args.d_model}, {fastattn.get_num_threads()} threads")


if __name__ == "__main__":
    main()
