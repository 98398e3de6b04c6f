/* The emulated CUDA device of the NG_CUDA_EMU build (see cuda_emu.h): its memory, its backend
 * table (the CPU twins, run with device memory open) and what the CUDA context would report.
 *
 * Device memory is one reserved address range, handed out first-fit in 256-byte blocks as
 * cudaMalloc would align them. The range is PROT_NONE except while an op runs: every op enters
 * (the first one in opens the used part read-write) and leaves (the last one out closes it), so
 * host code that dereferences a CUDA tensor's data between ops takes a SIGSEGV, which is reported
 * as what it is. Ops of several threads (the loader's device batches beside the training step)
 * share one opening; a host access during another thread's op is then not caught. */
#include "cuda_emu.h"

#include <execinfo.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "backend.h"
#include "error.h"
#include "half.h"
#include "linalg_cuda.h"
#include "memory.h"

typedef struct {
    size_t off, size;
    int used;
} block;

static struct {
    char *base;
    size_t cap;    /* the reserved range: the emulated device's memory */
    size_t top;    /* end of the highest used block, page-rounded: what opening opens */
    block *blocks; /* sorted by offset, covering [0, cap) */
    int n, max;
    int depth; /* ops in flight */
    size_t page;
    struct sigaction old_segv;
} emu;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t once = PTHREAD_ONCE_INIT;

/* NG_EMU_MEMORY_GIB (default 139, the H200's): the device memory the emulation reports and
 * reserves (address space only; pages are taken as blocks are written). */
static size_t memory_from_env(void) {
    const char *s = getenv("NG_EMU_MEMORY_GIB");
    double gib = 139.0;
    if (s && *s) {
        char *end;
        gib = strtod(s, &end);
        NG_CHECK(*end == 0 && gib > 0 && gib <= 4096,
                 "NG_EMU_MEMORY_GIB: '%s' is not a size in GiB between 0 and 4096", s);
    }
    return (size_t)(gib * 1073741824.0);
}

static const block *block_at(uintptr_t addr) {
    if (addr < (uintptr_t)emu.base || addr >= (uintptr_t)emu.base + emu.cap) return NULL;
    size_t off = addr - (uintptr_t)emu.base;
    int lo = 0, hi = emu.n - 1;
    while (lo < hi) { /* the last block starting at or before off */
        int mid = (lo + hi + 1) / 2;
        if (emu.blocks[mid].off <= off)
            lo = mid;
        else
            hi = mid - 1;
    }
    return &emu.blocks[lo];
}

/* A fault in the range while no op runs: host code touched device memory. Everything else goes
 * to the handler that was there before. */
static void on_segv(int sig, siginfo_t *si, void *uc) {
    (void)sig, (void)uc;
    uintptr_t addr = (uintptr_t)si->si_addr;
    const block *b = block_at(addr);
    if (!b) { /* not ours: the handler that was there before takes the repeated fault */
        sigaction(SIGSEGV, &emu.old_segv, NULL);
        return;
    }
    char msg[400];
    size_t into = addr - (uintptr_t)emu.base - b->off;
    int n = snprintf(msg, sizeof msg,
                     "natgrad: error: %s CUDA device memory at %p (%zu bytes into a%s block of "
                     "%zu bytes); on a GPU this is a crash or garbage. Backtrace:\n",
                     emu.depth > 0 ? "a device op went past the allocated"
                                   : "host code touched, outside a device op,",
                     (void *)addr, into, b->used ? "n allocated" : " free", b->size);
    if (write(2, msg, (size_t)n) < 0) _exit(134);
    void *frames[48];
    backtrace_symbols_fd(frames, backtrace(frames, 48), 2);
    signal(SIGABRT, SIG_DFL);
    abort();
}

static void init(void) {
    emu.cap = memory_from_env();
    /* Opened and closed around every op, the range costs the kernel a page-table walk each
     * time: in 2 MiB pages (transparent huge pages where the kernel offers them) that walk is
     * 512 times shorter than in 4 KiB ones. */
    emu.page = (size_t)2 << 20;
    char *raw = mmap(NULL, emu.cap + emu.page, PROT_NONE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    NG_CHECK(raw != MAP_FAILED,
             "CUDA emulation: could not reserve %zu bytes of address space (NG_EMU_MEMORY_GIB)",
             emu.cap);
    emu.base = (char *)(((uintptr_t)raw + emu.page - 1) / emu.page * emu.page);
    madvise(emu.base, emu.cap, MADV_HUGEPAGE); /* a hint: without it, only slower */
    emu.max = 64;
    emu.blocks = malloc(sizeof(block) * (size_t)emu.max);
    NG_CHECK(emu.blocks, "CUDA emulation: out of host memory");
    emu.blocks[0] = (block){0, emu.cap, 0};
    emu.n = 1;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &emu.old_segv);
}

static void start(void) {
    pthread_once(&once, init);
}

static void protect(size_t from, size_t to, int prot) {
    if (to > from && mprotect(emu.base + from, to - from, prot) != 0)
        ng_fail("CUDA emulation: mprotect of the device range failed");
}

void ng_emu_enter(void) {
    start();
    pthread_mutex_lock(&lock);
    if (emu.depth++ == 0) protect(0, emu.top, PROT_READ | PROT_WRITE);
    pthread_mutex_unlock(&lock);
}

void ng_emu_leave(void) {
    pthread_mutex_lock(&lock);
    if (--emu.depth == 0) protect(0, emu.top, PROT_NONE);
    pthread_mutex_unlock(&lock);
}

int ng_emu_is_device(const void *p, size_t bytes) {
    start();
    pthread_mutex_lock(&lock);
    const block *b = block_at((uintptr_t)p);
    size_t off = (uintptr_t)p - (uintptr_t)emu.base;
    int ok = b && b->used && bytes <= b->off + b->size - off;
    pthread_mutex_unlock(&lock);
    return ok;
}

static size_t page_up(size_t x) {
    return (x + emu.page - 1) / emu.page * emu.page;
}

static void *emu_alloc(size_t bytes) {
    start();
    size_t size = (bytes + NG_ALIGN - 1) / NG_ALIGN * NG_ALIGN;
    if (!size) size = NG_ALIGN;
    pthread_mutex_lock(&lock);
    void *p = NULL;
    for (int i = 0; i < emu.n; i++) {
        block *b = &emu.blocks[i];
        if (b->used || b->size < size) continue;
        if (b->size > size) { /* split: the rest stays free after it */
            if (emu.n == emu.max) {
                block *nb = realloc(emu.blocks, sizeof(block) * (size_t)emu.max * 2);
                if (!nb) break;
                emu.blocks = nb, emu.max *= 2, b = &emu.blocks[i];
            }
            memmove(b + 2, b + 1, sizeof(block) * (size_t)(emu.n - i - 1));
            b[1] = (block){b->off + size, b->size - size, 0};
            b->size = size;
            emu.n++;
        }
        b->used = 1;
        p = emu.base + b->off;
        size_t end = page_up(b->off + size);
        if (end > emu.top) {
            if (emu.depth > 0) protect(emu.top, end, PROT_READ | PROT_WRITE);
            emu.top = end;
        }
        break;
    }
    pthread_mutex_unlock(&lock);
    return p;
}

static void (*free_wait)(void);

void ng_emu_set_free_wait(void (*wait_all)(void)) {
    free_wait = wait_all;
}

static void emu_free(void *p) {
    if (!p) return;
    if (free_wait) free_wait(); /* as cudaFree: no queued work may still use the block */
    pthread_mutex_lock(&lock);
    block *b = (block *)block_at((uintptr_t)p);
    NG_CHECK(b && b->used && emu.base + b->off == (char *)p,
             "CUDA emulation: free of %p, which is not an allocated device block", p);
    b->used = 0;
    int i = (int)(b - emu.blocks);
    if (i + 1 < emu.n && !b[1].used) { /* merge with the next */
        b->size += b[1].size;
        memmove(b + 1, b + 2, sizeof(block) * (size_t)(emu.n - i - 2));
        emu.n--;
    }
    if (i > 0 && !b[-1].used) { /* and the previous */
        b[-1].size += b->size;
        memmove(b, b + 1, sizeof(block) * (size_t)(emu.n - i - 1));
        emu.n--, b--;
    }
    /* Give large free stretches' whole pages back, as a device allocator's memory would be. */
    size_t lo = page_up(b->off), hi = (b->off + b->size) / emu.page * emu.page;
    if (hi > emu.top) hi = emu.top;
    if (hi > lo && hi - lo >= ((size_t)1 << 20)) madvise(emu.base + lo, hi - lo, MADV_DONTNEED);
    pthread_mutex_unlock(&lock);
}

void ng_emu_say(const char *lib, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "natgrad: %s (emulated): ", lib);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
}

void *ng_emu_alloc(size_t bytes) {
    return emu_alloc(bytes);
}

void ng_emu_free(void *p) {
    emu_free(p);
}

static void emu_memcpy(void *dst, ng_device dd, const void *src, ng_device sd, size_t bytes) {
    (void)dd, (void)sd;
    ng_emu_enter();
    memmove(dst, src, bytes);
    ng_emu_leave();
}

static void emu_sync(void) {}

/* Each op: the CPU twin with device memory open. */
#define EMU_OP(call)                                                                               \
    do {                                                                                           \
        ng_emu_enter();                                                                            \
        call;                                                                                      \
        ng_emu_leave();                                                                            \
    } while (0)

/* GEMM runs core/gemm_cublas.c, the CUDA build's binding, against the emulated cuBLAS
 * (core/cublas_emu.c), which opens device memory itself; its empty product (k = 0) is this
 * kernel's twin: C = beta C over each entry's m x n block, rounded as the kernel rounds. */
void ng_cuda_gemm_beta(const ng_gemm_desc *d) {
    ng_emu_enter();
    for (int64_t p = 0; p < d->batch; p++)
        for (int64_t r = 0; r < d->m; r++)
            for (int64_t j = 0; j < d->n; j++) {
                int64_t i = p * d->stride_c + r * d->ldc + j;
                switch (d->out_type) {
                    case NG_F64:
                        ((double *)d->C)[i] = d->beta == 0 ? 0.0 : d->beta * ((double *)d->C)[i];
                        break;
                    case NG_F32:
                        ((float *)d->C)[i] =
                            d->beta == 0 ? 0.0f : (float)d->beta * ((float *)d->C)[i];
                        break;
                    case NG_F16:
                        ((ng_f16 *)d->C)[i] = ng_f32_to_f16(
                            d->beta == 0 ? 0.0f
                                         : (float)d->beta * ng_f16_to_f32(((ng_f16 *)d->C)[i]));
                        break;
                    default:
                        ((ng_bf16 *)d->C)[i] = ng_f32_to_bf16(
                            d->beta == 0 ? 0.0f
                                         : (float)d->beta * ng_bf16_to_f32(((ng_bf16 *)d->C)[i]));
                }
            }
    ng_emu_leave();
}
static void emu_axpy(double a, const ng_tensor *x, ng_tensor *y) {
    EMU_OP(ng_cpu_axpy(a, x, y));
}
static void emu_scale(double a, ng_tensor *x) {
    EMU_OP(ng_cpu_scale(a, x));
}
static void emu_fill(ng_tensor *x, double v) {
    EMU_OP(ng_cpu_fill(x, v));
}
static void emu_cast(ng_tensor *dst, const ng_tensor *src) {
    EMU_OP(ng_cpu_cast(dst, src));
}
static void emu_binary(ng_binary_op op, const ng_tensor *a, const ng_tensor *b, ng_tensor *c) {
    EMU_OP(ng_cpu_binary(op, a, b, c));
}
static void emu_add_diagonal(ng_tensor *A, double v) {
    EMU_OP(ng_cpu_add_diagonal(A, v));
}
static double emu_reduce(ng_reduce_op op, const ng_tensor *x) {
    double r;
    EMU_OP(r = ng_cpu_reduce(op, x));
    return r;
}
/* Linear algebra runs core/linalg_cusolver.c, the CUDA build's binding, against the emulated
 * cuSOLVER (core/cusolver_emu.c) and the emulated runtime; these are the twins of the kernels it
 * launches (core/linalg_cuda.h). */
#define LINALG_LOOP(dt, x, body)                                                                   \
    do {                                                                                           \
        ng_emu_enter();                                                                            \
        if ((dt) == NG_F64) {                                                                      \
            typedef double T;                                                                      \
            T *X = (T *)(x);                                                                       \
            body;                                                                                  \
        } else {                                                                                   \
            typedef float T;                                                                       \
            T *X = (T *)(x);                                                                       \
            body;                                                                                  \
        }                                                                                          \
        ng_emu_leave();                                                                            \
    } while (0)

void ng_linalg_cuda_set_upper(void *x, ng_dtype dt, int64_t b, int64_t n, int mirror) {
    LINALG_LOOP(dt, x,
                for (int64_t p = 0; p < b; p++) for (int64_t i = 0; i < n;
                                                     i++) for (int64_t j = i + 1; j < n; j++)
                    X[(p * n + i) * n + j] = mirror ? X[(p * n + j) * n + i] : (T)0);
}

void ng_linalg_cuda_lower_nonfinite(const void *a, ng_dtype dt, int64_t b, int64_t n, int *bad) {
    LINALG_LOOP(dt, a,
                for (int64_t p = 0; p < b;
                     p++) for (int64_t i = 0; i < n;
                               i++) for (int64_t j = 0; j <= i;
                                         j++) if (!isfinite(X[(p * n + i) * n + j])) bad[p] = 1);
}

void ng_linalg_cuda_transpose(const void *src, void *dst, ng_dtype dt, int64_t b, int64_t n) {
    LINALG_LOOP(dt, dst, const T *S = src;
                for (int64_t p = 0; p < b; p++) for (int64_t i = 0; i < n; i++) for (int64_t j = 0;
                                                                                     j < n; j++)
                    X[(p * n + j) * n + i] = S[(p * n + i) * n + j]);
}

void ng_linalg_cuda_fill_nan(void *x, ng_dtype dt, int64_t count) {
    LINALG_LOOP(dt, x, for (int64_t i = 0; i < count; i++) X[i] = (T)NAN);
}

static void emu_rng_fill(ng_tensor *t, ng_rng_dist d, ng_rng_key k, double p0, double p1) {
    EMU_OP(ng_cpu_rng_fill(t, d, k, p0, p1));
}

const ng_backend ng_cuda_backend_table = {
    .name = "cuda",
    .alloc = emu_alloc,
    .free = emu_free,
    .memcpy = emu_memcpy,
    .sync = emu_sync,
    .gemm = ng_cuda_gemm,
    .axpy = emu_axpy,
    .scale = emu_scale,
    .fill = emu_fill,
    .cast = emu_cast,
    .binary = emu_binary,
    .add_diagonal = emu_add_diagonal,
    .reduce = emu_reduce,
    .eigh = ng_cuda_eigh,
    .cholesky = ng_cuda_cholesky,
    .cholesky_inverse = ng_cuda_cholesky_inverse,
    .rng_fill = emu_rng_fill,
};

/* As the CUDA runtime: CUDA_VISIBLE_DEVICES set to nothing (or -1) hides the device. */
int ng_cuda_device_count(void) {
    const char *v = getenv("CUDA_VISIBLE_DEVICES");
    return v && (!*v || !strcmp(v, "-1")) ? 0 : 1;
}

size_t ng_cuda_device_memory(void) {
    start();
    return emu.cap;
}

void ng_cuda_print_info(FILE *f, const char *nccl) {
    fprintf(f, "CUDA:      emulated (NG_CUDA_EMU build): the CUDA build's host code, device ops "
               "run as the CPU twins on guarded host memory\n");
    /* comm/nccl_emu.c reports version 0 */
    fprintf(f, "NCCL:      %s\n",
            strcmp(nccl, "0.0.0") ? nccl : "emulated over MPI (comm/nccl_emu.c)");
    int n = ng_cuda_device_count();
    fprintf(f, "devices:   %d emulated CUDA device%s\n", n, n == 1 ? "" : "s");
    if (n) fprintf(f, "  cuda:0   emulated, %.1f GiB\n", ng_cuda_device_memory() / 1073741824.0);
}
