"""How the compiled kernels read a broadcast mask without materialising it.

A mask broadcastable to lead + (rows, cols) is stored once, C-contiguous, in its own (small) shape.
Element (n, i, j) of the broadcast mask, n the flat index over the leading dims, is

    base[offsets[n] + i * row_stride + j * col_stride]

where a stride is 0 along a dimension the mask broadcasts over. A boolean mask stays one byte per
element; an additive mask is cast to the dtype of the scores.
"""
import numpy as np


class MaskPlan:
    __slots__ = ("bool_base", "add_base", "offsets", "row_stride", "col_stride", "_mask", "_lead",
                 "_full_cols", "_extent")

    def __init__(self, m, lead, cols):
        """m: the mask as _compact gives it, (lead'..., rows', cols') contiguous, size 1 where it
        broadcasts; lead and cols: the shape of the scores it masks."""
        if m.dtype == np.uint8:  # (a bool mask)
            self.bool_base, self.add_base = m.reshape(-1), None
        else:
            self.bool_base, self.add_base = None, m.reshape(-1)
        # element strides of the contiguous mask, 0 where it broadcasts
        strides = [0 if size == 1 else st // m.itemsize for size, st in zip(m.shape, m.strides)]
        offsets = np.zeros(lead, dtype=np.intp)
        for d, n in enumerate(lead):
            shape = [1] * len(lead)
            shape[d] = n
            offsets += (np.arange(n, dtype=np.intp) * strides[d]).reshape(shape)
        self.offsets = offsets.reshape(-1)
        self.row_stride, self.col_stride = strides[-2], strides[-1]
        self._mask, self._lead, self._full_cols = m, tuple(lead), cols
        self._extent = None

    def key_extent(self):
        """Per flat batch n, what attention needs of the mask beyond the scores' shape:

        key_end (N,) intp: 1 + the last key that any row of batch n may see (0: none). The key
            blocks past it are never computed, so a padding mask costs less, not more.
        in_use (N,) uint8: 0 where the mask changes nothing among keys < key_end[n] (a padding
            mask: all visible up to the end, additive 0), so the kernel need not apply it there.
        """
        if self._extent is None:
            self._extent = self._key_extent()
        return self._extent

    def _key_extent(self):
        m = self._mask  # (lead'..., rows', cols'), size 1 where it broadcasts
        if self.bool_base is not None:
            visible, neutral = m != 0, m != 0
        else:
            visible, neutral = m != -np.inf, m == 0  # NaN counts as visible, and as not neutral
        cols = visible.shape[-1]
        any_row = visible.any(axis=-2)  # (lead'..., cols')
        end = np.where(any_row.any(axis=-1), cols - np.argmax(any_row[..., ::-1], axis=-1), 0)
        inside = np.arange(cols) < end[..., None]  # (lead'..., cols'): the keys that get computed
        in_use = (~neutral & inside[..., None, :]).any(axis=(-2, -1))
        if cols == 1:  # broadcast along the keys: all of them or none
            end = np.where(end > 0, self._full_cols, 0)

        def per_batch(a, dtype):
            return np.ascontiguousarray(np.broadcast_to(a, self._lead), dtype=dtype).reshape(-1)

        return per_batch(end, np.intp), per_batch(in_use, np.uint8)


def _compact(mask, full, dtype):
    """mask as a C-contiguous array of its distinct elements, (lead'..., rows', cols') with size
    1 along each dimension it broadcasts over (full: the scores' shape): uint8 for a bool mask,
    dtype (the scores') for an additive one; ValueError if it does not broadcast to full."""
    m = np.asarray(mask)
    if m.ndim > len(full):
        raise ValueError(f"mask of shape {m.shape} has more dimensions than {full}")
    m = m.reshape((1,) * (len(full) - m.ndim) + m.shape)
    for size, want in zip(m.shape, full):
        if size != 1 and size != want:
            raise ValueError(f"mask of shape {np.shape(mask)} does not broadcast to {full}")
    # A dimension that the mask repeats in place (stride 0, as np.broadcast_to makes) is read as
    # size 1, so that the copy holds its distinct elements only: a mask broadcast to
    # (8, 8, 2048, 2048) from (2048, 2048) is not expanded to 256 Mi entries.
    m = m[tuple(slice(0, 1) if st == 0 else slice(None) for st in m.strides)]
    if m.dtype == np.bool_:
        return np.ascontiguousarray(m).view(np.uint8)
    return np.ascontiguousarray(m, dtype=dtype)


# The last plan of a small mask, with its own copy of the mask: a model's layers pass the same
# mask in turn (a decode step's padding mask, 12 layers of GPT-2), and a plan with its key extent
# took 56 us of a 64 us decode attention call (4 x 12 heads, 160 keys, AMD EPYC Zen 3). A plan is
# reused only for a mask of equal shape and equal elements, so a mask written in place between
# calls gets a new one.
_CACHED_ELEMENTS = 1 << 16
_last = None  # (key, the copy of the mask the plan reads, the plan)


def mask_plan(mask, lead, rows, cols, dtype):
    """A MaskPlan for `mask`, or None when there is no mask."""
    global _last
    if mask is None:
        return None
    lead = tuple(lead)
    m = _compact(mask, lead + (rows, cols), dtype)
    if m.size > _CACHED_ELEMENTS:
        return MaskPlan(m, lead, cols)
    key = (lead, rows, cols, m.dtype, m.shape)
    last = _last
    if last is not None and last[0] == key and np.array_equal(last[1], m):
        return last[2]
    if np.may_share_memory(m, mask):  # (the plan reads a copy of its own, never the caller's array)
        m = m.copy()
    plan = MaskPlan(m, lead, cols)
    _last = (key, m, plan)
    return plan
