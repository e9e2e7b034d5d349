/* Whether this extension was compiled with OpenMP (setup.py probes the compiler for it). */
#ifndef FASTATTN_OPENMP_INFO_H
#define FASTATTN_OPENMP_INFO_H

static inline int fa_openmp_enabled(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

#endif
