/* The CUDA twin of the chaos-game renderer of data/fractal.c: one thread block per image, the
 * same bits as the CPU. The chain of points is sequential (point n is a map of point n-1), so a
 * block works through it in chunks: every thread draws the map choices of some Philox blocks of
 * the chunk, one thread walks the chunk, and (second pass) every thread splats the chunk's points
 * with atomic stores. The first pass finds the bounding box, as the CPU does, so no point buffer
 * outlives a chunk. Double arithmetic through the _rn intrinsics, so nothing is fused into an
 * FMA (the CPU build uses -ffp-contract=off); min, max and floor are exact. Painted images
 * (patches, colour) share the chain and differ in the splat; their pixel values are the host's,
 * copied. Nothing here is computed differently from the CPU, so every kernel is meant to match it
 * bit for bit (no tolerance anywhere in tests/test_fractal_gpu.c). A job may carry a second IFS,
 * rendered when the first diverges: the sources' fallback to the category's own IFS. */
#include <stdint.h>
#include <string.h>

#include "core/error.h"
#include "core/rng.h"
#include "cuda_context.h"

extern "C" {
#include "data/fractal.h"
#include "data/fractal3d.h"
}

#define CHUNK                                                                                      \
    1024 /* points a block holds at once; a multiple of 4 (one Philox block, 4 points)             \
          */
#define THREADS 256

/* The jobs (data/fractal.h), shared with the memory plan's sizes. */
typedef ng_fractal_job job;
typedef ng_fractal_paint_job paint_job;

__device__ static int64_t to_pixel(double v, double v0, double s, int64_t side) {
    if (s == 0) return side / 2;
    double p = floor(__dmul_rn(__dsub_rn(v, v0), s));
    if (p < 0) p = 0;
    if (p > (double)(side - 1)) p = (double)(side - 1);
    return (int64_t)p;
}

__device__ static double axis_scale(double lo, double hi, int64_t side) {
    double ext = __dsub_rn(hi, lo);
    if (ext < __dmul_rn(1e-9, __dadd_rn(1.0, fabs(lo)))) return 0;
    return __ddiv_rn((double)side, ext);
}

/* The maps of points [base, base + len) of a chain, drawn by the block's threads four at a time
 * from one Philox block each, as the CPU renderers draw them (u <= the cumulative probability). */
__device__ static void draw_maps(ng_rng_key key, int64_t base, int64_t len, const double *cum,
                                 int nmaps, unsigned char *pick) {
    for (int64_t q = threadIdx.x; q < (len + 3) / 4; q += blockDim.x) {
        uint32_t w[4];
        ng_rng_block(key, (uint64_t)(base / 4 + q), w);
        for (int r = 0; r < 4; r++) {
            double u = (double)ng_rng_u01(w[r]);
            int k = 0;
            while (k < nmaps - 1 && !(u <= cum[k])) k++;
            pick[4 * q + r] = (unsigned char)k;
        }
    }
}

/* The chaos game of one image by the whole block (every thread calls it): J->f, or J->alt when f
 * diverges. splat(n, row, col, map) is called, by any thread, once for every kept point n of the
 * second pass with its pixel (flips applied) and map; points of one chunk in parallel, chunks in
 * order with a barrier between them. Nothing is splatted for an IFS that diverges (it does in the
 * first pass or not at all: the second walks the same numbers). */
template <typename Splat>
__device__ static void chaos_game(const job *J, int64_t points, int64_t side, Splat splat) {
    __shared__ unsigned char pick[CHUNK];
    __shared__ double xs[CHUNK], ys[CHUNK];
    __shared__ double cum[NG_FRACTAL_MAX_MAPS];
    __shared__ ng_ifs_map maps[NG_FRACTAL_MAX_MAPS]; /* the chain reads them every point */
    __shared__ double bb[4], px, py, sx, sy;
    __shared__ int ok;
    int tid = threadIdx.x;
    for (int attempt = 0; attempt < 2; attempt++) {
        const ng_ifs *f = attempt ? &J->alt : &J->f;
        if (attempt && f->nmaps == 0) break; /* uniform: J is the block's */
        if (tid == 0) {
            double total = 0;
            for (int j = 0; j < f->nmaps; j++) {
                const ng_ifs_map *m = &f->m[j];
                total =
                    __dadd_rn(total, fabs(__dsub_rn(__dmul_rn(m->a, m->d), __dmul_rn(m->b, m->c))));
                cum[j] = total;
            }
            ok = total > 0 && isfinite(total) && points > NG_FRACTAL_SKIP;
            for (int j = 0; j < f->nmaps; j++) cum[j] = __ddiv_rn(cum[j], total), maps[j] = f->m[j];
            bb[0] = bb[2] = INFINITY;
            bb[1] = bb[3] = -INFINITY;
        }
        __syncthreads();
        for (int pass = 0; pass < 2 && ok; pass++) {
            if (tid == 0) px = 0, py = 0;
            for (int64_t base = 0; base < points; base += CHUNK) {
                int64_t len = points - base < CHUNK ? points - base : CHUNK;
                draw_maps(J->key, base, len, cum, f->nmaps, pick);
                __syncthreads();
                if (tid == 0) {
                    double x = px, y = py;
                    for (int64_t i = 0; i < len; i++) {
                        const ng_ifs_map *m = &maps[pick[i]];
                        double nx =
                            __dadd_rn(__dadd_rn(__dmul_rn(m->a, x), __dmul_rn(m->b, y)), m->e);
                        double ny =
                            __dadd_rn(__dadd_rn(__dmul_rn(m->c, x), __dmul_rn(m->d, y)), m->f);
                        x = nx, y = ny;
                        if (!(fabs(x) <= 1e6 && fabs(y) <= 1e6)) {
                            ok = 0;
                            break;
                        }
                        xs[i] = x, ys[i] = y;
                        if (pass == 0 && base + i >= NG_FRACTAL_SKIP) {
                            bb[0] = fmin(bb[0], x), bb[1] = fmax(bb[1], x);
                            bb[2] = fmin(bb[2], y), bb[3] = fmax(bb[3], y);
                        }
                    }
                    px = x, py = y;
                    if (pass == 0 && base + len >= points && ok) {
                        sx = axis_scale(bb[0], bb[1], side);
                        sy = axis_scale(bb[2], bb[3], side);
                    }
                }
                __syncthreads();
                if (!ok) break;
                if (pass == 1)
                    for (int64_t i = tid; i < len; i += blockDim.x) {
                        if (base + i < NG_FRACTAL_SKIP) continue;
                        int64_t col = to_pixel(xs[i], bb[0], sx, side);
                        int64_t row = to_pixel(ys[i], bb[2], sy, side);
                        if (J->flips & 1) col = side - 1 - col;
                        if (J->flips & 2) row = side - 1 - row;
                        splat(base + i, row, col, (int)pick[i]);
                    }
                __syncthreads(); /* the chunk's buffers are free again */
            }
        }
        if (ok) break;   /* uniform: read after a barrier */
        __syncthreads(); /* everyone has read ok before thread 0 resets it */
    }
}

__global__ void fractal_kernel(const job *jobs, int64_t points, int64_t side, float *out) {
    float *img = out + (int64_t)blockIdx.x * side * side;
    for (int64_t p = threadIdx.x; p < side * side; p += blockDim.x) img[p] = -1.0f;
    /* the background is written before the first barrier inside chaos_game, the points after */
    chaos_game(&jobs[blockIdx.x], points, side, [&](int64_t, int64_t row, int64_t col, int) {
        atomicExch(&img[row * side + col], 1.0f);
    });
}

/* Painted images: the CPU paints point after point, so a pixel shows the map of the last point
 * whose pattern covers it. Here the points of a chunk splat at once, so each pixel keeps the
 * largest (point << 2 | map) that reached it (atomicMax on 64 bits: the last point wins whatever
 * the threads' order, and its map comes with it; 0 = unpainted, since kept points are >= 20),
 * and a last sweep turns that into the map's value. Exact: values are copied, not computed. */
__global__ void paint_kernel(const paint_job *jobs, int64_t points, int64_t side, int channels,
                             unsigned long long *last_all, float *out) {
    const paint_job *P = &jobs[blockIdx.x];
    int64_t hw = side * side;
    unsigned long long *last = last_all + (int64_t)blockIdx.x * hw;
    for (int64_t p = threadIdx.x; p < hw; p += blockDim.x) last[p] = 0;
    int patch = P->patch, h = (patch - 1) / 2;
    chaos_game(&P->g, points, side, [&](int64_t n, int64_t row, int64_t col, int map) {
        unsigned long long v = (unsigned long long)n << 2 | (unsigned long long)map;
        for (int dy = 0; dy < patch; dy++)
            for (int dx = 0; dx < patch; dx++) {
                int64_t r = row + dy - h, c = col + dx - h;
                if (P->mask[dy * patch + dx] && r >= 0 && r < side && c >= 0 && c < side)
                    atomicMax(&last[r * side + c], v);
            }
    });
    __syncthreads();
    float *img = out + (int64_t)blockIdx.x * channels * hw;
    for (int64_t p = threadIdx.x; p < hw; p += blockDim.x) {
        unsigned long long v = last[p];
        for (int ch = 0; ch < channels; ch++) img[ch * hw + p] = v ? P->value[v & 3][ch] : -1.0f;
    }
}

/* One block per job: the jobs (built on the host by make(j)) copied into the workspace, followed
 * by scratch bytes per job when a kernel needs them, the kernel launched on natgrad's stream, and
 * the host copy kept until the stream has it (it is pageable: staged once cudaMemcpyAsync
 * returns, but safe with every driver this way). */
template <typename J, typename Make, typename Launch>
static void run_jobs(int64_t count, const char *who, Make make, Launch launch, size_t bytes) {
    if (count == 0) return;
    NG_CHECK(count <= 2147483647, "%s: %lld images or volumes in one call", who, (long long)count);
    J *h = (J *)malloc(sizeof(J) * (size_t)count);
    NG_CHECK(h, "%s: out of host memory", who);
    for (int64_t j = 0; j < count; j++) h[j] = make(j);
    size_t jobs_bytes = ng_fractal_jobs_bytes(sizeof(J), count);
    char *d = (char *)ng_cuda_workspace(bytes);
    cudaStream_t st = ng_cuda_ctx()->stream;
    NG_CUDA_CHECK(cudaMemcpyAsync(d, h, sizeof(J) * (size_t)count, cudaMemcpyHostToDevice, st));
    launch((J *)d, (unsigned)count, st, (void *)(d + jobs_bytes));
    NG_CUDA_CHECK_LAUNCH();
    NG_CUDA_CHECK(cudaStreamSynchronize(st));
    free(h);
}

static job make_job(const ng_ifs *f, const ng_ifs *alt, const int *flips, const ng_rng_key *keys,
                    int64_t j) {
    job J;
    memset(&J, 0, sizeof J);
    J.f = f[j];
    if (alt) J.alt = alt[j];
    J.key = keys[j];
    J.flips = flips[j];
    return J;
}

extern "C" void ng_fractal_render_cuda(const ng_ifs *f, const ng_ifs *alt, const int *flips,
                                       const ng_rng_key *keys, int64_t count, int64_t points,
                                       int64_t side, float *out) {
    run_jobs<job>(
        count, "ng_fractal_render_cuda",
        [&](int64_t j) { return make_job(f, alt, flips, keys, j); },
        [&](job *d, unsigned n, cudaStream_t st, void *) {
            fractal_kernel<<<n, THREADS, 0, st>>>(d, points, side, out);
        },
        ng_fractal_cuda_workspace(count, side, 0));
}

extern "C" void ng_fractal_paint_cuda(const ng_ifs *f, const ng_ifs *alt, const int *flips,
                                      const ng_rng_key *keys, int64_t count, int64_t points,
                                      int64_t side, int patch, const uint8_t *masks,
                                      const float (*rgb)[NG_FRACTAL_MAX_MAPS][3], float *out) {
    int channels = rgb ? 3 : 1;
    run_jobs<paint_job>(
        count, "ng_fractal_paint_cuda",
        [&](int64_t j) {
            paint_job P;
            memset(&P, 0, sizeof P);
            P.g = make_job(f, alt, flips, keys, j);
            P.patch = patch;
            memcpy(P.mask, masks + j * patch * patch, (size_t)(patch * patch));
            /* The CPU's pixel value of each map, computed the CPU's way on the host: 2 rgb is
             * exact, so 2 rgb - 1 rounds once whatever the compiler contracts. Grey: +1. */
            for (int m = 0; m < NG_FRACTAL_MAX_MAPS; m++)
                for (int ch = 0; ch < 3; ch++)
                    P.value[m][ch] = rgb ? (float)(2.0 * (double)rgb[j][m][ch] - 1.0) : 1.0f;
            return P;
        },
        [&](paint_job *d, unsigned n, cudaStream_t st, void *scratch) {
            paint_kernel<<<n, THREADS, 0, st>>>(d, points, side, channels,
                                                (unsigned long long *)scratch, out);
        },
        ng_fractal_cuda_workspace(count, side, 1));
}

/* ---- FractalDB 3D (data/fractal3d.h) ------------------------------------------------------ */

typedef ng_fractal3d_job job3;

#define CHUNK3 1024

/* The voxel index of coordinate v on an axis of scale s (0: a flat axis, the middle voxel). */
__device__ static int64_t to_voxel(double v, double v0, double s, int64_t side) {
    if (s == 0) return side / 2;
    double p = floor(__dmul_rn(__dsub_rn(v, v0), s));
    if (p < 0) p = 0;
    if (p > (double)(side - 1)) p = (double)(side - 1);
    return (int64_t)p;
}

/* As chaos_game and fractal_kernel, with three coordinates (and the same fallback to alt): per
 * chunk the threads draw the map choices, thread 0 walks the chain in the CPU's order of operations
 * (((a0 x + a1 y) + a2 z) + t0, each rounded, so nothing fuses), pass 0 takes the bounding box and
 * pass 1 has all threads splat the chunk into the volume. A volume is side^3 floats, so blocks
 * stride over it to set the background. */
__global__ void fractal3d_kernel(const job3 *jobs, int64_t points, int64_t side, float *out) {
    __shared__ unsigned char pick[CHUNK3];
    __shared__ double ps[3][CHUNK3];
    __shared__ double cum[NG_FRACTAL3D_MAX_MAPS];
    __shared__ ng_ifs3_map maps[NG_FRACTAL3D_MAX_MAPS]; /* the chain reads them every point */
    __shared__ double lo[3], hi[3], sc[3], cur[3];
    __shared__ int ok;
    const job3 *J = &jobs[blockIdx.x];
    int64_t vol = side * side * side;
    float *v = out + (int64_t)blockIdx.x * vol;
    int tid = threadIdx.x;
    for (int64_t p = tid; p < vol; p += blockDim.x) v[p] = -1.0f;
    for (int attempt = 0; attempt < 2; attempt++) {
        const ng_ifs3 *f = attempt ? &J->alt : &J->f;
        if (attempt && f->nmaps == 0) break; /* uniform: J is the block's */
        if (tid == 0) {
            double total = 0;
            for (int j = 0; j < f->nmaps; j++) {
                const double *a = f->m[j].a;
                double c0 = __dsub_rn(__dmul_rn(a[4], a[8]), __dmul_rn(a[5], a[7]));
                double c1 = __dsub_rn(__dmul_rn(a[3], a[8]), __dmul_rn(a[5], a[6]));
                double c2 = __dsub_rn(__dmul_rn(a[3], a[7]), __dmul_rn(a[4], a[6]));
                double det = __dadd_rn(__dsub_rn(__dmul_rn(a[0], c0), __dmul_rn(a[1], c1)),
                                       __dmul_rn(a[2], c2));
                total = __dadd_rn(total, fabs(det));
                cum[j] = total;
            }
            ok = total > 0 && isfinite(total) && points > NG_FRACTAL_SKIP;
            for (int j = 0; j < f->nmaps; j++) cum[j] = __ddiv_rn(cum[j], total), maps[j] = f->m[j];
            for (int a = 0; a < 3; a++) lo[a] = INFINITY, hi[a] = -INFINITY;
        }
        __syncthreads();
        for (int pass = 0; pass < 2 && ok; pass++) {
            if (tid == 0) cur[0] = cur[1] = cur[2] = 0;
            for (int64_t base = 0; base < points; base += CHUNK3) {
                int64_t len = points - base < CHUNK3 ? points - base : CHUNK3;
                draw_maps(J->key, base, len, cum, f->nmaps, pick);
                __syncthreads();
                if (tid == 0) {
                    double x = cur[0], y = cur[1], z = cur[2];
                    for (int64_t i = 0; i < len; i++) {
                        const ng_ifs3_map *m = &maps[pick[i]];
                        double n3[3];
                        for (int r = 0; r < 3; r++)
                            n3[r] = __dadd_rn(__dadd_rn(__dadd_rn(__dmul_rn(m->a[3 * r], x),
                                                                  __dmul_rn(m->a[3 * r + 1], y)),
                                                        __dmul_rn(m->a[3 * r + 2], z)),
                                              m->t[r]);
                        x = n3[0], y = n3[1], z = n3[2];
                        if (!(fabs(x) <= 1e6 && fabs(y) <= 1e6 && fabs(z) <= 1e6)) {
                            ok = 0;
                            break;
                        }
                        ps[0][i] = x, ps[1][i] = y, ps[2][i] = z;
                        if (pass == 0 && base + i >= NG_FRACTAL_SKIP)
                            for (int a = 0; a < 3; a++)
                                lo[a] = fmin(lo[a], ps[a][i]), hi[a] = fmax(hi[a], ps[a][i]);
                    }
                    cur[0] = x, cur[1] = y, cur[2] = z;
                    if (pass == 0 && base + len >= points && ok)
                        for (int a = 0; a < 3; a++) sc[a] = axis_scale(lo[a], hi[a], side);
                }
                __syncthreads();
                if (!ok) break;
                if (pass == 1)
                    for (int64_t i = tid; i < len; i += blockDim.x) {
                        if (base + i < NG_FRACTAL_SKIP) continue;
                        int64_t idx[3];
                        for (int a = 0; a < 3; a++) {
                            idx[a] = to_voxel(ps[a][i], lo[a], sc[a], side);
                            if (J->flips >> a & 1) idx[a] = side - 1 - idx[a];
                        }
                        atomicExch(&v[(idx[2] * side + idx[1]) * side + idx[0]], 1.0f);
                    }
                __syncthreads(); /* the chunk's buffers are free again */
            }
        }
        if (ok) break;   /* uniform: read after a barrier */
        __syncthreads(); /* everyone has read ok before thread 0 resets it */
    }
}

extern "C" void ng_fractal3d_render_cuda(const ng_ifs3 *f, const ng_ifs3 *alt, const int *flips,
                                         const ng_rng_key *keys, int64_t count, int64_t points,
                                         int64_t side, float *out) {
    run_jobs<job3>(
        count, "ng_fractal3d_render_cuda",
        [&](int64_t j) {
            job3 J;
            memset(&J, 0, sizeof J);
            J.f = f[j];
            if (alt) J.alt = alt[j];
            J.key = keys[j];
            J.flips = flips[j];
            return J;
        },
        [&](job3 *d, unsigned n, cudaStream_t st, void *) {
            fractal3d_kernel<<<n, THREADS, 0, st>>>(d, points, side, out);
        },
        ng_fractal3d_cuda_workspace(count));
}
