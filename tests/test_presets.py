"""--preset small|default|large: the configs, and that --config and the flags win over a preset."""
import json

import pytest

from fastattn import GPTConfig
from fastattn.cli import main
from fastattn.models.presets import GPT_PRESETS, PRESETS, SEQ2SEQ_PRESETS
from fastattn.training.seq2seq_trainer import Seq2SeqTrainConfig
from fastattn.training.trainer import TrainConfig


def test_default_is_the_defaults():
    assert TrainConfig.preset("default") == TrainConfig()
    assert Seq2SeqTrainConfig.preset("default") == Seq2SeqTrainConfig()
    assert set(GPT_PRESETS) == set(SEQ2SEQ_PRESETS) == set(PRESETS)


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_builds_and_overrides_win(name):
    cfg = GPTConfig.preset(name, vocab_size=65, n_layer=1)
    assert cfg.n_layer == 1 and cfg.n_embd == GPT_PRESETS[name]["n_embd"] and cfg.vocab_size == 65
    assert TrainConfig.preset(name, max_iters=3).max_iters == 3
    s = Seq2SeqTrainConfig.preset(name, nhead=2)
    assert s.nhead == 2 and s.d_model == SEQ2SEQ_PRESETS[name]["d_model"]


def test_an_unknown_preset():
    for make in (lambda: GPTConfig.preset("tiny", 65), lambda: TrainConfig.preset("tiny"),
                 lambda: Seq2SeqTrainConfig.preset("huge")):
        with pytest.raises(ValueError, match="preset must be one of small, default, large"):
            make()


def test_train_cli_preset_config_and_flags(corpus_file, tmp_path, capsys):
    conf = tmp_path / "c.json"
    conf.write_text(json.dumps({"n_embd": 32}))
    out = tmp_path / "o"
    argv = ["train", "--data", corpus_file, "--out", out, "--preset", "small", "--config", conf,
            "--block-size", "8", "--max-iters", "1", "--eval-iters", "1", "--batch-size", "2", "--no-progress"]
    assert main([str(a) for a in argv]) == 0, capsys.readouterr().err
    saved = json.loads((out / "config.json").read_text())
    # the preset's n_layer and n_head; the config file's n_embd; the flag's block_size
    assert (saved["n_layer"], saved["n_head"], saved["n_embd"], saved["block_size"]) == (2, 2, 32, 8)
    with pytest.raises(SystemExit) as e:
        main(["train", "--data", str(corpus_file), "--out", str(tmp_path / "p"), "--preset", "tiny"])
    assert e.value.code == 2


def test_seq2seq_cli_preset_and_flags(tmp_path, capsys):
    data = tmp_path / "pairs.tsv"
    data.write_text("".join(f"{w}\t{w[::-1]}\n" for w in ["ab", "abc", "cab", "bca", "aa", "cc"] * 3))
    out = tmp_path / "o"
    argv = ["train-seq2seq", "--data", data, "--out", out, "--preset", "small", "--nhead", "2", "--max-iters", "1",
            "--batch-size", "2", "--eval-pairs", "2", "--no-progress"]
    assert main([str(a) for a in argv]) == 0, capsys.readouterr().err
    from fastattn.training.seq2seq_checkpoint import load_seq2seq_checkpoint
    saved = load_seq2seq_checkpoint(out / "ckpt.npz").meta["train_config"]
    assert (saved["d_model"], saved["nhead"], saved["num_encoder_layers"]) == (128, 2, 2)
