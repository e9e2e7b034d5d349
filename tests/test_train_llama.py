"""fastattn train --arch llama: the loss falls, the checkpoint holds a Llama (grouped-query with
n_kv_head) that reloads and samples, resume continues it, and the settings are checked."""
import numpy as np
import pytest

import fastattn
from fastattn.training.checkpoint import load_checkpoint
from fastattn.training.trainer import TrainConfig, train

SETTINGS = dict(arch="llama", n_layer=2, n_head=4, n_kv_head=2, n_embd=32, block_size=32, batch_size=8,
                max_iters=60, eval_interval=30, eval_iters=4, learning_rate=3e-3, warmup_iters=5)


def test_the_loss_falls_and_the_checkpoint_is_a_llama(corpus_file, tmp_path):
    first = train(corpus_file, tmp_path / "out", progress=False, log=lambda s: None, max_iters=0,
                  **{k: v for k, v in SETTINGS.items() if k != "max_iters"})
    last = train(corpus_file, tmp_path / "out2", progress=False, log=lambda s: None, **SETTINGS)
    assert last["val_loss"] < first["val_loss"] - 0.5
    ckpt = load_checkpoint(tmp_path / "out2" / "ckpt.npz")
    model = ckpt.build_model()
    assert isinstance(model, fastattn.Llama)
    assert model.config.num_key_value_heads == 2 and model.config.tie_word_embeddings
    ids = ckpt.tokenizer.encode("the king")[None]
    out = model.generate(ids, 10, temperature=0)
    assert out.shape == (1, ids.shape[1] + 10)
    resumed = train(corpus_file, tmp_path / "out2", resume=True, progress=False, log=lambda s: None,
                    max_iters=70)
    assert resumed["step"] == 70


def test_parameters_match_the_gpt_of_the_same_sizes():
    sizes = dict(n_layer=2, n_head=4, n_embd=48, block_size=32)
    gpt = fastattn.GPT(TrainConfig(**sizes).model_config(65))
    llama = fastattn.Llama(TrainConfig(arch="llama", **sizes).model_config(65))
    # (both with the tied token embedding, the GPT without its position table; the MLP widths
    # round to a multiple of 8; RMSNorm has no bias)
    ours = llama.num_params(non_embedding=False)
    assert abs(ours - gpt.num_params()) / gpt.num_params() < 0.02


def test_settings_are_checked():
    with pytest.raises(ValueError, match="n_kv_head.*arch llama"):
        TrainConfig(n_kv_head=2)
    with pytest.raises(ValueError, match="no dropout"):
        TrainConfig(arch="llama", dropout=0.1)
    with pytest.raises(ValueError, match="multiple of num_key_value_heads"):
        TrainConfig(arch="llama", n_head=4, n_kv_head=3).model_config(10)
    with pytest.raises(ValueError, match="arch"):
        TrainConfig(arch="mamba")
