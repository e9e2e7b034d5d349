"""One AdamW optimizer step, in place (the compiled twin of fastattn/reference/adamw.py)."""
import math

import numpy as np

from cython cimport floating
from cython.parallel cimport prange

from _row_ops cimport adamw_row

from fastattn._threads import threads_for

# Elements per parallel chunk. The chunks do not depend on the thread count, and each element is
# updated on its own, so the result is the same for any number of threads.
cdef Py_ssize_t CHUNK = 16384


def _step(floating[::1] param, const floating[::1] grad, floating[::1] exp_avg,
          floating[::1] exp_avg_sq, double decay, double beta1, double beta2, double step_size,
          double inv_sqrt_bc2, double eps, int num_threads):
    # all four: (n,), flattened
    cdef Py_ssize_t n = param.shape[0], n_chunks = (n + CHUNK - 1) // CHUNK, c, start
    if grad.shape[0] != n or exp_avg.shape[0] != n or exp_avg_sq.shape[0] != n:
        raise ValueError("adamw_step: param has %d elements, grad %d, exp_avg %d, exp_avg_sq %d" % (
            n, grad.shape[0], exp_avg.shape[0], exp_avg_sq.shape[0]))
    if num_threads < 1:
        raise ValueError("adamw_step: num_threads must be >= 1")
    for c in prange(n_chunks, nogil=True, schedule="static", num_threads=num_threads):
        start = c * CHUNK
        adamw_row(&param[start], &grad[start], &exp_avg[start], &exp_avg_sq[start],
                  min(CHUNK, n - start), decay, beta1, beta2, step_size, inv_sqrt_bc2, eps)


def adamw_step(param, grad, exp_avg, exp_avg_sq, step, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8,
               weight_decay=0.0):
    """One AdamW step, in place on param, exp_avg and exp_avg_sq (C-contiguous); returns None.
    Inputs are validated by fastattn.functional. The bias corrections are computed here, once,
    in double; the loop is in double for float32 too."""
    bc1 = 1 - beta1 ** step
    bc2 = 1 - beta2 ** step
    g = np.ascontiguousarray(grad)
    # (reshape(-1) of a C-contiguous array is a view: the kernel writes into the caller's arrays)
    _step(param.reshape(-1), g.reshape(-1), exp_avg.reshape(-1), exp_avg_sq.reshape(-1),
          1 - lr * weight_decay, beta1, beta2, lr / bc1, 1 / math.sqrt(bc2), eps, threads_for(16 * param.size))
