"""serial_blas: BLAS on one thread while any kernel call runs (see fastattn/_compiled/_blas_threads.py).

The same context manager as _blas_threads._SerialBlas was, in C: entering and leaving it cost
1.8 us through ctypes and a lock, more than a small kernel's product. The GIL, held from
__enter__ to __exit__'s end and never released in between, makes the depth count safe across
Python threads (a free-threaded Python would need a lock here).
"""
from _blas cimport blas_threads_fn

from fastattn._compiled._blas_threads import local_setter_address


cdef class SerialBlas:
    cdef blas_threads_fn set_local
    cdef int depth, saved

    def __cinit__(self, size_t setter_address):
        self.set_local = <blas_threads_fn>setter_address
        self.depth = 0
        self.saved = 0

    def __enter__(self):
        if self.depth == 0 and self.set_local != NULL:
            self.saved = self.set_local(1)
        self.depth += 1

    def __exit__(self, *exc):
        self.depth -= 1
        if self.depth == 0 and self.set_local != NULL:
            self.set_local(self.saved)


serial_blas = SerialBlas(local_setter_address())
