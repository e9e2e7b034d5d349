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

    def key_end(self):
        """(N,) intp: 1 + the last column that any row of batch n may see (0: none). Attention
        never computes the key blocks past it: a padding mask then costs less, not more."""
        m = self._mask  # (lead'..., rows', cols'), size 1 where it broadcasts
        visible = (m != 0) if self.bool_base is not None else (m != -np.inf)  # NaN counts as visible
        cols = visible.shape[-1]
        any_row = visible.any(axis=-2)  # (lead'..., cols')
        last = cols - np.argmax(any_row[..., ::-1], axis=-1)
        end = np.where(any_row.any(axis=-1), last, 0)
        if cols == 1:  # broadcast along the keys: all of them or none
            end = np.where(end > 0, self._full_cols, 0)
        return np.ascontiguousarray(np.broadcast_to(end, self._lead), dtype=np.intp).reshape(-1)


def mask_plan(mask, lead, rows, cols, dtype):
    """A MaskPlan for `mask`, or None when there is no mask."""
    return None if mask is None else MaskPlan(mask, lead, rows, cols, dtype)
