"""Seq2SeqTransformer against a PyTorch twin (torch.nn.Transformer with the same weights, float64)
or, without torch, float64 finite differences of its loss."""
import os
import sys

import numpy as np
import pytest

import fastattn
from fastattn import functional as F
from fastattn.models.seq2seq import Seq2SeqTransformer

PAD = 0
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))


def _batch(rng, n, s, t, vs, vt):
    """Ids with some right padding (pad = 0); row 0 full length."""
    src = rng.integers(1, vs, (n, s))
    tgt = rng.integers(1, vt, (n, t))
    for i in range(1, n):
        src[i, rng.integers(1, s + 1):] = PAD
        tgt[i, rng.integers(1, t + 1):] = PAD
    return src, tgt


def _model(dtype=np.float64, **kw):
    args = dict(d_model=16, nhead=2, num_encoder_layers=2, num_decoder_layers=2, dim_feedforward=24,
                dropout=0.0, dtype=dtype, seed=3)
    args.update(kw)
    return Seq2SeqTransformer(args.pop("vs", 11), args.pop("vt", 9), **args)


def _torch_twin(model):
    torch = pytest.importorskip("torch")
    from seq2seq_torch import torch_twin  # (benchmarks/: the date benchmark's twin too)
    return torch, torch_twin(model, torch.float64)


@pytest.mark.filterwarnings("ignore:enable_nested_tensor is True")
@pytest.mark.parametrize("share, norm_first, activation", [(False, False, "relu"), (True, True, "gelu")])
def test_forward_backward_match_torch(backend, share, norm_first, activation):
    rng = np.random.default_rng(0)
    vt = 11 if share else 9
    model = _model(share_embeddings=share, norm_first=norm_first, activation=activation, vt=vt)
    torch, twin = _torch_twin(model)
    src, tgt = _batch(rng, 3, 7, 5, 11, vt)
    tgt_in, tgt_out = tgt, np.where(tgt == PAD, PAD, rng.integers(1, vt, tgt.shape))
    tgt_in[:, 0] = 1  # (bos: every target row has one key)
    logits = model(src, tgt_in)
    loss = F.cross_entropy(logits, tgt_out, ignore_index=PAD, label_smoothing=0.1)
    model.zero_grad()
    assert model.backward(F.cross_entropy_backward(logits, tgt_out, ignore_index=PAD, label_smoothing=0.1)) is None

    t_logits = twin(torch.from_numpy(src), torch.from_numpy(tgt_in))
    t_loss = torch.nn.functional.cross_entropy(t_logits.reshape(-1, vt), torch.from_numpy(tgt_out).reshape(-1),
                                               ignore_index=PAD, label_smoothing=0.1)
    t_loss.backward()
    np.testing.assert_allclose(logits, t_logits.detach().numpy(), rtol=1e-10, atol=1e-10)
    assert abs(float(loss) - t_loss.item()) < 1e-10
    t_params = dict(twin.named_parameters())
    names = [n for n, _ in model.named_parameters()]
    assert names == list(t_params)  # same names, same order, the shared weight once
    for name, p in model.named_parameters():
        np.testing.assert_allclose(p.grad, t_params[name].grad.numpy(), rtol=1e-8, atol=1e-10, err_msg=name)


def test_gradients_by_finite_differences():
    """float64, reference backend: d(loss)/d(a few weights of each kind) against central differences."""
    rng = np.random.default_rng(1)
    with fastattn.use_backend("reference"):
        model = _model(d_model=8, num_encoder_layers=1, num_decoder_layers=1, dim_feedforward=8,
                       share_embeddings=True, vt=11)
        src, tgt = _batch(rng, 2, 5, 4, 11, 11)
        tgt[:, 0] = 1
        out = rng.integers(1, 11, tgt.shape)

        def loss():
            return float(F.cross_entropy(model(src, tgt), out, ignore_index=PAD, label_smoothing=0.1))

        logits = model(src, tgt)
        model.zero_grad()
        model.backward(F.cross_entropy_backward(logits, out, ignore_index=PAD, label_smoothing=0.1))
        params = dict(model.named_parameters())
        for name in ("src_tok_emb.weight", "transformer.encoder.layers.0.self_attn.in_proj_weight",
                     "transformer.decoder.layers.0.multihead_attn.in_proj_weight",
                     "transformer.decoder.layers.0.linear1.weight", "transformer.decoder.norm.bias",
                     "generator.bias"):
            p = params[name]
            for flat in rng.choice(p.data.size, 3, replace=False):
                i = np.unravel_index(flat, p.data.shape)
                if name == "src_tok_emb.weight" and i[0] == PAD:
                    continue
                old = p.data[i]
                p.data[i] = old + 1e-6
                up = loss()
                p.data[i] = old - 1e-6
                down = loss()
                p.data[i] = old
                assert abs((up - down) / 2e-6 - p.grad[i]) < 1e-6, (name, i)


def test_module_surface_and_errors():
    model = _model(dtype=np.float32)
    assert isinstance(model, fastattn.nn.Module) and fastattn.Seq2SeqTransformer is Seq2SeqTransformer
    assert model.src_tok_emb.weight.data.dtype == np.float32
    state = model.state_dict()
    again = Seq2SeqTransformer(**model.config, dtype=np.float32, seed=99)
    again.load_state_dict(state)
    src, tgt = np.array([[3, 4, 5]]), np.array([[1, 2]])
    model.eval()
    again.eval()
    np.testing.assert_array_equal(model(src, tgt), again(src, tgt))
    assert model.num_parameters() == sum(a.size for a in state.values())
    assert not model.train().eval().training and all(not m.training for m in model.modules())
    with pytest.raises(ValueError, match="share_embeddings needs one vocabulary"):
        Seq2SeqTransformer(10, 12, d_model=8, nhead=2, share_embeddings=True)
    with pytest.raises(ValueError, match=r"tgt_in: ids must be in \[0, 9\)"):
        model(src, np.array([[1, 9]]))
    with pytest.raises(ValueError, match="one batch size"):
        model(src, np.array([[1], [2]]))
    with pytest.raises(ValueError, match="src must be a"):
        model(np.array([1.0, 2.0]), tgt)
    with pytest.raises(ValueError, match="src_key_padding_mask must be a bool array"):
        model(src, tgt, src_key_padding_mask=np.zeros((1, 3), int))


def test_sizes_zero_and_one(backend):
    """An empty batch, a one-token source and target, an empty source: defined, finite results."""
    from fastattn.models.seq2seq_decoding import greedy
    model = _model(d_model=8, num_encoder_layers=1, num_decoder_layers=1, dim_feedforward=8)
    assert model(np.array([[3]]), np.array([[1]])).shape == (1, 1, 9)
    for src_shape, tgt_shape in (((0, 3), (0, 2)), ((2, 0), (2, 1))):
        logits = model(np.full(src_shape, 3), np.ones(tgt_shape, np.int64))
        assert logits.shape == tgt_shape + (9,) and np.isfinite(logits).all()
        model.zero_grad()
        model.backward(np.ones_like(logits))
        assert all(np.isfinite(p.grad).all() for p in model.parameters())
    assert greedy(model, np.zeros((0, 3), np.int64)) == []
    out = greedy(model, np.array([[PAD, PAD]]), max_len=4)  # (all padding: the memory is hidden)
    assert len(out) == 1 and len(out[0]) <= 4
