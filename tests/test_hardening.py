"""Regression tests of issue 21's hardening: each input that was silently mishandled (a tokenizer
that pads and truncates, a torn metrics.jsonl, non-finite settings, ...) gives the right result
or a clear error naming the setting, the file or the line."""
import io
import json
import os
import sys

import numpy as np
import pytest

from fastattn.cli import main

CHARS = "abcdefgh ."


def run(capsys, monkeypatch, *argv, stdin=None):
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def padded_tokenizer_dir(path, length=128):
    """A directory with a character-level tokenizer.json (id = place in CHARS, [PAD] after them)
    that pads to `length` and truncates to `length`, as all-MiniLM-L6-v2's does (128, 128)."""
    tk = pytest.importorskip("tokenizers")
    vocab = {c: i for i, c in enumerate(CHARS)} | {"[PAD]": len(CHARS), "[UNK]": len(CHARS) + 1}
    tok = tk.Tokenizer(tk.models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = tk.pre_tokenizers.Split("", "isolated")
    tok.enable_padding(length=length, pad_id=len(CHARS), pad_token="[PAD]")
    tok.enable_truncation(length)
    path.mkdir(exist_ok=True)
    tok.save(str(path / "tokenizer.json"))
    assert len(tok.encode("").ids) == length  # the file does pad (what encode must not do)
    return path


def own_ids(text):
    """The oracle: each character's place in CHARS."""
    return [CHARS.index(c) for c in text]


# -- item 1: a tokenizer.json's padding and truncation never reach data ------------------------

def test_pretrained_encode_is_never_padded_or_cut(tmp_path):
    from fastattn.io.tokenizer import PretrainedTokenizer
    tok = PretrainedTokenizer(padded_tokenizer_dir(tmp_path / "tok") / "tokenizer.json")
    long = "abc defgh." * 40  # 400 characters, over the file's 128
    assert tok.encode("").tolist() == []
    assert tok.encode("ab").tolist() == own_ids("ab")
    assert tok.encode(long).tolist() == own_ids(long)
    assert tok.decode(tok.encode(long)).replace(" ", "") == long.replace(" ", "")
    tok.encode_batch(["abc"], max_length=2)  # encode_batch's truncation leaves encode whole
    assert tok.encode(long).tolist() == own_ids(long)


def test_minilm_tokenizer_encodes_the_text_only():
    sys.path.insert(0, os.path.dirname(__file__))
    from test_encoder import minilm_dir
    from fastattn.io.seq2seq_vocab import Seq2SeqVocab
    from fastattn.io.tokenizer import load_tokenizer
    path = minilm_dir()
    tok = load_tokenizer(path)
    assert tok.encode("").tolist() == [] and len(tok.encode("hello world")) == 2
    assert len(tok.encode("word " * 300)) == 300  # one id a word, no cut at 128
    assert Seq2SeqVocab.from_tokenizer_dir(path).encode("").tolist() == []


def test_prepare_keeps_every_token_of_a_padding_tokenizer(tmp_path, capsys):
    text = "abc defgh." * 100
    (tmp_path / "in.txt").write_text(text, encoding="utf-8")
    tok_dir = padded_tokenizer_dir(tmp_path / "tok")
    assert main(["prepare", "--data", str(tmp_path / "in.txt"), "--out", str(tmp_path / "p"),
                 "--tokenizer", str(tok_dir)]) == 0
    meta = json.loads((tmp_path / "p" / "meta.json").read_text())
    assert meta["train_tokens"] + meta["val_tokens"] == len(text)
    ids = np.concatenate([np.fromfile(tmp_path / "p" / f"{s}.bin", "<u2") for s in ("train", "val")])
    assert ids.tolist() == own_ids(text)


def test_seq2seq_trains_and_translates_the_texts_own_tokens(tmp_path, capsys, monkeypatch):
    from fastattn.io.seq2seq_vocab import BOS, EOS, PAD, Seq2SeqVocab
    from fastattn.training import seq2seq_trainer
    tok_dir = padded_tokenizer_dir(tmp_path / "tok")
    vocab = Seq2SeqVocab.from_tokenizer_dir(tok_dir)
    assert vocab.encode("").tolist() == [] and vocab.encode("ab").tolist() == [4, 5]
    rng = np.random.default_rng(0)
    words = ["".join(rng.choice(list("abcdefgh"), rng.integers(1, 6))) for _ in range(30)]
    (tmp_path / "pairs.tsv").write_text("".join(f"{w}\t{w[::-1]}\n" for w in words), encoding="utf-8")
    seen = []
    real_make_batch = seq2seq_trainer.make_batch

    def make_batch(pairs):
        seen.extend(pairs)
        return real_make_batch(pairs)
    monkeypatch.setattr(seq2seq_trainer, "make_batch", make_batch)
    code, _, err = run(capsys, monkeypatch, "train-seq2seq", "--data", tmp_path / "pairs.tsv", "--out",
                       tmp_path / "o", "--tokenizer", tok_dir, "--max-iters", 2, "--d-model", 8, "--nhead", 2,
                       "--num-encoder-layers", 1, "--num-decoder-layers", 1, "--dim-feedforward", 16,
                       "--batch-size", 4, "--eval-pairs", 4, "--no-progress")
    assert code == 0, err
    texts = {w for w in words} | {w[::-1] for w in words}
    encoded = {tuple(x.tolist()) for pair in seen for x in pair}
    assert encoded <= {tuple(i + 4 for i in own_ids(t)) for t in texts}  # no pad id trained on
    code, out, err = run(capsys, monkeypatch, "translate", "--checkpoint", tmp_path / "o", "--max-len", 5,
                         stdin="\nab\n")
    assert code == 0, err
    assert out.split("\n")[0] == "" and len(out.split("\n")[1]) <= 5


# -- item 7: metrics.jsonl on resume ----------------------------------------------------------

def _tiny_gpt_run(tmp_path, capsys, *extra):
    text = "".join(np.random.default_rng(0).choice(list("abcdefgh \n"), 3000))
    (tmp_path / "in.txt").write_text(text, encoding="utf-8")
    argv = ["train", "--data", tmp_path / "in.txt", "--out", tmp_path / "o", "--n-layer", 1, "--n-head", 2,
            "--n-embd", 8, "--block-size", 8, "--batch-size", 2, "--eval-iters", 2, "--eval-interval", 2,
            "--warmup-iters", 0, "--no-progress", *extra]
    return main([str(a) for a in argv]), capsys.readouterr()


def test_a_torn_last_metrics_line_is_dropped_on_resume(tmp_path, capsys):
    code, (_, err) = _tiny_gpt_run(tmp_path, capsys, "--max-iters", 2)
    assert code == 0, err
    metrics = tmp_path / "o" / "metrics.jsonl"
    whole = metrics.read_text()
    metrics.write_text(whole + whole.splitlines()[-1][:40])  # a kill in the middle of a line
    code, (_, err) = _tiny_gpt_run(tmp_path, capsys, "--max-iters", 4, "--resume")
    assert code == 0, err
    assert [json.loads(line)["step"] for line in metrics.read_text().splitlines()] == [0, 2, 4]


@pytest.mark.parametrize("bad, message", [
    ('{"step": 0, "train_loss": 1\n', "line 1 is not a JSON record"),
    ('{"train_loss": 1.0}\n', 'line 1 is not an evaluation record'),
    ('[1, 2]\n', 'line 1 is not an evaluation record'),
])
def test_a_bad_metrics_line_is_named(tmp_path, capsys, bad, message):
    code, (_, err) = _tiny_gpt_run(tmp_path, capsys, "--max-iters", 2)
    assert code == 0, err
    metrics = tmp_path / "o" / "metrics.jsonl"
    metrics.write_text(bad + metrics.read_text())
    code, (_, err) = _tiny_gpt_run(tmp_path, capsys, "--max-iters", 4, "--resume")
    assert code == 1 and str(metrics) in err and message in err and len(err.strip().splitlines()) == 1, err


# -- item 8: non-finite or inconsistent settings, a diverged run ------------------------------

@pytest.mark.parametrize("settings, message", [
    ('{"learning_rate": Infinity}', "learning_rate must be finite, got inf"),
    ('{"learning_rate": NaN}', "learning_rate must be finite, got nan"),
    ('{"weight_decay": Infinity}', "weight_decay must be finite"),
    ('{"learning_rate": 1e-4, "min_lr": 1e-3}', "min_lr 0.001 is above the learning rate 0.0001"),
])
def test_non_finite_or_rising_settings_are_refused(tmp_path, capsys, settings, message):
    (tmp_path / "c.json").write_text(settings)
    code, (_, err) = _tiny_gpt_run(tmp_path, capsys, "--max-iters", 1, "--config", tmp_path / "c.json")
    assert code == 1 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o").exists()


def test_seq2seq_settings_must_be_finite():
    from fastattn.training.seq2seq_trainer import Seq2SeqTrainConfig
    with pytest.raises(ValueError, match="lr_factor must be finite"):
        Seq2SeqTrainConfig(lr_factor=float("inf"))
    with pytest.raises(ValueError, match="min_lr must be finite"):
        Seq2SeqTrainConfig(min_lr=float("nan"), lr_schedule="cosine")


def test_a_diverged_final_evaluation_fails_the_run(tmp_path, capsys):
    code, (out, err) = _tiny_gpt_run(tmp_path, capsys, "--max-iters", 1, "--learning-rate", 1e30,
                                     "--min-lr", 0, "--grad-clip", 0)
    assert code == 1 and "the weights diverged" in err and "final:" not in out, err


# -- item 9: embed --out writes the name given, never beside a directory ----------------------

from test_encoder import model_dir  # noqa: E402,F401  (the small random BERT fixture)


def test_embed_out_is_the_exact_name_and_a_directory_is_refused(model_dir, tmp_path, monkeypatch, capsys):
    from fastattn import embed
    monkeypatch.setattr("sys.stdin", io.StringIO("the king\nso\n"))
    assert main(["embed", "--model", str(model_dir), "--out", str(tmp_path / "vectors")]) == 0
    assert (tmp_path / "vectors").is_file() and not (tmp_path / "vectors.npy").exists()
    np.testing.assert_allclose(np.load(tmp_path / "vectors"), embed(["the king", "so"], str(model_dir)), atol=1e-6)
    (tmp_path / "d").mkdir()
    monkeypatch.setattr("sys.stdin", io.StringIO("the king\n"))
    assert main(["embed", "--model", str(model_dir), "--out", str(tmp_path / "d")]) == 1
    err = capsys.readouterr().err
    assert "is a directory" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "d.npy").exists() and os.listdir(tmp_path / "d") == []
    monkeypatch.setattr("sys.stdin", io.StringIO("the king\n"))
    assert main(["embed", "--model", str(model_dir), "--out", str(tmp_path / "no" / "v.npy")]) == 1
    assert "no directory" in capsys.readouterr().err


# -- item 10: fastattn.train(**settings) checks types as a config file does ---------------------

@pytest.mark.parametrize("settings, message", [
    ({"bias": "no"}, "bias must be a bool, got 'no'"),
    ({"max_iters": 2.5}, "max_iters must be an int, got 2.5"),
    ({"batch_size": 2.5}, "batch_size must be an int, got 2.5"),
    ({"learning_rate": "0.1"}, "learning_rate must be a number, got '0.1'"),
    ({"lr_decay_iters": "10"}, "lr_decay_iters must be an int or null"),
    ({"lr_schedule": 3}, "lr_schedule must be one of constant"),
])
def test_train_call_checks_the_setting_types(tmp_path, settings, message):
    import fastattn
    (tmp_path / "in.txt").write_text("abcdefgh " * 100)
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        fastattn.train(str(tmp_path / "in.txt"), str(tmp_path / "o"), progress=False, **settings)
    assert not (tmp_path / "o").exists()


def test_seq2seq_config_checks_types_and_keeps_numpy_scalars():
    from fastattn.training.seq2seq_trainer import Seq2SeqTrainConfig
    from fastattn.training.trainer import TrainConfig
    with pytest.raises(ValueError, match="share_embeddings must be a bool, got 1"):
        Seq2SeqTrainConfig(share_embeddings=1)
    with pytest.raises(ValueError, match="tokenizer must be a str or null, got 5"):
        Seq2SeqTrainConfig(tokenizer=5)
    cfg = TrainConfig(max_iters=np.int64(7), learning_rate=np.float32(0.5), min_lr=0.0)
    assert type(cfg.max_iters) is int and cfg.max_iters == 7 and type(cfg.learning_rate) is float


# -- item 11: unclear or lax ------------------------------------------------------------------

def test_backward_with_a_wrong_shaped_grad_names_the_shapes():
    from fastattn import nn
    x = np.random.default_rng(0).standard_normal((2, 3, 8)).astype(np.float32)
    for module, args in [(nn.LayerNorm(8), (x,)), (nn.Dropout(0.5, seed=0), (x,)),
                         (nn.Dropout(0.5, seed=0).eval(), (x,)), (nn.PositionalEncoding(8, seed=0), (x,)),
                         (nn.TransformerEncoderLayer(8, 2, 16, batch_first=True, seed=0), (x,)),
                         (nn.TransformerDecoderLayer(8, 2, 16, batch_first=True, seed=0, norm_first=True), (x, x))]:
        for shape in [(2, 3, 5), (1, 3, 8), (3, 8)]:  # (1, 3, 8) and (3, 8) broadcast against (2, 3, 8)
            module(*args)
            with pytest.raises(ValueError, match=r"grad_output must have the output's shape \(2, 3, 8\), got "
                                                 + str(shape).replace("(", r"\(").replace(")", r"\)")):
                module.backward(np.ones(shape, np.float32))


def test_positional_encoding_refuses_float16_in_both_modes():
    from fastattn import nn
    pe = nn.PositionalEncoding(8, seed=0)
    x = np.zeros((1, 3, 8), np.float16)
    with pytest.raises(TypeError, match="float32 or float64, got float16"):
        pe(x)
    with pytest.raises(TypeError, match="float32 or float64, got float16"):
        pe.eval()(x)


@pytest.mark.parametrize("inputs, message", [
    (None, "got NoneType"), (5, "got int"), (b"hello", "got bytes: decode it"), ({"a": 1}, "got dict"),
    ({"a", "b"}, "got set"),
])
def test_sentence_encoder_refuses_what_is_not_text(model_dir, inputs, message):
    from fastattn import SentenceEncoder, embed
    with pytest.raises(TypeError, match=f"inputs must be a str or a list of str, {message}"):
        SentenceEncoder(model_dir).encode(inputs)
    with pytest.raises(TypeError, match=message):
        embed(inputs, str(model_dir))


def test_a_toml_config_with_a_bom_is_read(tmp_path):
    pytest.importorskip("tomllib")
    from fastattn.training.trainer import read_config_file
    (tmp_path / "c.toml").write_bytes(b"\xef\xbb\xbfmax_iters = 5\nlearning_rate = 0.01\n")
    assert read_config_file(tmp_path / "c.toml") == {"max_iters": 5, "learning_rate": 0.01}


@pytest.mark.parametrize("line, message", [(" \t ", "line 2: the source (before the tab) is only white space"),
                                           ("\t", "line 2: the source (before the tab) is empty"),
                                           ("  \tx", "only white space")])
def test_a_pairs_line_of_white_space_around_a_tab_is_named(tmp_path, line, message):
    from fastattn.io.pairs import read_pairs
    (tmp_path / "p.tsv").write_text(f"a\tb\n{line}\nc\td\n\n   \n", encoding="utf-8")
    with pytest.raises(ValueError) as error:
        read_pairs(tmp_path / "p.tsv")
    assert f"p.tsv {message}" in str(error.value) if message.startswith("line") else message in str(error.value)
    (tmp_path / "q.tsv").write_text("a\tb\n\n   \nc\t \n", encoding="utf-8")  # blank lines skip; target may be
    assert read_pairs(tmp_path / "q.tsv") == [("a", "b"), ("c", " ")]


def test_prepare_refuses_a_text_too_short_to_split(tmp_path, capsys):
    (tmp_path / "one.txt").write_text("a")
    assert main(["prepare", "--data", str(tmp_path / "one.txt"), "--out", str(tmp_path / "p")]) == 1
    err = capsys.readouterr().err
    assert "gives 1 tokens: too few for a train and a validation split" in err and not (tmp_path / "p").exists()
    (tmp_path / "two.txt").write_text("ab")
    assert main(["prepare", "--data", str(tmp_path / "two.txt"), "--out", str(tmp_path / "p")]) == 0


def test_a_full_disk_names_the_file(tmp_path, monkeypatch):
    import builtins
    import errno
    from fastattn import GPT, GPTConfig, save_checkpoint
    from fastattn.io.token_files import write_token_dir
    from fastattn.io.tokenizer import CharTokenizer
    tok = CharTokenizer("ab")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(np, "savez", full)
    model = GPT(GPTConfig(vocab_size=2, block_size=4, n_layer=1, n_head=1, n_embd=4), seed=0)
    with pytest.raises(OSError, match=f"No space left on device \\(writing {tmp_path / 'c.npz'}\\)"):
        save_checkpoint(str(tmp_path / "c.npz"), model, tok)
    assert os.listdir(tmp_path) == []
    real_open = builtins.open

    def open_full(file, mode="r", *args, **kwargs):  # a temporary file on a full disk: /dev/full
        if str(file).endswith(".tmp") and "w" in mode:
            return real_open("/dev/full", mode, *args, **kwargs)
        return real_open(file, mode, *args, **kwargs)
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    monkeypatch.setattr(builtins, "open", open_full)
    with pytest.raises(OSError, match=f"\\(writing {tmp_path / 'd' / 'train.bin'}\\)"):
        write_token_dir(tmp_path / "d", np.zeros(1 << 16, np.int64), np.array([0]), tok)
    monkeypatch.setattr(builtins, "open", real_open)
    assert os.listdir(tmp_path / "d") == []


def test_translate_refuses_a_beam_that_cannot_fit_up_front(tmp_path, capsys, monkeypatch):
    import time
    sys.path.insert(0, os.path.dirname(__file__))
    from test_seq2seq_cli import TINY, _pairs_file
    data = _pairs_file(tmp_path / "pairs.tsv", 20)
    code, _, err = run(capsys, monkeypatch, "train-seq2seq", "--data", data, "--out", tmp_path / "o",
                       "--max-iters", 1, *TINY)
    assert code == 0, err
    start = time.perf_counter()
    code, out, err = run(capsys, monkeypatch, "translate", "--checkpoint", tmp_path / "o", "--beam-size",
                         100000000, stdin="abc\n")
    assert code == 1 and "beam_size 100000000 does not fit" in err and "at most" in err and out == "", err
    assert time.perf_counter() - start < 10


# -- items 5 and 4: seq2seq refuses unknown characters and too-long pairs before training ------

SEQ2SEQ_TINY = ["--d-model", 8, "--nhead", 2, "--num-encoder-layers", 1, "--num-decoder-layers", 1,
                "--dim-feedforward", 16, "--batch-size", 4, "--eval-pairs", 4, "--eval-interval", 2, "--no-progress"]


def _words_file(path, n=30, letters="abcdefgh", extra=()):
    rng = np.random.default_rng(0)
    words = ["".join(rng.choice(list(letters), rng.integers(1, 6))) for _ in range(n)]
    path.write_text("".join(f"{w}\t{w[::-1]}\n" for w in words) + "".join(extra), encoding="utf-8")
    return path


def test_resume_refuses_pairs_with_unseen_characters(tmp_path, capsys, monkeypatch):
    data = _words_file(tmp_path / "p.tsv")
    code, _, err = run(capsys, monkeypatch, "train-seq2seq", "--data", data, "--out", tmp_path / "o",
                       "--max-iters", 2, *SEQ2SEQ_TINY)
    assert code == 0, err
    lines = data.read_text().splitlines()
    lines[4] = "abz\tzba"  # z: in neither vocabulary
    data.write_text("\n".join(lines) + "\n")
    code, _, err = run(capsys, monkeypatch, "train-seq2seq", "--data", data, "--out", tmp_path / "o",
                       "--max-iters", 4, "--resume", "--no-progress")
    assert code == 1 and f"{data} line 5: the source's character 'z' at position 2 is not in the vocabulary" in err
    assert len(err.strip().splitlines()) == 1


def test_a_new_run_has_every_pairs_characters(tmp_path, capsys, monkeypatch):
    # a character that only the validation pairs hold is in the vocabulary: no UNK is evaluated
    data = _words_file(tmp_path / "p.tsv", extra=["ab\tq\n"] * 1)
    code, _, err = run(capsys, monkeypatch, "train-seq2seq", "--data", data, "--out", tmp_path / "o",
                       "--max-iters", 1, *SEQ2SEQ_TINY)
    assert code == 0, err
    from fastattn.training.seq2seq_checkpoint import load_seq2seq_checkpoint
    ckpt = load_seq2seq_checkpoint(tmp_path / "o" / "ckpt.npz")
    assert "q" in ckpt.tgt_vocab.chars


def test_translate_refuses_unknown_characters_and_bytes_that_are_not_utf8(tmp_path, capsys, monkeypatch):
    data = _words_file(tmp_path / "p.tsv")
    code, _, err = run(capsys, monkeypatch, "train-seq2seq", "--data", data, "--out", tmp_path / "o",
                       "--max-iters", 1, *SEQ2SEQ_TINY)
    assert code == 0, err
    code, out, err = run(capsys, monkeypatch, "translate", "--checkpoint", tmp_path / "o", stdin="ab\n€€€\n")
    assert code == 1 and out == "" and "stdin line 2: character '€' at position 0 is not in the vocabulary" in err
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"ab\n\xffab\n"), encoding="utf-8",
                                                       errors="surrogateescape"))
    code = main(["translate", "--checkpoint", str(tmp_path / "o")])
    out, err = capsys.readouterr()
    assert code == 1 and out == "" and "stdin line 2 is not UTF-8 text (byte 0xff at position 0)" in err, err


def test_a_too_long_pair_is_found_before_training(tmp_path, capsys, monkeypatch):
    from fastattn.training import seq2seq_trainer
    data = _words_file(tmp_path / "p.tsv", extra=["a" * 5200 + "\tb\n", "c\td\n", "e\tf\n"])
    steps = []
    monkeypatch.setattr(seq2seq_trainer, "train_step", lambda *a: steps.append(1) or 1.0)
    code, _, err = run(capsys, monkeypatch, "train-seq2seq", "--data", data, "--out", tmp_path / "o",
                       "--max-iters", 60, *SEQ2SEQ_TINY)
    assert code == 1 and f"{data} line 31: the source is 5200 tokens: the model takes at most 5000" in err, err
    assert steps == [] and not (tmp_path / "o").exists()
    data = _words_file(tmp_path / "q.tsv", extra=["a\t" + "b" * 5000 + "\n", "c\td\n", "e\tf\n"])
    code, _, err = run(capsys, monkeypatch, "train-seq2seq", "--data", data, "--out", tmp_path / "o",
                       "--max-iters", 60, *SEQ2SEQ_TINY)
    assert code == 1 and "line 31: the target is 5000 tokens (with bos or eos, 5001)" in err, err
