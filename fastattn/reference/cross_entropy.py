import numpy as np


def _logsumexp(z):
    """log(sum(exp(z))) over the last axis, with the max subtracted so that exp cannot overflow."""
    m = z.max(axis=-1, keepdims=True)
    return (np.log(np.exp(z - m).sum(axis=-1, keepdims=True)) + m)[..., 0]


def cross_entropy(input, target, ignore_index=-100, label_smoothing=0.0):
    """Mean over the rows whose target is not ignore_index of the smoothed negative log-likelihood

        loss_i = (1 - eps) * (lse_i - z_i[t_i]) + eps * mean_j (lse_i - z_ij),  lse_i = log sum_j exp z_ij

    input (N, V) logits, target (N,) class indices -> a 0-d array of input's dtype (NaN if every
    target is ignored: a mean over nothing, as in PyTorch).
    """
    valid = target != ignore_index
    t = np.where(valid, target, 0)
    # (invalid: 0 / 0 when nothing is valid, and inf - inf in rows of -inf logits, ignored or NaN
    # as in PyTorch)
    with np.errstate(invalid="ignore"):
        lse = _logsumexp(input)
        # A term of weight 0 is left out, not multiplied by 0: a -inf logit makes the smoothing
        # term inf, and 0 * inf would be NaN (PyTorch gives 0 for [[-inf, 0]] with target 1).
        loss = np.zeros(len(t))
        if label_smoothing != 1:
            loss = loss + (1 - label_smoothing) * (lse - np.take_along_axis(input, t[:, None], axis=-1)[:, 0])
        if label_smoothing != 0:
            loss = loss + label_smoothing * (lse - input.mean(axis=-1))
        return np.asarray(np.where(valid, loss, 0).sum() / valid.sum(), dtype=input.dtype)


def cross_entropy_backward(input, target, grad_output=1.0, ignore_index=-100, label_smoothing=0.0):
    """d(grad_output * cross_entropy) / d input, (N, V):

        (softmax(z_i) - (1 - eps) * onehot(t_i) - eps / V) * grad_output / n_valid   for valid rows, 0 otherwise
    """
    N, V = input.shape
    valid = target != ignore_index
    t = np.where(valid, target, 0)
    with np.errstate(invalid="ignore"):  # (NaN or inf logits: only ignored rows are set to 0)
        grad = np.exp(input - _logsumexp(input)[:, None]) - label_smoothing / V
    grad[np.arange(N), t] -= 1 - label_smoothing
    weight = np.where(valid, grad_output / max(valid.sum(), 1), 0).astype(input.dtype)
    # an ignored row is 0 whatever its logits hold (a NaN or inf there times 0 would be NaN)
    return np.where(valid[:, None], grad * weight[:, None], 0).astype(input.dtype, copy=False)
