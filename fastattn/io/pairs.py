"""Sentence pairs for a sequence-to-sequence model: a UTF-8 file of `source<TAB>target` lines.

    pairs = read_pairs("pairs.tsv")           # [(source, target), ...] in file order
    numbered = read_pairs("pairs.tsv", line_numbers=True)   # [(line, source, target), ...]
    train, val = split_pairs(pairs)           # the last 10% validate

Blank lines (no tab) are skipped. A line needs exactly one tab and a source that is not only
white space (the target may be empty: the model then learns to end at once); anything else is a ValueError naming the file and
the line.
"""


def read_pairs(path, line_numbers=False):
    """[(source, target), ...] from the file at path (with line_numbers: [(line, source, target),
    ...], line counted from 1, for messages about a pair), or ValueError (FileNotFoundError's
    message is turned into one too) that says what is wrong and where."""
    try:
        with open(path, encoding="utf-8", newline="") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text: {e}") from None
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror or e}") from None
    pairs = []
    for number, line in enumerate(text.split("\n"), 1):
        line = line[:-1] if line.endswith("\r") else line
        if not line.strip() and "\t" not in line:
            continue
        tabs = line.count("\t")
        if tabs != 1:
            what = "no tab" if tabs == 0 else f"{tabs} tabs"
            raise ValueError(f"{path} line {number} has {what}: each line must be source<TAB>target "
                             f"(got {line[:60]!r})")
        source, target = line.split("\t")
        if not source.strip():
            raise ValueError(f"{path} line {number}: the source (before the tab) is "
                             f"{'empty' if not source else 'only white space'}")
        pairs.append((number, source, target) if line_numbers else (source, target))
    if not pairs:
        raise ValueError(f"{path} is empty: it needs source<TAB>target lines")
    return pairs


def split_pairs(pairs, val_fraction=0.1):
    """(train, val): the last val_fraction of the pairs (at least one) validate. ValueError when
    fewer than 2 pairs leave nothing to train on."""
    if len(pairs) < 2:
        raise ValueError(f"{len(pairs)} pair: at least 2 are needed (the last 10% validate, at least one)")
    n_val = max(1, int(round(val_fraction * len(pairs))))
    return pairs[:-n_val], pairs[-n_val:]
