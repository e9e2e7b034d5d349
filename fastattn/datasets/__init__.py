"""Data that ships with fastattn, so the tutorial runs offline.

    text = fastattn.datasets.shakespeare()      # Tiny Shakespeare, 1,115,394 characters
    fastattn train --data shakespeare ...       # the same text (training/datasets.py)

Tiny Shakespeare is the `input.txt` of Andrej Karpathy's char-rnn (data/tinyshakespeare/input.txt
in the GitHub repository karpathy/char-rnn), the corpus of nanoGPT's shakespeare_char recipe:
Shakespeare's plays, in the public domain. It is stored gzip-compressed (434 kB) beside this file.
"""
import gzip
import os

__all__ = ["shakespeare", "NAMES"]

_HERE = os.path.dirname(os.path.abspath(__file__))
_SHAKESPEARE = os.path.join(_HERE, "tinyshakespeare.txt.gz")

# the names `--data NAME` accepts for a packaged text (a file or directory of that name wins)
NAMES = ("shakespeare",)


def __dir__():
    return sorted(__all__)


def shakespeare():
    """Tiny Shakespeare as one str (1,115,394 characters, 65 distinct ones)."""
    with gzip.open(_SHAKESPEARE, "rt", encoding="utf-8") as f:
        return f.read()
