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


@pytest.mark.parametrize("which", ["query", "key", "value"])
@pytest.mark.parametrize("dtype", [np.int32, np.float16, np.complex128, object, bool])
def test_attention_each_argument_dtype_is_named(backend, which, dtype):
    args = {"query": ones(2, 4, 8), "key": ones(2, 5, 8), "value": ones(2, 5, 3)}
    args[which] = args[which].astype(dtype)
    with pytest.raises(TypeError, match=f"{which} must be a float32 or float64 array"):
        F.scaled_dot_product_attention(**args)


def test_attention_value_shapes(backend):
    with pytest.raises(ValueError, match=r"value must have at least 2 dimensions"):
        F.scaled_dot_product_attention(ones(4, 8), ones(4, 8), ones(4))
    with pytest.raises(ValueError, match=r"value \(3, 5, 8\) must have the same leading dimensions"):
        F.scaled_dot_product_attention(ones(2, 4, 8), ones(2, 5, 8), ones(3, 5, 8))
    with pytest.raises(ValueError, match="same length Tk"):  # (Tk mismatch also with Tq == Tk)
        F.scaled_dot_product_attention(ones(5, 8), ones(5, 8), ones(4, 8))


@pytest.mark.parametrize("mask", [np.ones(5, np.complex64), np.ones(5, object), np.ones(5, np.uint8),
                                  np.array(["a"] * 5, dtype="S1")], ids=lambda m: str(m.dtype))
def test_attention_mask_dtypes(backend, mask):
    q = ones(2, 4, 8)
    k = ones(2, 5, 8)
    with pytest.raises(TypeError, match=f"attn_mask must be bool .*got dtype {mask.dtype}"):
        F.scaled_dot_product_attention(q, k, k, attn_mask=mask)


@pytest.mark.parametrize("value", [1, 0, None, "True", 1.0, np.int64(1)], ids=repr)
def test_is_causal_must_be_bool(backend, value):
    q = ones(2, 4, 8)
    with pytest.raises(TypeError, match="is_causal must be a bool"):
        F.scaled_dot_product_attention(q, q, q, is_causal=value)


def test_is_causal_accepts_numpy_bool(backend, rng):
    q = rng.standard_normal((2, 4, 8)).astype(np.float32)
    np.testing.assert_array_equal(F.scaled_dot_product_attention(q, q, q, is_causal=np.bool_(True)),
                                  F.scaled_dot_product_attention(q, q, q, is_causal=True))


@pytest.mark.parametrize("scale", [True, 1j, [0.5], "1"], ids=repr)
def test_scale_must_be_real(backend, scale):
    q = ones(2, 4, 8)
    with pytest.raises(TypeError, match="scale must be a real number"):
        F.scaled_dot_product_attention(q, q, q, scale=scale)
    with pytest.raises(TypeError, match="scale must be a real number"):
        F.masked_softmax(q, None, scale)


def test_errors_are_raised_for_empty_inputs_too(backend):
    # validation does not depend on there being work to do
    with pytest.raises(TypeError, match="query must be a float32 or float64"):
        F.scaled_dot_product_attention(np.ones((0, 4, 8), int), ones(0, 4, 8), ones(0, 4, 8))
    with pytest.raises(ValueError, match="attn_mask of shape"):
        F.scaled_dot_product_attention(ones(2, 0, 8), ones(2, 5, 8), ones(2, 5, 8), np.ones(4, bool))
    with pytest.raises(ValueError, match="D = 0"):
        F.scaled_dot_product_attention(ones(0, 4, 0), ones(0, 4, 0), ones(0, 4, 3))
    with pytest.raises(ValueError, match="mask of shape"):
        F.masked_softmax(ones(0, 4), np.ones(3, bool))
    with pytest.raises(ValueError, match="weight must have shape"):
        F.layer_norm(ones(0, 4), ones(3))
    with pytest.raises(ValueError, match="approximate must be"):
        F.gelu(ones(0), approximate="exact")


@pytest.mark.parametrize("dtype", [np.int8, np.float16, np.complex64, object, bool])
def test_softmax_layer_norm_gelu_dtypes(backend, dtype):
    x = np.ones((2, 3), dtype=dtype)
    for fn in (F.softmax, F.masked_softmax, F.layer_norm, F.gelu):
        with pytest.raises(TypeError, match=f"x must be a float32 or float64 array, got dtype {np.dtype(dtype)}"):
            fn(x)


def test_softmax_axis_errors(backend):
    x = ones(2, 3, 4)
    for axis in (3, -4, 100):
        with pytest.raises(np.exceptions.AxisError):
            F.masked_softmax(x, None, 1.0, axis)
    for axis in (True, "1", None, 1.0):
        with pytest.raises(TypeError, match="axis must be an int"):
            F.softmax(x, axis=axis)
    assert F.softmax(x, axis=np.int64(1)).shape == (2, 3, 4)  # numpy integers are fine
    with pytest.raises(ValueError, match="x must have at least 1 dimension"):
        F.masked_softmax(np.array(1.0), None)


def test_layer_norm_parameter_errors(backend):
    x = ones(3, 4)
    with pytest.raises(ValueError, match=r"weight must have shape \(4,\) for x of shape \(3, 4\), got \(1, 4\)"):
        F.layer_norm(x, ones(1, 4))
    with pytest.raises(ValueError, match=r"bias must have shape \(4,\) .*got \(\)"):
        F.layer_norm(x, None, np.float32(1.0))
    with pytest.raises(TypeError, match=r"bias must have the dtype of x \(float64\), got float32"):
        F.layer_norm(x.astype(np.float64), None, ones(4))
    with pytest.raises(TypeError, match="weight must be a float32 or float64 array, got dtype complex64"):
        F.layer_norm(x, np.ones(4, np.complex64))
    for eps in (-1e-12, float("-inf")):
        with pytest.raises(ValueError, match="eps must be >= 0"):
            F.layer_norm(x, eps=eps)
    for eps in ("1e-5", None, True):
        with pytest.raises(TypeError, match="eps must be a real number"):
            F.layer_norm(x, eps=eps)


@pytest.mark.parametrize("approximate", ["Tanh", "erf", "", None, True], ids=repr)
def test_gelu_approximate_errors(backend, approximate):
    with pytest.raises(ValueError, match="approximate must be 'none' or 'tanh'"):
        F.gelu(ones(3), approximate=approximate)
