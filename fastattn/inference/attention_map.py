"""Heat maps of a GPT's attention weights over a prompt (`fastattn attention-map`): row i shows
how much token i attends to each token before it. Needs matplotlib (the viz extra: pip install '.[viz]')."""
import numpy as np


def token_labels(tokenizer, ids):
    """One printable label per token: its text, with spaces, newlines and tabs made visible."""
    labels = []
    for i in ids:
        text = tokenizer.decode([int(i)])
        labels.append(text.replace(" ", "\u2423").replace("\n", "\\n").replace("\t", "\\t") or "\u2205")
    return labels


def plot(weights, labels, heads, layer, path):
    """weights (H, T, T) of one layer; draws the heads listed in `heads` (a grid when several)
    into the image file `path`."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("drawing attention maps needs matplotlib: pip install '.[viz]' in fastattn's "
                          "clone") from None
    cols = int(np.ceil(np.sqrt(len(heads))))  # 4 heads: 2 x 2; 12: 4 x 3
    rows = (len(heads) + cols - 1) // cols
    T = len(labels)
    side = max(3.0, 0.22 * T + 1.5)
    fig, axes = plt.subplots(rows, cols, figsize=(side * cols, side * rows), squeeze=False)
    for ax in axes.flat[len(heads):]:
        ax.axis("off")
    for ax, h in zip(axes.flat, heads):
        image = ax.imshow(weights[h], cmap="viridis", vmin=0, vmax=1)
        ax.set_title(f"layer {layer}, head {h}")
        ax.set_xticks(np.arange(T), labels, rotation=90, fontsize=8)
        ax.set_yticks(np.arange(T), labels, fontsize=8)
        ax.set_xlabel("key (attended to)")
        ax.set_ylabel("query")
    fig.colorbar(image, ax=axes, shrink=0.6, label="attention weight")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
