"""The kernels, one function each, on NumPy arrays; names and arguments follow torch.nn.functional.

Every function checks its inputs here, once, and then runs on the active backend
(fastattn.get_backend()). Supported dtypes are float32 and float64; the result has the dtype of
the input. Anything else raises TypeError; shapes that do not fit raise ValueError. Inputs may be
non-contiguous (transposed, sliced); results are new arrays.

Masks (attn_mask of scaled_dot_product_attention, mask of masked_softmax) follow PyTorch:
  bool   True = may attend / keep, False = excluded (score -> -inf)
  float  added to the scaled scores (-inf excludes, whatever the score: NaN too); cast to the
         dtype of the scores
and broadcast (NumPy rules) to the shape of the scores. A row in which every entry is excluded
returns zeros, never NaN (as PyTorch's SDPA does since 2.5). NaN in the input propagates to every
output that depends on it. Attention: a NaN or inf in the value row of a key that a query may not
see may or may not reach that query's output (the reference multiplies it by 0, giving NaN; the
compiled kernel never reads key blocks that no query of a block can see); do not rely on either.
"""
import numbers

import numpy as np

from fastattn import _backend, _lowp



def __dir__():
    """dir(F): the kernels (__all__, at the end of this file), not the modules it imports (np, ...)."""
    return sorted(__all__)

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _float_array(name, x):
    """x as an ndarray of float32 or float64, or TypeError naming the argument."""
    a = np.asarray(x)
    if a.dtype not in _FLOATS:
        raise TypeError(f"{name} must be a float32 or float64 array, got dtype {a.dtype}")
    return a


def _real(name, value):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    return float(value)


def _mask_array(name, mask, target_shape):
    """A bool or float mask that broadcasts to target_shape, or a clear error."""
    if mask is None:
        return None
    m = np.asarray(mask)
    if m.dtype != np.bool_ and not np.issubdtype(m.dtype, np.floating):
        raise TypeError(
            f"{name} must be bool (True = attend) or floating (added to the scores), got dtype {m.dtype}")
    try:
        shape = np.broadcast_shapes(m.shape, target_shape)
    except ValueError:
        shape = None
    if shape != tuple(target_shape):
        raise ValueError(f"{name} of shape {m.shape} does not broadcast to {tuple(target_shape)}")
    return m


def _attention_args(query, key, value, attn_mask, is_causal, scale, enable_gqa=False, window=None):
    """The checks shared by the attention forward and backward; returns the arrays as ndarrays
    (and the window, None or an int >= 1)."""
    q, k, v = (_float_array(n, a) for n, a in (("query", query), ("key", key), ("value", value)))
    if not q.dtype == k.dtype == v.dtype:
        raise TypeError(
            f"query, key and value must have the same dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    for name, a in (("query", q), ("key", k), ("value", v)):
        if a.ndim < 2:
            raise ValueError(f"{name} must have at least 2 dimensions (..., T, D), got shape {a.shape}")
    if not isinstance(enable_gqa, (bool, np.bool_)):
        raise TypeError(f"enable_gqa must be a bool, got {type(enable_gqa).__name__}")
    if k.shape[:-2] != v.shape[:-2]:
        raise ValueError(f"key {k.shape} and value {v.shape} must have the same leading dimensions")
    if enable_gqa and q.shape[:-2] != k.shape[:-2]:
        # grouped-query attention: (..., H, T, D) queries, (..., H_kv, T, D) keys and values
        if q.ndim < 3 or k.ndim != q.ndim or q.shape[:-3] != k.shape[:-3] or k.shape[-3] == 0 \
                or q.shape[-3] % k.shape[-3]:
            raise ValueError(
                f"enable_gqa: query {q.shape} (..., H, Tq, D) and key {k.shape}, value {v.shape} "
                "(..., H_kv, Tk, D) must have the same batch dimensions and H a multiple of H_kv")
    elif q.shape[:-2] != k.shape[:-2]:
        raise ValueError(
            f"query {q.shape}, key {k.shape} and value {v.shape} must have the same leading dimensions"
            + (" (different head counts need enable_gqa=True)" if q.ndim >= 3 and q.ndim == k.ndim
               and q.shape[:-3] == k.shape[:-3] else ""))
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"query {q.shape} and key {k.shape} must have the same last dimension D")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"key {k.shape} and value {v.shape} must have the same length Tk")
    if q.shape[-1] == 0:
        raise ValueError(f"query and key have D = 0 (shapes {q.shape}, {k.shape}); D must be >= 1")
    if not isinstance(is_causal, (bool, np.bool_)):
        raise TypeError(f"is_causal must be a bool, got {type(is_causal).__name__}")
    if window is not None:
        if isinstance(window, (bool, np.bool_)) or not isinstance(window, numbers.Integral):
            raise TypeError(f"window must be None or an int, got {type(window).__name__}")
        if window < 1:
            raise ValueError(f"window must be >= 1 (keys each query may see), got {window}")
        if not is_causal:
            raise ValueError("window (sliding-window attention) needs is_causal=True")
        window = int(window)
    mask = _mask_array("attn_mask", attn_mask, q.shape[:-2] + (q.shape[-2], k.shape[-2]))
    return q, k, v, mask, None if scale is None else _real("scale", scale), window


_TooHardError = getattr(np, "exceptions", np).TooHardError


def _out_array(name, out, shape, dtype, inputs=()):
    """out (None, or a writable ndarray of exactly this shape and dtype that shares no memory
    with any of `inputs`, (name, array) pairs), or a clear error."""
    if out is None:
        return None
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array, got {type(out).__name__}")
    if out.dtype != dtype:
        raise TypeError(f"{name} must have dtype {dtype}, got {out.dtype}")
    if out.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {out.shape}")
    if not out.flags.writeable:
        raise ValueError(f"{name} is read-only")
    for other, a in inputs:
        if a is not None and out.size and a.size and _overlap(out, a):
            raise ValueError(f"{name} overlaps {other}: the kernel would read what it has overwritten")
    return out


def _overlap(a, b):
    """Whether a and b share an element. Interleaved views of one buffer (q, k and v of a fused
    (B, T, 3, H, hs) projection) share bounds but no element: the exact test tells them apart.
    When it is too hard to decide, assume they overlap."""
    if not np.may_share_memory(a, b):
        return False
    try:
        return np.shares_memory(a, b, max_work=10 ** 6)
    except _TooHardError:
        return True


def scaled_dot_product_attention(query, key, value, attn_mask=None, is_causal=False, scale=None,
                                 return_lse=False, out=None, enable_gqa=False, window=None):
    """softmax(query @ key^T * scale + mask) @ value.

    query (..., Tq, D), key (..., Tk, D), value (..., Tk, Dv) -> (..., Tq, Dv); the leading
    dimensions (e.g. batch, heads) must be equal. scale defaults to 1 / sqrt(D).
    attn_mask: bool or float, broadcastable to (..., Tq, Tk) (see the module docstring).
    is_causal: query i sees keys j <= i + (Tk - Tq): the queries are the last Tq positions of the
    key sequence (the usual lower triangle when Tq == Tk; decoding with a KV cache when Tq < Tk).
    It may be combined with attn_mask. A query that may attend to no key gets zeros.
    return_lse: also return lse (..., Tq), the log-sum-exp of each row's scores (-inf for a row
    that sees no key): what scaled_dot_product_attention_backward needs.
    out: None, or an array of the output's shape and dtype (any strides) to write the output to;
    it is then returned. It must not overlap the inputs.
    enable_gqa (torch's name): grouped-query attention, query (..., H, Tq, D) against key and
    value (..., H_kv, Tk, D) with H a multiple of H_kv: query head h reads kv head
    h // (H / H_kv), in place (no repeated copy of key or value is made).
    window: None, or W >= 1 with is_causal=True: sliding-window attention, each query sees at
    most the last W keys (itself included), query i the keys i + (Tk - Tq) - W < j <= i + (Tk - Tq)
    (Mistral's sliding_window); key tiles outside every window are never computed.
    """
    q, k, v, mask, scale, window = _attention_args(query, key, value, attn_mask, is_causal, scale,
                                                   enable_gqa, window)
    lead, Tq, Tk, Dv = q.shape[:-2], q.shape[-2], k.shape[-2], v.shape[-1]
    out = _out_array("out", out, lead + (Tq, Dv), q.dtype,
                     (("query", q), ("key", k), ("value", v), ("attn_mask", mask)))
    backend = _backend.current()
    if q.size == 0 or Tk == 0 or Dv == 0:
        if out is None:
            out = np.zeros(lead + (Tq, Dv), dtype=q.dtype)
        out[...] = 0
        if not return_lse:
            return out
        if q.size == 0 or Tk == 0:  # no query, or no key to attend to: defined, all zeros
            return out, np.full(lead + (Tq,), -np.inf, dtype=q.dtype)
        # the output is empty but the scores are not: lse from a one-column value
        one = np.zeros(k.shape[:-1] + (1,), dtype=q.dtype)
        return out, backend.scaled_dot_product_attention(q, k, one, mask, bool(is_causal), scale, True,
                                                         None, bool(enable_gqa), window)[1]
    return backend.scaled_dot_product_attention(q, k, v, mask, bool(is_causal), scale, bool(return_lse),
                                                out, bool(enable_gqa), window)


def _window_visible(Tq, Tk, window):
    """(Tq, Tk) bool: the keys each query may see under the causal limit and the window."""
    i, j = np.arange(Tq)[:, None] + (Tk - Tq), np.arange(Tk)[None, :]
    return (j <= i) & (True if window is None else j > i - window)


def attention_weights(query, key, attn_mask=None, is_causal=False, scale=None, enable_gqa=False,
                      window=None):
    """The attention weights softmax(query @ key^T * scale + mask) themselves, (..., Tq, Tk):
    what scaled_dot_product_attention multiplies the values by (to look at, e.g. a heat map).

    The arguments mean what they mean for scaled_dot_product_attention. Each row sums to 1, but
    a query that may attend to no key gets a row of zeros. Unlike the attention kernel this
    builds the whole (..., Tq, Tk) array: meant for inspection, not for long sequences.
    With enable_gqa, key (..., H_kv, Tk, D) is read by each group of query heads without a copy.
    """
    q, k, _, mask, scale, window = _attention_args(query, key, key, attn_mask, is_causal, scale,
                                                   enable_gqa, window)
    Tq, Tk = q.shape[-2], k.shape[-2]
    if scale == 0:  # scores of 0 whatever q and k hold, as the kernels give
        scores = np.zeros(q.shape[:-1] + (Tk,), dtype=q.dtype)
    elif q.shape[:-2] != k.shape[:-2]:  # grouped: (..., H_kv, group, Tq, D) @ (..., H_kv, 1, D, Tk)
        H, H_kv = q.shape[-3], k.shape[-3]
        grouped = q.reshape(q.shape[:-3] + (H_kv, H // H_kv) + q.shape[-2:])
        scores = np.matmul(grouped, np.swapaxes(k, -1, -2)[..., None, :, :]).reshape(q.shape[:-1] + (Tk,))
    else:
        scores = np.matmul(q, np.swapaxes(k, -1, -2))
    if is_causal:  # query i sees keys j <= i + (Tk - Tq) (and > i + (Tk - Tq) - window), as the kernel
        visible = _window_visible(Tq, Tk, window)
        if mask is None or mask.dtype == np.bool_:
            mask = visible if mask is None else mask & visible
        else:
            mask = np.where(visible, mask, -np.inf).astype(mask.dtype)
    return masked_softmax(scores, mask, 1 / np.sqrt(q.shape[-1]) if scale is None else scale)


def scaled_dot_product_attention_backward(grad_output, query, key, value, output, lse,
                                          attn_mask=None, is_causal=False, scale=None, out=None,
                                          enable_gqa=False, window=None):
    """Gradients (grad_query, grad_key, grad_value) of scaled_dot_product_attention.

    grad_output: the gradient of the loss with respect to the output, (..., Tq, Dv); output and
    lse: what the forward returned with return_lse=True; the other arguments as in the forward.
    Rows that saw no key, and keys that no query saw, get zero gradients.
    out: None, or three arrays (shaped and typed as query, key, value; any strides) to write the
    gradients to; they are then returned. They must not overlap the inputs or each other.
    enable_gqa, window: as in the forward; with enable_gqa grad_key and grad_value (..., H_kv,
    Tk, .) are summed over the query heads of each group.
    """
    q, k, v, mask, scale, window = _attention_args(query, key, value, attn_mask, is_causal, scale,
                                                   enable_gqa, window)
    lead, Tq, Tk, Dv = q.shape[:-2], q.shape[-2], k.shape[-2], v.shape[-1]
    g, o, lse = (_same_as(name, _float_array(name, a), "query", q, shape) for name, a, shape in (
        ("grad_output", grad_output, lead + (Tq, Dv)), ("output", output, lead + (Tq, Dv)),
        ("lse", lse, lead + (Tq,))))
    if out is not None:
        if not isinstance(out, (tuple, list)) or len(out) != 3:
            raise TypeError("out must be None or a tuple of three arrays (grad_query, grad_key, grad_value)")
        inputs = [("query", q), ("key", k), ("value", v), ("attn_mask", mask), ("grad_output", g),
                  ("output", o), ("lse", lse)]
        checked = []
        for i, (a, ref) in enumerate(zip(out, (q, k, v))):
            checked.append(_out_array(f"out[{i}]", a, ref.shape, q.dtype, inputs))
            inputs.append((f"out[{i}]", a))
        out = tuple(checked)
    if q.size == 0 or Tk == 0 or Dv == 0:  # nothing flows through: all gradients are zero
        if out is None:
            return np.zeros_like(q), np.zeros_like(k), np.zeros_like(v)
        for a in out:
            a[...] = 0
        return out
    return _backend.current().scaled_dot_product_attention_backward(
        g, q, k, v, o, lse, mask, bool(is_causal), scale, out, bool(enable_gqa), window)


def masked_softmax(x, mask=None, scale=1.0, axis=-1):
    """softmax(x * scale + mask) along `axis`, in one fused pass on the compiled backend.

    mask: bool (True = keep) or float (added), broadcastable to x.shape. A fully masked row
    gives zeros.
    """
    a = _float_array("x", x)
    if a.ndim == 0:
        raise ValueError("x must have at least 1 dimension, got a 0-d array")
    if isinstance(axis, (bool, np.bool_)) or not isinstance(axis, numbers.Integral):
        raise TypeError(f"axis must be an int, got {type(axis).__name__}")
    if not -a.ndim <= axis < a.ndim:
        raise np.exceptions.AxisError(int(axis), a.ndim, "masked_softmax")
    m = _mask_array("mask", mask, a.shape)
    scale = _real("scale", scale)
    if a.size == 0:
        return np.empty(a.shape, dtype=a.dtype)
    return _backend.current().masked_softmax(a, m, scale, int(axis) % a.ndim)


def softmax(x, axis=-1):
    """softmax(x) along `axis` (masked_softmax without a mask)."""
    return masked_softmax(x, None, 1.0, axis)


def layer_norm(x, weight=None, bias=None, eps=1e-5, return_stats=False):
    """(x - mean) / sqrt(var + eps) * weight + bias over the last axis (biased variance, as torch).

    weight and bias: None or arrays of shape (C,), C = x.shape[-1], of the dtype of x.
    return_stats: return (y, mean, rstd) instead of y, mean and rstd = 1 / sqrt(var + eps) of
    shape x.shape[:-1] and the dtype of x: what layer_norm_backward needs.
    """
    a = _float_array("x", x)
    if a.ndim == 0:
        raise ValueError("x must have at least 1 dimension, got a 0-d array")
    C = a.shape[-1]
    params = []
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None:
            p = _float_array(name, p)
            if p.dtype != a.dtype:
                raise TypeError(f"{name} must have the dtype of x ({a.dtype}), got {p.dtype}")
            if p.shape != (C,):
                raise ValueError(f"{name} must have shape ({C},) for x of shape {a.shape}, got {p.shape}")
        params.append(p)
    eps = _real("eps", eps)
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    if not isinstance(return_stats, (bool, np.bool_)):
        raise TypeError(f"return_stats must be a bool, got {type(return_stats).__name__}")
    if a.size == 0:
        y = np.empty(a.shape, dtype=a.dtype)
        # (no features: the mean and rstd of an empty row are NaN, as NumPy's mean of nothing)
        stats = np.full(a.shape[:-1], np.nan if C == 0 else 0, dtype=a.dtype)
        return (y, stats, stats.copy()) if return_stats else y
    if return_stats:
        return _backend.current().layer_norm(a, params[0], params[1], eps, True)
    return _backend.current().layer_norm(a, params[0], params[1], eps)


def _same_as(name, a, ref_name, ref, shape=None):
    """a (already a float array) with the dtype of ref and the given shape (default ref's), or a
    clear error naming both."""
    if a.dtype != ref.dtype:
        raise TypeError(f"{name} must have the dtype of {ref_name} ({ref.dtype}), got {a.dtype}")
    shape = ref.shape if shape is None else tuple(shape)
    if a.shape != shape:
        raise ValueError(f"{name} must have shape {shape} for {ref_name} of shape {ref.shape}, got {a.shape}")
    return a


def masked_softmax_backward(grad_output, output, scale=1.0, axis=-1):
    """The gradient with respect to x of output = masked_softmax(x, mask, scale, axis).

    grad_output, output: same shape and dtype -> grad_x = scale * y * (g - sum(g * y, axis)).
    The mask is not needed: masked entries have y = 0, so their gradient is 0.
    """
    y = _float_array("output", output)
    g = _same_as("grad_output", _float_array("grad_output", grad_output), "output", y)
    if y.ndim == 0:
        raise ValueError("output must have at least 1 dimension, got a 0-d array")
    if isinstance(axis, (bool, np.bool_)) or not isinstance(axis, numbers.Integral):
        raise TypeError(f"axis must be an int, got {type(axis).__name__}")
    if not -y.ndim <= axis < y.ndim:
        raise np.exceptions.AxisError(int(axis), y.ndim, "masked_softmax_backward")
    scale = _real("scale", scale)
    if y.size == 0:
        return np.empty(y.shape, dtype=y.dtype)
    return _backend.current().masked_softmax_backward(g, y, scale, int(axis) % y.ndim)


def layer_norm_backward(grad_output, x, mean, rstd, weight=None):
    """Gradients of y = layer_norm(x, weight, bias, eps), given (y, mean, rstd) = layer_norm(...,
    return_stats=True).

    grad_output, x (..., C); mean, rstd x.shape[:-1]; weight None or (C,); all of the dtype of x
    -> (grad_x (..., C), grad_weight (C,) or None if weight is None, grad_bias (C,)).
    grad_bias (the sum of grad_output over all rows) is returned even without a bias.
    """
    a = _float_array("x", x)
    if a.ndim == 0:
        raise ValueError("x must have at least 1 dimension, got a 0-d array")
    g = _same_as("grad_output", _float_array("grad_output", grad_output), "x", a)
    m = _same_as("mean", _float_array("mean", mean), "x", a, a.shape[:-1])
    r = _same_as("rstd", _float_array("rstd", rstd), "x", a, a.shape[:-1])
    w = None if weight is None else _same_as("weight", _float_array("weight", weight), "x", a, a.shape[-1:])
    if a.size == 0:  # no rows (sums over nothing: 0) or no features
        C = a.shape[-1]
        return (np.empty(a.shape, dtype=a.dtype), None if w is None else np.zeros(C, a.dtype),
                np.zeros(C, a.dtype))
    return _backend.current().layer_norm_backward(g, a, m, r, w)


def gelu_backward(grad_output, x, approximate="none"):
    """grad_output * GELU'(x), the gradient of gelu(x, approximate) with respect to x.

    GELU'(x) = Phi(x) + x phi(x) ("none"), or the derivative of x/2 * (1 + tanh(u)),
    u = sqrt(2/pi) (x + 0.044715 x^3) ("tanh"). Exactly 1 or 0 for |x| >= 40, never NaN there.
    """
    a = _float_array("x", x)
    g = _same_as("grad_output", _float_array("grad_output", grad_output), "x", a)
    _gelu_form(approximate)
    if a.size == 0:
        return np.empty(a.shape, dtype=a.dtype)
    return _backend.current().gelu_backward(g, a, approximate)


def _gelu_form(approximate):
    if approximate not in ("none", "tanh"):
        raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")


def gelu(x, approximate="none"):
    """GELU: x/2 * (1 + erf(x / sqrt 2)) ("none"), or GPT-2's tanh approximation ("tanh")."""
    a = _float_array("x", x)
    _gelu_form(approximate)
    if a.size == 0:
        return np.empty(a.shape, dtype=a.dtype)
    return _backend.current().gelu(a, approximate)


def relu(x):
    """max(x, 0), elementwise (NaN stays NaN, as torch)."""
    a = _float_array("x", x)
    if a.size == 0:
        return np.empty(a.shape, dtype=a.dtype)
    return _backend.current().relu(a)


def relu_backward(grad_output, x):
    """grad_output where x > 0, else 0: the gradient of relu at x. x may be relu's input or its
    output (both are > 0 at the same places)."""
    a = _float_array("x", x)
    g = _same_as("grad_output", _float_array("grad_output", grad_output), "x", a)
    if a.size == 0:
        return np.empty(a.shape, dtype=a.dtype)
    return _backend.current().relu_backward(g, a)


def _cross_entropy_args(input, target, ignore_index, label_smoothing):
    z = _float_array("input", input)
    if z.ndim < 1 or z.shape[-1] == 0:
        raise ValueError(f"input must have shape (..., V) with V >= 1 classes, got {z.shape}")
    t = np.asarray(target)
    if t.dtype == np.bool_ or not np.issubdtype(t.dtype, np.integer):
        raise TypeError(f"target must be an integer array of class indices, got dtype {t.dtype}")
    if t.shape != z.shape[:-1]:
        raise ValueError(f"target must have shape {z.shape[:-1]} for input {z.shape}, got {t.shape}")
    if isinstance(ignore_index, (bool, np.bool_)) or not isinstance(ignore_index, numbers.Integral):
        raise TypeError(f"ignore_index must be an int, got {type(ignore_index).__name__}")
    label_smoothing = _real("label_smoothing", label_smoothing)
    if not 0 <= label_smoothing <= 1:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
    V = z.shape[-1]
    outside = (t != ignore_index) & ((t < 0) | (t >= V))
    if outside.any():
        where = tuple(int(i) for i in np.argwhere(outside)[0])
        raise ValueError(f"target has class {t[where]} at index {where}, outside [0, {V}) "
                         f"(and not ignore_index={ignore_index})")
    ignore_index = int(ignore_index)
    if not -2 ** 63 <= ignore_index < 2 ** 63:
        # The backends take an int64 ignore_index. One beyond int64 is outside [0, V), as -1 is:
        # the rows whose target holds it (a uint64 target can) become -1 rows, ignored the same.
        ignored = (t == ignore_index).reshape(-1)
        t = t.reshape(-1).astype(np.int64)
        t[ignored] = -1
        ignore_index = -1
    return z.reshape(-1, V), t.reshape(-1).astype(np.int64, copy=False), ignore_index, label_smoothing


def cross_entropy(input, target, ignore_index=-100, label_smoothing=0.0):
    """Softmax cross-entropy, averaged over the targets that are not ignore_index (PyTorch's
    F.cross_entropy with reduction="mean"), fused: no probability array is made.

    input (..., V) logits, target (...) integer class indices -> a 0-d array of input's dtype.
    label_smoothing eps: each row's target distribution is (1 - eps) one-hot + eps uniform.
    If every target is ignored the mean is over nothing: NaN, as in PyTorch.
    """
    z, t, ignore_index, label_smoothing = _cross_entropy_args(input, target, ignore_index, label_smoothing)
    return _backend.current().cross_entropy(z, t, ignore_index, label_smoothing)


def cross_entropy_backward(input, target, grad_output=1.0, ignore_index=-100, label_smoothing=0.0):
    """The gradient of grad_output * cross_entropy(input, target, ...) with respect to input
    (same shape): (softmax - smoothed one-hot) * grad_output / (number of non-ignored targets),
    zero on ignored rows. Written row by row, with no probability array besides the result."""
    shape = np.shape(input)
    z, t, ignore_index, label_smoothing = _cross_entropy_args(input, target, ignore_index, label_smoothing)
    grad_output = _real("grad_output", grad_output)
    return _backend.current().cross_entropy_backward(
        z, t, grad_output, ignore_index, label_smoothing).reshape(shape)


def adamw_step(param, grad, exp_avg, exp_avg_sq, step, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8,
               weight_decay=0.0):
    """One AdamW optimizer step (torch.optim.AdamW: decoupled weight decay), IN PLACE on param,
    exp_avg and exp_avg_sq; returns None.

        param      *= 1 - lr * weight_decay
        exp_avg     = beta1 * exp_avg + (1 - beta1) * grad
        exp_avg_sq  = beta2 * exp_avg_sq + (1 - beta2) * grad^2
        param      -= lr * (exp_avg / (1 - beta1^step)) / (sqrt(exp_avg_sq / (1 - beta2^step)) + eps)

    All four arrays have the same shape and dtype (float32 or float64). param, exp_avg and
    exp_avg_sq must be C-contiguous, writeable NumPy arrays that share no memory with each other
    or with grad; grad may have any layout. step (the number of this step, counting from 1) is an
    int >= 1; lr, eps, weight_decay >= 0; 0 <= beta1, beta2 < 1. Empty arrays: nothing to do.
    """
    for name, a in (("param", param), ("exp_avg", exp_avg), ("exp_avg_sq", exp_avg_sq)):
        if not isinstance(a, np.ndarray):
            raise TypeError(f"{name} must be a NumPy array (it is updated in place), got {type(a).__name__}")
    p = _float_array("param", param)
    g = _same_as("grad", _float_array("grad", grad), "param", p)
    m = _same_as("exp_avg", _float_array("exp_avg", exp_avg), "param", p)
    v = _same_as("exp_avg_sq", _float_array("exp_avg_sq", exp_avg_sq), "param", p)
    for name, a in (("param", p), ("exp_avg", m), ("exp_avg_sq", v)):
        if not a.flags.c_contiguous:
            raise ValueError(f"{name} must be C-contiguous: it is updated in place (got strides {a.strides})")
        if not a.flags.writeable:
            raise ValueError(f"{name} must be writeable: it is updated in place, and it is read-only")
    written = (("param", p), ("exp_avg", m), ("exp_avg_sq", v))
    for i, (name, a) in enumerate(written):
        for other, b in written[i + 1:] + (("grad", g),):
            if a.size and b.size and np.may_share_memory(a, b):
                raise ValueError(f"{name} and {other} must not share memory ({name} is updated in place)")
    if isinstance(step, (bool, np.bool_)) or not isinstance(step, numbers.Integral):
        raise TypeError(f"step must be an int, got {type(step).__name__}")
    if step < 1:
        raise ValueError(f"step must be >= 1 (the first step is 1), got {step}")
    lr, beta1, beta2, eps, weight_decay = (_real(n, x) for n, x in (
        ("lr", lr), ("beta1", beta1), ("beta2", beta2), ("eps", eps), ("weight_decay", weight_decay)))
    for name, x in (("lr", lr), ("eps", eps), ("weight_decay", weight_decay)):
        if not x >= 0:  # (also NaN)
            raise ValueError(f"{name} must be >= 0, got {x}")
    for name, x in (("beta1", beta1), ("beta2", beta2)):
        if not 0 <= x < 1:
            raise ValueError(f"{name} must be in [0, 1), got {x}")
    if p.size == 0:
        return None
    _backend.current().adamw_step(p, g, m, v, int(step), lr, beta1, beta2, eps, weight_decay)
    return None


def _linear_args(input, weight, bias):
    """The checks of linear and linear_gelu; returns input, weight and bias as ndarrays (an int8
    or bfloat16 weight of fastattn/_lowp.py as it is: its input and bias must be float32)."""
    x = _float_array("input", input)
    if x.ndim < 1:
        raise ValueError("input must have at least 1 dimension, got a 0-d array")
    if isinstance(weight, _lowp.LOW_PRECISION):
        if x.dtype != np.float32:
            raise TypeError(f"input must be float32 for a {weight.compute_type} weight, got dtype {x.dtype}")
        if x.shape[-1] != weight.shape[1]:
            raise ValueError(f"input (..., {x.shape[-1]}) does not fit the {weight.compute_type} weight "
                             f"{weight.shape} (..., in) @ (out, in)^T")
        if bias is not None:
            bias = _float_array("bias", bias)
            if bias.dtype != np.float32 or bias.shape != (weight.shape[0],):
                raise ValueError(f"bias must be float32 of shape ({weight.shape[0]},), got {bias.dtype} {bias.shape}")
        return x, weight, bias
    w = _float_array("weight", weight)
    if w.ndim != 2:
        raise ValueError(f"weight must have shape (out, in), got {w.shape}")
    _same_as("weight", w, "input", x, (w.shape[0], x.shape[-1]))
    if bias is not None:
        bias = _same_as("bias", _float_array("bias", bias), "weight", w, (w.shape[0],))
    return x, w, bias


def linear(input, weight, bias=None):
    """input @ weight.T + bias (torch.nn.functional.linear): input (..., in), weight (out, in),
    bias (out,) or None -> (..., out)."""
    x, w, bias = _linear_args(input, weight, bias)
    if x.size == 0 or w.size == 0:
        return _linear_empty(x, w, bias)
    return _backend.current().linear(x, w, bias)


def _linear_empty(x, w, bias):
    """linear when M, K or N is 0 (no product to compute: BLAS takes no empty matrix): the
    (..., N) output is the bias in every row, 0 without one."""
    y = np.zeros(x.shape[:-1] + (w.shape[0],), dtype=x.dtype)
    if bias is not None:
        y[...] = bias
    return y


def linear_gelu(input, weight, bias=None, approximate="none", return_pre=False):
    """gelu(linear(input, weight, bias), approximate) in one pass: on the compiled backend each
    block of the product goes through GELU while it is still in cache. return_pre=True returns
    (output, pre) with pre = linear(input, weight, bias), what gelu_backward needs."""
    x, w, bias = _linear_args(input, weight, bias)
    _gelu_form(approximate)
    if x.size == 0 or w.size == 0:
        pre = _linear_empty(x, w, bias)
        return (gelu(pre, approximate), pre) if return_pre else gelu(pre, approximate)
    return _backend.current().linear_gelu(x, w, bias, approximate, bool(return_pre))


def linear_backward(grad_output, input, weight):
    """Gradients (grad_input, grad_weight, grad_bias) of linear(input, weight, bias) given
    grad_output (..., out); grad_weight and grad_bias are summed over all leading indices."""
    x = _float_array("input", input)
    if isinstance(weight, _lowp.LOW_PRECISION):
        raise TypeError(f"linear_backward: a {weight.compute_type} weight is for inference only "
                        "(quantize a model after training it)")
    w = _float_array("weight", weight)
    if x.ndim < 1 or w.ndim != 2:
        raise ValueError(f"input (..., in) and weight (out, in) expected, got {x.shape} and {w.shape}")
    _same_as("weight", w, "input", x, (w.shape[0], x.shape[-1]))
    g = _same_as("grad_output", _float_array("grad_output", grad_output), "input", x,
                 x.shape[:-1] + (w.shape[0],))
    if x.size == 0 or w.size == 0:  # M, K or N is 0: sums over nothing are 0
        M, N = int(np.prod(x.shape[:-1], dtype=np.int64)), w.shape[0]
        return np.zeros(x.shape, x.dtype), np.zeros(w.shape, x.dtype), g.reshape(M, N).sum(axis=0)
    return _backend.current().linear_backward(g, x, w)


def _normalized(a, normalized_shape):
    """normalized_shape (an int or a tuple of ints) as a tuple that ends a.shape, or ValueError."""
    shape = (normalized_shape,) if isinstance(normalized_shape, numbers.Integral) else tuple(normalized_shape)
    if not shape or any(isinstance(n, bool) or not isinstance(n, numbers.Integral) for n in shape):
        raise TypeError(f"normalized_shape must be an int or a non-empty tuple of ints, got {normalized_shape!r}")
    if a.shape[a.ndim - len(shape):] != shape or len(shape) > a.ndim:
        raise ValueError(f"normalized_shape {shape} must be the last dimensions of input {a.shape}")
    return shape


def rms_norm(input, normalized_shape, weight=None, eps=None, return_rstd=False):
    """RMSNorm (torch.nn.functional.rms_norm): input / sqrt(mean(input^2) + eps) * weight, the
    mean over the last len(normalized_shape) dimensions. weight None or of shape normalized_shape;
    eps None: the machine epsilon of input's dtype (torch's default). return_rstd: also return
    rstd = 1 / sqrt(mean + eps), shape input.shape[:-len(normalized_shape)], for rms_norm_backward.
    """
    a = _float_array("input", input)
    shape = _normalized(a, normalized_shape)
    if weight is not None:
        weight = _same_as("weight", _float_array("weight", weight), "input", a, shape)
    eps = float(np.finfo(a.dtype).eps) if eps is None else _real("eps", eps)
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    lead = a.shape[:a.ndim - len(shape)]
    C = int(np.prod(shape))
    if a.size == 0:
        y, rstd = np.empty(a.shape, a.dtype), np.empty(lead, a.dtype)
    else:
        w = None if weight is None else weight.reshape(C)
        y, rstd = _backend.current().rms_norm(a.reshape(lead + (C,)), w, eps, True)
        y, rstd = y.reshape(a.shape), rstd.reshape(lead)
    return (y, rstd) if return_rstd else y


def rms_norm_backward(grad_output, input, rstd, normalized_shape, weight=None):
    """Gradients (grad_input, grad_weight) of rms_norm(input, normalized_shape, weight, eps), given
    the rstd its forward returned; grad_weight is None without a weight.

        x_hat = input * rstd,  g = grad_output * weight
        grad_input = rstd * (g - x_hat * mean(g * x_hat)),  grad_weight = sum of grad_output * x_hat
    """
    a = _float_array("input", input)
    shape = _normalized(a, normalized_shape)
    g = _same_as("grad_output", _float_array("grad_output", grad_output), "input", a)
    lead = a.shape[:a.ndim - len(shape)]
    r = _same_as("rstd", _float_array("rstd", rstd), "input", a, lead)
    w = None if weight is None else _same_as("weight", _float_array("weight", weight), "input", a, shape)
    C = int(np.prod(shape))
    if a.size == 0:
        return np.zeros(a.shape, a.dtype), None if w is None else np.zeros(shape, a.dtype)
    dx, dw = _backend.current().rms_norm_backward(g.reshape(lead + (C,)), a.reshape(lead + (C,)), r,
                                                  None if w is None else w.reshape(C))
    return dx.reshape(a.shape), None if dw is None else dw.reshape(shape)


def silu(input):
    """SiLU (swish): input * sigmoid(input), elementwise (torch.nn.functional.silu)."""
    a = _float_array("input", input)
    return np.empty(a.shape, a.dtype) if a.size == 0 else _backend.current().silu(a)


def silu_backward(grad_output, input):
    """grad_output * silu'(input), silu'(x) = s (1 + x (1 - s)), s = sigmoid(x)."""
    a = _float_array("input", input)
    g = _same_as("grad_output", _float_array("grad_output", grad_output), "input", a)
    return np.empty(a.shape, a.dtype) if a.size == 0 else _backend.current().silu_backward(g, a)


def silu_mul(gate, up):
    """silu(gate) * up, elementwise: the gated product of a SwiGLU MLP (swiglu) once its two
    products are made. gate and up: the same shape (views, e.g. two halves of one product, are read
    in place)."""
    a = _float_array("gate", gate)
    b = _same_as("up", _float_array("up", up), "gate", a)
    return np.empty(a.shape, a.dtype) if a.size == 0 else _backend.current().silu_mul(a, b)


def silu_mul_backward(grad_output, gate, up):
    """(grad_gate, grad_up) of silu_mul(gate, up)."""
    a = _float_array("gate", gate)
    b = _same_as("up", _float_array("up", up), "gate", a)
    g = _same_as("grad_output", _float_array("grad_output", grad_output), "gate", a)
    if a.size == 0:
        return np.empty(a.shape, a.dtype), np.empty(a.shape, a.dtype)
    return _backend.current().silu_mul_backward(g, a, b)


def swiglu(input, weight_gate, weight_up, return_pre=False):
    """A Llama MLP's gated product silu(input @ weight_gate.T) * (input @ weight_up.T), the two
    products on the linear engine (F.linear) and the gate fused with the product in one pass.

    input (..., C); weight_gate, weight_up (I, C) -> (..., I). return_pre: also return
    (gate, up), the two products, which swiglu_backward needs.
    """
    x, wg, _ = _linear_args(input, weight_gate, None)
    _, wu, _ = _linear_args(input, weight_up, None)
    _same_as("weight_up", wu, "weight_gate", wg)
    if x.size == 0 or wg.size == 0:
        gate = up = _linear_empty(x, wg, None)
        y = np.zeros_like(gate)
    else:
        ops = _backend.current()
        gate, up = ops.linear(x, wg, None), ops.linear(x, wu, None)
        y = ops.silu_mul(gate, up)
    return (y, (gate, up)) if return_pre else y


def swiglu_backward(grad_output, input, weight_gate, weight_up, gate, up):
    """Gradients (grad_input, grad_weight_gate, grad_weight_up) of swiglu, given the (gate, up)
    its forward returned with return_pre=True."""
    x, wg, _ = _linear_args(input, weight_gate, None)
    _, wu, _ = _linear_args(input, weight_up, None)
    _same_as("weight_up", wu, "weight_gate", wg)
    out_shape = x.shape[:-1] + (wg.shape[0],)
    g, gate, up = (_same_as(n, _float_array(n, a), "input", x, out_shape)
                   for n, a in (("grad_output", grad_output), ("gate", gate), ("up", up)))
    if g.size == 0:
        dgate = dup = np.zeros(out_shape, x.dtype)
    else:
        dgate, dup = _backend.current().silu_mul_backward(g, gate, up)
    dx_g, dwg, _ = linear_backward(dgate, x, wg)
    dx_u, dwu, _ = linear_backward(dup, x, wu)
    return dx_g + dx_u, dwg, dwu


def _rotary_args(x, cos, sin, name):
    a = _float_array(name, x)
    if a.ndim < 2 or a.shape[-1] % 2:
        raise ValueError(f"{name} must have shape (..., T, D) with D even, got {a.shape}")
    T, D = a.shape[-2:]
    allowed = [(T, D)] + ([a.shape[:-3] + (T, D)] if a.ndim >= 3 else [])
    tables = []
    for tname, t in (("cos", cos), ("sin", sin)):
        t = _float_array(tname, t)
        if t.shape not in allowed:
            raise ValueError(f"{tname} must have shape {' or '.join(map(str, allowed))} for {name} "
                             f"of shape {a.shape}, got {t.shape}")
        tables.append(t.astype(a.dtype, copy=False))
    return a, tables[0], tables[1]


def rotary_embedding(x, cos, sin):
    """Rotary position embedding, Hugging Face's rotate-half convention: x * cos + rotate_half(x) * sin,
    rotate_half([x1, x2]) = [-x2, x1] (the halves of the head dimension D).

    x (..., H, T, D) (queries or keys; any strides); cos, sin (T, D), or x.shape[:-3] + (T, D)
    for a table per batch row (left-padded prompts), as fastattn.nn.RotaryEmbedding makes them;
    shared by the H heads. Returns a new contiguous array of x's shape.
    """
    a, c, s = _rotary_args(x, cos, sin, "x")
    return np.empty(a.shape, a.dtype) if a.size == 0 else _backend.current().rotary_embedding(a, c, s)


def rotary_embedding_backward(grad_output, cos, sin):
    """The gradient of rotary_embedding with respect to x: the rotation transposed,
    grad_output * cos - rotate_half(grad_output * sin)."""
    g, c, s = _rotary_args(grad_output, cos, sin, "grad_output")
    return np.empty(g.shape, g.dtype) if g.size == 0 else _backend.current().rotary_embedding_backward(g, c, s)


# the kernels: every public function defined above (what dir(F) and `from ... import *` give)
__all__ = [name for name, f in list(globals().items())
           if callable(f) and getattr(f, "__module__", None) == __name__ and not name.startswith("_")]
