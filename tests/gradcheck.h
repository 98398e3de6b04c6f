/* Layer checks shared by the nn tests:
 * - ng_gradcheck: a layer's backward (input and every parameter gradient) against central
 *   finite differences of L = <dy, f(x)> in float64 on the CPU, for random x, dy, parameters.
 * - ng_twincheck: the same layer built on CPU and on CUDA (f32, same seed, same inputs):
 *   forward outputs and all gradients compared (a parameter against its share of the whole
 *   gradient when its own is smaller; inputs redrawn when a ReLU switches between devices).
 * - ng_test_forward_error: a forward that must fail with a usage error naming something. */
#ifndef NG_GRADCHECK_H
#define NG_GRADCHECK_H

#include "nn/layer.h"
#include "nn/model.h"

/* Builds a fresh layer each call (the checks build it more than once). */
typedef ng_layer *(*ng_layer_maker)(void);

typedef struct {
    int training;              /* run the layer in training mode */
    int max_checks;            /* finite-difference probes per tensor (random indices); 0 = 40 */
    double h;                  /* step; 0 = 1e-6 */
    double tol;                /* |num - ana| <= tol * max(1, |num|, |ana|); 0 = 1e-6 */
    int no_input_grad;         /* the input is not differentiable (e.g. class labels) */
    double input_lo, input_hi; /* input range; both 0 = [-1, 1] */
} ng_gradcheck_opts;

/* Called on every model the checks build, after ng_model_build and before any pass, when set:
 * lets a test put non-trivial state (running statistics) into buffers. */
extern void (*ng_gradcheck_prepare)(ng_model *m);
/* A prepare hook: every batch norm's running statistics away from 0 and 1 (mean 0.3 sin(1 + c),
 * var 0.5 + 0.25 c for channel c), so that eval mode tests something; the same on every build,
 * since twin checks build the model twice. Assumes buffers come in (mean, var) pairs. */
void ng_gradcheck_set_running_stats(ng_model *m);

/* Returns 1 when every probed gradient matches; failures are reported through testing.h. */
int ng_gradcheck(const char *what, ng_layer_maker make, int ndim, const int64_t *in_shape,
                 ng_gradcheck_opts opts);

/* CPU vs CUDA: relative-norm tolerance `tol` on outputs and gradients. Skips (returns 1) when no
 * GPU is present. */
int ng_twincheck(const char *what, ng_layer_maker make, int ndim, const int64_t *in_shape,
                 int training, double tol);

/* The unit roundoff of a compute format: 2^-11 (f16), 2^-8 (bf16), 2^-24 (f32), 2^-53 (f64). */
double ng_unit_roundoff(ng_dtype dt);
/* The normwise tolerance of a result that went through n stored roundings in dt (each may be
 * amplified 2x by the layer it passes) and reductions of length k accumulated in f32:
 * 2 n u + k 2^-24. The reasoning is written out in tests/test_mixed.c. */
double ng_mixed_tol(ng_dtype dt, int n, int64_t k);

/* ng_twincheck in a compute dtype (f16, bf16: mixed models with f32 masters on both devices). */
int ng_twincheck_mixed(const char *what, ng_layer_maker make, int ndim, const int64_t *in_shape,
                       int training, ng_dtype compute, double tol);

/* The layer in compute dtype f16/bf16 (f32 masters) against the same layer in `ref` (f64 for a
 * layer's maths, f32 for whole models) on the same numbers: masters rounded to the compute dtype,
 * x and dy drawn in it. Output, input gradient and parameter gradients compared normwise with
 * `tol` (derive it from the format: see tests/test_mixed.c). */
int ng_mixedcheck(const char *what, ng_layer_maker make, int ndim, const int64_t *in_shape,
                  int training, ng_dtype compute, ng_dtype ref, double tol);
/* ng_mixedcheck of an evaluation forward's output alone (inference: no backward follows, and a
 * max pool whose window holds two values that round to a tie in the half type would route its
 * gradient elsewhere, a jump no rounding bound covers). */
int ng_mixedcheck_eval(const char *what, ng_layer_maker make, int ndim, const int64_t *in_shape,
                       ng_dtype compute, ng_dtype ref, double tol);

/* Builds a CPU f32 model of l (taking it), runs a forward on a random input of `shape` and expects
 * a usage error that mentions `needle`. The model and input are made outside the caught call and
 * freed after it, so the expected error leaks nothing. */
void ng_test_forward_error(ng_layer *l, int ndim, const int64_t *shape, int training,
                           const char *needle);

/* A CPU twin that caches primitives per input shape (oneDNN's four slots a layer): m's forward
 * on f32 inputs [n, c, h, w] for n = 1..6, twice, with the same values each time; 1 when every
 * output of the second round, made by primitives the cache evicted and made again, has the first
 * round's bits. */
int ng_test_same_after_eviction(ng_model *m, int64_t c, int64_t h, int64_t w);

/* A layer's results, as f64 host arrays: output, input gradient (NULL when not asked), and the
 * parameter gradients (the flat buffer). */
typedef struct {
    double *y, *dx, *g;
    int64_t ny, nx, ng;
} ng_layer_run;
/* One forward on x and `passes` backward passes from dy (f64 host tensors) of make() built on the
 * CPU in dt (f16/bf16: f32 masters, half compute) from seed, with arenas of arena_bytes;
 * `absolute` takes |w| and |b| (with |x| and |dy| given, an f64 run then yields each element's
 * sum of magnitudes, the scale of a rounding bound); need_dx 0 asks for no input gradient. */
ng_layer_run ng_test_layer_run(ng_layer *(*make)(void), ng_dtype dt, uint64_t seed,
                               const ng_tensor *xh, const ng_tensor *dyh, int absolute, int passes,
                               int need_dx, size_t arena_bytes);
void ng_layer_run_free(ng_layer_run *p);
/* A new f64 host tensor of |t| (t f64 on the host), for the magnitude runs of a rounding bound. */
ng_tensor ng_test_abs(const ng_tensor *t, const char *name);

#endif
