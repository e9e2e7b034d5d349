# How the linear kernels deal their blocks to threads (linear.pyx, linear_lowp.pyx, linear_int8.pyx).

cdef inline bint in_part(Py_ssize_t done, Py_ssize_t cost, Py_ssize_t total, Py_ssize_t part,
                         Py_ssize_t parts) noexcept nogil:
    """Whether the block whose cost runs from `done` to `done + cost` (of `total`) falls in part
    `part` of `parts`: the part holding its midpoint, so that each part is a contiguous run of
    nearly equal cost (blocks of equal cost: in_part(i, 1, n, part, parts) for block i of n)."""
    return (2 * done + cost) * parts // (2 * total) == part
