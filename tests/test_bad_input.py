"""Bad input gets a clear exception that names the argument, on both backends."""
import numpy as np
import pytest

from fastattn import functional as F

f32 = np.float32


def ones(*shape, dtype=f32):
    return np.ones(shape, dtype=dtype)


@pytest.mark.parametrize("bad, match", [
    (np.ones((2, 4, 8), dtype=np.int64), "query must be a float32 or float64 array, got dtype int64"),
    (np.ones((2, 4, 8), dtype=np.float16), "query must be a float32 or float64 array, got dtype float16"),
    (np.ones((2, 4, 8), dtype=np.complex64), "query must be a float32 or float64"),
    (np.array([[["a"]]], dtype=object), "query must be a float32 or float64"),
    (np.ones((2, 4, 8), dtype=bool), "query must be a float32 or float64"),
])
def test_attention_dtypes(backend, bad, match):
    with pytest.raises(TypeError, match=match):
        F.scaled_dot_product_attention(bad, ones(2, 4, 8), ones(2, 4, 8))


def test_attention_mixed_dtypes(backend):
    with pytest.raises(TypeError, match="same dtype, got float32, float64, float32"):
        F.scaled_dot_product_attention(ones(2, 4, 8), ones(2, 4, 8, dtype=np.float64), ones(2, 4, 8))


@pytest.mark.parametrize("q, k, v, match", [
    (ones(8), ones(4, 8), ones(4, 8), r"query must have at least 2 dimensions .* \(8,\)"),
    (ones(4, 8), ones(8), ones(4, 8), r"key must have at least 2 dimensions"),
    (ones(2, 4, 8), ones(3, 4, 8), ones(3, 4, 8), r"same leading dimensions"),
    (ones(2, 4, 8), ones(2, 4, 7), ones(2, 4, 8), r"same last dimension D"),
    (ones(2, 4, 8), ones(2, 5, 8), ones(2, 6, 8), r"key \(2, 5, 8\) and value \(2, 6, 8\) must have the same length Tk"),
    (ones(2, 4, 0), ones(2, 5, 0), ones(2, 5, 3), r"D = 0"),
])
def test_attention_shapes(backend, q, k, v, match):
    with pytest.raises(ValueError, match=match):
        F.scaled_dot_product_attention(q, k, v)


@pytest.mark.parametrize("mask, exc, match", [
    (np.ones((4, 6), bool), ValueError, r"attn_mask of shape \(4, 6\) does not broadcast to \(2, 3, 4, 5\)"),
    (np.ones((3, 1, 1, 5), bool), ValueError, r"attn_mask of shape \(3, 1, 1, 5\) does not broadcast"),
    (np.ones((1, 2, 3, 4, 5), bool), ValueError, r"does not broadcast"),
    (np.ones(5, np.int32), TypeError, r"attn_mask must be bool .* or floating .*, got dtype int32"),
    (np.array(["x"] * 5), TypeError, r"attn_mask must be bool"),
])
def test_attention_masks(backend, mask, exc, match):
    q = ones(2, 3, 4, 8)
    k = ones(2, 3, 5, 8)
    with pytest.raises(exc, match=match):
        F.scaled_dot_product_attention(q, k, k, attn_mask=mask)


def test_attention_arguments(backend):
    q = ones(2, 4, 8)
    with pytest.raises(TypeError, match="is_causal must be a bool, got int"):
        F.scaled_dot_product_attention(q, q, q, is_causal=1)
    with pytest.raises(TypeError, match="scale must be a real number, got str"):
        F.scaled_dot_product_attention(q, q, q, scale="0.1")


def test_softmax_errors(backend):
    x = ones(3, 4)
    with pytest.raises(TypeError, match="x must be a float32 or float64 array, got dtype int64"):
        F.softmax(np.ones((3, 4), np.int64))
    with pytest.raises(ValueError, match="x must have at least 1 dimension"):
        F.softmax(np.float32(1.0))
    with pytest.raises(np.exceptions.AxisError):
        F.softmax(x, axis=2)
    with pytest.raises(TypeError, match="axis must be an int, got float"):
        F.softmax(x, axis=1.0)
    with pytest.raises(ValueError, match=r"mask of shape \(5,\) does not broadcast to \(3, 4\)"):
        F.masked_softmax(x, np.ones(5, bool))
    with pytest.raises(TypeError, match="mask must be bool"):
        F.masked_softmax(x, np.ones(4, np.uint8))
    with pytest.raises(TypeError, match="scale must be a real number, got NoneType"):
        F.masked_softmax(x, None, None)


def test_layer_norm_errors(backend):
    x = ones(3, 4)
    with pytest.raises(TypeError, match="x must be a float32 or float64 array, got dtype float16"):
        F.layer_norm(x.astype(np.float16))
    with pytest.raises(ValueError, match="x must have at least 1 dimension"):
        F.layer_norm(np.float64(2.0))
    with pytest.raises(ValueError, match=r"weight must have shape \(4,\) for x of shape \(3, 4\), got \(3,\)"):
        F.layer_norm(x, ones(3))
    with pytest.raises(ValueError, match=r"bias must have shape \(4,\)"):
        F.layer_norm(x, None, ones(4, 1))
    with pytest.raises(TypeError, match=r"weight must have the dtype of x \(float32\), got float64"):
        F.layer_norm(x, ones(4, dtype=np.float64))
    with pytest.raises(TypeError, match="bias must be a float32 or float64 array, got dtype int64"):
        F.layer_norm(x, None, np.ones(4, np.int64))
    with pytest.raises(ValueError, match="eps must be >= 0, got -1"):
        F.layer_norm(x, eps=-1.0)
    with pytest.raises(ValueError, match="eps must be >= 0, got nan"):
        F.layer_norm(x, eps=float("nan"))


def test_gelu_errors(backend):
    with pytest.raises(ValueError, match="approximate must be 'none' or 'tanh', got 'erf'"):
        F.gelu(ones(3), approximate="erf")
    with pytest.raises(TypeError, match="x must be a float32 or float64 array, got dtype int64"):
        F.gelu(np.arange(3))


def test_lists_are_accepted_when_float(backend):
    out = F.softmax([[1.0, 2.0, 3.0]])
    assert out.dtype == np.float64 and out.shape == (1, 3)
    with pytest.raises(TypeError, match="got dtype int64"):
        F.softmax([[1, 2, 3]])
