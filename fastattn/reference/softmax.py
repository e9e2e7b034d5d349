import numpy as np


def masked_softmax(x, mask=None, scale=1.0, axis=-1):
    """softmax(x * scale + mask) along `axis`.

    mask: bool (True = keep, False = -inf) or float (added), broadcastable to x.
    A row where every entry is masked has no softmax; it returns zeros, not 0/0 = NaN.
    """
    z = x * x.dtype.type(scale)
    if mask is not None:
        if mask.dtype == np.bool_:
            z = np.where(mask, z, -np.inf)
        else:  # an added -inf hides its entry whatever x holds (NaN + -inf is NaN), as compiled
            m = mask.astype(z.dtype)
            z = np.where(m == -np.inf, -np.inf, z + m)
    z_max = z.max(axis=axis, keepdims=True)
    z_max = np.where(z_max == -np.inf, 0, z_max)  # fully masked row: keep exp(-inf - 0) = 0
    e = np.exp(z - z_max)  # the max is subtracted so that exp never overflows
    total = e.sum(axis=axis, keepdims=True)
    # total == 0 only for fully masked rows; a NaN total (NaN input) still propagates
    return np.divide(e, total, out=np.zeros_like(e), where=total != 0)


def masked_softmax_backward(grad_output, output, scale=1.0, axis=-1):
    """Gradient of y = masked_softmax(x, mask, scale, axis) with respect to x, from y alone:

      grad_x = scale * y * (g - sum(g * y, axis))
    Masked entries have y = 0 and get 0 (so does a fully masked row): the mask is not needed.
    """
    dot = (grad_output * output).sum(axis=axis, keepdims=True)
    return output.dtype.type(scale) * output * (grad_output - dot)
