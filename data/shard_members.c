/* The members of a tar shard: npy and PNG data decoded into f32 examples, decimal labels, and
 * the npy header the writer puts in front of an example. */
#include "data/shard_members.h"

#include <errno.h>
#include <math.h>
#include <spng.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

#define MAX_MEMBER NG_SHARD_MAX_MEMBER

/* Parses an npy buffer: 0 and a reason in why on failure. dtype: 'f' (<f4) or 'u' (|u1). */
static int parse_npy(const unsigned char *b, size_t len, int *ndim, int64_t shape[4], char *dtype,
                     size_t *data_off, char *why, size_t cap) {
    if (len < 10 || memcmp(b, "\x93NUMPY", 6)) {
        snprintf(why, cap, "not an npy file (no \\x93NUMPY magic)");
        return 0;
    }
    size_t hl, start;
    if (b[6] == 1) {
        hl = (size_t)b[8] | (size_t)b[9] << 8, start = 10;
    } else if ((b[6] == 2 || b[6] == 3) && len >= 12) {
        hl = (size_t)b[8] | (size_t)b[9] << 8 | (size_t)b[10] << 16 | (size_t)b[11] << 24;
        start = 12;
    } else {
        snprintf(why, cap, "npy version %u is not 1, 2 or 3", b[6]);
        return 0;
    }
    if (hl > len - start || hl > 65536) {
        snprintf(why, cap, "npy header of %zu bytes runs past the member's %zu", hl, len);
        return 0;
    }
    char h[65537];
    memcpy(h, b + start, hl);
    h[hl] = 0;
    const char *d = strstr(h, "'descr':"), *f = strstr(h, "'fortran_order':"),
               *s = strstr(h, "'shape':");
    if (!d || !f || !s) {
        snprintf(why, cap, "npy header lacks descr, fortran_order or shape");
        return 0;
    }
    d += 8, f += 16, s += 8;
    while (*d == ' ') d++;
    while (*f == ' ') f++;
    while (*s == ' ') s++;
    if (!strncmp(d, "'<f4'", 5))
        *dtype = 'f';
    else if (!strncmp(d, "'|u1'", 5) || !strncmp(d, "'<u1'", 5))
        *dtype = 'u';
    else {
        snprintf(why, cap, "npy dtype is not '<f4' or '|u1'");
        return 0;
    }
    if (strncmp(f, "False", 5)) {
        snprintf(why, cap, "npy array in Fortran order");
        return 0;
    }
    if (*s != '(') {
        snprintf(why, cap, "npy shape is not a tuple");
        return 0;
    }
    s++;
    int n = 0;
    int64_t count = 1;
    for (;;) {
        while (*s == ' ') s++;
        if (*s == ')') break;
        char *end;
        errno = 0;
        long long v = strtoll(s, &end, 10);
        if (end == s || errno || v < 1 || v > (1LL << 31) || n == 4) {
            snprintf(why, cap, "npy shape is not 1-4 dimensions of 1 to 2^31");
            return 0;
        }
        shape[n++] = v;
        if (__builtin_mul_overflow(count, (int64_t)v, &count) || count > MAX_MEMBER) {
            snprintf(why, cap, "npy shape is too large");
            return 0;
        }
        s = end;
        while (*s == ' ') s++;
        if (*s == ',') s++;
    }
    if (n == 0) {
        snprintf(why, cap, "npy array is a scalar");
        return 0;
    }
    size_t bytes = (size_t)count * (*dtype == 'f' ? 4 : 1);
    if (len - start - hl != bytes) {
        snprintf(why, cap, "npy data is %zu bytes, its shape needs %zu", len - start - hl, bytes);
        return 0;
    }
    *ndim = n;
    *data_off = start + hl;
    return 1;
}

int64_t ng_shard_numel(const ng_shard_shape *s) {
    int64_t e = 1;
    for (int i = 0; i < s->ndim; i++) e *= s->shape[i];
    return e;
}

int ng_shard_decode(const char *ext, const unsigned char *b, size_t len, const ng_shard_shape *want,
                    ng_shard_shape *got, float *out, char *why, size_t cap) {
    if (!strcmp(ext, "npy")) {
        char dt;
        size_t off;
        if (!parse_npy(b, len, &got->ndim, got->shape, &dt, &off, why, cap)) return 0;
        if (want && (want->ndim != got->ndim ||
                     memcmp(want->shape, got->shape, sizeof(int64_t) * (size_t)got->ndim))) {
            snprintf(why, cap, "shape differs from the first example's");
            return 0;
        }
        if (!out) return 1;
        int64_t e = ng_shard_numel(got);
        if (dt == 'f')
            memcpy(out, b + off, sizeof(float) * (size_t)e); /* little-endian hosts only */
        else
            for (int64_t i = 0; i < e; i++) out[i] = (float)b[off + (size_t)i] / 255.0f;
        return 1;
    }
    spng_ctx *ctx = spng_ctx_new(0);
    if (!ctx) {
        snprintf(why, cap, "out of host memory for a PNG decoder");
        return 0;
    }
    struct spng_ihdr ih;
    int fmt = SPNG_FMT_RGB8, C = 3;
    size_t need = 0;
    int r = spng_set_image_limits(ctx, 1 << 16, 1 << 16);
    if (!r) r = spng_set_chunk_limits(ctx, 1 << 24, 1 << 26);
    if (!r) r = spng_set_png_buffer(ctx, b, len);
    if (!r) r = spng_get_ihdr(ctx, &ih);
    if (!r && ih.color_type == SPNG_COLOR_TYPE_GRAYSCALE && ih.bit_depth <= 8)
        fmt = SPNG_FMT_G8, C = 1;
    if (!r) r = spng_decoded_image_size(ctx, fmt, &need);
    if (r) {
        snprintf(why, cap, "PNG does not decode: %s", spng_strerror(r));
        spng_ctx_free(ctx);
        return 0;
    }
    got->ndim = 3, got->shape[0] = C, got->shape[1] = ih.height, got->shape[2] = ih.width;
    if (want && (want->ndim != 3 || memcmp(want->shape, got->shape, sizeof(int64_t) * 3))) {
        snprintf(why, cap, "shape differs from the first example's");
        spng_ctx_free(ctx);
        return 0;
    }
    if (!out) {
        spng_ctx_free(ctx);
        return 1;
    }
    unsigned char *px = malloc(need);
    r = px ? spng_decode_image(ctx, px, need, fmt, 0) : SPNG_EMEM;
    spng_ctx_free(ctx);
    if (r) {
        snprintf(why, cap, "PNG does not decode: %s", spng_strerror(r));
        free(px);
        return 0;
    }
    int64_t hw = (int64_t)ih.height * ih.width;
    for (int64_t c = 0; c < C; c++) /* interleaved HWC -> planar CHW */
        for (int64_t p = 0; p < hw; p++) out[c * hw + p] = (float)px[p * C + c] / 255.0f;
    free(px);
    return 1;
}

int ng_shard_parse_cls(const unsigned char *b, size_t len, int32_t *y, char *why, size_t cap) {
    char t[32];
    if (len == 0 || len >= sizeof t) {
        snprintf(why, cap, "label of %zu bytes is not a class number", len);
        return 0;
    }
    memcpy(t, b, len);
    t[len] = 0;
    char *end;
    errno = 0;
    long long v = strtoll(t, &end, 10);
    while (*end == ' ' || *end == '\n' || *end == '\r' || *end == '\t') end++;
    if (end == t || *end || errno || v < 0 || v > INT32_MAX - 1) {
        snprintf(why, cap, "label '%.20s' is not a class number >= 0", t);
        return 0;
    }
    *y = (int32_t)v;
    return 1;
}

size_t ng_shard_npy_header(int ndim, const int64_t *shape, char *h, size_t cap) {
    char dims[160] = "";
    size_t l = 0;
    for (int i = 0; i < ndim; i++)
        l += (size_t)snprintf(dims + l, sizeof dims - l, "%lld%s", (long long)shape[i],
                              ndim == 1 || i + 1 < ndim ? ", " : "");
    if (ndim == 1) dims[l - 1] = 0; /* "(5,)" */
    char dict[256];
    int dl = snprintf(dict, sizeof dict,
                      "{'descr': '<f4', 'fortran_order': False, 'shape': (%s), }", dims);
    size_t total = 10 + (size_t)dl + 1, pad = (64 - total % 64) % 64;
    size_t hl = (size_t)dl + pad + 1;
    NG_CHECK(10 + hl <= cap, "shards: npy header too long");
    memcpy(h, "\x93NUMPY\x01\x00", 8);
    h[8] = (char)(hl & 0xff), h[9] = (char)(hl >> 8);
    memcpy(h + 10, dict, (size_t)dl);
    memset(h + 10 + dl, ' ', pad);
    h[10 + hl - 1] = '\n';
    return 10 + hl;
}

unsigned char *ng_shard_png_encode(const float *x, int64_t c, int64_t h, int64_t w, double lo,
                                   double hi, size_t *len, char *why, size_t cap) {
    if ((c != 1 && c != 3) || h < 1 || w < 1 || h > 1 << 16 || w > 1 << 16 || !(hi > lo)) {
        snprintf(why, cap, "a PNG holds grey or RGB images [1|3, H, W] of a range lo < hi");
        return NULL;
    }
    int64_t hw = h * w;
    unsigned char *px = malloc((size_t)(c * hw));
    if (!px) {
        snprintf(why, cap, "out of host memory for a %lld x %lld image", (long long)h,
                 (long long)w);
        return NULL;
    }
    double scale = 255.0 / (hi - lo);
    for (int64_t ch = 0; ch < c; ch++) /* planar CHW -> interleaved HWC */
        for (int64_t p = 0; p < hw; p++) {
            double v = (double)x[ch * hw + p];
            if (!(v >= lo && v <= hi)) {
                snprintf(why, cap, "value %g at channel %lld pixel %lld is outside [%g, %g]", v,
                         (long long)ch, (long long)p, lo, hi);
                free(px);
                return NULL;
            }
            double q = floor((v - lo) * scale + 0.5);
            px[p * c + ch] = (unsigned char)(q > 255 ? 255 : q);
        }
    spng_ctx *ctx = spng_ctx_new(SPNG_CTX_ENCODER);
    int r = ctx ? 0 : SPNG_EMEM;
    struct spng_ihdr ih = {.width = (uint32_t)w,
                           .height = (uint32_t)h,
                           .bit_depth = 8,
                           .color_type =
                               c == 1 ? SPNG_COLOR_TYPE_GRAYSCALE : SPNG_COLOR_TYPE_TRUECOLOR};
    if (!r) r = spng_set_option(ctx, SPNG_ENCODE_TO_BUFFER, 1);
    if (!r) r = spng_set_ihdr(ctx, &ih);
    if (!r) r = spng_encode_image(ctx, px, (size_t)(c * hw), SPNG_FMT_PNG, SPNG_ENCODE_FINALIZE);
    unsigned char *out = NULL;
    if (!r) out = spng_get_png_buffer(ctx, len, &r);
    spng_ctx_free(ctx);
    free(px);
    if (r || !out) {
        snprintf(why, cap, "PNG encoder: %s", spng_strerror(r ? r : SPNG_EMEM));
        free(out);
        return NULL;
    }
    return out;
}
