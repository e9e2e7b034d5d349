"""SiLU and the SwiGLU product silu(gate) * up, forward and backward (the compiled twin of
fastattn/reference/silu.py): elementwise, in chunks over threads."""
import numpy as np

cimport cython
from cython cimport floating
from cython.parallel cimport prange

from _row_ops cimport exp, silu_mul_row

from fastattn._threads import threads_for

cdef Py_ssize_t CHUNK = 16384


cdef inline floating sigmoid(floating x) noexcept nogil:
    # exp(-x) overflows to inf for x << 0: 1 / inf = 0, the limit
    return 1 / (1 + exp(-x))


def _elementwise(int op, const floating[::1] a, const floating[::1] b, const floating[::1] c,
                 floating[::1] out, floating[::1] out2, int num_threads):
    # op 0: silu(a); 1: silu'(b) * a (a = grad); 2: silu(a) * b; 3: (gate, up) grads of silu(b) * c
    # given grad a: out = a * c * silu'(b), out2 = a * silu(b). All (n,).
    cdef Py_ssize_t n = out.shape[0], n_chunks = (n + CHUNK - 1) // CHUNK, ch, i, start, end
    cdef floating s, x
    if num_threads < 1 or a.shape[0] != n or (b is not None and b.shape[0] != n) \
            or (c is not None and c.shape[0] != n) or (op == 3 and (out2 is None or out2.shape[0] != n)) \
            or (op > 0 and b is None) or (op == 3 and c is None):
        raise ValueError("silu: inconsistent sizes or num_threads < 1")
    for ch in prange(n_chunks, nogil=True, schedule="static", num_threads=num_threads):
        start = ch * CHUNK
        end = min(n, start + CHUNK)
        if op == 0:
            for i in range(start, end):
                out[i] = a[i] * sigmoid(a[i])
        elif op == 1:
            for i in range(start, end):
                x = b[i]
                s = sigmoid(x)
                out[i] = a[i] * s * (1 + x * (1 - s))
        elif op == 2:
            silu_mul_row(&out[start], &a[start], &b[start], end - start)
        else:
            for i in range(start, end):
                x = b[i]
                s = sigmoid(x)
                out[i] = a[i] * c[i] * s * (1 + x * (1 - s))
                out2[i] = a[i] * x * s


def _flat(a):
    return np.ascontiguousarray(a).reshape(-1)


def silu(x):
    """x * sigmoid(x). Inputs are validated by fastattn.functional."""
    out = np.empty(np.shape(x), dtype=x.dtype)
    _elementwise(0, _flat(x), None, None, out.reshape(-1), None, threads_for(20 * out.size))
    return out


def silu_backward(grad_output, x):
    out = np.empty(np.shape(x), dtype=x.dtype)
    _elementwise(1, _flat(grad_output), _flat(x), None, out.reshape(-1), None, threads_for(25 * out.size))
    return out


def _silu_mul_rows(const floating[:, :] gate, const floating[:, :] up, floating[:, ::1] out,
                   int num_threads):
    # gate, up (rows, I) with contiguous rows, any row stride (the two halves of one fused
    # gate/up product), out (rows, I)
    cdef Py_ssize_t rows = out.shape[0], I = out.shape[1], r
    if (gate.shape[0] != rows or up.shape[0] != rows or gate.shape[1] != I or up.shape[1] != I
            or num_threads < 1 or (I > 1 and (gate.strides[1] != sizeof(floating) or up.strides[1] != sizeof(floating)))):
        raise ValueError("silu_mul: inconsistent shapes, rows that are not contiguous, or num_threads < 1")
    if rows == 0 or I == 0:
        return
    for r in prange(rows, nogil=True, schedule="static", num_threads=num_threads):
        silu_mul_row(&out[r, 0], &gate[r, 0], &up[r, 0], I)


@cython.wraparound(True)
def silu_mul(gate, up):
    """silu(gate) * up, gate and up read in place when their rows are contiguous (e.g. the two
    column halves of one (..., 2I) product). Inputs are validated by fastattn.functional."""
    shape = np.shape(gate)
    out = np.empty(shape, dtype=gate.dtype)
    if gate.ndim == 0 or gate.size == 0:
        _elementwise(2, _flat(gate), _flat(up), None, out.reshape(-1), None, 1)
        return out
    rows = lambda a: a.reshape(-1, shape[-1]) if a.strides[-1] == a.itemsize else np.ascontiguousarray(a).reshape(-1, shape[-1])  # noqa: E731
    _silu_mul_rows(rows(gate), rows(up), out.reshape(-1, shape[-1]), threads_for(20 * out.size))
    return out


def silu_mul_backward(grad_output, gate, up):
    """(grad_gate, grad_up) of silu_mul."""
    dg = np.empty(np.shape(gate), dtype=gate.dtype)
    du = np.empty_like(dg)
    _elementwise(3, _flat(grad_output), _flat(gate), _flat(up), dg.reshape(-1), du.reshape(-1),
                 threads_for(30 * dg.size))
    return dg, du
