"""Draw the loss curve of a `fastattn train` run from its metrics.jsonl (needs matplotlib:
pip install ".[viz]").

    python benchmarks/plot_loss.py OUT_DIR/metrics.jsonl loss.png [--title TEXT]
"""
import argparse
import json


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("metrics", help="a metrics.jsonl written by fastattn train")
    p.add_argument("png", help="the picture to write")
    p.add_argument("--title", default="fastattn: character GPT on Tiny Shakespeare")
    args = p.parse_args()
    import matplotlib
    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    with open(args.metrics) as f:
        records = [json.loads(line) for line in f if line.strip()]
    if not records:
        raise SystemExit(f"{args.metrics} holds no evaluations")
    steps = [r["step"] for r in records]
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    ax.plot(steps, [r["train_loss"] for r in records], marker="o", label="train")
    ax.plot(steps, [r["val_loss"] for r in records], marker="o", label="val")
    last = records[-1]
    ax.annotate(f"val {last['val_loss']:.3f}", (last["step"], last["val_loss"]),
                textcoords="offset points", xytext=(-60, 12))
    ax.set_xlabel("iteration")
    ax.set_ylabel("cross-entropy loss (nats / character)")
    ax.set_title(args.title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.png)
    print(f"wrote {args.png} ({len(records)} evaluations, last at step {last['step']})")


if __name__ == "__main__":
    main()
