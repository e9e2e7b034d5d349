"""F.attention_weights against the float64 oracle, GPT.attention_maps, and `fastattn attention-map`."""
import re

import numpy as np
import pytest

import oracle
from fastattn import GPT, GPTConfig, functional as F
from fastattn.cli import main


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("Tq, Tk, causal, mask_kind", [
    (5, 5, True, None), (3, 7, True, None), (7, 7, False, "bool"), (4, 9, True, "bool"),
    (6, 6, False, "float"), (2, 5, True, "float"), (1, 1, True, None),
])
def test_matches_oracle_and_rows_sum_to_one(backend, rng, dtype, Tq, Tk, causal, mask_kind):
    q = rng.standard_normal((2, 3, Tq, 8)).astype(dtype) * 3
    k = rng.standard_normal((2, 3, Tk, 8)).astype(dtype) * 3
    mask = None
    if mask_kind == "bool":  # broadcast over heads; row 0 of batch 1 sees nothing
        mask = rng.random((2, 1, Tq, Tk)) < 0.7
        mask[1, 0, 0] = False
    elif mask_kind == "float":
        mask = rng.standard_normal((Tq, Tk)).astype(dtype)
    w = F.attention_weights(q, k, attn_mask=mask, is_causal=causal)
    want = oracle.attention_weights(q, k, mask, causal)
    assert w.dtype == dtype and w.shape == (2, 3, Tq, Tk)
    np.testing.assert_allclose(w, want, rtol=oracle.rtol(dtype) * 10, atol=oracle.rtol(dtype))
    sums = w.sum(axis=-1)
    seen = want.sum(axis=-1) > 0
    np.testing.assert_allclose(sums[seen], 1, rtol=1e-5)
    assert (sums[~seen] == 0).all()
    if mask_kind == "bool":
        assert (w[1, :, 0] == 0).all()  # a query that sees no key: zeros
    # the same weights the attention kernel applies to the values
    v = rng.standard_normal((2, 3, Tk, 4)).astype(dtype)
    np.testing.assert_allclose(w @ v, F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal),
                               rtol=1e-4, atol=1e-5)


def test_bad_arguments():
    q = np.zeros((1, 2, 4), np.float32)
    with pytest.raises(ValueError, match="same last dimension"):
        F.attention_weights(q, np.zeros((1, 2, 5), np.float32))
    with pytest.raises(ValueError, match="does not broadcast"):
        F.attention_weights(q, q, attn_mask=np.ones((3, 3), bool))
    with pytest.raises(TypeError, match="is_causal"):
        F.attention_weights(q, q, is_causal=1)


def test_model_attention_maps(backend, rng):
    model = GPT(GPTConfig(vocab_size=11, block_size=6, n_layer=2, n_head=3, n_embd=12, dropout=0.2), seed=1)
    model.train()
    idx = rng.integers(0, 11, (2, 5))
    maps = model.attention_maps(idx)
    assert model.training and len(maps) == 2
    for w in maps:
        assert w.shape == (2, 3, 5, 5)
        np.testing.assert_allclose(w.sum(axis=-1), 1, rtol=1e-5)
        assert (np.triu(w, 1) == 0).all()  # causal: nothing from the future
    # layer 0 recomputed from the embeddings by hand, in float64
    block = model.transformer.h[0]
    x = (model.transformer.wte.weight.data[idx] + model.transformer.wpe.weight.data[:5]).astype(np.float64)
    h = oracle.layer_norm(x, block.ln_1.weight.data, block.ln_1.bias.data)
    qkv = h @ block.attn.c_attn.weight.data.T.astype(np.float64) + block.attn.c_attn.bias.data
    q, k, _ = qkv.reshape(2, 5, 3, 3, 4).transpose(2, 0, 3, 1, 4)
    np.testing.assert_allclose(maps[0], oracle.attention_weights(q, k, causal=True), rtol=1e-4, atol=1e-5)


@pytest.fixture
def trained_dir(corpus_file, tmp_path):
    out = tmp_path / "o"
    assert main(["train", "--data", str(corpus_file), "--out", str(out), "--max-iters", "2", "--n-layer", "2",
                 "--n-head", "2", "--n-embd", "8", "--block-size", "16", "--batch-size", "2",
                 "--eval-iters", "1", "--no-progress"]) == 0
    return out


def test_attention_map_command(trained_dir, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    for extra, name in (([], "one.png"), (["--all-heads"], "all.png")):
        path = tmp_path / name
        assert main(["attention-map", "--checkpoint", str(trained_dir), "--prompt", "the king\nso",
                     "--layer", "1", "--head", "1", "--out", str(path), *extra]) == 0
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--layer", "2"], r"--layer must be in \[0, 2\)"),
    (["--head", "-1"], r"--head must be in \[0, 2\)"),
    (["--prompt", "the king speaks to his fair"], "the prompt is 27 tokens"),
])
def test_attention_map_errors(trained_dir, tmp_path, capsys, argv, message):
    args = ["attention-map", "--checkpoint", str(trained_dir), "--prompt", "the", "--out", str(tmp_path / "m.png")]
    assert main(args + argv) == 1
    assert re.search(message, capsys.readouterr().err)
