/* Layer FLOPs (ng_layer_flops, the figure of `natgrad bench --per-layer`): Linear and Conv
 * against multiply-adds counted one by one, containers as the sum of their parts, and ViT-Ti/16
 * at 224 px against a count from its architecture (timm's published figure). */
#include <stdlib.h>
#include <string.h>

#include "nn/activation.h"
#include "nn/containers.h"
#include "nn/conv.h"
#include "nn/linear.h"
#include "nn/models.h"
#include "testing.h"

/* 0 .. n-1 from the test's random stream (ng_test_uniform is in [-1, 1)). */
static int64_t rnd(int64_t n) {
    return (int64_t)((ng_test_uniform() + 1) / 2 * (double)n) % n;
}

/* Multiply-adds of a convolution counted by walking every output position and kernel tap, as the
 * definition reads (padded taps included: they are multiplied, by zero). */
static int64_t conv_macs_by_walking(int nd, int64_t n, int64_t cin, int64_t cout, const int64_t *sp,
                                    const int64_t *k, const int64_t *st, const int64_t *pad,
                                    const int64_t *dil) {
    int64_t outs = 1, taps = 1;
    for (int d = 0; d < nd; d++) {
        int64_t o = 0;
        for (int64_t p = -pad[d]; p + dil[d] * (k[d] - 1) < sp[d] + pad[d]; p += st[d]) o++;
        outs *= o, taps *= k[d];
    }
    int64_t macs = 0;
    for (int64_t i = 0; i < n * cout * outs; i++) macs += cin * taps;
    return macs;
}

static void test_conv(void) {
    for (int trial = 0; trial < 20; trial++) {
        int nd = 2 + (int)rnd(2);
        int64_t cin = 1 + rnd(5), cout = 1 + rnd(6), n = 1 + rnd(3);
        int64_t sp[3], k[3], st[3], pad[3], dil[3], shape[5] = {n, cin};
        for (int d = 0; d < nd; d++) {
            k[d] = 1 + rnd(3), st[d] = 1 + rnd(2);
            pad[d] = rnd(2), dil[d] = 1 + rnd(2);
            sp[d] = dil[d] * (k[d] - 1) + 1 + rnd(6);
            shape[2 + d] = sp[d];
        }
        ng_layer *c = ng_conv("c", nd, cin, cout, k, st, pad, dil, 1);
        int64_t want = 2 * conv_macs_by_walking(nd, n, cin, cout, sp, k, st, pad, dil);
        int64_t got = ng_layer_flops(c, nd + 2, shape);
        NG_TEST(got == want, "conv%dd %lld->%lld: %lld flops, counted %lld", nd, (long long)cin,
                (long long)cout, (long long)got, (long long)want);
        ng_layer_free(c);
    }
}

static void test_containers(void) {
    int64_t in = 3 + rnd(9), hid = 2 + rnd(9), rows = 1 + rnd(7);
    ng_layer *s = ng_sequence("s");
    ng_layer_add_child(s, ng_linear("a", in, hid, 1));
    ng_layer_add_child(s, ng_relu("r"));
    ng_layer_add_child(s, ng_linear("b", hid, in, 0));
    int64_t shape[2] = {rows, in};
    int64_t want = 2 * rows * in * hid + rows * hid + 2 * rows * hid * in;
    NG_TEST(ng_layer_flops(s, 2, shape) == want, "linear, relu, linear: %lld, want %lld",
            (long long)ng_layer_flops(s, 2, shape), (long long)want);
    ng_layer *r = ng_residual("res", s);
    NG_TEST(ng_layer_flops(r, 2, shape) == want + rows * in, "a residual adds one per element");
    ng_layer_free(r);
}

/* ViT-Ti/16 at 224 px counted from its architecture: T = 197 tokens of D = 192, 12 blocks of 3
 * heads. Multiply-adds: per block qkv T D 3D, q k^T and probs v 2 T T D, proj T D D, the MLP
 * 2 T D 4D; the patch projection 196 x 192 x 768 and the head D x 1000: 1.2537e9, the figure
 * timm lists (1.26 GMACs; fvcore 1.258e9 counts a few element-wise ops too). Element-wise, one
 * each: per block the softmax (H T T), two layer norms, two residual additions and the GELU
 * (T 4D); the class token and position embedding and the final norm (T D each), the class-token
 * pooling (D). */
static void test_vit_tiny(void) {
    ng_arch a;
    NG_TEST(ng_arch_defaults("vit_tiny_patch16_224", &a), "preset exists");
    ng_layer *v = ng_arch_build(&a);
    int64_t shape[4] = {1, 3, 224, 224};
    const int64_t T = 197, D = 192, H = 3, L = 12;
    int64_t macs = L * (T * D * 3 * D + 2 * T * T * D + T * D * D + 2 * T * D * 4 * D) +
                   196 * D * 768 + D * 1000;
    int64_t elementwise = L * (H * T * T + 4 * T * D + T * 4 * D) + 2 * T * D + D;
    int64_t got = ng_layer_flops(v, 4, shape);
    NG_TEST(macs == 1253683200, "the multiply-adds add up to timm's 1.25 G");
    NG_TEST(got == 2 * macs + elementwise, "ViT-Ti/16: %lld flops, counted %lld", (long long)got,
            (long long)(2 * macs + elementwise));
    ng_layer_free(v);
}

int main(void) {
    ng_test_seed();
    test_conv();
    test_containers();
    test_vit_tiny();
    return ng_test_finish("test_flops");
}
