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
    lse = _logsumexp(input)
    nll = lse - np.take_along_axis(input, t[:, None], axis=-1)[:, 0]
    smooth = lse - input.mean(axis=-1)
    loss = (1 - label_smoothing) * nll + label_smoothing * smooth
    with np.errstate(invalid="ignore"):  # 0 / 0 when nothing is valid
        return np.asarray(np.where(valid, loss, 0).sum() / valid.sum(), dtype=input.dtype)


def cross_entropy_backward(input, target, grad_output=1.0, ignore_index=-100, label_smoothing=0.0):
    """d(grad_output * cross_entropy) / d input, (N, V):

        (softmax(z_i) - (1 - eps) * onehot(t_i) - eps / V) * grad_output / n_valid   for valid rows, 0 otherwise
    """
    N, V = input.shape
    valid = target != ignore_index
    t = np.where(valid, target, 0)
    grad = np.exp(input - _logsumexp(input)[:, None]) - label_smoothing / V
    grad[np.arange(N), t] -= 1 - label_smoothing
    weight = np.where(valid, grad_output / max(valid.sum(), 1), 0).astype(input.dtype)
    return grad * weight[:, None]
