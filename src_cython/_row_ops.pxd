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
                               const float* weight, const float* bias, float eps)
    void fa_layer_norm_row_f64(double* y, const double* x, Py_ssize_t n,
                               const double* weight, const double* bias, double eps)
    void fa_gelu_row_f32(float* y, const float* x, Py_ssize_t n, int tanh_form)
    void fa_gelu_row_f64(double* y, const double* x, Py_ssize_t n, int tanh_form)
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
                                const floating* bias, floating eps) noexcept nogil:
    if floating is float:
        fa_layer_norm_row_f32(y, x, n, weight, bias, eps)
    else:
        fa_layer_norm_row_f64(y, x, n, weight, bias, eps)


cdef inline void gelu_row(floating* y, const floating* x, Py_ssize_t n, int tanh_form) noexcept nogil:
    if floating is float:
        fa_gelu_row_f32(y, x, n, tanh_form)
    else:
        fa_gelu_row_f64(y, x, n, tanh_form)


cdef inline floating exp(floating x) noexcept nogil:
    if floating is float:
        return fa_exp_f32(x)
    else:
        return fa_exp_f64(x)
