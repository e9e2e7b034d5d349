import numpy as np

from fastattn.reference.softmax import masked_softmax


def scaled_dot_product_attention(query, key, value, attn_mask=None, is_causal=False, scale=None):
    """softmax(Q K^T * scale + mask) V, the way "Let's build GPT" writes it.

    query (..., Tq, D), key (..., Tk, D), value (..., Tk, Dv) -> (..., Tq, Dv)
    """
    Tq, D = query.shape[-2:]
    Tk = key.shape[-2]
    scale = 1.0 / np.sqrt(D) if scale is None else scale
    scores = (query @ np.swapaxes(key, -1, -2)) * query.dtype.type(scale)  # (..., Tq, Tk)
    if is_causal:
        # the queries are the last Tq positions: query i sees keys j <= i + (Tk - Tq)
        visible = np.tril(np.ones((Tq, Tk), dtype=bool), k=Tk - Tq)
        scores = np.where(visible, scores, -np.inf)
    weights = masked_softmax(scores, attn_mask)  # (..., Tq, Tk); a row that sees nothing is 0
    return weights @ value
