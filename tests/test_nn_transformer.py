"""nn's Transformer layers, stacks, nn.Transformer and PositionalEncoding against torch.nn
(weights copied, float64), finite differences, and their errors."""
import math
import warnings

import numpy as np
import pytest

import fastattn
from fastattn import nn
from nn_check import assert_param_grads_match, copy_to_torch, gradcheck

D, H, FF, N, S, T = 8, 2, 12, 3, 5, 4
TOL = dict(rtol=1e-9, atol=1e-10)


@pytest.fixture(autouse=True)
def _quiet_torch():
    with warnings.catch_warnings():  # (torch's notes on nested tensors and mask types)
        warnings.simplefilter("ignore")
        yield


def _x(rng, T, batch_first):
    return rng.standard_normal((N, T, D) if batch_first else (T, N, D))


def _self_masks(kind, T, rng):
    """(our kwargs, torch's kwargs) for a self-attention mask kind over T positions, named as
    the encoder layer names them; no query is left without a key."""
    pad = np.zeros((N, T), bool)
    pad[1, -2:] = True
    blocked = rng.random((T, T)) < 0.4
    np.fill_diagonal(blocked, False)
    causal = ~np.tri(T, dtype=bool)
    if kind == "none":
        return {}, {}
    if kind == "key_padding":
        return dict(src_key_padding_mask=pad), dict(src_key_padding_mask=pad)
    if kind == "bool":
        return dict(src_mask=blocked), dict(src_mask=blocked)
    if kind == "float":
        f = np.where(blocked, -np.inf, rng.standard_normal((T, T)))
        return dict(src_mask=f), dict(src_mask=f)
    if kind == "causal":
        return dict(is_causal=True), dict(src_mask=causal, is_causal=True)
    if kind == "causal+padding":
        p = pad.copy()
        p[:, 0] = False
        return dict(is_causal=True, src_key_padding_mask=p), dict(src_mask=causal, src_key_padding_mask=p)
    raise AssertionError(kind)


def _t(torch, kw):
    return {k: (torch.tensor(v) if isinstance(v, np.ndarray) else v) for k, v in kw.items()}


def _config(torch, kind, *args, **kw):
    ours = getattr(nn, kind)(*args, dtype=np.float64, seed=0, **kw)
    theirs = getattr(torch.nn, kind)(*args, dtype=torch.float64, **kw)
    copy_to_torch(ours, theirs)
    return ours, theirs


def _randomise_norms(module, rng):
    for name, p in module.named_parameters():
        if "norm" in name:  # (1 and 0 at first: make them count)
            p.data[...] = rng.standard_normal(p.data.shape)


def _check_grads(ours, theirs, pairs):
    for mine, t in pairs:
        np.testing.assert_allclose(mine, t.grad.numpy(), **TOL)
    assert_param_grads_match(ours, theirs, rtol=1e-8, atol=1e-10)


ENCODER_CONFIGS = [dict(norm_first=nf, activation=act, bias=bias, batch_first=bf)
                   for nf in (False, True) for act in ("relu", "gelu") for bias in (True, False) for bf in (False, True)]


def _encoder_case(torch, config, mask, rng):
    ours, theirs = _config(torch, "TransformerEncoderLayer", D, H, FF, dropout=0.0, **config)
    _randomise_norms(ours, rng)
    copy_to_torch(ours, theirs)
    x = _x(rng, S, config.get("batch_first", False))
    our_kw, their_kw = _self_masks(mask, S, rng)
    y = ours(x, **our_kw)
    tx = torch.tensor(x, requires_grad=True)
    ty = theirs(tx, **_t(torch, their_kw))
    np.testing.assert_allclose(y, ty.detach().numpy(), **TOL)
    g = rng.standard_normal(y.shape)
    dx = ours.backward(g)
    ty.backward(torch.tensor(g))
    _check_grads(ours, theirs, [(dx, tx)])


@pytest.mark.parametrize("config", ENCODER_CONFIGS, ids=str)
def test_encoder_layer_configs_against_torch(backend, config, rng):
    _encoder_case(pytest.importorskip("torch"), config, "causal+padding", rng)


@pytest.mark.parametrize("mask", ["none", "key_padding", "bool", "float", "causal", "causal+padding"])
@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_layer_masks_against_torch(backend, mask, norm_first, rng):
    _encoder_case(pytest.importorskip("torch"), dict(norm_first=norm_first), mask, rng)


def _decoder_masks(kind, rng):
    tpad = np.zeros((N, T), bool)
    tpad[2, -1] = True
    mpad = np.zeros((N, S), bool)
    mpad[0, -2:] = True
    causal = ~np.tri(T, dtype=bool)
    mem_blocked = rng.random((T, S)) < 0.4
    mem_blocked[:, 0] = False
    if kind == "none":
        return {}, {}
    if kind == "key_padding":
        kw = dict(tgt_key_padding_mask=tpad, memory_key_padding_mask=mpad)
        return kw, kw
    if kind == "bool":
        kw = dict(tgt_mask=causal, memory_mask=mem_blocked)
        return kw, kw
    if kind == "float":
        kw = dict(tgt_mask=np.where(causal, -np.inf, 0.0), memory_mask=np.where(mem_blocked, -np.inf, 0.5))
        return kw, kw
    if kind == "causal":
        return (dict(tgt_is_causal=True, memory_key_padding_mask=mpad),
                dict(tgt_mask=causal, tgt_is_causal=True, memory_key_padding_mask=mpad))
    if kind == "memory_causal":  # top-left: query i sees memory j <= i, as torch's masks
        mc = ~np.tri(T, S, dtype=bool)
        return dict(memory_is_causal=True), dict(memory_mask=mc, memory_is_causal=True)
    raise AssertionError(kind)


def _decoder_case(torch, config, mask, rng):
    ours, theirs = _config(torch, "TransformerDecoderLayer", D, H, FF, dropout=0.0, **config)
    _randomise_norms(ours, rng)
    copy_to_torch(ours, theirs)
    bf = config.get("batch_first", False)
    tgt, mem = _x(rng, T, bf), _x(rng, S, bf)
    our_kw, their_kw = _decoder_masks(mask, rng)
    y = ours(tgt, mem, **our_kw)
    tt, tm = torch.tensor(tgt, requires_grad=True), torch.tensor(mem, requires_grad=True)
    ty = theirs(tt, tm, **_t(torch, their_kw))
    np.testing.assert_allclose(y, ty.detach().numpy(), **TOL)
    g = rng.standard_normal(y.shape)
    dt, dm = ours.backward(g)
    ty.backward(torch.tensor(g))
    _check_grads(ours, theirs, [(dt, tt), (dm, tm)])


@pytest.mark.parametrize("config", ENCODER_CONFIGS, ids=str)
def test_decoder_layer_configs_against_torch(backend, config, rng):
    _decoder_case(pytest.importorskip("torch"), config, "causal", rng)


@pytest.mark.parametrize("mask", ["none", "key_padding", "bool", "float", "causal", "memory_causal"])
@pytest.mark.parametrize("norm_first", [False, True])
def test_decoder_layer_masks_against_torch(backend, mask, norm_first, rng):
    _decoder_case(pytest.importorskip("torch"), dict(norm_first=norm_first), mask, rng)


@pytest.mark.parametrize("config", [dict(), dict(batch_first=True, norm_first=True, activation="gelu"),
                                    dict(bias=False)], ids=str)
def test_transformer_against_torch_and_state_dict_both_ways(backend, config, rng):
    torch = pytest.importorskip("torch")
    ours = nn.Transformer(D, H, 2, 2, FF, dropout=0.0, dtype=np.float64, seed=0, **config)
    theirs = torch.nn.Transformer(D, H, 2, 2, FF, dropout=0.0, dtype=torch.float64, **config)
    assert [(n, p.shape) for n, p in ours.named_parameters()] == [
        (n, tuple(p.shape)) for n, p in theirs.named_parameters()]
    assert "decoder.norm.weight" in ours.state_dict() and "encoder.layers.1.linear1.weight" in ours.state_dict()
    # torch -> ours, then ours -> a fresh torch twin
    ours.load_state_dict(theirs.state_dict())
    _randomise_norms(ours, rng)
    theirs = copy_to_torch(ours, torch.nn.Transformer(D, H, 2, 2, FF, dropout=0.0, dtype=torch.float64, **config))
    bf = config.get("batch_first", False)
    src, tgt = _x(rng, S, bf), _x(rng, T, bf)
    spad = np.zeros((N, S), bool)
    spad[1, -1] = True
    tmask = nn.Transformer.generate_square_subsequent_mask(T, dtype=np.float64)
    kw = dict(tgt_mask=tmask, src_key_padding_mask=spad, memory_key_padding_mask=spad)
    y = ours(src, tgt, **kw)
    ts, tt = torch.tensor(src, requires_grad=True), torch.tensor(tgt, requires_grad=True)
    ty = theirs(ts, tt, **_t(torch, kw))
    np.testing.assert_allclose(y, ty.detach().numpy(), **TOL)
    g = rng.standard_normal(y.shape)
    ds, dt = ours.backward(g)
    ty.backward(torch.tensor(g))
    _check_grads(ours, theirs, [(ds, ts), (dt, tt)])
    # is_causal instead of the mask: the same
    ours.zero_grad()
    y2 = ours(src, tgt, tgt_is_causal=True, src_key_padding_mask=spad, memory_key_padding_mask=spad)
    np.testing.assert_allclose(y2, y, rtol=1e-12, atol=1e-12)


def test_square_subsequent_mask_is_torchs():
    torch = pytest.importorskip("torch")
    for sz in (0, 1, 4):
        m = nn.Transformer.generate_square_subsequent_mask(sz)
        assert m.dtype == np.float32
        np.testing.assert_array_equal(m, torch.nn.Transformer.generate_square_subsequent_mask(sz).numpy())


def test_transformer_init_is_xavier_and_layers_differ():
    m = nn.Transformer(32, 4, 2, 2, 64, seed=0)
    params = dict(m.named_parameters())
    for name, p in params.items():
        if p.data.ndim == 2:
            bound = math.sqrt(6 / sum(p.data.shape))
            assert np.abs(p.data).max() <= bound and np.abs(p.data).max() > 0.9 * bound, name
    assert not np.array_equal(params["encoder.layers.0.linear1.weight"].data,
                              params["encoder.layers.1.linear1.weight"].data)
    assert np.all(params["decoder.norm.weight"].data == 1)
    b = params["encoder.layers.0.linear1.bias"].data  # biases keep their module's init
    assert 0 < np.abs(b).max() <= 1 / math.sqrt(32)
    for name, p in params.items():  # in every copy, as torch
        if name.endswith(("in_proj_bias", "out_proj.bias")):
            assert not p.data.any(), name
    a, b = nn.Transformer(16, 2, 1, 1, 16, seed=3), nn.Transformer(16, 2, 1, 1, 16, seed=3)
    assert all(np.array_equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_stacks_copy_the_layer_with_fresh_weights_and_own_dropout():
    layer = nn.TransformerEncoderLayer(D, H, FF, dropout=0.5, seed=0)
    enc = nn.TransformerEncoder(layer, 3, norm=nn.LayerNorm(D))
    names = [n for n, _ in enc.named_parameters()]
    assert names[0] == "layers.0.self_attn.in_proj_weight" and names[-1] == "norm.bias"
    w = [enc.layers[i].linear1.weight.data for i in range(3)]
    assert np.array_equal(w[0], layer.linear1.weight.data) and w[0] is not layer.linear1.weight.data
    assert not np.array_equal(w[0], w[1]) and not np.array_equal(w[1], w[2])
    # the copies' dropouts share one Generator: different masks in different layers
    x = np.ones((2, 4, D), np.float32)
    masks = [enc.layers[i].dropout(x) for i in range(2)]
    assert not np.array_equal(masks[0], masks[1])
    dec = nn.TransformerDecoder(nn.TransformerDecoderLayer(D, H, FF, seed=1), 2)
    assert [n for n, _ in dec.named_parameters()][-1] == "layers.1.norm3.bias"
    with pytest.raises(ValueError, match="num_layers must be >= 1"):
        nn.TransformerEncoder(layer, 0)


def test_train_mode_drops_eval_does_not(rng):
    m = nn.Transformer(D, H, 1, 1, FF, dropout=0.3, batch_first=True, seed=0)
    src, tgt = (rng.standard_normal((N, t, D)).astype(np.float32) for t in (S, T))
    a, b = m(src, tgt), m(src, tgt)
    assert not np.allclose(a, b)
    m.eval()
    c, d = m(src, tgt), m(src, tgt)
    np.testing.assert_array_equal(c, d)
    m.backward(np.ones_like(d))  # eval mode: still differentiable


def test_layers_finite_differences_reference(rng):
    with fastattn.use_backend("reference"):
        pad = np.zeros((N, S), bool)
        pad[0, -1] = True
        for nf in (False, True):
            enc = nn.TransformerEncoderLayer(D, H, FF, dropout=0.0, activation="gelu", norm_first=nf,
                                             dtype=np.float64, seed=0)
            _randomise_norms(enc, rng)
            gradcheck(enc, [_x(rng, S, False)], call=lambda m, x: m(x, src_key_padding_mask=pad, is_causal=True),
                      n_coords=3)
            dec = nn.TransformerDecoderLayer(D, H, FF, dropout=0.0, norm_first=nf, dtype=np.float64, seed=1)
            _randomise_norms(dec, rng)
            gradcheck(dec, [_x(rng, T, False), _x(rng, S, False)],
                      call=lambda m, t, s: m(t, s, tgt_is_causal=True, memory_key_padding_mask=pad), n_coords=3)
        tr = nn.Transformer(D, H, 1, 1, FF, dropout=0.0, batch_first=True, dtype=np.float64, seed=2)
        gradcheck(tr, [_x(rng, S, True), _x(rng, T, True)], call=lambda m, s, t: m(s, t, tgt_is_causal=True),
                  n_coords=2)


def test_positional_encoding():
    pe = nn.PositionalEncoding(6, dropout=0.0, max_len=10)
    x = np.zeros((2, 7, 6), np.float32)
    y = pe(x)
    assert y.dtype == np.float32
    for pos in (0, 3, 6):
        for i in range(3):
            angle = pos / 10000 ** (2 * i / 6)
            assert y[1, pos, 2 * i] == pytest.approx(math.sin(angle), abs=1e-6)
            assert y[1, pos, 2 * i + 1] == pytest.approx(math.cos(angle), abs=1e-6)
    tb = nn.PositionalEncoding(6, dropout=0.0, max_len=10, batch_first=False)
    np.testing.assert_array_equal(tb(x.transpose(1, 0, 2)), y.transpose(1, 0, 2))
    np.testing.assert_array_equal(pe(x[0]), y[0])  # unbatched (T, C)
    odd = nn.PositionalEncoding(5, 0.0)(np.zeros((3, 5)))  # odd d_model: the last column is a sine
    assert odd[2, 4] == pytest.approx(math.sin(2 / 10000 ** 0.8)) and odd[2, 3] == pytest.approx(math.cos(2 / 10000 ** 0.4))
    g = np.arange(x.size, dtype=np.float32).reshape(x.shape)
    pe(x)  # (the backward of the last forward: of x's shape)
    np.testing.assert_array_equal(pe.backward(g), g)
    assert pe.state_dict() == {}
    drop = nn.PositionalEncoding(6, dropout=0.5, seed=0)
    yd = drop(np.ones((4, 7, 6)))
    assert (yd == 0).any()
    np.testing.assert_array_equal(drop.backward(np.ones_like(yd)) == 0, yd == 0)
    with pytest.raises(ValueError, match="longer than max_len 10"):
        pe(np.zeros((1, 11, 6)))
    with pytest.raises(ValueError, match="PositionalEncoding: input must be"):
        pe(np.zeros((1, 3, 5)))


def test_bad_input():
    with pytest.raises(ValueError, match="divisible by num_heads"):
        nn.Transformer(10, 3)
    with pytest.raises(ValueError, match="activation must be 'relu', 'gelu'"):
        nn.TransformerEncoderLayer(D, H, activation="tanh")
    with pytest.raises(ValueError, match="dropout must be in"):
        nn.TransformerDecoderLayer(D, H, dropout=2.0)
    m = nn.Transformer(D, H, 1, 1, FF, dtype=np.float64, seed=0)
    src, tgt = np.zeros((S, N, D)), np.zeros((T, N, D))
    with pytest.raises(ValueError, match="batch size of src"):
        m(src, tgt[:, :2])
    with pytest.raises(ValueError, match="must be d_model = 8"):
        m(src[..., :4], tgt[..., :4])
    with pytest.raises(ValueError, match="both be 3-D"):
        m(src, tgt[:, 0])
    with pytest.raises(TypeError, match="integer mask is ambiguous"):
        m(src, tgt, src_key_padding_mask=np.zeros((N, S), np.int64))
    with pytest.raises(ValueError, match=r"attn_mask must have shape \(4, 4\)"):
        m(src, tgt, tgt_mask=np.zeros((S, S)))


def test_unbatched_layers_against_torch(backend, rng):
    torch = pytest.importorskip("torch")
    enc, tenc = _config(torch, "TransformerEncoderLayer", D, H, FF, dropout=0.0)
    dec, tdec = _config(torch, "TransformerDecoderLayer", D, H, FF, dropout=0.0, norm_first=True)
    src, tgt = rng.standard_normal((S, D)), rng.standard_normal((T, D))
    pad = np.zeros(S, bool)
    pad[-1] = True
    ts, tt = torch.tensor(src, requires_grad=True), torch.tensor(tgt, requires_grad=True)
    mem = enc(src, src_key_padding_mask=pad)
    tmem = tenc(ts, src_key_padding_mask=torch.tensor(pad))
    causal = ~np.tri(T, dtype=bool)
    y = dec(tgt, mem, tgt_is_causal=True, memory_key_padding_mask=pad)
    ty = tdec(tt, tmem, tgt_mask=torch.tensor(causal), tgt_is_causal=True, memory_key_padding_mask=torch.tensor(pad))
    np.testing.assert_allclose(y, ty.detach().numpy(), **TOL)
    g = rng.standard_normal(y.shape)
    dt, dm = dec.backward(g)
    ds = enc.backward(dm)
    ty.backward(torch.tensor(g))
    _check_grads(dec, tdec, [(dt, tt)])
    _check_grads(enc, tenc, [(ds, ts)])


def test_float32_transformer_is_close_to_float64(backend, rng):
    m32 = nn.Transformer(D, H, 1, 1, FF, dropout=0.0, batch_first=True, seed=0)
    m64 = nn.Transformer(D, H, 1, 1, FF, dropout=0.0, batch_first=True, dtype=np.float64, seed=0)
    src, tgt = rng.standard_normal((N, S, D)), rng.standard_normal((N, T, D))
    y32 = m32(src.astype(np.float32), tgt.astype(np.float32), tgt_is_causal=True)
    y64 = m64(src, tgt, tgt_is_causal=True)
    assert y32.dtype == np.float32 and all(p.data.dtype == np.float32 for p in m32.parameters())
    np.testing.assert_allclose(y32, y64, rtol=1e-4, atol=1e-4)
    ds32, dt32 = m32.backward(np.ones_like(y32))
    ds64, dt64 = m64.backward(np.ones_like(y64))
    assert ds32.dtype == np.float32
    np.testing.assert_allclose(ds32, ds64, rtol=1e-3, atol=1e-4)
    with pytest.raises(TypeError, match="dtype"):
        m32(src, tgt)  # float64 input into a float32 model
