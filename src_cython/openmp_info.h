/* OpenMP as the kernels see it, with or without it: whether this extension was compiled with
   OpenMP (setup.py probes the compiler for it), and the one setting they make. */
#ifndef FASTATTN_OPENMP_INFO_H
#define FASTATTN_OPENMP_INFO_H

#ifdef _OPENMP
#include <omp.h>
#endif

static inline int fa_openmp_enabled(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

/* The thread count a library's OpenMP region started from this thread would get, and setting it
   (without OpenMP: 1, and nothing to set). */
static inline int fa_max_threads(void)
{
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

static inline void fa_set_max_threads(int n)
{
#ifdef _OPENMP
    omp_set_num_threads(n);
#else
    (void)n;
#endif
}

/* Inside a kernel's parallel region: any OpenMP region a library opens from this thread (oneDNN's
   GEMM) runs on this thread alone. The setting belongs to the region's task and ends with it. (A
   region of one thread is not "active", so without this a nested region could start threads.) */
static inline void fa_nested_serial(void)
{
    fa_set_max_threads(1);
}

#endif
