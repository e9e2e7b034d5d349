/* Instantiated by row_ops.h with FA_REAL = float or double. No include guard on purpose.
 *
 * Reductions carry `omp simd reduction`: without it the compiler may not reorder a float sum,
 * so it would not vectorise it (and -ffast-math, which would, breaks inf/NaN semantics).
 */

/* Masks one row of scores in place and returns its maximum (NaN if the row holds a NaN).
 *   s[0:n]            scores of one query row against n keys
 *   j >= n_visible    causal limit: set to -inf
 *   bool_mask         NULL or n bytes at stride bool_stride (0: one value broadcast): 0 -> -inf
 *   add_mask          NULL or n values at stride add_stride (0: broadcast): added to the score
 *                     (-inf: the entry is hidden, -inf, even where the score is NaN) */
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
    /* an added -inf hides its entry whatever the score (NaN + -inf would be NaN): a row that
     * sees nothing is all -inf, whatever q or x held, on both backends */
    if (add_mask && add_stride) {
        for (j = 0; j < n_visible; j++) s[j] = add_mask[j] == -INFINITY ? -INFINITY : s[j] + add_mask[j];
    } else if (add_mask) {
        FA_REAL a = add_mask[0];
        if (a == -INFINITY) {
            for (j = 0; j < n_visible; j++) s[j] = -INFINITY;
        } else {
            for (j = 0; j < n_visible; j++) s[j] += a;
        }
    }
    if (n_visible > 256) {
        FA_REAL m = -INFINITY;
        int has_nan = 0;
#pragma omp simd reduction(max:m) reduction(|:has_nan)
        for (j = 0; j < n_visible; j++) {
            m = s[j] > m ? s[j] : m;
            has_nan |= s[j] != s[j];
        }
        return has_nan ? (FA_REAL)NAN : m;
    }
    /* a short row: 16 lanes of maxima, then one tree (as in fa_exp_sum_row); a NaN lane stays
       NaN through the tree */
    FA_REAL mx[16];
    ptrdiff_t t;
    for (t = 0; t < 16; t++) mx[t] = -INFINITY;
    for (j = 0; j + 16 <= n_visible; j += 16) {
#pragma omp simd
        for (t = 0; t < 16; t++) {
            FA_REAL v = s[j + t];
            mx[t] = (v > mx[t] || v != v) ? v : mx[t];
        }
    }
    if (j < n_visible) {
        FA_REAL tail[16];
        ptrdiff_t r = n_visible - j;
        for (t = 0; t < 16; t++) tail[t] = t < r ? s[j + t] : -INFINITY;
#pragma omp simd
        for (t = 0; t < 16; t++) {
            FA_REAL v = tail[t];
            mx[t] = (v > mx[t] || v != v) ? v : mx[t];
        }
    }
#define FA_MAX_STEP(w) \
    for (t = 0; t < (w); t++) mx[t] = (mx[t + (w)] > mx[t] || mx[t + (w)] != mx[t + (w)]) ? mx[t + (w)] : mx[t];
    FA_MAX_STEP(8) FA_MAX_STEP(4) FA_MAX_STEP(2) FA_MAX_STEP(1)
#undef FA_MAX_STEP
    return mx[0] != mx[0] ? (FA_REAL)NAN : mx[0];
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
    if (n > 256) {
#pragma omp simd reduction(+:sum)
        for (j = 0; j < n; j++) {
            FA_REAL e = FA_EXP(s[j] - m);
            s[j] = e;
            sum += e;
        }
        return sum;
    }
    /* A row of up to 256 (MiniLM's attention: 10 to 60 keys): 16 partial sums, lane by lane,
       then one tree. The loop above ends in a chain of 16 scalar adds and a scalar remainder,
       which cost more than the exps in short rows (a quarter of the attention's time at 24
       keys); over longer rows it is the faster one (attention at T = 1024 to 4096: 1.03-1.08x
       the time with the lanes). */
    FA_REAL acc[16] = {0};
    ptrdiff_t t;
    for (j = 0; j + 16 <= n; j += 16) {
#pragma omp simd
        for (t = 0; t < 16; t++) {
            FA_REAL e = FA_EXP(s[j + t] - m);
            s[j + t] = e;
            acc[t] += e;
        }
    }
    if (j < n) {  /* the last n % 16 padded with -inf (exp: 0) */
        FA_REAL tail[16];
        ptrdiff_t r = n - j;
        for (t = 0; t < 16; t++) tail[t] = t < r ? s[j + t] - m : -INFINITY;
#pragma omp simd
        for (t = 0; t < 16; t++) {
            tail[t] = FA_EXP(tail[t]);
            acc[t] += tail[t];
        }
        for (t = 0; t < r; t++) s[j + t] = tail[t];
    }
    for (t = 0; t < 8; t++) acc[t] += acc[t + 8];  /* (constant trip counts: vectorised) */
    for (t = 0; t < 4; t++) acc[t] += acc[t + 4];
    for (t = 0; t < 2; t++) acc[t] += acc[t + 2];
    sum = acc[0] + acc[1];
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
 * passes (mean, then squared deviations): the one-pass E[x^2] - E[x]^2 cancels.
 * mean_out, rstd_out: NULL, or where to store the row's mean and 1 / sqrt(var + eps). */
FA_MULTIVERSION
static void FA_NAME(fa_layer_norm_row)(FA_REAL *y, const FA_REAL *x, ptrdiff_t n,
                                       const FA_REAL *weight, const FA_REAL *bias, FA_REAL eps,
                                       FA_REAL *mean_out, FA_REAL *rstd_out)
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
    if (mean_out) *mean_out = (FA_REAL)mean;
    if (rstd_out) *rstd_out = (FA_REAL)rstd;
}

/* Backward of layer norm over one row of n features, given the forward's mean and rstd:
 *   xhat = (x - mean) * rstd,  dy = g * weight (g if weight is NULL)
 *   dx   = rstd * (dy - mean(dy) - xhat * mean(dy * xhat))
 *   dw_acc[j] += g[j] * xhat[j],  db_acc[j] += g[j]   (dw_acc may be NULL)
 * In double throughout, as the forward: xhat is x - mean scaled, and the two means are sums of n
 * terms. The accumulators are double too: they sum over many rows. */
FA_MULTIVERSION
static void FA_NAME(fa_layer_norm_backward_row)(FA_REAL *dx, double *dw_acc, double *db_acc,
                                                const FA_REAL *g, const FA_REAL *x, ptrdiff_t n,
                                                const FA_REAL *weight, FA_REAL mean_, FA_REAL rstd_)
{
    ptrdiff_t j;
    double mean = mean_, rstd = rstd_, sum_dy = 0, sum_dy_xhat = 0;
    if (weight) {
#pragma omp simd reduction(+:sum_dy, sum_dy_xhat)
        for (j = 0; j < n; j++) {
            double dy = (double)g[j] * weight[j];
            sum_dy += dy;
            sum_dy_xhat += dy * (((double)x[j] - mean) * rstd);
        }
    } else {
#pragma omp simd reduction(+:sum_dy, sum_dy_xhat)
        for (j = 0; j < n; j++) {
            sum_dy += g[j];
            sum_dy_xhat += (double)g[j] * (((double)x[j] - mean) * rstd);
        }
    }
    double mean_dy = sum_dy / (double)n, mean_dy_xhat = sum_dy_xhat / (double)n;
    for (j = 0; j < n; j++) {
        double xhat = ((double)x[j] - mean) * rstd;
        double dy = weight ? (double)g[j] * weight[j] : (double)g[j];
        dx[j] = (FA_REAL)(rstd * (dy - mean_dy - xhat * mean_dy_xhat));
    }
    if (dw_acc)
        for (j = 0; j < n; j++) dw_acc[j] += (double)g[j] * (((double)x[j] - mean) * rstd);
    for (j = 0; j < n; j++) db_acc[j] += g[j];
}

/* Backward of softmax over one row: y = softmax(x * scale) (masked or not) gives
 *   dx = scale * y * (g - sum(g * y))
 * Masked entries have y = 0, so their gradient is 0 (a fully masked row: all 0). The dot product
 * is in double: g - dot cancels when g is nearly constant along the row. */
FA_MULTIVERSION
static void FA_NAME(fa_softmax_backward_row)(FA_REAL *dx, const FA_REAL *g, const FA_REAL *y,
                                             ptrdiff_t n, FA_REAL scale)
{
    ptrdiff_t j;
    double dot = 0;
#pragma omp simd reduction(+:dot)
    for (j = 0; j < n; j++) dot += (double)g[j] * y[j];
    for (j = 0; j < n; j++) dx[j] = (FA_REAL)((double)scale * y[j] * ((double)g[j] - dot));
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

/* dx = g * GELU'(x) over n values.
 *   erf form:  GELU'(x) = Phi(x) + x phi(x),  Phi(x) = erfc(-x / sqrt 2) / 2,
 *              phi(x) = exp(-x^2 / 2) / sqrt(2 pi)
 *   tanh form: GELU(x) = x s, s = sigmoid(2u) = 1 / (1 + exp(-2u)), u = sqrt(2/pi) (x + 0.044715 x^3)
 *              GELU'(x) = s + x * 2 s (1 - s) * du/dx,  du/dx = sqrt(2/pi) (1 + 3 * 0.044715 x^2)
 * For the sigmoid, t = exp(-|2u|) <= 1 never overflows: s = 1 / (1 + t) for u >= 0, t / (1 + t)
 * for u < 0, and s (1 - s) = t / (1 + t)^2 either way (1 - s, or exp(-2u) / (1 + exp(-2u)), would
 * give 1 - 1 or inf / inf). x is clamped to [-40, 40] first: beyond it GELU' is exactly 1 or 0
 * in double (phi(40) ~ 1e-348), and x * phi(x) with x = inf would be inf * 0 = NaN. NaN stays NaN
 * (the comparisons are false). Neither form cancels in the tails: x phi(x) dominates for x << 0. */
FA_MULTIVERSION
static void FA_NAME(fa_gelu_backward_row)(FA_REAL *dx, const FA_REAL *g, const FA_REAL *x,
                                          ptrdiff_t n, int tanh_form)
{
    ptrdiff_t j;
    const FA_REAL k = (FA_REAL)0.7978845608028654;   /* sqrt(2 / pi) */
    if (tanh_form) {
        for (j = 0; j < n; j++) {
            FA_REAL xc = x[j] > 40 ? (FA_REAL)40 : (x[j] < -40 ? (FA_REAL)-40 : x[j]);
            FA_REAL u = k * (xc + (FA_REAL)0.044715 * xc * xc * xc);
            FA_REAL t = FA_EXP(-2 * (u < 0 ? -u : u));
            FA_REAL s = (u >= 0 ? 1 : t) / (1 + t);
            FA_REAL du = k * (1 + (FA_REAL)(3 * 0.044715) * xc * xc);
            dx[j] = g[j] * (s + xc * 2 * (t / ((1 + t) * (1 + t))) * du);
        }
    } else {
        for (j = 0; j < n; j++) {
            FA_REAL xc = x[j] > 40 ? (FA_REAL)40 : (x[j] < -40 ? (FA_REAL)-40 : x[j]);
            FA_REAL cdf = (FA_REAL)0.5 * FA_ERFC(xc * (FA_REAL)-0.70710678118654752440);
            FA_REAL pdf = (FA_REAL)0.3989422804014327 * FA_EXP((FA_REAL)-0.5 * xc * xc);
            dx[j] = g[j] * (cdf + xc * pdf);
        }
    }
}

/* log(sum_j exp(z[j])) over one row of n logits (max subtracted first), writing nothing;
 * *sum_z gets sum_j z[j], which label smoothing needs. NaN in, NaN out; all -inf gives -inf. */
FA_MULTIVERSION
static FA_REAL FA_NAME(fa_logsumexp_row)(const FA_REAL *z, ptrdiff_t n, FA_REAL *sum_z)
{
    ptrdiff_t j;
    FA_REAL mx = -INFINITY, total = 0, s = 0;
    int has_nan = 0;
#pragma omp simd reduction(max:mx) reduction(|:has_nan) reduction(+:total)
    for (j = 0; j < n; j++) {
        mx = z[j] > mx ? z[j] : mx;
        has_nan |= z[j] != z[j];
        total += z[j];
    }
    *sum_z = total;
    if (has_nan) return (FA_REAL)NAN;
    if (mx == -INFINITY || mx == INFINITY) return mx;
#pragma omp simd reduction(+:s)
    for (j = 0; j < n; j++) s += FA_EXP(z[j] - mx);
    return mx + (FA_REAL)log((double)s);
}

/* g[j] = a * exp(z[j] - lse) - b over one row: a scaled softmax, shifted (cross-entropy gradient) */
FA_MULTIVERSION
static void FA_NAME(fa_softmax_affine_row)(FA_REAL *g, const FA_REAL *z, ptrdiff_t n, FA_REAL lse,
                                           FA_REAL a, FA_REAL b)
{
    for (ptrdiff_t j = 0; j < n; j++) g[j] = a * FA_EXP(z[j] - lse) - b;
}

/* One AdamW step (torch.optim.AdamW, decoupled weight decay) over n values, in place on p, m, v:
 *   m = beta1 m + (1 - beta1) g,   v = beta2 v + (1 - beta2) g^2
 *   p = decay p - step_size m / (sqrt(v) inv_sqrt_bc2 + eps)
 * with decay = 1 - lr weight_decay, step_size = lr / (1 - beta1^step) and
 * inv_sqrt_bc2 = 1 / sqrt(1 - beta2^step), computed once per call by the caller.
 * In double for float too (the loop is memory-bound): only the stored results are rounded.
 * Element j reads p, g, m, v at j before writing there, so no order across elements matters. */
FA_MULTIVERSION
static void FA_NAME(fa_adamw_row)(FA_REAL *p, const FA_REAL *g, FA_REAL *m, FA_REAL *v, ptrdiff_t n,
                                  double decay, double beta1, double beta2, double step_size,
                                  double inv_sqrt_bc2, double eps)
{
    for (ptrdiff_t j = 0; j < n; j++) {
        double gj = g[j];
        double mj = beta1 * m[j] + (1 - beta1) * gj;
        double vj = beta2 * v[j] + (1 - beta2) * gj * gj;
        p[j] = (FA_REAL)(decay * p[j] - step_size * mj / (sqrt(vj) * inv_sqrt_bc2 + eps));
        m[j] = (FA_REAL)mj;
        v[j] = (FA_REAL)vj;
    }
}

/* y[j] += x[j] for j < n; y and x do not overlap (restrict: lets the loop vectorise). */
FA_MULTIVERSION
static void FA_NAME(fa_add_row)(FA_REAL *restrict y, const FA_REAL *restrict x, ptrdiff_t n)
{
    ptrdiff_t j;
    for (j = 0; j < n; j++) y[j] += x[j];
}

/* RMSNorm of one row: y = (x * rstd) * w (w NULL: no weight), rstd = 1 / sqrt(mean(x^2) + eps)
 * with the sum of squares in double (the reference takes it in float64); returns rstd. */
FA_MULTIVERSION
static double FA_NAME(fa_rms_norm_row)(FA_REAL *restrict y, const FA_REAL *restrict x, ptrdiff_t n,
                                       const FA_REAL *restrict w, double eps)
{
    ptrdiff_t j;
    double sq = 0;
#pragma omp simd reduction(+:sq)
    for (j = 0; j < n; j++) sq += (double)x[j] * x[j];
    double rs = 1 / sqrt(sq / n + eps);
    if (w) {
        for (j = 0; j < n; j++) y[j] = (FA_REAL)(x[j] * rs) * w[j];
    } else {
        for (j = 0; j < n; j++) y[j] = (FA_REAL)(x[j] * rs);
    }
    return rs;
}

/* y = silu(g) * u = g / (1 + exp(-g)) * u over n values (exp(-g) = inf for g << 0: silu 0). */
FA_MULTIVERSION
static void FA_NAME(fa_silu_mul_row)(FA_REAL *restrict y, const FA_REAL *restrict g, const FA_REAL *restrict u,
                                     ptrdiff_t n)
{
    ptrdiff_t j;
    for (j = 0; j < n; j++) y[j] = g[j] * (1 / (1 + FA_EXP(-g[j]))) * u[j];
}

/* Rotary embedding of one contiguous row of 2h values, Hugging Face's rotate-half convention:
 * x = [x1, x2]; forward y = [x1 c1 - x2 s1, x2 c2 + x1 s2], backward y = [x1 c1 + x2 s2, x2 c2 - x1 s1]
 * (c, s: the row's cos and sin, 2h each). */
FA_MULTIVERSION
static void FA_NAME(fa_rotary_row)(FA_REAL *restrict y, const FA_REAL *restrict x, const FA_REAL *restrict c,
                                   const FA_REAL *restrict s, ptrdiff_t h, int backward)
{
    ptrdiff_t j;
    if (backward) {
        for (j = 0; j < h; j++) {
            y[j] = x[j] * c[j] + x[j + h] * s[j + h];
            y[j + h] = x[j + h] * c[j + h] - x[j] * s[j];
        }
    } else {
        for (j = 0; j < h; j++) {
            y[j] = x[j] * c[j] - x[j + h] * s[j];
            y[j + h] = x[j + h] * c[j + h] + x[j] * s[j + h];
        }
    }
}
