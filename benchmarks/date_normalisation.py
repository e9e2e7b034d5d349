"""Date normalisation with `fastattn train-seq2seq`: dates written in several forms ("3 March 2021",
"03/03/2021", "March 3rd, 2021", ...) -> "2021-03-03", then the same model in PyTorch.

    python benchmarks/date_normalisation.py [--threads N] [--iters N] [--skip-torch]
    python benchmarks/date_normalisation.py --write-tsv dates.tsv   # the corpus alone, for the CLI

1. The corpus: days of 1900-2099, each written in one of FORMATS (picked at random). 1000 days are
   held out; 30000 pairs of the other days go to a TSV file (its last 10% validate).
2. train_seq2seq (what `fastattn train-seq2seq` runs) at d_model 128, 4 heads, 2 + 2 layers,
   feed-forward 512, dropout 0.1, label smoothing 0.1, the paper's schedule (warmup 400, lr_factor
   0.5), batch 64;
   then greedy decoding of the 1000 held-out dates: the exact-match share (the aim: >= 99%)
   and the wall times.
3. With torch installed: the same model with dropout 0 in fastattn and in PyTorch
   (torch.nn.Transformer, benchmarks/seq2seq_torch.py), the same initial weights (copied by
   state_dict name), the same 100 batches, the same schedule and AdamW, float32, step by step in
   turn (with a pause between, so that neither finds the other's threads still spinning): the
   largest difference of the two loss curves and each one's median time per step.
"""
import argparse
import datetime
import os
import sys
import tempfile
import time

import numpy as np

import fastattn
from fastattn.io.pairs import read_pairs, split_pairs
from fastattn.io.seq2seq_vocab import PAD, Seq2SeqVocab
from fastattn.models.seq2seq_decoding import greedy
from fastattn.optim import AdamW
from fastattn.training.seq2seq_checkpoint import load_seq2seq_checkpoint
from fastattn.training.seq2seq_trainer import make_batch, noam_lr, pad_batch, train_seq2seq, train_step

MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
MODEL = dict(d_model=128, nhead=4, num_encoder_layers=2, num_decoder_layers=2, dim_feedforward=512)
WARMUP, LR_FACTOR = 400, 0.5  # peak learning rate 0.5 * (128 * 400)^-0.5 = 0.0022, as the Annotated Transformer's


def _ordinal(d):
    return f"{d}{'th' if 10 <= d % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(d % 10, 'th')}"


FORMATS = [
    lambda t: f"{t.day} {MONTHS[t.month - 1]} {t.year}",            # 3 March 2021
    lambda t: f"{t.day:02d}/{t.month:02d}/{t.year}",                 # 03/03/2021
    lambda t: f"{MONTHS[t.month - 1]} {_ordinal(t.day)}, {t.year}",  # March 3rd, 2021
    lambda t: f"{_ordinal(t.day)} of {MONTHS[t.month - 1]} {t.year}",  # 3rd of March 2021
    lambda t: f"{MONTHS[t.month - 1][:3]} {t.day}, {t.year}",        # Mar 3, 2021
    lambda t: f"{t.day}.{t.month}.{t.year}",                         # 3.3.2021
    lambda t: f"{t.strftime('%A')}, {t.day} {MONTHS[t.month - 1].lower()} {t.year}",  # Wednesday, 3 march 2021
]


def corpus(seed, n_train=30000, n_test=1000):
    """(train pairs, held-out pairs): no day is in both."""
    rng = np.random.default_rng(seed)
    first, days = datetime.date(1900, 1, 1), (datetime.date(2099, 12, 31) - datetime.date(1900, 1, 1)).days + 1
    order = rng.permutation(days)
    test_days, train_days = order[:n_test], order[n_test:]

    def pair(offset):
        t = first + datetime.timedelta(days=int(offset))
        return FORMATS[rng.integers(len(FORMATS))](t), t.isoformat()

    return [pair(d) for d in rng.choice(train_days, n_train)], [pair(d) for d in test_days]


def exact_match(model, src_vocab, tgt_vocab, pairs):
    hits = 0
    for i in range(0, len(pairs), 100):
        chunk = pairs[i:i + 100]
        out = greedy(model, pad_batch([src_vocab.encode(s) for s, _ in chunk]), max_len=12)
        hits += sum(tgt_vocab.decode(o) == t for o, (_, t) in zip(out, chunk))
    return hits / len(pairs)


def against_torch(train_pairs, steps, seed):
    import torch
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from seq2seq_torch import torch_twin
    torch.set_num_threads(fastattn.get_num_threads())
    torch.manual_seed(seed)
    src_vocab = Seq2SeqVocab.from_texts(s for s, _ in train_pairs)
    tgt_vocab = Seq2SeqVocab.from_texts(t for _, t in train_pairs)
    encoded = [(src_vocab.encode(s), tgt_vocab.encode(t)) for s, t in train_pairs]
    model = fastattn.Seq2SeqTransformer(src_vocab.vocab_size, tgt_vocab.vocab_size, **MODEL, dropout=0.0, seed=seed)
    twin = torch_twin(model, torch.float32)
    opt = AdamW(model.parameters(), lr=0.0, betas=(0.9, 0.98), eps=1e-9, weight_decay=0.0)
    t_opt = torch.optim.AdamW(twin.parameters(), lr=0.0, betas=(0.9, 0.98), eps=1e-9, weight_decay=0.0)
    rng = np.random.default_rng([seed, 2])
    ours, theirs, t_ours, t_theirs = [], [], [], []
    for step in range(steps):
        batch = make_batch([encoded[i] for i in rng.integers(0, len(encoded), 64)])
        lr = noam_lr(step + 1, MODEL["d_model"], WARMUP, LR_FACTOR)
        time.sleep(0.2)  # (each engine's threads spin for a while after it returns: let them stop)
        t0 = time.perf_counter()
        ours.append(train_step(model, opt, batch, lr, 0.1))
        t_ours.append(time.perf_counter() - t0)
        time.sleep(0.2)
        t1 = time.perf_counter()
        src, tgt_in, tgt_out = (torch.from_numpy(a) for a in batch)
        for group in t_opt.param_groups:
            group["lr"] = lr
        t_opt.zero_grad()
        logits = twin(src, tgt_in)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt_out.reshape(-1),
                                                 ignore_index=PAD, label_smoothing=0.1)
        loss.backward()
        t_opt.step()
        t_theirs.append(time.perf_counter() - t1)
        theirs.append(loss.item())
    diff = np.abs(np.array(ours) - np.array(theirs))
    print(f"against PyTorch {torch.__version__} ({steps} steps, dropout 0, float32, the same batches and "
          f"weights): largest loss difference {diff.max():.2e} (step {int(diff.argmax())}; "
          f"{'within' if diff.max() <= 1e-3 else 'beyond'} 1e-3), loss {ours[0]:.4f} -> {ours[-1]:.4f} "
          f"(torch {theirs[-1]:.4f}); median time per step: fastattn {1e3 * np.median(t_ours):.1f} ms, "
          f"torch {1e3 * np.median(t_theirs):.1f} ms ({np.median(t_theirs) / np.median(t_ours):.2f}x), "
          f"{fastattn.get_num_threads()} threads", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int)
    parser.add_argument("--iters", type=int, default=2000, help="training iterations (default: %(default)s)")
    parser.add_argument("--torch-steps", type=int, default=100)
    parser.add_argument("--skip-torch", action="store_true")
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--out", help="training directory (default: a temporary one)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write-tsv", metavar="FILE", help="write the training corpus to FILE and stop")
    args = parser.parse_args()
    if args.threads:
        fastattn.set_num_threads(args.threads)
    train_pairs, test_pairs = corpus(args.seed)
    if args.write_tsv:
        with open(args.write_tsv, "w", encoding="utf-8") as f:
            f.writelines(f"{s}\t{t}\n" for s, t in train_pairs)
        print(f"wrote {len(train_pairs)} pairs to {args.write_tsv}")
        return
    print(f"corpus: {len(train_pairs)} pairs (the last 10% validate), {len(test_pairs)} held-out days, e.g. "
          + "; ".join(f"{s!r} -> {t!r}" for s, t in train_pairs[:3]), flush=True)
    if not args.skip_torch:
        try:
            import torch  # noqa: F401
        except ImportError:
            print("torch is not installed: no comparison")
        else:
            against_torch(split_pairs(train_pairs)[0], args.torch_steps, args.seed)
    if args.skip_training:
        return
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or os.path.join(tmp, "out")
        data = os.path.join(tmp, "dates.tsv")
        with open(data, "w", encoding="utf-8") as f:
            f.writelines(f"{s}\t{t}\n" for s, t in train_pairs)
        assert read_pairs(data) == train_pairs
        t0 = time.perf_counter()
        record = train_seq2seq(data, out, progress=False, **MODEL, dropout=0.1, label_smoothing=0.1,
                               warmup=WARMUP, lr_factor=LR_FACTOR, batch_size=64, max_iters=args.iters,
                               eval_interval=500, eval_pairs=500, seed=args.seed)
        train_s = time.perf_counter() - t0
        ckpt = load_seq2seq_checkpoint(os.path.join(out, "ckpt.npz"))
        t0 = time.perf_counter()
        acc = exact_match(ckpt.build_model(), ckpt.src_vocab, ckpt.tgt_vocab, test_pairs)
        decode_s = time.perf_counter() - t0
    print(f"date normalisation: exact match {100 * acc:.1f}% of {len(test_pairs)} held-out dates (greedy; "
          f"{'meets' if acc >= 0.99 else 'misses'} the >= 99% aim); train-seq2seq {args.iters} iterations of 64 "
          f"pairs: {train_s:.0f} s wall ({1e3 * train_s / max(args.iters, 1):.0f} ms/iteration with the "
          f"evaluations), val loss {record['val_loss']:.4f}; decoding: {decode_s:.1f} s; "
          f"{fastattn.get_num_threads()} threads")


if __name__ == "__main__":
    main()
