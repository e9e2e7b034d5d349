"""Linear products with int8 and bfloat16 weights (fastattn/_lowp.py), in NumPy: the arithmetic
that the compiled kernels (src_cython/linear_lowp.pyx, lowp_rows.h) do on oneDNN, step by step.

int8: each row of x (M, K) is quantized at run time, symmetric: amax = max|x[m]|,
    qx[m] = clip(rint(x[m] * float32(127 / amax)), -127, 127) (ties to even), sx[m] = amax / 127;
    a row with amax < 2^-100 quantizes to zeros (sx 0), one holding NaN or inf gives sx NaN.
    acc = qx @ qw^T is exact in integers (float64 holds |acc| <= 127^2 K < 2^53 exactly), and
    y = float32(acc) * sx[m] * sw[n] + b[n], each operation in float32, left to right.
bfloat16: y = bf16(x) @ w^T + b, with the bfloat16 values' products summed exactly (float64)
    and rounded once to float32 (the compiled kernel sums them in float32: within K rounding
    steps of this).
"""
import numpy as np

_TINY = np.float32(2.0 ** -100)


def quantize_rows_int8(x):
    """x (M, K) float32 -> (qx (M, K) int8, sx (M,) float32), as lowp_rows.h's fa_quantize_row_s8."""
    x = np.asarray(x, dtype=np.float32)
    amax = np.max(np.abs(x), axis=1, initial=np.float32(0))
    bad = ~np.isfinite(amax)
    ok = ~bad & (amax >= _TINY)
    inv = np.zeros_like(amax)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv[ok] = np.float32(127) / amax[ok]
        v = x * inv[:, None]
    v[~ok] = 0
    qx = np.rint(np.clip(v, np.float32(-127), np.float32(127))).astype(np.int8)
    sx = np.where(ok, amax / np.float32(127), np.float32(0)).astype(np.float32)
    sx[bad] = np.nan
    return qx, sx


def bfloat16_bits(x):
    """float32 array -> the nearest bfloat16 values (ties to even) as uint16 bits; NaN stays NaN."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = ((u + np.uint32(0x7FFF) + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    nan = (u & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    return np.where(nan, ((u >> 16) | 0x40).astype(np.uint16), rounded)


def bfloat16_values(bits):
    """uint16 bfloat16 bits -> float32 values (exact)."""
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def linear_int8(input, weight, scale, bias=None):
    """input (..., K) float32, weight (N, K) int8, scale (N,) float32, bias (N,) or None -> (..., N)."""
    x = np.asarray(input, dtype=np.float32)
    K, N = x.shape[-1], weight.shape[0]
    qx, sx = quantize_rows_int8(x.reshape(-1, K))
    acc = qx.astype(np.float64) @ weight.astype(np.float64).T  # exact: small integers
    with np.errstate(invalid="ignore"):
        y = acc.astype(np.float32) * sx[:, None] * scale[None, :]
    if bias is not None:
        y = y + bias
    return y.astype(np.float32, copy=False).reshape(x.shape[:-1] + (N,))


def linear_bf16(input, weight, bias=None):
    """input (..., K) float32, weight (N, K) bfloat16 bits (uint16), bias (N,) or None -> (..., N)."""
    x = np.asarray(input, dtype=np.float32)
    K, N = x.shape[-1], weight.shape[0]
    xb = bfloat16_values(bfloat16_bits(x.reshape(-1, K))).astype(np.float64)
    y = xb @ bfloat16_values(weight).astype(np.float64).T
    if bias is not None:
        y = y + bias
    return y.astype(np.float32).reshape(x.shape[:-1] + (N,))


def linear_lowp(input, weight, bias=None):
    """linear with an Int8Weight or BFloat16Weight (fastattn/_lowp.py) as the weight."""
    if weight.compute_type == "int8":
        return linear_int8(input, weight.q, weight.scale, bias)
    return linear_bf16(input, weight.bits, bias)
