"""A 2-D map of sentence embeddings (`fastattn viz embeddings`): their first two principal components.

    coords, explained = pca_2d(vectors)          # (N, 2), the share of the variance of each axis
    write_map(vectors, labels, "map.html")       # or map.png (needs matplotlib)

PCA by NumPy's SVD of the centred rows (no scikit-learn): coords = (X - mean) V[:, :2], each axis's
sign fixed so that its largest loading is positive (scikit-learn's svd_flip convention), so that
the map does not flip between runs. The .html map is one self-contained SVG page (a point's label
beside it and in its tooltip); the .png is drawn by matplotlib (the viz extra).
"""
import html
import os

import numpy as np


def read_vectors(path):
    """A (N, D) float64 array from a .npy file (no pickles), or ValueError naming the file."""
    try:
        a = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read {path} as a .npy array: {e}") from None
    if not isinstance(a, np.ndarray) or a.ndim != 2 or a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"{path} must hold a 2-D (rows, dim) array with at least one row, got shape "
                         f"{getattr(a, 'shape', None)}")
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise ValueError(f"{path} must hold numbers, got dtype {a.dtype}")
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise ValueError(f"{path} holds NaN or infinite values (row {int(np.flatnonzero(~np.isfinite(a).all(1))[0])})")
    return a


def read_labels(path, n):
    """The lines of a UTF-8 text file, one label per row; ValueError unless there are n."""
    try:
        with open(path, encoding="utf-8") as f:
            labels = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read the labels {path}: {getattr(e, 'strerror', None) or e}") from None
    if len(labels) != n:
        raise ValueError(f"{path} has {len(labels)} lines: the vectors have {n} rows (one label a row)")
    return labels


def pca_2d(vectors):
    """(coords (N, 2), explained (2,)): the rows of vectors (N, D) on their first two principal
    axes, and the share of the total variance along each (0 where there is none: a single row,
    one dimension, or identical rows)."""
    x = np.asarray(vectors, dtype=np.float64)
    centred = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)  # vt: (min(N, D), D), rows the axes
    k = min(2, vt.shape[0])
    axes = vt[:k]
    signs = np.sign(axes[np.arange(k), np.abs(axes).argmax(axis=1)])
    axes = axes * np.where(signs == 0, 1, signs)[:, None]
    coords = np.zeros((x.shape[0], 2))
    coords[:, :k] = centred @ axes.T
    total = float(np.sum(s ** 2))
    explained = np.zeros(2)
    if total > 0:
        explained[:k] = s[:k] ** 2 / total
    return coords, explained


def _svg_page(coords, labels, explained, title):
    w, h, pad = 900, 700, 60
    lo, hi = coords.min(axis=0), coords.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    px = pad + (coords[:, 0] - lo[0]) / span[0] * (w - 2 * pad)
    py = h - pad - (coords[:, 1] - lo[1]) / span[1] * (h - 2 * pad)
    dots = []
    for i, (x, y) in enumerate(zip(px, py)):
        label = html.escape(labels[i]) if labels else str(i)
        dots.append(f'<g class="point"><title>{label}</title><circle cx="{x:.1f}" cy="{y:.1f}" r="4" '
                    f'fill="#1f77b4"/><text x="{x + 6:.1f}" y="{y + 4:.1f}">{label}</text></g>')
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body {{ font-family: sans-serif; margin: 1.5em; }} svg text {{ font-size: 11px; }}</style></head>
<body><h1>{html.escape(title)}</h1>
<p>{len(coords)} vectors; PC 1 holds {100 * explained[0]:.1f}% of the variance, PC 2 {100 * explained[1]:.1f}%.</p>
<svg viewBox="0 0 {w} {h}" width="{w}" height="{h}" xmlns="http://www.w3.org/2000/svg">
<rect x="0" y="0" width="{w}" height="{h}" fill="#fff" stroke="#ccc"/>
<text x="{w / 2}" y="{h - 15}" text-anchor="middle">PC 1</text>
<text x="15" y="{h / 2}" text-anchor="middle" transform="rotate(-90 15 {h / 2})">PC 2</text>
{''.join(dots)}
</svg></body></html>
"""


def write_map(vectors, labels, out, title="sentence embeddings: PCA"):
    """Writes the PCA map of vectors (N, D) with labels (N strings, or None: the row numbers) to
    out: a .html page or a .png picture (by its suffix; anything else is a ValueError)."""
    out = os.fspath(out)
    kind = os.path.splitext(out)[1].lower()
    if kind not in (".html", ".png"):
        raise ValueError(f"--out must end in .html or .png, got {out}")
    coords, explained = pca_2d(vectors)
    if kind == ".html":
        with open(out, "w", encoding="utf-8") as f:
            f.write(_svg_page(coords, labels, explained, title))
        return out
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("drawing a .png needs matplotlib: pip install '.[viz]' in fastattn's clone "
                          "(or write a .html map)") from None
    fig, ax = plt.subplots(figsize=(8, 6.5))
    ax.scatter(coords[:, 0], coords[:, 1], s=18)
    for i, (x, y) in enumerate(coords):
        ax.annotate(labels[i] if labels else str(i), (x, y), textcoords="offset points", xytext=(4, 3), fontsize=8)
    ax.set_xlabel(f"PC 1 ({100 * explained[0]:.1f}% of the variance)")
    ax.set_ylabel(f"PC 2 ({100 * explained[1]:.1f}%)")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
