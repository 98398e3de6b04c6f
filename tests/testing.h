/* Helpers shared by the test programs: fresh random inputs, comparisons that print the first
 * mismatches, catching usage errors, and skipping (exit 77) when no GPU is present. */
#ifndef NG_TESTING_H
#define NG_TESTING_H

#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>

#include "core/tensor.h"

/* Seed for this run's inputs: NG_TEST_SEED if set, else time-based; printed once so a failure
 * can be replayed. */
uint64_t ng_test_seed(void);
/* Uniform doubles in [-1,1) from a test RNG independent of natgrad's own Philox. */
double ng_test_uniform(void);
/* Uniform integers in [lo, hi] from the same generator. */
int ng_test_int(int lo, int hi);
/* v rounded to TF32 (11 significant bits, ties to even), by frexp/nearbyint: an independent road
 * to what the emulated libraries' bit twiddling computes. */
double ng_test_tf32(double v);
/* The 64-bit FNV-1a hash of n bytes: pins outputs whose bits must not change (compare builds). */
uint64_t ng_test_fnv1a(const void *p, size_t n);
/* Fills a tensor (any device, any float dtype) with uniform values in [lo, hi). */
void ng_test_fill_uniform(ng_tensor *t, double lo, double hi);
/* Poisons a tensor with NaN (float types) or 0xAB bytes so unwritten elements show. */
void ng_test_poison(ng_tensor *t);
/* A host double copy of any tensor (any device, any dtype); free() the result. */
double *ng_test_to_f64(const ng_tensor *t);

/* Compares got with expected element-wise: |got - exp| <= atol + rtol |exp|. On failure prints
 * the first 8 mismatches (index, expected, got) and the worst error, counts a failure, and
 * returns 0. NaN in either matches only NaN in both when nan_ok is set. */
int ng_test_close(const char *what, const double *expected, const double *got, int64_t n,
                  double rtol, double atol);
/* ||got - exp|| / ||exp|| <= tol, printed on failure. */
int ng_test_rel_norm(const char *what, const double *expected, const double *got, int64_t n,
                     double tol);

/* Records a failed property with its message. */
void ng_test_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
#define NG_TEST(cond, ...)                                                                         \
    do {                                                                                           \
        if (!(cond))                                                                               \
            ng_test_fail(__VA_ARGS__);                                                             \
        else                                                                                       \
            ng_test_pass();                                                                        \
    } while (0)
/* Prints "<name>: N passed, M failed" and returns the exit status. */
int ng_test_finish(const char *name);
/* Counts one passed check (ng_test_close and NG_TEST_ERROR count their own). */
void ng_test_pass(void);

/* Runs `stmt` expecting a usage error (ng_fail) whose message contains `needle`. */
extern jmp_buf ng_test_jmp;
int ng_test_begin_catch(void);
void ng_test_end_catch(const char *stmt_text, int raised, const char *needle);
#define NG_TEST_ERROR(stmt, needle)                                                                \
    do {                                                                                           \
        volatile int ng_raised_ = 0;                                                               \
        if (ng_test_begin_catch() && setjmp(ng_test_jmp) == 0) {                                   \
            stmt;                                                                                  \
        } else {                                                                                   \
            ng_raised_ = 1;                                                                        \
        }                                                                                          \
        ng_test_end_catch(#stmt, ng_raised_, needle);                                              \
    } while (0)

/* 1 when a CUDA device can run this build's kernels. */
int ng_test_have_gpu(void);
/* 1 in the CUDA emulation build (core/cuda_emu.h), where the "GPU" runs the CPU twins: checks of
 * a kernel itself (called directly, or its workspace requests, cuDNN's choices, NCCL) skip there
 * with a note, and everything that goes through natgrad's own API runs. */
int ng_test_emulated(const char *what);
/* Runs fn in a forked child with its stderr captured: returns the wait status and the first
 * cap - 1 bytes it said (NUL-terminated) in said. */
int ng_test_run_child(void (*fn)(void), char *said, size_t cap);
/* For gpu-labelled tests: exits 77 (CTest skip) with a message when there is no GPU. */
void ng_test_require_gpu(const char *name);

#endif
