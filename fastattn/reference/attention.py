import numpy as np

from fastattn.reference.softmax import masked_softmax


def _grouped(query, key, value, attn_mask):
    """Grouped-query attention as broadcasting: query (..., H, Tq, D) -> (..., H_kv, group, Tq, D),
    key and value (..., H_kv, Tk, .) -> (..., H_kv, 1, Tk, .) views (matmul broadcasts them over
    the group: no repeated copy), the mask reshaped alike. Unchanged when the heads are equal."""
    if query.shape[:-2] == key.shape[:-2]:
        return query, key, value, attn_mask
    H, H_kv = query.shape[-3], key.shape[-3]
    lead = query.shape[:-3] + (H_kv, H // H_kv)
    if attn_mask is not None:
        full = query.shape[:-2] + (query.shape[-2], key.shape[-2])
        attn_mask = np.broadcast_to(attn_mask, full).reshape(lead + full[-2:])
    return (query.reshape(lead + query.shape[-2:]), key[..., None, :, :], value[..., None, :, :],
            attn_mask)


def _scores(query, key, attn_mask, is_causal, scale, window=None):
    """Q K^T * scale with the mask applied: -inf where a query may not see a key. (..., Tq, Tk)
    window: None, or W: query i sees only keys j > i + (Tk - Tq) - W as well."""
    Tq, D = query.shape[-2:]
    Tk = key.shape[-2]
    scale = 1.0 / np.sqrt(D) if scale is None else scale
    if scale == 0:  # the scores are 0 whatever q and k hold (inf * 0 would be NaN), as on the
        # compiled backend, which never asks the BLAS for a product scaled by 0 (src_cython/_blas.pxd)
        scores = np.zeros(query.shape[:-1] + (Tk,), dtype=query.dtype)
    else:
        scores = (query @ np.swapaxes(key, -1, -2)) * query.dtype.type(scale)
    if attn_mask is not None and attn_mask.dtype != np.bool_:
        # added first, so that the causal limit hides what it adds (a NaN there stays hidden),
        # and a -inf entry hides its key whatever the score (NaN + -inf is NaN): a row that
        # sees no key is 0, as on the compiled backend
        m = attn_mask.astype(scores.dtype)
        scores = np.where(m == -np.inf, -np.inf, scores + m)
    if is_causal:
        # the queries are the last Tq positions: query i sees keys j <= i + (Tk - Tq)
        visible = np.tril(np.ones((Tq, Tk), dtype=bool), k=Tk - Tq)
        if window is not None:  # and j > i + (Tk - Tq) - window
            visible &= ~np.tril(np.ones((Tq, Tk), dtype=bool), k=Tk - Tq - window)
        scores = np.where(visible, scores, -np.inf)
    if attn_mask is not None and attn_mask.dtype == np.bool_:
        scores = np.where(attn_mask, scores, -np.inf)
    return scores


def scaled_dot_product_attention(query, key, value, attn_mask=None, is_causal=False, scale=None,
                                 return_lse=False, out=None, enable_gqa=False, window=None):
    """softmax(Q K^T * scale + mask) V, the way "Let's build GPT" writes it.

    query (..., Tq, D), key (..., Tk, D), value (..., Tk, Dv) -> out (..., Tq, Dv)
    return_lse: also return lse (..., Tq) = log(sum_j exp(score_ij)), what the backward needs
    (-inf for a row that sees no key). out: None, or an array to write the output to (returned).
    enable_gqa: key and value (..., H_kv, Tk, .) shared by groups of H / H_kv query heads.
    window: None, or W (causal): each query sees at most the last W keys.
    """
    shape = query.shape[:-1] + (value.shape[-1],)
    query, key, value, attn_mask = _grouped(query, key, value, attn_mask)
    scores = _scores(query, key, attn_mask, is_causal, scale, window)  # (..., Tq, Tk)
    weights = masked_softmax(scores)  # a row that sees nothing is 0
    if out is None:
        out = (weights @ value).reshape(shape)
    else:
        out[...] = (weights @ value).reshape(shape)
    if not return_lse:
        return out
    m = scores.max(axis=-1, keepdims=True)
    m = np.where(m == -np.inf, 0, m)  # fully masked row: log(0) + 0 = -inf below
    with np.errstate(divide="ignore"):
        lse = np.log(np.exp(scores - m).sum(axis=-1, keepdims=True)) + m
    return out, lse[..., 0].reshape(shape[:-1])


def scaled_dot_product_attention_backward(grad_output, query, key, value, output, lse,
                                          attn_mask=None, is_causal=False, scale=None, out=None,
                                          enable_gqa=False, window=None):
    """Gradients of scaled_dot_product_attention: (grad_query, grad_key, grad_value).

    grad_output, output (..., Tq, Dv); lse (..., Tq) from the forward (return_lse=True).
        P  = exp(S - lse)                 the forward's weights, rebuilt from the scores
        dV = P^T dO
        dP = dO V^T
        dS = P * (dP - D),  D = rowsum(dO * O) = rowsum(P * dP)
        dQ = dS K * scale,  dK = dS^T Q * scale
    out: None, or three arrays to write (dQ, dK, dV) to (returned).
    Grouped-query attention: dK and dV are summed over the query heads of each group.
    """
    D = query.shape[-1]
    scale = 1.0 / np.sqrt(D) if scale is None else scale
    shapes = query.shape, key.shape, value.shape
    query, key, value, attn_mask = _grouped(query, key, value, attn_mask)
    grad_output, output, lse = (a.reshape(query.shape[:-2] + a.shape[len(shapes[0]) - 2:])
                                for a in (grad_output, output, lse))
    scores = _scores(query, key, attn_mask, is_causal, scale, window)
    lse = np.where(lse == -np.inf, 0, lse)[..., None]  # fully masked row: exp(-inf - 0) = 0
    weights = np.exp(scores - lse)  # (..., Tq, Tk)
    grad_value = np.swapaxes(weights, -1, -2) @ grad_output
    grad_weights = grad_output @ np.swapaxes(value, -1, -2)
    row_dot = (grad_output * output).sum(axis=-1, keepdims=True)
    grad_scores = weights * (grad_weights - row_dot) * query.dtype.type(scale)
    if scale == 0:  # q and k do not reach the output: their gradients are 0 (as compiled)
        grad_query = np.zeros_like(query)
        grad_key = np.zeros(scores.shape[:-2] + (scores.shape[-1], D), query.dtype)
    else:
        grad_query = grad_scores @ key
        grad_key = np.swapaxes(grad_scores, -1, -2) @ query
    if key.shape[:-2] != query.shape[:-2]:  # grouped: sum the group's (..., H_kv, group, Tk, .)
        grad_key, grad_value = grad_key.sum(axis=-3), grad_value.sum(axis=-3)
    grad_query, grad_key, grad_value = (a.reshape(s) for a, s in zip((grad_query, grad_key, grad_value), shapes))
    if out is None:
        return grad_query, grad_key, grad_value
    for a, grad in zip(out, (grad_query, grad_key, grad_value)):
        a[...] = grad
    return tuple(out)
