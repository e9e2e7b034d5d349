"""Random cases for the surfaces above the kernels (issue 21), so that a class of input is covered,
not only the case that was found: fastattn.nn's attention with random masks and shapes against a
float64 oracle (wrong shapes: a ValueError naming them); token directories and config files
mutated byte by byte (each read gives a checked result or a ValueError / FileNotFoundError, never
another exception nor ids outside the vocabulary); pairs files with random control characters
(read back exactly as written, or refused naming the line); tokenizer.json files with random
padding, truncation and added tokens (encode gives the text's own ids, against an oracle).

Each test runs a few seconds (`--fuzz-long` / FASTATTN_FUZZ_LONG=1: many more cases)."""
import json
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import oracle
from fastattn import nn

LONG = os.environ.get("FASTATTN_FUZZ_LONG", "").strip() not in ("", "0")
fuzz = settings(max_examples=600 if LONG else 30, deadline=None, derandomize=not LONG,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


# ---- nn.MultiheadAttention: random shapes and masks against a float64 oracle ----

def _mha_oracle(m, query, key, value, kpm, attn_mask, H):
    """torch's MultiheadAttention (batch_first) in float64 from m's weights; a query that may see
    no key gives out_proj.bias (fastattn's rule: zero attention, not NaN)."""
    W, b = m.in_proj_weight.data.astype(np.float64), m.in_proj_bias.data.astype(np.float64)
    E = W.shape[1]
    q, k, v = (x.astype(np.float64) @ W[i * E:(i + 1) * E].T + b[i * E:(i + 1) * E]
               for i, x in enumerate((query, key, value)))
    N, L, S = query.shape[0], query.shape[1], key.shape[1]
    heads = [x.reshape(N, -1, H, E // H).transpose(0, 2, 1, 3) for x in (q, k, v)]  # (N, H, T, hs)
    allowed = np.ones((N, H, L, S), bool)
    additive = np.zeros((N, H, L, S))
    if kpm is not None:
        allowed &= ~kpm[:, None, None, :]
    if attn_mask is not None:
        am = attn_mask.reshape((N, H, L, S)) if attn_mask.ndim == 3 else attn_mask
        if am.dtype == bool:
            allowed &= ~am
        else:
            additive = additive + am
    out = oracle.attention(*heads, mask=np.where(allowed, additive, -np.inf))  # (N, H, L, hs)
    out = out.transpose(0, 2, 1, 3).reshape(N, L, E)
    return out @ m.out_proj.weight.data.astype(np.float64).T + m.out_proj.bias.data


@fuzz
@given(N=st.integers(1, 3), L=st.integers(1, 5), S=st.integers(1, 6), H=st.sampled_from([1, 2]),
       hs=st.integers(1, 4), kpm=st.booleans(), mask_kind=st.sampled_from([None, "bool2", "bool3", "float2"]),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2 ** 32 - 1))
def test_multihead_attention_random_masks(N, L, S, H, hs, kpm, mask_kind, dtype, seed):
    rng = np.random.default_rng(seed)
    E = H * hs
    m = nn.MultiheadAttention(E, H, batch_first=True, dtype=dtype, seed=seed)
    m.in_proj_bias.data[...] = rng.standard_normal(3 * E)
    m.out_proj.bias.data[...] = rng.standard_normal(E)
    query, key = rng.standard_normal((N, L, E)).astype(dtype), rng.standard_normal((N, S, E)).astype(dtype)
    value = rng.standard_normal((N, S, E)).astype(dtype)
    pad = rng.random((N, S)) < 0.3 if kpm else None  # rows that see no key come up too
    mask = None
    if mask_kind == "bool2":
        mask = rng.random((L, S)) < 0.3
    elif mask_kind == "bool3":
        mask = rng.random((N * H, L, S)) < 0.3
    elif mask_kind == "float2":
        mask = np.where(rng.random((L, S)) < 0.3, -np.inf, rng.standard_normal((L, S))).astype(dtype)
    out, _ = m(query, key, value, key_padding_mask=pad, attn_mask=mask)
    assert out.shape == (N, L, E) and out.dtype == dtype and np.isfinite(out).all()
    want = _mha_oracle(m, query, key, value, pad, mask, H)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(out, want, rtol=tol, atol=tol)
    grad = m.backward(np.ones_like(out))
    assert all(np.isfinite(g).all() for g in (grad if isinstance(grad, tuple) else (grad,)))


@fuzz
@given(N=st.integers(1, 3), L=st.integers(1, 4), S=st.integers(1, 4), E=st.sampled_from([2, 4]),
       which=st.sampled_from(["key_padding_mask", "attn_mask", "key", "grad"]),
       extra=st.integers(1, 3), seed=st.integers(0, 2 ** 32 - 1))
def test_wrong_shapes_are_value_errors(N, L, S, E, which, extra, seed):
    rng = np.random.default_rng(seed)
    m = nn.MultiheadAttention(E, 2, batch_first=True, seed=seed)
    layer = nn.TransformerEncoderLayer(E, 2, 8, batch_first=True, seed=seed)
    q, kv = rng.standard_normal((N, L, E)).astype(np.float32), rng.standard_normal((N, S, E)).astype(np.float32)
    args = {"key_padding_mask": None, "attn_mask": None}
    key = kv
    if which == "key_padding_mask":
        args["key_padding_mask"] = np.zeros((N, S + extra), bool)
    elif which == "attn_mask":
        args["attn_mask"] = np.zeros((L + extra, S), bool)
    elif which == "key":
        key = rng.standard_normal((N, S, E + extra)).astype(np.float32)
    with pytest.raises(ValueError) if which != "grad" else _nothing():
        m(q, key, kv, **args)
    if which == "grad":
        for module, out in ((m, m(q, kv, kv)[0]), (layer, layer(q))):
            with pytest.raises(ValueError, match="grad_output must"):
                module.backward(np.ones(out.shape[:-1] + (E + extra,), np.float32))


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# ---- token directories mutated byte by byte ----

@pytest.fixture(scope="module")
def token_dir(tmp_path_factory):
    from fastattn.training.datasets import prepare
    root = tmp_path_factory.mktemp("tokens")
    (root / "in.txt").write_text("the quick brown fox jumps over the lazy dog\n" * 20, encoding="utf-8")
    prepare(str(root / "in.txt"), str(root / "good"))
    return root / "good"


@fuzz
@given(file=st.sampled_from(["meta.json", "train.bin", "val.bin"]), edits=st.lists(
    st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=4),
    truncate=st.sampled_from([None, 0.0, 0.5, 0.99]))
def test_mutated_token_directories_are_checked(token_dir, tmp_path_factory, file, edits, truncate):
    from fastattn.io.token_files import read_token_dir
    path = tmp_path_factory.mktemp("mutated")
    for name in ("meta.json", "train.bin", "val.bin"):
        (path / name).write_bytes((token_dir / name).read_bytes())
    data = bytearray((path / file).read_bytes())
    for at, byte in edits:
        data[int(at * len(data))] = byte
    if truncate is not None:
        data = data[:int(truncate * len(data))]
    (path / file).write_bytes(bytes(data))
    try:
        splits, tok = read_token_dir(str(path))
    except (ValueError, FileNotFoundError) as e:
        assert str(path) in str(e), e  # the message names the directory or file
        return
    for name, split in splits.items():
        try:
            ids = split[:]
        except ValueError as e:  # an id out of range, found as it is read
            assert f"{name}.bin" in str(e)
            continue
        assert ids.min() >= 0 and ids.max() < tok.vocab_size
        tok.decode(ids)


# ---- config files mutated byte by byte ----

GOOD_CONFIGS = {
    "c.json": b'{"n_layer": 2, "learning_rate": 0.001, "bias": true, "lr_schedule": "cosine", "min_lr": 1e-05}',
    "c.toml": b'n_layer = 2\nlearning_rate = 0.001\nbias = true\nlr_schedule = "cosine"\nmin_lr = 1e-05\n',
}


@fuzz
@given(name=st.sampled_from(sorted(GOOD_CONFIGS)), edits=st.lists(
    st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=3),
    bom=st.booleans())
def test_mutated_config_files_are_checked(tmp_path_factory, name, edits, bom):
    from fastattn.training.trainer import TrainConfig, read_config_file
    data = bytearray(GOOD_CONFIGS[name])
    for at, byte in edits:
        data[int(at * len(data))] = byte
    path = tmp_path_factory.mktemp("config") / name
    path.write_bytes(b"\xef\xbb\xbf" * bom + bytes(data))
    try:
        settings = read_config_file(path)
        TrainConfig(**settings)
    except ValueError as e:
        assert str(e).strip() and "\n" not in str(e).strip(), e
    if bytes(data) == GOOD_CONFIGS[name]:
        TrainConfig(**read_config_file(path))  # a BOM alone changes nothing


# ---- pairs files with random control characters ----

FIELD = st.text(st.characters(blacklist_characters="\t\n", blacklist_categories=("Cs",)), min_size=0, max_size=8)
CONTROL = st.sampled_from(["\r", "\x0b", "\x0c", "\x1c", "\x1e", "\x85", "\u2028", "\x00", "\x7f", " "])


@fuzz
@given(pairs=st.lists(st.tuples(FIELD, FIELD, CONTROL, st.integers(0, 7)), min_size=1, max_size=8),
       crlf=st.booleans())
def test_pairs_with_control_characters_read_back_exactly(tmp_path_factory, pairs, crlf):
    from fastattn.io.pairs import read_pairs
    from fastattn.io.seq2seq_vocab import Seq2SeqVocab
    written = []
    for source, target, control, at in pairs:
        source = source[:at] + control + source[at:]  # a control character somewhere in the source
        if source.endswith("\r"):
            source += "x"  # (a final \r is the line ending's, with or without crlf)
        if target.endswith("\r"):
            target += "y"
        written.append((source, target))
    end = "\r\n" if crlf else "\n"
    path = tmp_path_factory.mktemp("pairs") / "p.tsv"
    path.write_bytes("".join(f"{s}\t{t}{end}" for s, t in written).encode("utf-8"))
    try:
        got = read_pairs(path)
    except ValueError as e:
        line = next(i for i, (s, _) in enumerate(written, 1) if not s.strip())  # only a blank source is refused
        assert f"line {line}:" in str(e) and str(path) in str(e)
        return
    assert got == written and all(s.strip() for s, _ in written)
    vocab = Seq2SeqVocab.from_texts(s for s, _ in got)
    for s, _ in got:
        assert vocab.decode(vocab.encode(s, strict=True)) == s


# ---- tokenizer.json files with padding, truncation and added tokens ----

BASE = "abcdefgh .,"


def _tokenizer_json(pad_to, truncate, added, special):
    tk = pytest.importorskip("tokenizers")
    tok = tk.Tokenizer(tk.models.WordLevel({c: i for i, c in enumerate(BASE)} | {"[UNK]": len(BASE)},
                                           unk_token="[UNK]"))
    tok.pre_tokenizer = tk.pre_tokenizers.Split("", "isolated")
    added_tokens = [tk.AddedToken(t, special=special, normalized=False) for t in added]
    (tok.add_special_tokens if special else tok.add_tokens)(added_tokens)
    tok.add_special_tokens(["[PAD]"])
    if pad_to is not None:
        tok.enable_padding(length=pad_to or None, pad_id=tok.token_to_id("[PAD]"), pad_token="[PAD]")
    if truncate is not None:
        tok.enable_truncation(truncate)
    return tok.to_str(), {t: tok.token_to_id(t) for t in added}


def _oracle_ids(text, added):
    """Leftmost-longest added tokens, else one id a character (its place in BASE)."""
    ids, i = [], 0
    while i < len(text):
        match = max((t for t in added if text.startswith(t, i)), key=len, default=None)
        if match:
            ids.append(added[match])
            i += len(match)
        else:
            ids.append(BASE.index(text[i]))
            i += 1
    return ids


@fuzz
@given(pad_to=st.sampled_from([None, 0, 1, 4, 128]), truncate=st.sampled_from([None, 1, 3, 128]),
       added=st.lists(st.text(BASE, min_size=2, max_size=3), max_size=3, unique=True), special=st.booleans(),
       text=st.text(BASE, max_size=40))
def test_tokenizer_files_never_pad_or_cut_encode(pad_to, truncate, added, special, text):
    from fastattn.io.seq2seq_vocab import Seq2SeqVocab
    from fastattn.io.tokenizer import PretrainedTokenizer
    source, ids = _tokenizer_json(pad_to, truncate, added, special)
    tok = PretrainedTokenizer.from_str(source)
    want = _oracle_ids(text, ids)
    assert tok.encode(text).tolist() == want
    assert (Seq2SeqVocab(tokenizer_json=source).encode(text) - 4).tolist() == want
    assert tok.decode(tok.encode(text)).replace(" ", "") == text.replace(" ", "")
