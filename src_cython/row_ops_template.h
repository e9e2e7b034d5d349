/* Instantiated by row_ops.h with FA_REAL = float or double. No include guard on purpose.
 *
 * Reductions carry `omp simd reduction`: without it the compiler may not reorder a float sum,
 * so it would not vectorise it (and -ffast-math, which would, breaks inf/NaN semantics).
 */

/* Masks one row of scores in place and returns its maximum (NaN if the row holds a NaN).
 *   s[0:n]            scores of one query row against n keys
 *   j >= n_visible    causal limit: set to -inf
 *   bool_mask         NULL or n bytes at stride bool_stride (0: one value broadcast): 0 -> -inf
 *   add_mask          NULL or n values at stride add_stride (0: broadcast): added to the score */
FA_MULTIVERSION
static FA_REAL FA_NAME(fa_mask_row)(FA_REAL *s, ptrdiff_t n, ptrdiff_t n_visible,
                                    const unsigned char *bool_mask, ptrdiff_t bool_stride,
                                    const FA_REAL *add_mask, ptrdiff_t add_stride)
{
    ptrdiff_t j;
    if (n_visible < 0) n_visible = 0;
    if (n_visible > n) n_visible = n;
    for (j = n_visible; j < n; j++) s[j] = -INFINITY;
    if (bool_mask && bool_stride) {
        for (j = 0; j < n_visible; j++) s[j] = bool_mask[j] ? s[j] : -INFINITY;
    } else if (bool_mask && !bool_mask[0]) {
        for (j = 0; j < n_visible; j++) s[j] = -INFINITY;
    }
    if (add_mask && add_stride) {
        for (j = 0; j < n_visible; j++) s[j] += add_mask[j];
    } else if (add_mask) {
        FA_REAL a = add_mask[0];
        for (j = 0; j < n_visible; j++) s[j] += a;
    }
    FA_REAL mx = -INFINITY;
    int has_nan = 0;
#pragma omp simd reduction(max:mx) reduction(|:has_nan)
    for (j = 0; j < n_visible; j++) {
        mx = s[j] > mx ? s[j] : mx;
        has_nan |= s[j] != s[j];
    }
    return has_nan ? (FA_REAL)NAN : mx;
}

/* s[j] = exp(s[j] - m) for j < n; returns the sum. m = -inf (nothing visible) gives zeros. */
FA_MULTIVERSION
static FA_REAL FA_NAME(fa_exp_sum_row)(FA_REAL *s, ptrdiff_t n, FA_REAL m)
{
    ptrdiff_t j;
    FA_REAL sum = 0;
    if (m == -INFINITY) {
        for (j = 0; j < n; j++) s[j] = 0;
        return 0;
    }
#pragma omp simd reduction(+:sum)
    for (j = 0; j < n; j++) {
        FA_REAL e = FA_EXP(s[j] - m);
        s[j] = e;
        sum += e;
    }
    return sum;
}

/* y[j] = a * x[j] (x == y allowed) */
FA_MULTIVERSION
static void FA_NAME(fa_scale_row)(FA_REAL *y, const FA_REAL *x, ptrdiff_t n, FA_REAL a)
{
    for (ptrdiff_t j = 0; j < n; j++) y[j] = a * x[j];
}

/* y = (x - mean(x)) / sqrt(var(x) + eps) * weight + bias over one row of n features; weight and
 * bias may be NULL. Statistics and x - mean are in double even for float: when |mean| >> std,
 * a float mean is off by half an ulp of |mean| (5e-4 at 1e4), and every output with it. Two
 * passes (mean, then squared deviations): the one-pass E[x^2] - E[x]^2 cancels. */
FA_MULTIVERSION
static void FA_NAME(fa_layer_norm_row)(FA_REAL *y, const FA_REAL *x, ptrdiff_t n,
                                       const FA_REAL *weight, const FA_REAL *bias, FA_REAL eps)
{
    ptrdiff_t j;
    double sum = 0, sq = 0;
#pragma omp simd reduction(+:sum)
    for (j = 0; j < n; j++) sum += x[j];
    double mean = sum / (double)n;
#pragma omp simd reduction(+:sq)
    for (j = 0; j < n; j++) sq += ((double)x[j] - mean) * ((double)x[j] - mean);
    double rstd = 1 / sqrt(sq / (double)n + eps);
    for (j = 0; j < n; j++) {
        FA_REAL z = (FA_REAL)(((double)x[j] - mean) * rstd);
        y[j] = (weight ? z * weight[j] : z) + (bias ? bias[j] : 0);
    }
}

/* GELU over n values. Both forms are written so the relative error stays small for x << 0:
 *   erf form:  x/2 * erfc(-x / sqrt 2)                (= x/2 * (1 + erf(x / sqrt 2)))
 *   tanh form: x / (1 + exp(-2u)), u = sqrt(2/pi) (x + 0.044715 x^3)   (= x/2 * (1 + tanh u)) */
FA_MULTIVERSION
static void FA_NAME(fa_gelu_row)(FA_REAL *y, const FA_REAL *x, ptrdiff_t n, int tanh_form)
{
    ptrdiff_t j;
    if (tanh_form) {
        for (j = 0; j < n; j++) {
            FA_REAL u = (FA_REAL)0.7978845608028654 * (x[j] + (FA_REAL)0.044715 * x[j] * x[j] * x[j]);
            y[j] = x[j] / (1 + FA_EXP(-2 * u));
        }
    } else {
        for (j = 0; j < n; j++) y[j] = FA_GELU_ERF(x[j]);
    }
}
