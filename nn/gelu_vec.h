/* GELU (erf form) on f32 four elements at a time through glibc's vector erf and exp (libmvec,
 * AVX2), for the CPU twin in activation.c. Internal to nn/. */
#ifndef NG_GELU_VEC_H
#define NG_GELU_VEC_H

#include <stdint.h>

/* 1 when this build has libmvec and the CPU has AVX2: then the functions below may be called. */
int ng_gelu_vec_ok(void);
/* y = 0.5 x (1 + erf(x / sqrt 2)) and dx = dy (cdf + x pdf), each in double and rounded once to
 * f32, as activation.c's scalar loops, over n elements split across NG_THREADS. */
void ng_gelu_vec_forward(const float *x, float *y, int64_t n);
void ng_gelu_vec_backward(const float *x, const float *dy, float *dx, int64_t n);

#endif
