/* Row loops of the kernels, in float (suffix _f32) and double (_f64). Each works on one
 * contiguous row of n elements: it is what a kernel calls per query row or per feature row.
 * The bodies are in row_ops_template.h, included once per type.
 */
#ifndef FASTATTN_ROW_OPS_H
#define FASTATTN_ROW_OPS_H

#include <stddef.h>
#include "vector_math.h"

#define FA_REAL float
#define FA_NAME(name) name##_f32
#define FA_EXP fa_exp_f32
#define FA_GELU_ERF(x) ((x) * 0.5f * fa_erfc_f32((x) * -0.70710678118654752f))
#define FA_ERFC fa_erfc_f32
#include "row_ops_template.h"
#undef FA_REAL
#undef FA_NAME
#undef FA_EXP
#undef FA_GELU_ERF
#undef FA_ERFC

#define FA_REAL double
#define FA_NAME(name) name##_f64
#define FA_EXP fa_exp_f64
/* libm's erfc (scalar, correctly rounded within an ulp or so): double GELU is not a hot path. */
#define FA_GELU_ERF(x) ((x) * 0.5 * erfc((x) * -0.70710678118654752440))
#define FA_ERFC erfc
#include "row_ops_template.h"
#undef FA_REAL
#undef FA_NAME
#undef FA_EXP
#undef FA_GELU_ERF
#undef FA_ERFC

#endif
