import numpy as np
import pytest

import oracle
from fastattn import functional as F

DTYPES = [np.float32, np.float64]


def assert_gelu_close(got, x, approximate, dtype):
    """Relative accuracy everywhere, including the tiny values of the negative tail.

    There GELU is ill-conditioned: its relative condition number |x g'(x) / g(x)| grows like x^2
    (erf form) or x^3 (tanh form), about 120 and 230 at x = -11 and -10. Any implementation
    that rounds to the working precision on the way is then off by ~eps * condition, whatever
    its care, so the bound is rtol + 4 eps * condition (1e-5 for float32 where it is well
    conditioned). Values at the bottom of the normal range (below 1000 * tiny, ~1e-35 in
    float32: x < -10 or so) only need to be tiny: an intermediate exp there over/underflows."""
    want = oracle.gelu(x, approximate)
    h = 1e-7
    with np.errstate(divide="ignore", invalid="ignore"):
        cond = np.abs((oracle.gelu(x * (1 + h), approximate) - oracle.gelu(x * (1 - h), approximate))
                      / (2 * h * want))
    cond = np.nan_to_num(cond, nan=1.0, posinf=1.0)
    bound = (oracle.rtol(dtype) + 4 * np.finfo(dtype).eps * cond) * np.abs(want)
    bound += 1000 * np.finfo(dtype).tiny
    assert got.dtype == dtype and got.shape == x.shape
    bad = np.abs(got.astype(np.float64) - want) > bound
    assert not bad.any(), f"x = {x[bad][:5]}, got {got[bad][:5]}, want {want[bad][:5]}"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_matches_oracle(backend, rng, dtype, approximate):
    x = np.concatenate([np.linspace(-20, 20, 4001), rng.standard_normal(3000) * 4]).astype(dtype)
    assert_gelu_close(F.gelu(x, approximate=approximate), x, approximate, dtype)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_negative_tail_relative_accuracy_float32(backend, approximate):
    # where the tail is still well conditioned (condition <= ~60), plain 1e-5 relative
    x = np.linspace(-6, -3, 2001).astype(np.float32)
    got = F.gelu(x, approximate=approximate).astype(np.float64)
    want = oracle.gelu(x, approximate)
    assert np.max(np.abs(got - want) / np.abs(want)) < 1e-5


@pytest.mark.parametrize("dtype", DTYPES)
def test_shapes_and_non_contiguous(backend, rng, dtype):
    x = rng.standard_normal((40, 7, 3)).astype(dtype).transpose(2, 0, 1)[:, ::3]
    assert_gelu_close(F.gelu(x), x, "none", dtype)
    assert F.gelu(np.float64(1.5)).shape == ()
    assert F.gelu(np.zeros((0, 3), dtype)).shape == (0, 3)


def test_large_inputs_chunked(backend, rng):
    # more elements than one compiled chunk (16384), odd count
    x = rng.standard_normal(100_003).astype(np.float32) * 3
    assert_gelu_close(F.gelu(x, "tanh"), x, "tanh", np.float32)


def test_special_values(backend):
    x = np.array([0.0, -0.0, np.inf, np.nan, -50.0, 50.0])
    for approximate in ("none", "tanh"):
        out = F.gelu(x, approximate)
        assert out[0] == 0 and out[2] == np.inf and np.isnan(out[3])
        assert out[4] == 0 and out[5] == 50.0


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_negative_tail_float32_down_to_minus_10(backend, approximate):
    # x/2 * (1 + erf(x/sqrt 2)) evaluated as written loses every digit here (1 + erf -> 0 in
    # float32 from x = -5.5 on): the result must keep its relative accuracy. The erf form holds
    # 1e-5. The tanh form computes u = sqrt(2/pi) (x + 0.044715 x^3) in float32 first: at x = -10
    # u = -43.7, each of its ~4 roundings is up to 2.6e-6 absolute, and exp(-2u) turns an error
    # du into 2 du relative, so any float32 evaluation of u is off by up to ~1.5e-5 below x = -8.
    x = np.linspace(-10, -3, 7001).astype(np.float32)
    got = F.gelu(x, approximate=approximate)
    assert got.dtype == np.float32
    want = oracle.gelu(x, approximate)
    rel = np.abs(got.astype(np.float64) - want) / np.abs(want)
    assert np.all(want < 0) and np.all(got < 0)  # no underflow to 0 in this range
    if approximate == "none":
        assert rel.max() < 1e-5
    else:
        assert rel[x >= -8].max() < 1e-5
        assert rel.max() < 2e-5


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_negative_tail_float64(backend, approximate):
    # relative 1e-12 down to the bottom of the double range (values ~1e-300); below the normal
    # range (tanh form from x = -21.1) only an absolute error of ~1e-305 is asked
    x = np.linspace(-35, -3, 3201)
    got = F.gelu(x, approximate=approximate)
    want = oracle.gelu(x, approximate)
    bad = np.abs(got - want) > 1e-12 * np.abs(want) + 1e3 * np.finfo(np.float64).tiny
    assert not bad.any(), f"x = {x[bad][:5]}, got {got[bad][:5]}, want {want[bad][:5]}"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [16383, 16384, 16385, 2 * 16384 + 1])
def test_sizes_around_the_compiled_chunk(backend, rng, dtype, n):
    x = (rng.standard_normal(n) * 4).astype(dtype)
    for approximate in ("none", "tanh"):
        assert_gelu_close(F.gelu(x, approximate), x, approximate, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_positive_side_and_zero(backend, dtype):
    # gelu(x) == x to working precision for x >= 10 (Phi(10) = 1 - 7.6e-24); gelu(0) = 0
    x = np.array([10.0, 20.0, 1e3, 1e6], dtype=dtype)
    for approximate in ("none", "tanh"):
        np.testing.assert_array_equal(F.gelu(x, approximate), x)
        assert F.gelu(np.zeros(5, dtype), approximate).tolist() == [0.0] * 5


def test_input_not_modified_and_result_new(backend, rng):
    x = rng.standard_normal((4, 9)).astype(np.float32)
    before = x.copy()
    out = F.gelu(x)
    assert np.array_equal(x, before) and not np.shares_memory(out, x)


@pytest.mark.parametrize("dtype, lo, hi", [(np.float32, -10.06, -10.0), (np.float64, -21.1589, -21.14)])
def test_tanh_form_near_the_bottom_of_the_normal_range(backend, dtype, lo, hi):
    # Here the tanh form needs exp(-2u) just below the overflow of `dtype` (-2u up to 88.72 in
    # float32, up to 709.7 in float64). The results (float32: 3.0e-38 .. 1.2e-37, float64:
    # ~1e-307) are normal numbers and must keep their relative accuracy (the NumPy backend does).
    # An exp that saturates early (returns exp(88.376) for arguments in (88.376, 88.72], or
    # exp(709) in (709, 709.78]) is off by up to 29% / 54% in exp, and more in the result.
    # (Just below these ranges exp(-2u) overflows and both backends return -0 where the true
    # values are still normal, < 3.3e-38 in float32: a loss in the last factor 3 of the normal
    # range, not tested.)
    x = np.linspace(lo, hi, 601).astype(dtype)
    got = F.gelu(x, approximate="tanh").astype(np.float64)
    want = oracle.gelu(x, "tanh")
    assert np.all(np.abs(want) > 2 * np.finfo(dtype).tiny)
    rel = np.abs(got - want) / np.abs(want)
    rtol = 2e-5 if dtype == np.float32 else 1e-12
    assert rel.max() < rtol, f"x = {x[rel.argmax()]}: got {got[rel.argmax()]}, want {want[rel.argmax()]}"
