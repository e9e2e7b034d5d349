"""`fastattn report`: the HTML of a tiny training run, its content, and the page in a real browser
(headless Chromium: no errors, the curves and the map drawn, switching the head changes the map).
The browser part skips, naming what to install, where Chromium is absent."""
import os
import re
import shutil
import struct
import subprocess
import zlib

import numpy as np
import pytest

from fastattn.cli import main
from fastattn.inference.report import build_report, throughput
from fastattn.training.trainer import TrainConfig

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    import sys
    sys.path.insert(0, os.path.dirname(__file__))
    from conftest import small_corpus
    d = tmp_path_factory.mktemp("report")
    (d / "c.txt").write_text(small_corpus())
    argv = ["train", "--data", d / "c.txt", "--out", d / "run", "--n-layer", "2", "--n-head", "3", "--n-embd", "12",
            "--block-size", "16", "--batch-size", "4", "--max-iters", "20", "--eval-interval", "5",
            "--eval-iters", "1", "--warmup-iters", "4", "--no-progress"]
    assert main([str(a) for a in argv]) == 0
    return d / "run"


def test_the_page_is_self_contained(run_dir, tmp_path, capsys):
    out = tmp_path / "report.html"
    assert main(["report", str(run_dir), "--out", str(out), "--prompt", "the king </script>",
                 "--sample-tokens", "30"]) == 1  # '<' and '/' are not in the corpus's vocabulary
    assert "not in the vocabulary" in capsys.readouterr().err
    assert main(["report", str(run_dir), "--out", str(out), "--prompt", "the king", "--sample-tokens", "30"]) == 0
    text = out.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)  # nothing fetched: no CDN
    assert "<link" not in text and "@import" not in text
    assert text.count("<svg") == 3 and text.count("<polyline") == 4  # train, val, lr, throughput
    assert "<pre class=\"sample\">the king" in text
    assert "lr_schedule</th><td>&quot;cosine&quot;" in text


def test_throughput_and_bad_runs(tmp_path, capsys):
    cfg = TrainConfig(batch_size=2, block_size=8)
    records = [{"step": 0, "elapsed_s": 1.0}, {"step": 10, "elapsed_s": 3.0}, {"step": 10, "elapsed_s": 3.0}]
    assert throughput(records, cfg) == [(10, 10 * 16 / 2.0)]
    assert main(["report", str(tmp_path / "none"), "--out", str(tmp_path / "r.html")]) == 1
    assert "is not a directory" in capsys.readouterr().err
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    assert main(["report", str(tmp_path / "half"), "--out", str(tmp_path / "r.html")]) == 1
    assert "has no metrics.jsonl" in capsys.readouterr().err
    (tmp_path / "half" / "metrics.jsonl").write_text('{"step": 0}\n')
    with pytest.raises(ValueError, match="line 1 is not an evaluation record"):
        build_report(tmp_path / "half")
    assert not (tmp_path / "r.html").exists()


def _png_pixels(path):
    """(H, W, channels) uint8 of an 8-bit, non-interlaced PNG (what Chromium's screenshots are)."""
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            w, h, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and interlace == 0 and colour in (2, 6)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    c = 3 if colour == 2 else 4
    raw = zlib.decompress(idat)
    out = np.zeros((h, w * c), np.int64)
    stride = w * c + 1
    for y in range(h):
        f, line = raw[y * stride], np.frombuffer(raw[y * stride + 1:(y + 1) * stride], np.uint8).astype(np.int64)
        prev = out[y - 1] if y else np.zeros(w * c, np.int64)
        if f in (0, 2):
            out[y] = (line + (prev if f == 2 else 0)) % 256
        else:  # sub, average, Paeth: each byte depends on the one c to its left
            row = np.zeros(w * c + c, np.int64)
            for i in range(w * c):
                a, b, cc = row[i], prev[i], (prev[i - c] if i >= c else 0)
                if f == 1:
                    pred = a
                elif f == 3:
                    pred = (a + b) // 2
                else:
                    p = a + b - cc
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - cc)
                    pred = a if pa <= pb and pa <= pc else b if pb <= pc else cc
                row[i + c] = (line[i] + pred) % 256
            out[y] = row[c:]
    return out.reshape(h, w, c).astype(np.uint8)


def _chromium(tmp_path, url, *flags):
    browser = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    if browser is None:
        pytest.skip("headless Chromium is not installed: install Debian's chromium package "
                    "(apt-get install chromium) to check the HTML report in a browser")
    profile = tmp_path / f"profile-{len(os.listdir(tmp_path))}"
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
           f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", *flags, url]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    console = [line for line in done.stderr.splitlines() if "CONSOLE" in line]
    assert not console, console  # no console message at all (errors and warnings would be there)
    return done.stdout


def test_in_headless_chromium(run_dir, tmp_path):
    out = tmp_path / "report.html"
    assert main(["report", str(run_dir), "--out", str(out), "--prompt", "the queen", "--sample-tokens", "20"]) == 0
    url = out.resolve().as_uri()
    digests = {}
    for head in (0, 2):
        dom = _chromium(tmp_path, f"{url}#layer=1&head={head}", "--dump-dom")
        assert not re.search(r"<html[^>]*data-errors", dom)  # window.onerror recorded nothing
        shown = re.search(r'<canvas id="map"[^>]*data-shown="([^"]*)"[^>]*data-digest="(\d+)"', dom)
        assert shown and shown.group(1) == f"layer 1 head {head}", dom[-3000:]
        digests[head] = shown.group(2)
    assert digests[0] != digests[2]  # switching the head changes the map

    shot = tmp_path / "shot.png"
    _chromium(tmp_path, url, f"--screenshot={shot}", "--window-size=1200,2600")
    px = _png_pixels(shot)[..., :3].astype(int)
    assert (px != 255).any(axis=2).mean() > 0.02  # not blank
    # the curves: train (#1f77b4) and val (#d62728) lines are drawn
    for rgb in ((0x1f, 0x77, 0xb4), (0xd6, 0x27, 0x28)):
        assert (np.abs(px - rgb).sum(axis=2) < 40).sum() > 50, rgb
    # the map: cells of the white-to-blue scale, well below the charts
    blue = (px[..., 2] > px[..., 0] + 60) & (px[..., 2] > 150)
    assert blue[1200:].sum() > 100
