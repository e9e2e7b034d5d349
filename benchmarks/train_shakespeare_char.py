"""Time nanoGPT's Tiny Shakespeare (character) training in fastattn and, when PyTorch is installed,
in an equivalent nanoGPT-style PyTorch module started from the same weights, at the same threads.

    python benchmarks/train_shakespeare_char.py [--threads N] [--iters N] [--data FILE]
    python benchmarks/train_shakespeare_char.py --full-run [--threads N]
    python benchmarks/train_shakespeare_char.py --seeds 1337,1,2 [--threads N]

The default mode times single iterations: forward + backward + gradient clipping (global norm
1.0) + AdamW, with nanoGPT's configuration (4 layers, 4 heads, 128 channels, block 64, batch 12,
no bias, no dropout, weight decay 0.1 on 2-D weights, betas (0.9, 0.99)). The batches are
random windows of --data (a text file, characters are the tokens; default: Tiny Shakespeare,
which ships with fastattn; `--data random`: random tokens over 65 symbols, as fast). Compiled fastattn and PyTorch run in
turn, iteration by iteration, so that the rest of the machine weighs on both alike; medians
are reported, then the reference backend's, timed alone.

--full-run trains each of them for 2000 iterations (nanoGPT's warmup + cosine schedule, the
trainer's own step for fastattn) on the same batches from the same initial weights, one after
the other, then prints the wall time and the validation loss of each (200 batches, the same ones).

--seeds runs fastattn's trainer (fastattn.train, nanoGPT's configuration: what `fastattn train`
does) once per seed, and prints each run's final validation loss (200 batches) and their spread:
how far the seed alone moves the result.
"""
import argparse
import tempfile
import time

import numpy as np

import fastattn
from fastattn import GPT, GPTConfig
from fastattn.io.tokenizer import CharTokenizer
from fastattn.training.datasets import read_text
from fastattn.training.trainer import TrainConfig, get_batch, get_lr, train, train_step

try:
    import torch
except ImportError:
    torch = None

CONFIG = dict(n_layer=4, n_head=4, n_embd=128, block_size=64, dropout=0.0, bias=False)
BATCH, LR, BETAS, WEIGHT_DECAY, GRAD_CLIP = 12, 1e-3, (0.9, 0.99), 0.1, 1.0


def fastattn_runner(model):
    """One fastattn training iteration as a callable (x, y, lr) -> loss: the trainer's own step."""
    optimizer = model.configure_optimizers(WEIGHT_DECAY, LR, BETAS)
    return lambda x, y, lr=LR: train_step(model, optimizer, [(x, y)], lr, GRAD_CLIP)


def torch_model(weights):
    """nanoGPT's model.py, condensed (same module names), holding a copy of `weights`
    (a fastattn state dict: the names are nanoGPT's). model(idx, targets) is the mean loss;
    model(idx) the logits of the last position (B, V)."""
    nn, F = torch.nn, torch.nn.functional
    vocab, C = weights["transformer.wte.weight"].shape
    H, T = CONFIG["n_head"], CONFIG["block_size"]

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.c_attn, self.c_proj = nn.Linear(C, 3 * C, bias=False), nn.Linear(C, C, bias=False)

        def forward(self, x):
            B, T_, _ = x.shape
            q, k, v = (a.view(B, T_, H, C // H).transpose(1, 2) for a in self.c_attn(x).split(C, dim=2))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            return self.c_proj(y.transpose(1, 2).contiguous().view(B, T_, C))

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.c_fc, self.c_proj = nn.Linear(C, 4 * C, bias=False), nn.Linear(4 * C, C, bias=False)

        def forward(self, x):
            return self.c_proj(F.gelu(self.c_fc(x)))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1, self.attn = nn.LayerNorm(C, bias=False), Attention()
            self.ln_2, self.mlp = nn.LayerNorm(C, bias=False), MLP()

        def forward(self, x):
            x = x + self.attn(self.ln_1(x))
            return x + self.mlp(self.ln_2(x))

    class TorchGPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.transformer = nn.ModuleDict(dict(
                wte=nn.Embedding(vocab, C), wpe=nn.Embedding(T, C),
                h=nn.ModuleList(Block() for _ in range(CONFIG["n_layer"])), ln_f=nn.LayerNorm(C, bias=False)))

        def forward(self, idx, targets=None):
            tr = self.transformer
            x = tr.wte(idx) + tr.wpe(torch.arange(idx.shape[1]))
            for block in tr.h:
                x = block(x)
            if targets is None:  # inference: the last position's logits only, as nanoGPT
                return tr.ln_f(x[:, -1]) @ tr.wte.weight.T
            logits = tr.ln_f(x) @ tr.wte.weight.T  # tied head
            return F.cross_entropy(logits.view(-1, vocab), targets.reshape(-1), ignore_index=-1)

    model = TorchGPT()
    model.load_state_dict({name: torch.from_numpy(w.copy()) for name, w in weights.items()})
    return model


def torch_runner(model):
    """One PyTorch training iteration as a callable (x, y, lr) -> loss, as nanoGPT's train.py."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                             {"params": no_decay, "weight_decay": 0.0}], lr=LR, betas=BETAS)

    def run(x, y, lr=LR):
        for group in opt.param_groups:
            group["lr"] = lr
        loss = model(torch.from_numpy(x), torch.from_numpy(y))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        opt.step()
        return loss.item()
    return run


def time_iterations(args, tokens, vocab):
    rng = np.random.default_rng(1)
    model = GPT(GPTConfig(vocab_size=vocab, **CONFIG), seed=0)
    runners = {}
    if "compiled" in fastattn.available_backends():
        runners["fastattn compiled"] = fastattn_runner(model)
    if torch is not None:
        runners["pytorch " + torch.__version__] = torch_runner(torch_model(model.state_dict()))
    times = {name: [] for name in runners}
    for i in range(args.iters + 3):  # 3 warm-up iterations
        x, y = get_batch(tokens, CONFIG["block_size"], BATCH, rng)
        for name, run in runners.items():
            with fastattn.use_backend("compiled"):
                t0 = time.perf_counter()
                run(x, y)
                if i >= 3:
                    times[name].append(time.perf_counter() - t0)
    with fastattn.use_backend("reference"):  # slower: fewer iterations, timed alone
        ref, ref_times = fastattn_runner(GPT(GPTConfig(vocab_size=vocab, **CONFIG), seed=0)), []
        for i in range(min(args.iters, 10) + 1):
            x, y = get_batch(tokens, CONFIG["block_size"], BATCH, rng)
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


def full_run(args, tokens, vocab):
    cfg = TrainConfig(**CONFIG, batch_size=BATCH, max_iters=2000, learning_rate=LR, beta2=BETAS[1],
                      weight_decay=WEIGHT_DECAY, grad_clip=GRAD_CLIP)
    n = int(0.9 * len(tokens))
    train, val = tokens[:n], tokens[n:]
    model = GPT(cfg.model_config(vocab), seed=cfg.seed)
    runs = {"fastattn compiled": (fastattn_runner(model), lambda x, y: model(x, y)[1])}
    if torch is not None:
        tmodel = torch_model(model.state_dict())

        def torch_loss(x, y):
            with torch.no_grad():
                return tmodel(torch.from_numpy(x), torch.from_numpy(y)).item()
        runs["pytorch " + torch.__version__] = (torch_runner(tmodel), torch_loss)
    print(f"# {args.threads} threads; {cfg.max_iters} iterations from the same weights on the same "
          "batches; val loss over 200 batches")
    for name, (step, loss) in runs.items():
        rng = np.random.default_rng(cfg.seed)
        with fastattn.use_backend("compiled"):
            t0 = time.perf_counter()
            for it in range(cfg.max_iters):
                step(*get_batch(train, cfg.block_size, cfg.batch_size, rng), get_lr(it, cfg))
            wall = time.perf_counter() - t0
            eval_rng = np.random.default_rng(0)
            val_loss = np.mean([loss(*get_batch(val, cfg.block_size, cfg.batch_size, eval_rng))
                                for _ in range(200)])
        print(f"{name:24s} {wall:8.1f} s  val loss {val_loss:.4f}")


def seed_sweep(args):
    finals = []
    print(f"# {args.threads} threads; fastattn.train with nanoGPT's configuration, one run per seed; "
          "val loss at step 2000 over 200 batches")
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as out:
            t0 = time.perf_counter()
            last = train(args.data, out, progress=False, log=lambda line: None, seed=seed,
                         eval_interval=2000, eval_iters=200)
        finals.append(last["val_loss"])
        print(f"seed {seed:6d}  val loss {last['val_loss']:.4f}  train loss {last['train_loss']:.4f}  "
              f"{time.perf_counter() - t0:6.1f} s", flush=True)
    v = np.array(finals)
    print(f"{len(v)} seeds: mean {v.mean():.4f}, std {v.std(ddof=1) if len(v) > 1 else 0:.4f}, "
          f"min {v.min():.4f}, max {v.max():.4f}; {int((v <= 1.88).sum())} of {len(v)} <= 1.88")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=fastattn.get_num_threads())
    p.add_argument("--iters", type=int, default=30, help="timed iterations per runner")
    p.add_argument("--data", default="shakespeare",
                   help="a text file (default: Tiny Shakespeare, from the package; 'random': random tokens)")
    p.add_argument("--full-run", action="store_true", help="train 2000 iterations each (needs a text)")
    p.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")],
                   help="comma-separated seeds: one fastattn training run per seed (needs a text)")
    args = p.parse_args()
    fastattn.set_num_threads(args.threads, adaptive=False)  # (exactly --threads, as torch)
    if torch is not None:
        torch.set_num_threads(args.threads)
    if args.data != "random":
        text = read_text(args.data)
        tok = CharTokenizer.from_text(text)
        tokens, vocab = tok.encode(text), tok.vocab_size
    elif args.full_run or args.seeds:
        p.error("--full-run and --seeds need a text (--data FILE, or the default)")
    else:
        vocab = 65
        tokens = np.random.default_rng(0).integers(0, vocab, 200_000)
    if args.seeds:
        fastattn.set_backend("compiled")
        seed_sweep(args)
    else:
        (full_run if args.full_run else time_iterations)(args, tokens, vocab)


if __name__ == "__main__":
    main()
