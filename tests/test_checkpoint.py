import os

import numpy as np
import pytest

from fastattn import GPT, GPTConfig
from fastattn.training.checkpoint import load_checkpoint, save_checkpoint
from fastattn.io.tokenizer import CharTokenizer

CFG = GPTConfig(vocab_size=9, block_size=8, n_layer=2, n_head=2, n_embd=8, bias=False)


def trained_a_little(rng):
    model = GPT(CFG, seed=1)
    opt = model.configure_optimizers(0.1, 1e-2, (0.9, 0.99))
    for _ in range(2):
        opt.zero_grad()
        model(rng.integers(0, 9, (2, 8)), rng.integers(0, 9, (2, 8)))
        model.backward()
        opt.step()
    return model, opt


def test_save_load_gives_identical_logits(backend, rng, tmp_path):
    model, opt = trained_a_little(rng)
    tok = CharTokenizer("abcdefghi")
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, model, tok, opt, step=7, meta={"note": "x", "best": 1.5})
    ck = load_checkpoint(path)
    assert ck.config == CFG and ck.step == 7 and ck.tokenizer == tok and ck.dtype == np.float32
    assert ck.meta == {"note": "x", "best": 1.5}
    idx = rng.integers(0, 9, (3, 8))
    np.testing.assert_array_equal(ck.build_model()(idx)[0], model(idx)[0])
    state = opt.state_dict()
    assert ck.optimizer_state["step"] == 2 and ck.optimizer_state["param_groups"] == state["param_groups"]
    for a, b in zip(ck.optimizer_state["exp_avg_sq"], state["exp_avg_sq"]):
        np.testing.assert_array_equal(a, b)
    without = tmp_path / "weights.npz"
    save_checkpoint(without, model)
    ck = load_checkpoint(without)
    assert ck.tokenizer is None and ck.optimizer_state is None and ck.step == 0


def test_a_failed_save_leaves_the_old_checkpoint(rng, tmp_path, monkeypatch):
    model, _ = trained_a_little(rng)
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, model, step=1)
    before = path.read_bytes()

    def broken(f, **arrays):
        f.write(b"half a checkpoint")
        raise OSError("disk full")
    monkeypatch.setattr(np, "savez", broken)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, model, step=2)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["ckpt.npz"]  # no temporary file left behind


def test_loading_checks_what_it_reads(rng, tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.npz")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="not a readable fastattn checkpoint"):
        load_checkpoint(junk)
    plain = tmp_path / "plain.npz"
    np.savez(plain, a=np.zeros(3))
    with pytest.raises(ValueError, match="no readable meta.json"):
        load_checkpoint(plain)
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, evil=np.array([{"x": 1}], dtype=object))
    with pytest.raises(ValueError, match="not a readable"):
        load_checkpoint(pickled)

    model, _ = trained_a_little(rng)
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, model)
    other = GPT(GPTConfig(vocab_size=9, block_size=8, n_layer=2, n_head=2, n_embd=16, bias=False))
    with pytest.raises(ValueError, match=r"transformer.wte.weight: \(9, 8\) != \(9, 16\)"):
        other.load_state_dict(load_checkpoint(path).model_state)
