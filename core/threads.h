/* NG_THREADS: the one thread count of the CPU side. Read once from the environment (default: the
 * cores this process may run on) and given to OpenBLAS, to OpenMP (which oneDNN's primitives and
 * natgrad's own parallel loops share) and reported by `natgrad info` and bench. Results depend
 * on it (sums split across threads differ in rounding), so runs that must agree bit for bit
 * use the same value. */
#ifndef NG_THREADS_H
#define NG_THREADS_H

#ifdef __cplusplus
extern "C" {
#endif

/* The thread count; the first call reads NG_THREADS (a usage error names it when it is not an
 * integer from 1 to 1024) and applies it to OpenBLAS and OpenMP. Call from the main thread
 * before any CPU compute (natgrad's main does; layers call it before their first primitive). */
int ng_threads(void);

/* Element count below which natgrad's own loops stay on one thread: forking a team costs a few
 * microseconds, about what 32K simple elements take. Loops split only over independent outputs
 * (elements, channels, planes), never a sum, so results do not depend on the thread count. */
#define NG_OMP_MIN 32768

#ifdef __cplusplus
}
#endif
#endif
