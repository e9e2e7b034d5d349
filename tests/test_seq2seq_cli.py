"""`fastattn train-seq2seq` and `fastattn translate` end to end on a tiny model, resuming, the
vocabularies, the pairs file and the checkpoint kinds, and the bad inputs (one line, exit 1,
nothing written)."""
import io
import json
import os
import sys

import numpy as np
import pytest

from fastattn.cli import main
from fastattn.io.pairs import read_pairs, split_pairs
from fastattn.io.seq2seq_vocab import BOS, EOS, PAD, UNK, Seq2SeqVocab
from fastattn.training.seq2seq_checkpoint import load_seq2seq_checkpoint
from fastattn.training.seq2seq_trainer import make_batch, noam_lr

TINY = ["--d-model", "16", "--nhead", "2", "--num-encoder-layers", "1", "--num-decoder-layers", "1",
        "--dim-feedforward", "32", "--batch-size", "8", "--warmup", "5", "--eval-interval", "5",
        "--eval-pairs", "16", "--no-progress"]


def _pairs_file(path, n=60, seed=0):
    rng = np.random.default_rng(seed)
    lines = []
    for _ in range(n):
        word = "".join(rng.choice(list("abcde"), rng.integers(1, 6)))
        lines.append(f"{word}\t{word[::-1]}")  # reverse the word
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run(capsys, monkeypatch, *argv, stdin=None):
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_train_translate_and_resume(tmp_path, capsys, monkeypatch):
    data = _pairs_file(tmp_path / "pairs.tsv")
    out_dir = tmp_path / "out"
    code, out, err = run(capsys, monkeypatch, "train-seq2seq", "--data", data, "--out", out_dir, "--max-iters", 10,
                         *TINY)
    assert code == 0, err
    assert out.splitlines()[-1].startswith("final: step 10 train_loss ")
    assert sorted(os.listdir(out_dir)) == ["best.npz", "ckpt.npz", "config.json", "metrics.jsonl"]
    code, out, err = run(capsys, monkeypatch, "train-seq2seq", "--data", data, "--out", out_dir, "--max-iters", 15,
                         "--resume", "--no-progress")
    assert code == 0, err
    resumed = [json.loads(line) for line in open(out_dir / "metrics.jsonl")]
    assert [r["step"] for r in resumed] == [0, 5, 10, 15]

    straight = tmp_path / "straight"  # the same run without the interruption: the same curve
    code, _, err = run(capsys, monkeypatch, "train-seq2seq", "--data", data, "--out", straight, "--max-iters", 15,
                       *TINY)
    assert code == 0, err
    once = [json.loads(line) for line in open(straight / "metrics.jsonl")]
    assert [(r["step"], r["train_loss"], r["val_loss"]) for r in once] == \
        [(r["step"], r["train_loss"], r["val_loss"]) for r in resumed]

    # (an unknown character is refused: test_translate_refuses_characters_outside_the_vocabulary)
    code, out, err = run(capsys, monkeypatch, "translate", "--checkpoint", out_dir, stdin="abc\n\nde\nea\n")
    assert code == 0, err
    lines = out.split("\n")
    assert len(lines) == 5 and lines[1] == "" and lines[4] == ""  # one output a line, blank for blank
    code, greedy_out, err = run(capsys, monkeypatch, "translate", "--checkpoint", out_dir / "ckpt.npz",
                                "--beam-size", "1", "--max-len", "4", stdin="abc\nde")
    assert code == 0, err
    assert len(greedy_out.split("\n")) == 3 and all(len(s) <= 4 for s in greedy_out.split("\n"))


def test_translate_refuses_characters_outside_the_vocabulary(tmp_path, capsys, monkeypatch):
    """As `fastattn sample` does: an unknown character is an error naming it, unless --replace-unknown."""
    data = _pairs_file(tmp_path / "pairs.tsv", 30)
    code, _, err = run(capsys, monkeypatch, "train-seq2seq", "--data", data, "--out", tmp_path / "o", "--max-iters",
                       2, *TINY)
    assert code == 0, err
    code, out, err = run(capsys, monkeypatch, "translate", "--checkpoint", tmp_path / "o", stdin="abc\n€€€\n")
    assert code == 1 and out == ""
    assert "stdin line 2: character '€' at position 0 is not in the vocabulary of the model's sources" in err
    assert "; pass --replace-unknown to decode such characters as <unk>" in err and len(err.strip().splitlines()) == 1
    code, out, err = run(capsys, monkeypatch, "translate", "--checkpoint", tmp_path / "o", "--replace-unknown",
                         "--beam-size", "1", stdin="abc\n€€€\nazb\n")
    assert code == 0 and out.count("\n") == 3
    assert "warning: 4 character(s) on 2 line(s) are not in the model's source vocabulary, decoded as <unk>: " \
           "'z€'" in err
    code, same, _ = run(capsys, monkeypatch, "translate", "--checkpoint", tmp_path / "o", "--beam-size", "1",
                        stdin="abc\n")
    assert out.split("\n")[0] == same.split("\n")[0]


def test_train_seq2seq_config_file_and_config_json(tmp_path, capsys, monkeypatch):
    data = _pairs_file(tmp_path / "pairs.tsv", 30)
    (tmp_path / "small.toml").write_text('d_model = 16\nnhead = 2\nnum_encoder_layers = 1\nnum_decoder_layers = 1\n'
                                         'dim_feedforward = 32\nmax_iters = 3\nbatch_size = 9\n')
    code, _, err = run(capsys, monkeypatch, "train-seq2seq", "--data", data, "--out", tmp_path / "a", "--config",
                       tmp_path / "small.toml", "--batch-size", "8", "--eval-interval", "3", "--no-progress")
    assert code == 0, err
    written = json.loads((tmp_path / "a" / "config.json").read_text())
    assert (written["d_model"], written["max_iters"], written["batch_size"]) == (16, 3, 8)  # the flag wins
    code, _, err = run(capsys, monkeypatch, "train-seq2seq", "--data", data, "--out", tmp_path / "b", "--config",
                       tmp_path / "a" / "config.json", "--no-progress")
    assert code == 0, err
    curves = [[json.loads(line) for line in open(tmp_path / d / "metrics.jsonl")] for d in ("a", "b")]
    assert [(r["step"], r["val_loss"]) for r in curves[0]] == [(r["step"], r["val_loss"]) for r in curves[1]]
    (tmp_path / "bad.json").write_text('{"n_layer": 2}')
    code, _, err = run(capsys, monkeypatch, "train-seq2seq", "--data", data, "--out", tmp_path / "c", "--config",
                       tmp_path / "bad.json")
    assert code == 1 and "unknown settings ['n_layer']; the settings are Seq2SeqTrainConfig's fields" in err


def test_shared_embeddings_and_tokenizer_vocabularies(tmp_path, capsys, monkeypatch):
    data = _pairs_file(tmp_path / "pairs.tsv", 30)
    code, _, err = run(capsys, monkeypatch, "train-seq2seq", "--data", data, "--out", tmp_path / "o", "--max-iters",
                       2, "--share-embeddings", *TINY)
    assert code == 0, err
    ckpt = load_seq2seq_checkpoint(tmp_path / "o" / "ckpt.npz")
    assert ckpt.src_vocab == ckpt.tgt_vocab and ckpt.config["share_embeddings"]
    model = ckpt.build_model()
    assert model.generator.weight is model.src_tok_emb.weight is model.tgt_tok_emb.weight
    pytest.importorskip("tokenizers")
    from tokenizers import Tokenizer, models, pre_tokenizers
    tok = Tokenizer(models.WordLevel({c: i for i, c in enumerate("abcde")} | {"[UNK]": 5}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    (tmp_path / "tok").mkdir()
    tok.save(str(tmp_path / "tok" / "tokenizer.json"))
    vocab = Seq2SeqVocab.from_tokenizer_dir(tmp_path / "tok")
    assert vocab.vocab_size == 4 + 6 and vocab.encode("ab").tolist() == [4, 5]
    code, _, err = run(capsys, monkeypatch, "train-seq2seq", "--data", data, "--out", tmp_path / "t", "--max-iters",
                       2, "--tokenizer", tmp_path / "tok", *TINY)
    assert code == 0, err
    ckpt = load_seq2seq_checkpoint(tmp_path / "t" / "best.npz")
    assert ckpt.src_vocab == vocab and ckpt.config["src_vocab_size"] == 10
    code, out, err = run(capsys, monkeypatch, "translate", "--checkpoint", tmp_path / "t", stdin="abc\n")
    assert code == 0 and out.count("\n") == 1, err


def test_vocab_pairs_batches_and_schedule(tmp_path):
    v = Seq2SeqVocab.from_texts(["ba", "c"])
    assert (PAD, BOS, EOS, UNK) == (0, 1, 2, 3) and v.vocab_size == 7
    assert v.encode("abz").tolist() == [4, 5, UNK]
    assert v.decode([BOS, 4, 5, UNK, EOS, PAD]) == "ab"
    assert Seq2SeqVocab.from_json(json.loads(json.dumps(v.to_json()))) == v
    (tmp_path / "p.tsv").write_text("a\tx\r\n\nbb\t\n", encoding="utf-8")
    assert read_pairs(tmp_path / "p.tsv") == [("a", "x"), ("bb", "")]
    pairs = [(str(i), "y") for i in range(26)]
    train, val = split_pairs(pairs)
    assert train == pairs[:23] and val == pairs[23:]  # the last 10% (rounded), in order
    src, tgt_in, tgt_out = make_batch([(np.array([4, 5]), np.array([6])), (np.array([4]), np.array([6, 6, 6]))])
    assert src.tolist() == [[4, 5], [4, PAD]]
    assert tgt_in.tolist() == [[BOS, 6, PAD, PAD], [BOS, 6, 6, 6]]
    assert tgt_out.tolist() == [[6, EOS, PAD, PAD], [6, 6, 6, EOS]]
    assert noam_lr(4000, 512, 4000) == pytest.approx(512 ** -0.5 * 4000 ** -0.5)
    assert noam_lr(1, 512, 4000) == pytest.approx(512 ** -0.5 * 4000 ** -1.5)
    assert noam_lr(16000, 512, 4000, 2.0) == pytest.approx(2 * 512 ** -0.5 * 16000 ** -0.5)
    assert max(range(1, 9000), key=lambda s: noam_lr(s, 512, 4000)) == 4000


@pytest.mark.parametrize("setup, argv, message", [
    ("notab", ["train-seq2seq", "--data", "{tmp}/notab.tsv", "--out", "{tmp}/o"],
     "notab.tsv line 2 has no tab: each line must be source<TAB>target"),
    ("empty", ["train-seq2seq", "--data", "{tmp}/empty.tsv", "--out", "{tmp}/o"], "empty.tsv is empty"),
    (None, ["train-seq2seq", "--data", "{tmp}/missing.tsv", "--out", "{tmp}/o"], "cannot read"),
    ("one", ["train-seq2seq", "--data", "{tmp}/one.tsv", "--out", "{tmp}/o"], "at least 2 are needed"),
    ("pairs", ["train-seq2seq", "--data", "{tmp}/pairs.tsv", "--out", "{tmp}/o", "--tokenizer", "{tmp}"],
     "has no tokenizer.json"),
    ("gpt", ["translate", "--checkpoint", "{tmp}/gpt"], "is a GPT checkpoint (fastattn train; read by fastattn "
     "sample), not a seq2seq checkpoint"),
    ("seq2seq", ["sample", "--checkpoint", "{tmp}/s"], "is a seq2seq checkpoint (fastattn train-seq2seq; read by "
     "fastattn translate), not a GPT checkpoint"),
    (None, ["translate", "--checkpoint", "{tmp}/nothing"], "nothing: no such checkpoint"),
    (None, ["translate", "--checkpoint", "{tmp}"], "holds no best.npz or ckpt.npz"),
    ("seq2seq", ["translate", "--checkpoint", "{tmp}/s", "--beam-size", "0"], "--beam-size must be >= 1"),
    ("seq2seq", ["translate", "--checkpoint", "{tmp}/s", "--max-len", "0"], "max_len must be an int in"),
    ("seq2seq-empty-stdin", ["translate", "--checkpoint", "{tmp}/s"], "no input"),
    ("seq2seq", ["train-seq2seq", "--data", "{tmp}/pairs.tsv", "--out", "{tmp}/s", "--resume", "--d-model", "32"],
     "from another config: d_model is 16 there, 32 was asked"),
])
def test_bad_input_one_line_exit_1(tmp_path, capsys, monkeypatch, setup, argv, message):
    tmp = tmp_path / "w"
    tmp.mkdir()
    files = {"notab": "a\tb\nno tab here\n", "empty": "", "one": "a\tb\n"}
    if setup in files:
        (tmp / f"{setup}.tsv").write_text(files[setup], encoding="utf-8")
    if setup in ("pairs", "seq2seq", "seq2seq-empty-stdin"):
        _pairs_file(tmp / "pairs.tsv", 20)
    if setup and setup.startswith("seq2seq"):
        assert main(["train-seq2seq", "--data", str(tmp / "pairs.tsv"), "--out", str(tmp / "s"), "--max-iters", "1",
                     *TINY]) == 0
    if setup == "gpt":
        (tmp / "text.txt").write_text("hello there, general kenobi\n" * 20)
        assert main(["train", "--data", str(tmp / "text.txt"), "--out", str(tmp / "gpt"), "--max-iters", "1",
                     "--n-layer", "1", "--n-head", "2", "--n-embd", "8", "--block-size", "8", "--eval-iters", "1",
                     "--no-progress"]) == 0
    capsys.readouterr()
    before = sorted(os.listdir(tmp))
    code, out, err = run(capsys, monkeypatch, *[a.format(tmp=tmp) for a in argv], stdin="" if "stdin" in str(setup)
                         else "abc\n")
    assert code == 1
    assert out == ""  # nothing half written
    assert len(err.strip().splitlines()) == 1 and message in err, err
    assert sorted(os.listdir(tmp)) == before  # (no output directory made)


def test_checkpoint_round_trip_and_a_config_that_does_not_fit(tmp_path):
    from fastattn import Seq2SeqTransformer, load_checkpoint
    from fastattn.training.checkpoint import _write
    from fastattn.training.seq2seq_checkpoint import save_seq2seq_checkpoint
    vocab = Seq2SeqVocab.from_texts(["abc"])
    model = Seq2SeqTransformer(7, 7, d_model=8, nhead=2, num_encoder_layers=1, num_decoder_layers=1,
                               dim_feedforward=8, share_embeddings=True, dtype=np.float64, seed=1)
    save_seq2seq_checkpoint(tmp_path / "c.npz", model, vocab, vocab, step=3, meta={"x": 1})
    ckpt = load_seq2seq_checkpoint(tmp_path / "c.npz")
    assert ckpt.step == 3 and ckpt.meta == {"x": 1} and ckpt.dtype == np.float64
    again = ckpt.build_model()
    assert all(np.array_equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    with pytest.raises(ValueError, match="is a seq2seq checkpoint"):
        load_checkpoint(tmp_path / "c.npz")
    header = {"format": "fastattn-checkpoint", "version": 1, "kind": "seq2seq", "dtype": "float64", "step": 0,
              "config": {**model.config, "d_model": 16}, "vocab": {"src": vocab.to_json(), "tgt": vocab.to_json()}}
    _write(tmp_path / "bad.npz", header, {f"model/{n}": p.data for n, p in model.named_parameters()})
    with pytest.raises(ValueError, match="bad.npz: model/.* is float64 .*; the config and dtype say"):
        load_seq2seq_checkpoint(tmp_path / "bad.npz")
    header["config"] = {**model.config, "src_vocab_size": 9, "share_embeddings": False}
    _write(tmp_path / "bad.npz", header, {})
    with pytest.raises(ValueError, match="the arrays do not fit its config"):
        load_seq2seq_checkpoint(tmp_path / "bad.npz")


def test_the_progress_bar_does_not_count_the_evaluation_as_an_iteration(tmp_path, capsys, monkeypatch):
    """The step-0 evaluation (here made to take 1.5 s) is not in the bar's time, rate or ETA."""
    import time

    from fastattn.training import seq2seq_trainer
    real, calls = seq2seq_trainer.mean_loss, []

    def slow_first(model, pairs, batch_size):
        if not calls:
            time.sleep(1.5)
        calls.append(1)
        return real(model, pairs, batch_size)

    monkeypatch.setattr(seq2seq_trainer, "mean_loss", slow_first)
    data = _pairs_file(tmp_path / "pairs.tsv", 30)
    seq2seq_trainer.train_seq2seq(data, tmp_path / "o", progress=True, log=lambda s: None, max_iters=4,
                                  eval_interval=100, d_model=16, nhead=2, num_encoder_layers=1,
                                  num_decoder_layers=1, dim_feedforward=32, batch_size=4, eval_pairs=4, warmup=2)
    bars = [part for part in capsys.readouterr().err.replace("\r", "\n").split("\n") if "4/4" in part]
    assert bars and all("[00:00<00:00" in bar for bar in bars), bars
