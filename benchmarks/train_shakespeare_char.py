"""Time one training iteration of nanoGPT's Tiny Shakespeare (character) model in fastattn and,
when PyTorch is installed, in an equivalent nanoGPT-style PyTorch module, at the same threads.

    python benchmarks/train_shakespeare_char.py [--threads N] [--iters N] [--data FILE]

An iteration is forward + backward + gradient clipping (global norm 1.0) + AdamW, with
nanoGPT's configuration (4 layers, 4 heads, 128 channels, block 64, batch 12, no bias, no
dropout, weight decay 0.1 on 2-D weights, betas (0.9, 0.99)). The batches are random windows of
--data (a text file; characters are the tokens) or, without it, random tokens over 65 symbols:
the time does not depend on the text. Compiled fastattn and PyTorch run in turn, iteration by
iteration, so that the rest of the machine weighs on both alike; medians are reported.
"""
import argparse
import math
import time

import numpy as np

import fastattn
from fastattn import GPT, GPTConfig
from fastattn import functional as F

try:
    import torch
except ImportError:
    torch = None

CONFIG = dict(n_layer=4, n_head=4, n_embd=128, block_size=64, dropout=0.0, bias=False)
BATCH, LR, BETAS, WEIGHT_DECAY, GRAD_CLIP = 12, 1e-3, (0.9, 0.99), 0.1, 1.0


def batches(tokens, vocab, seed):
    rng = np.random.default_rng(seed)
    T = CONFIG["block_size"]
    while True:
        starts = rng.integers(0, len(tokens) - T - 1, BATCH)
        yield (np.stack([tokens[s:s + T] for s in starts]),
               np.stack([tokens[s + 1:s + T + 1] for s in starts]))


def fastattn_step(vocab):
    """One fastattn training iteration as a callable (x, y) -> loss."""
    model = GPT(GPTConfig(vocab_size=vocab, **CONFIG), seed=0)
    params = model.parameters()
    state = [(np.zeros_like(p.data), np.zeros_like(p.data)) for p in params]
    step = [0]

    def run(x, y):
        model.zero_grad()
        _, loss = model(x, y)
        model.backward()
        norm = math.sqrt(sum(float(np.vdot(p.grad, p.grad)) for p in params))
        clip = min(1.0, GRAD_CLIP / (norm + 1e-6))
        step[0] += 1
        for p, (m, v) in zip(params, state):
            if clip < 1:
                p.grad *= clip
            F.adamw_step(p.data, p.grad, m, v, step[0], lr=LR, beta1=BETAS[0], beta2=BETAS[1],
                         weight_decay=WEIGHT_DECAY if p.data.ndim == 2 else 0.0)
        return loss
    return run


def torch_step(vocab):
    """The same model and iteration in PyTorch (nanoGPT's model.py, condensed), or None."""
    if torch is None:
        return None
    nn = torch.nn
    C, H, T = CONFIG["n_embd"], CONFIG["n_head"], CONFIG["block_size"]

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1, self.ln_2 = nn.LayerNorm(C, bias=False), nn.LayerNorm(C, bias=False)
            self.c_attn, self.attn_proj = nn.Linear(C, 3 * C, bias=False), nn.Linear(C, C, bias=False)
            self.c_fc, self.mlp_proj = nn.Linear(C, 4 * C, bias=False), nn.Linear(4 * C, C, bias=False)

        def forward(self, x):
            B, T_, _ = x.shape
            q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
            q, k, v = (a.view(B, T_, H, C // H).transpose(1, 2) for a in (q, k, v))
            y = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.attn_proj(y.transpose(1, 2).contiguous().view(B, T_, C))
            return x + self.mlp_proj(nn.functional.gelu(self.c_fc(self.ln_2(x))))

    class TorchGPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte, self.wpe = nn.Embedding(vocab, C), nn.Embedding(T, C)
            self.h = nn.ModuleList(Block() for _ in range(CONFIG["n_layer"]))
            self.ln_f = nn.LayerNorm(C, bias=False)

        def forward(self, idx, targets):
            x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
            for block in self.h:
                x = block(x)
            logits = self.ln_f(x) @ self.wte.weight.T  # tied head
            return nn.functional.cross_entropy(logits.view(-1, vocab), targets.view(-1), ignore_index=-1)

    torch.manual_seed(0)
    model = TorchGPT()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                             {"params": no_decay, "weight_decay": 0.0}], lr=LR, betas=BETAS)

    def run(x, y):
        loss = model(torch.from_numpy(x), torch.from_numpy(y))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        opt.step()
        return loss.item()
    return run


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=fastattn.get_num_threads())
    p.add_argument("--iters", type=int, default=30, help="timed iterations per runner")
    p.add_argument("--data", help="a text file (default: random tokens over 65 symbols)")
    args = p.parse_args()
    fastattn.set_num_threads(args.threads)
    if torch is not None:
        torch.set_num_threads(args.threads)
    if args.data:
        text = open(args.data, encoding="utf-8").read()
        chars = sorted(set(text))
        tokens, vocab = np.array([chars.index(c) for c in text[:200_000]], dtype=np.int64), len(chars)
    else:
        vocab = 65
        tokens = np.random.default_rng(0).integers(0, vocab, 200_000)

    runners = {}
    if "compiled" in fastattn.available_backends():
        runners["fastattn compiled"] = fastattn_step(vocab)
    if torch is not None:
        runners["pytorch " + torch.__version__] = torch_step(vocab)
    times = {name: [] for name in runners}
    data = batches(tokens, vocab, seed=1)
    for i in range(args.iters + 3):  # 3 warm-up iterations
        x, y = next(data)
        for name, run in runners.items():
            with fastattn.use_backend("compiled"):
                t0 = time.perf_counter()
                run(x, y)
                if i >= 3:
                    times[name].append(time.perf_counter() - t0)
    with fastattn.use_backend("reference"):  # slower: fewer iterations, timed alone
        ref, ref_times = fastattn_step(vocab), []
        for i in range(min(args.iters, 10) + 1):
            x, y = next(data)
            t0 = time.perf_counter()
            ref(x, y)
            if i:
                ref_times.append(time.perf_counter() - t0)
    times["fastattn reference"] = ref_times

    print(f"# {args.threads} threads, batch {BATCH} x block {CONFIG['block_size']}, vocab {vocab}; "
          "median ms per iteration (forward + backward + clip + AdamW)")
    compiled = np.median(times["fastattn compiled"]) * 1e3 if "fastattn compiled" in times else None
    for name, t in times.items():
        ms = np.median(t) * 1e3
        ratio = f"  ({ms / compiled:.2f}x compiled's time)" if compiled and name != "fastattn compiled" else ""
        print(f"{name:24s} {ms:8.2f} ms{ratio}")


if __name__ == "__main__":
    main()
