# Fused-type (float/double) front of row_ops.h, so the kernels are written once.
from cython cimport floating

cdef extern from "row_ops.h" nogil:
    float fa_mask_row_f32(float* s, Py_ssize_t n, Py_ssize_t n_visible,
                          const unsigned char* bool_mask, Py_ssize_t bool_stride,
                          const float* add_mask, Py_ssize_t add_stride)
    double fa_mask_row_f64(double* s, Py_ssize_t n, Py_ssize_t n_visible,
                           const unsigned char* bool_mask, Py_ssize_t bool_stride,
                           const double* add_mask, Py_ssize_t add_stride)
    float fa_exp_sum_row_f32(float* s, Py_ssize_t n, float m)
    double fa_exp_sum_row_f64(double* s, Py_ssize_t n, double m)
    void fa_scale_row_f32(float* y, const float* x, Py_ssize_t n, float a)
    void fa_scale_row_f64(double* y, const double* x, Py_ssize_t n, double a)
    void fa_layer_norm_row_f32(float* y, const float* x, Py_ssize_t n,
                               const float* weight, const float* bias, float eps,
                               float* mean_out, float* rstd_out)
    void fa_layer_norm_row_f64(double* y, const double* x, Py_ssize_t n,
                               const double* weight, const double* bias, double eps,
                               double* mean_out, double* rstd_out)
    void fa_layer_norm_backward_row_f32(float* dx, double* dw_acc, double* db_acc, const float* g,
                                        const float* x, Py_ssize_t n, const float* weight,
                                        float mean, float rstd)
    void fa_layer_norm_backward_row_f64(double* dx, double* dw_acc, double* db_acc, const double* g,
                                        const double* x, Py_ssize_t n, const double* weight,
                                        double mean, double rstd)
    void fa_softmax_backward_row_f32(float* dx, const float* g, const float* y, Py_ssize_t n, float scale)
    void fa_softmax_backward_row_f64(double* dx, const double* g, const double* y, Py_ssize_t n,
                                     double scale)
    void fa_gelu_row_f32(float* y, const float* x, Py_ssize_t n, int tanh_form)
    void fa_gelu_row_f64(double* y, const double* x, Py_ssize_t n, int tanh_form)
    void fa_gelu_backward_row_f32(float* dx, const float* g, const float* x, Py_ssize_t n, int tanh_form)
    void fa_gelu_backward_row_f64(double* dx, const double* g, const double* x, Py_ssize_t n,
                                  int tanh_form)
    float fa_logsumexp_row_f32(const float* z, Py_ssize_t n, float* sum_z)
    double fa_logsumexp_row_f64(const double* z, Py_ssize_t n, double* sum_z)
    void fa_softmax_affine_row_f32(float* g, const float* z, Py_ssize_t n, float lse, float a, float b)
    void fa_softmax_affine_row_f64(double* g, const double* z, Py_ssize_t n, double lse, double a, double b)
    void fa_add_row_f32(float* y, const float* x, Py_ssize_t n)
    void fa_add_row_f64(double* y, const double* x, Py_ssize_t n)
    double fa_rms_norm_row_f32(float* y, const float* x, Py_ssize_t n, const float* w, double eps)
    double fa_rms_norm_row_f64(double* y, const double* x, Py_ssize_t n, const double* w, double eps)
    void fa_silu_mul_row_f32(float* y, const float* g, const float* u, Py_ssize_t n)
    void fa_silu_mul_row_f64(double* y, const double* g, const double* u, Py_ssize_t n)
    void fa_rotary_row_f32(float* y, const float* x, const float* c, const float* s, Py_ssize_t h, int backward)
    void fa_rotary_row_f64(double* y, const double* x, const double* c, const double* s, Py_ssize_t h,
                           int backward)
    float fa_exp_f32(float x)
    double fa_exp_f64(double x)


cdef inline floating mask_row(floating* s, Py_ssize_t n, Py_ssize_t n_visible,
                              const unsigned char* bool_mask, Py_ssize_t bool_stride,
                              const floating* add_mask, Py_ssize_t add_stride) noexcept nogil:
    if floating is float:
        return fa_mask_row_f32(s, n, n_visible, bool_mask, bool_stride, add_mask, add_stride)
    else:
        return fa_mask_row_f64(s, n, n_visible, bool_mask, bool_stride, add_mask, add_stride)


cdef inline floating exp_sum_row(floating* s, Py_ssize_t n, floating m) noexcept nogil:
    if floating is float:
        return fa_exp_sum_row_f32(s, n, m)
    else:
        return fa_exp_sum_row_f64(s, n, m)


cdef inline void scale_row(floating* y, const floating* x, Py_ssize_t n, floating a) noexcept nogil:
    if floating is float:
        fa_scale_row_f32(y, x, n, a)
    else:
        fa_scale_row_f64(y, x, n, a)


cdef inline void layer_norm_row(floating* y, const floating* x, Py_ssize_t n, const floating* weight,
                                const floating* bias, floating eps, floating* mean_out,
                                floating* rstd_out) noexcept nogil:
    if floating is float:
        fa_layer_norm_row_f32(y, x, n, weight, bias, eps, mean_out, rstd_out)
    else:
        fa_layer_norm_row_f64(y, x, n, weight, bias, eps, mean_out, rstd_out)


cdef inline void layer_norm_backward_row(floating* dx, double* dw_acc, double* db_acc, const floating* g,
                                         const floating* x, Py_ssize_t n, const floating* weight,
                                         floating mean, floating rstd) noexcept nogil:
    if floating is float:
        fa_layer_norm_backward_row_f32(dx, dw_acc, db_acc, g, x, n, weight, mean, rstd)
    else:
        fa_layer_norm_backward_row_f64(dx, dw_acc, db_acc, g, x, n, weight, mean, rstd)


cdef inline void softmax_backward_row(floating* dx, const floating* g, const floating* y, Py_ssize_t n,
                                      floating scale) noexcept nogil:
    if floating is float:
        fa_softmax_backward_row_f32(dx, g, y, n, scale)
    else:
        fa_softmax_backward_row_f64(dx, g, y, n, scale)


cdef inline void gelu_row(floating* y, const floating* x, Py_ssize_t n, int tanh_form) noexcept nogil:
    if floating is float:
        fa_gelu_row_f32(y, x, n, tanh_form)
    else:
        fa_gelu_row_f64(y, x, n, tanh_form)


cdef inline void gelu_backward_row(floating* dx, const floating* g, const floating* x, Py_ssize_t n,
                                   int tanh_form) noexcept nogil:
    if floating is float:
        fa_gelu_backward_row_f32(dx, g, x, n, tanh_form)
    else:
        fa_gelu_backward_row_f64(dx, g, x, n, tanh_form)


cdef inline void add_row(floating* y, const floating* x, Py_ssize_t n) noexcept nogil:
    if floating is float:
        fa_add_row_f32(y, x, n)
    else:
        fa_add_row_f64(y, x, n)


cdef inline double rms_norm_row(floating* y, const floating* x, Py_ssize_t n, const floating* w,
                                double eps) noexcept nogil:
    if floating is float:
        return fa_rms_norm_row_f32(y, x, n, w, eps)
    else:
        return fa_rms_norm_row_f64(y, x, n, w, eps)


cdef inline void silu_mul_row(floating* y, const floating* g, const floating* u, Py_ssize_t n) noexcept nogil:
    if floating is float:
        fa_silu_mul_row_f32(y, g, u, n)
    else:
        fa_silu_mul_row_f64(y, g, u, n)


cdef inline void rotary_row(floating* y, const floating* x, const floating* c, const floating* s, Py_ssize_t h,
                            bint backward) noexcept nogil:
    if floating is float:
        fa_rotary_row_f32(y, x, c, s, h, backward)
    else:
        fa_rotary_row_f64(y, x, c, s, h, backward)


cdef inline floating exp(floating x) noexcept nogil:
    if floating is float:
        return fa_exp_f32(x)
    else:
        return fa_exp_f64(x)


cdef inline floating logsumexp_row(const floating* z, Py_ssize_t n, floating* sum_z) noexcept nogil:
    if floating is float:
        return fa_logsumexp_row_f32(z, n, sum_z)
    else:
        return fa_logsumexp_row_f64(z, n, sum_z)


cdef inline void softmax_affine_row(floating* g, const floating* z, Py_ssize_t n, floating lse,
                                    floating a, floating b) noexcept nogil:
    if floating is float:
        fa_softmax_affine_row_f32(g, z, n, lse, a, b)
    else:
        fa_softmax_affine_row_f64(g, z, n, lse, a, b)


cdef extern from "row_ops.h" nogil:
    void fa_adamw_row_f32(float* p, const float* g, float* m, float* v, Py_ssize_t n, double decay,
                          double beta1, double beta2, double step_size, double inv_sqrt_bc2, double eps)
    void fa_adamw_row_f64(double* p, const double* g, double* m, double* v, Py_ssize_t n, double decay,
                          double beta1, double beta2, double step_size, double inv_sqrt_bc2, double eps)


cdef inline void adamw_row(floating* p, const floating* g, floating* m, floating* v, Py_ssize_t n,
                           double decay, double beta1, double beta2, double step_size,
                           double inv_sqrt_bc2, double eps) noexcept nogil:
    if floating is float:
        fa_adamw_row_f32(p, g, m, v, n, decay, beta1, beta2, step_size, inv_sqrt_bc2, eps)
    else:
        fa_adamw_row_f64(p, g, m, v, n, decay, beta1, beta2, step_size, inv_sqrt_bc2, eps)
