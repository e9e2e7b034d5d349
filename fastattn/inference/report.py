"""An HTML report of a `fastattn train` run (`fastattn report RUN_DIR --out report.html`).

    html = build_report("out-shakespeare-char", prompt="ROMEO:", sample_tokens=200)

One self-contained file that opens offline (no CDN, no server, no external file): the loss curves
(train and val, from RUN_DIR/metrics.jsonl) and the learning-rate schedule (the run's, step by step,
from RUN_DIR/config.json) as inline SVG; the config; the throughput between evaluations (tokens per
second of elapsed time, one process's tokens: batch_size x block_size x gradient_accumulation_steps
per iteration); samples generated from the checkpoint (best.npz, else ckpt.npz); and the attention
weights of every layer and head over the first sample (its first MAP_TOKENS tokens), drawn on a
canvas by a few lines of inline JavaScript, with a layer / head picker. The page's URL may name
the map to show first: report.html#layer=1&head=2.
"""
import html
import json
import math
import os

import numpy as np

from fastattn.training.checkpoint import checkpoint_file, load_checkpoint
from fastattn.training.trainer import TrainConfig, get_lr

_MAX_POINTS = 400  # points of the learning-rate curve (every step up to this many steps, else sampled)
MAP_TOKENS = 64  # the attention maps' tokens, at most (a map is MAP_TOKENS^2 numbers per head)


def read_run(run_dir):
    """(settings dict from config.json, records from metrics.jsonl) of a `fastattn train` output,
    or ValueError / FileNotFoundError naming the file that is missing or malformed."""
    run_dir = os.fspath(run_dir)
    if not os.path.isdir(run_dir):
        raise FileNotFoundError(f"{run_dir} is not a directory (a `fastattn train` output directory)")
    paths = {name: os.path.join(run_dir, name) for name in ("config.json", "metrics.jsonl")}
    for name, path in paths.items():
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{run_dir} has no {name}: it is not a `fastattn train` output directory")
    from fastattn.io.hf_files import read_json
    settings = read_json(paths["config.json"], dict)
    records = []
    with open(paths["metrics.jsonl"], encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{paths['metrics.jsonl']} line {n} is not JSON: {e}") from None
            if not isinstance(r, dict) or not all(isinstance(r.get(k), (int, float)) for k in
                                                  ("step", "train_loss", "val_loss", "lr", "elapsed_s")):
                raise ValueError(f"{paths['metrics.jsonl']} line {n} is not an evaluation record "
                                 "(step, train_loss, val_loss, lr, elapsed_s)")
            records.append(r)
    if not records:
        raise ValueError(f"{paths['metrics.jsonl']} holds no evaluations yet")
    return settings, records


def throughput(records, cfg):
    """[(step, tokens per second)] between consecutive evaluations (of one process)."""
    tokens_per_iter = cfg.batch_size * cfg.block_size * cfg.gradient_accumulation_steps
    out = []
    for a, b in zip(records, records[1:]):
        dt = b["elapsed_s"] - a["elapsed_s"]
        if b["step"] > a["step"] and dt > 0:
            out.append((b["step"], (b["step"] - a["step"]) * tokens_per_iter / dt))
    return out


def _svg_chart(series, x_label, y_label, width=560, height=300):
    """An inline SVG line chart: series is [(name, colour, [(x, y), ...])]; non-finite y are left out."""
    series = [(name, colour, [p for p in s if math.isfinite(p[1])]) for name, colour, s in series]
    pts = [p for _, _, s in series for p in s]
    if not pts:
        return "<p>(nothing to draw)</p>"
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y0, y1 = min(p[1] for p in pts), max(p[1] for p in pts)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1e-9 + abs(y0) * 0.1)
    left, right, top, bottom = 80, 16, 12, 40
    sx = lambda x: left + (x - x0) / (x1 - x0) * (width - left - right)  # noqa: E731
    sy = lambda y: top + (y1 - y) / (y1 - y0) * (height - top - bottom)  # noqa: E731
    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
             f'xmlns="http://www.w3.org/2000/svg" role="img">',
             f'<rect x="{left}" y="{top}" width="{width - left - right}" height="{height - top - bottom}" '
             'fill="#fff" stroke="#999"/>']
    for i in range(5):  # ticks
        xv = x0 + (x1 - x0) * i / 4
        yv = y0 + (y1 - y0) * i / 4
        label = f"{yv:.3g}"
        ypix = top + (1 - i / 4) * (height - top - bottom)
        parts.append(f'<text x="{sx(xv):.1f}" y="{height - bottom + 16}" text-anchor="middle">{xv:.0f}</text>')
        parts.append(f'<text x="{left - 6}" y="{ypix + 4:.1f}" text-anchor="end">{label}</text>')
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{ypix:.1f}" y2="{ypix:.1f}" stroke="#eee"/>')
    parts.append(f'<text x="{(left + width - right) / 2}" y="{height - 6}" text-anchor="middle">'
                 f'{html.escape(x_label)}</text>')
    parts.append(f'<text x="14" y="{(top + height - bottom) / 2}" text-anchor="middle" '
                 f'transform="rotate(-90 14 {(top + height - bottom) / 2})">{html.escape(y_label)}</text>')
    for k, (name, colour, s) in enumerate(series):
        if not s:
            continue
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in s)
        parts.append(f'<polyline class="series" fill="none" stroke="{colour}" stroke-width="2" points="{path}"/>')
        if len(s) == 1:
            parts.append(f'<circle cx="{sx(s[0][0]):.1f}" cy="{sy(s[0][1]):.1f}" r="3" fill="{colour}"/>')
        parts.append(f'<text x="{width - right - 8}" y="{top + 16 + 16 * k}" text-anchor="end" '
                     f'fill="{colour}">{html.escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _token_labels(tokenizer, ids):
    from fastattn.inference.attention_map import token_labels
    return token_labels(tokenizer, ids)


def build_report(run_dir, prompt="\n", sample_tokens=200, num_samples=2, seed=1337, temperature=0.8, top_k=200):
    """The report's HTML text (see the module's doc). prompt (its last block_size tokens) starts
    the samples; the attention maps are drawn over the first sample's first MAP_TOKENS tokens (the
    prompt's, with num_samples=0)."""
    settings, records = read_run(run_dir)
    cfg = TrainConfig(**{k: v for k, v in settings.items() if k in TrainConfig.__dataclass_fields__})
    steps = sorted({round(i * cfg.max_iters / (_MAX_POINTS - 1)) for i in range(_MAX_POINTS)}
                   if cfg.max_iters >= _MAX_POINTS else range(cfg.max_iters + 1))
    loss_svg = _svg_chart([("train", "#1f77b4", [(r["step"], r["train_loss"]) for r in records]),
                           ("val", "#d62728", [(r["step"], r["val_loss"]) for r in records])],
                          "iteration", "cross-entropy loss")
    lr_svg = _svg_chart([(cfg.lr_schedule, "#2ca02c", [(s, get_lr(s, cfg)) for s in steps])],
                        "iteration", "learning rate")
    speed = throughput(records, cfg)
    speed_svg = _svg_chart([("tokens / s", "#9467bd", speed)], "iteration", "tokens per second") if speed else \
        "<p>(one evaluation only: no interval to measure)</p>"

    samples = []
    ckpt_path = checkpoint_file(os.fspath(run_dir))
    ckpt = load_checkpoint(ckpt_path)
    if ckpt.tokenizer is None:
        raise ValueError(f"{ckpt_path} holds no tokenizer: cannot write samples or label the attention maps")
    model, tok = ckpt.build_model(), ckpt.tokenizer
    ids = tok.encode(prompt)[-model.config.block_size:]
    if len(ids) == 0:
        raise ValueError("the prompt is empty: give at least one character")
    drawn = ids
    for i in range(num_samples):
        out = model.generate(ids[None], sample_tokens, temperature=temperature, top_k=top_k or None, seed=seed + i)
        samples.append(tok.decode(out[0]))
        if i == 0:
            drawn = out[0]
    # the attention over the first sample (the prompt without samples), its first MAP_TOKENS tokens
    drawn = drawn[:min(MAP_TOKENS, model.config.block_size)]
    weights = model.attention_maps(drawn[None])  # n_layer x (1, n_head, T, T)
    maps = {"labels": _token_labels(tok, drawn),
            "weights": [[np.round(w[0, h], 4).tolist() for h in range(w.shape[1])] for w in weights]}

    last = records[-1]
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(json.dumps(v))}</td></tr>"
                   for k, v in settings.items())
    summary = (f"step {last['step']} of {cfg.max_iters}: train loss {last['train_loss']:.4f}, val loss "
               f"{last['val_loss']:.4f}, best val {min(r['val_loss'] for r in records):.4f}; "
               f"{last['elapsed_s']:.1f} s of training")
    if speed:
        summary += f"; {speed[-1][1]:.0f} tokens/s in the last interval"
    data = json.dumps(maps).replace("</", "<\\/")  # (no "</script>" inside the script)
    sample_html = "".join(f"<h3>sample {i + 1}</h3><pre class=\"sample\">{html.escape(s)}</pre>"
                          for i, s in enumerate(samples))
    return _PAGE.format(title=html.escape(f"fastattn report: {os.path.basename(os.path.abspath(run_dir))}"),
                        summary=html.escape(summary), loss=loss_svg, lr=lr_svg, speed=speed_svg, config=rows,
                        checkpoint=html.escape(os.path.basename(ckpt_path)), samples=sample_html,
                        prompt=html.escape(repr(prompt)), data=data, script=_SCRIPT)


def write_report(run_dir, out, **kwargs):
    """Writes build_report(run_dir, **kwargs) to the file out (UTF-8)."""
    text = build_report(run_dir, **kwargs)
    with open(out, "w", encoding="utf-8") as f:
        f.write(text)
    return out


_SCRIPT = r"""
"use strict";
const data = JSON.parse(document.getElementById("maps").textContent);
const layerSel = document.getElementById("layer"), headSel = document.getElementById("head");
const canvas = document.getElementById("map"), ctx = canvas.getContext("2d", {willReadFrequently: true});
function option(sel, n, prefix) {
  for (let i = 0; i < n; i++) {
    const o = document.createElement("option"); o.value = i; o.text = prefix + " " + i; sel.add(o);
  }
}
function colour(w) {  // white (0) to dark blue (1)
  const t = Math.max(0, Math.min(1, w));
  return "rgb(" + Math.round(255 - 230 * t) + "," + Math.round(255 - 180 * t) + "," + Math.round(255 - 90 * t) + ")";
}
function draw() {
  const m = data.weights[+layerSel.value][+headSel.value], labels = data.labels, T = labels.length;
  const margin = 60, cell = Math.max(6, Math.min(28, Math.floor(560 / T)));
  canvas.width = margin + cell * T + 10; canvas.height = margin + cell * T + 10;
  ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, canvas.width, canvas.height);
  for (let i = 0; i < T; i++) for (let j = 0; j < T; j++) {
    ctx.fillStyle = colour(m[i][j]); ctx.fillRect(margin + j * cell, margin + i * cell, cell, cell);
  }
  ctx.fillStyle = "#000"; ctx.font = Math.min(12, cell) + "px monospace"; ctx.textAlign = "right";
  for (let i = 0; i < T; i++) {
    ctx.fillText(labels[i], margin - 4, margin + i * cell + cell * 0.75);
    ctx.save(); ctx.translate(margin + i * cell + cell * 0.75, margin - 4); ctx.rotate(-Math.PI / 2);
    ctx.textAlign = "left"; ctx.fillText(labels[i], 0, 0); ctx.restore();
  }
  canvas.dataset.shown = "layer " + layerSel.value + " head " + headSel.value;
  let sum = 0;  // a digest of the pixels drawn (what a test compares between two maps)
  const px = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
  for (let i = 0; i < px.length; i++) sum = (sum * 31 + px[i]) % 1000000007;
  canvas.dataset.digest = sum;
  location.hash = "layer=" + layerSel.value + "&head=" + headSel.value;
}
option(layerSel, data.weights.length, "layer");
option(headSel, data.weights[0].length, "head");
const asked = new URLSearchParams(location.hash.slice(1));
layerSel.addEventListener("change", draw);
headSel.addEventListener("change", draw);
draw();
// a map named in the URL (#layer=1&head=2) is picked as a user would pick it: a change event
for (const [sel, key] of [[layerSel, "layer"], [headSel, "head"]]) {
  if (asked.has(key) && asked.get(key) !== sel.value && +asked.get(key) < sel.options.length) {
    sel.value = asked.get(key); sel.dispatchEvent(new Event("change"));
  }
}
"""

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<script>window.onerror = function (m) {{  // any error of the page's script: recorded in the html element's dataset (errors)
  const d = document.documentElement.dataset; d.errors = (d.errors || "") + m + ";"; }};</script>
<style>
body {{ font-family: sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }}
.charts {{ display: flex; flex-wrap: wrap; gap: 1em; }}
.chart text {{ font-size: 11px; font-family: sans-serif; }}
table {{ border-collapse: collapse; }} th, td {{ border: 1px solid #ddd; padding: 2px 8px; text-align: left; }}
pre.sample {{ background: #f6f6f6; padding: 0.6em; white-space: pre-wrap; max-height: 20em; overflow: auto; }}
</style></head>
<body>
<h1>{title}</h1>
<p id="summary">{summary}</p>
<h2>Loss and learning rate</h2>
<div class="charts"><div id="loss">{loss}</div><div id="lr">{lr}</div></div>
<h2>Throughput</h2>
<div id="throughput">{speed}</div>
<h2>Samples ({checkpoint}, prompt {prompt})</h2>
{samples}
<h2>Attention</h2>
<p>Over the first sample. Row i: how much token i attends to each token (keys along the top).
<label>layer <select id="layer"></select></label> <label>head <select id="head"></select></label></p>
<canvas id="map" width="100" height="100"></canvas>
<h2>Config</h2>
<table id="config">{config}</table>
<script type="application/json" id="maps">{data}</script>
<script>{script}</script>
</body></html>
"""
