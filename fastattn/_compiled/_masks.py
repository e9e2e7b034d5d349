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
                 "_full_cols")

    def __init__(self, mask, lead, rows, cols, dtype):
        full = tuple(lead) + (rows, cols)
        m = np.asarray(mask)
        if m.ndim > len(full):
            raise ValueError(f"mask of shape {m.shape} has more dimensions than {full}")
        m = m.reshape((1,) * (len(full) - m.ndim) + m.shape)
        for size, want in zip(m.shape, full):
            if size != 1 and size != want:
                raise ValueError(f"mask of shape {np.shape(mask)} does not broadcast to {full}")
        # A dimension that the mask repeats in place (stride 0, as np.broadcast_to makes) is
        # read as size 1, so that the copy below holds its distinct elements only: a mask
        # broadcast to (8, 8, 2048, 2048) from (2048, 2048) is not expanded to 256 Mi entries.
        m = m[tuple(slice(0, 1) if st == 0 else slice(None) for st in m.strides)]
        if m.dtype == np.bool_:
            m = np.ascontiguousarray(m).view(np.uint8)
            self.bool_base, self.add_base = m.reshape(-1), None
        else:
            m = np.ascontiguousarray(m, dtype=dtype)
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

    def key_extent(self):
        """Per flat batch n, what attention needs of the mask beyond the scores' shape:

        key_end (N,) intp: 1 + the last key that any row of batch n may see (0: none). The key
            blocks past it are never computed, so a padding mask costs less, not more.
        in_use (N,) uint8: 0 where the mask changes nothing among keys < key_end[n] (a padding
            mask: all visible up to the end, additive 0), so the kernel need not apply it there.
        """
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


def mask_plan(mask, lead, rows, cols, dtype):
    """A MaskPlan for `mask`, or None when there is no mask."""
    return None if mask is None else MaskPlan(mask, lead, rows, cols, dtype)
