/* safetensors: round trip of every dtype, model weights by name, and malformed files
 * (truncated, unknown dtype, lying offsets, overlaps, shape mismatch) rejected naming the tensor.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/error.h"
#include "core/ops.h"
#include "core/safetensors.h"
#include "nn/containers.h"
#include "nn/linear.h"
#include "nn/models.h"
#include "nn/weights.h"
#include "testing.h"

static char dir[256];

static const char *tmp_path(const char *name) {
    static char p[4][512];
    static int k;
    char *s = p[k++ & 3];
    snprintf(s, 512, "%s/%s", dir, name);
    return s;
}

static void write_raw(const char *path, const char *header, size_t data_bytes) {
    FILE *f = fopen(path, "wb");
    uint64_t n = strlen(header);
    for (int b = 0; b < 8; b++) fputc((int)(n >> (8 * b)) & 0xff, f);
    fwrite(header, 1, n, f);
    for (size_t i = 0; i < data_bytes; i++) fputc((int)(i * 37 & 0xff), f);
    fclose(f);
}

/* A file of `header` and data_bytes of data that must be refused with a message naming needle. */
static void expect_bad(const char *path, const char *header, size_t data_bytes,
                       const char *needle) {
    write_raw(path, header, data_bytes);
    NG_TEST_ERROR(ng_safetensors_open(path), needle);
}

static void test_round_trip(void) {
    ng_dtype dts[6] = {NG_F32, NG_F64, NG_F16, NG_BF16, NG_I32, NG_U8};
    ng_tensor ts[6];
    ng_st_entry e[6];
    const char *names[6] = {"a.f32", "b.f64", "c.f16", "d.bf16", "e.i32", "f.u8"};
    for (int i = 0; i < 6; i++) {
        ts[i] = ng_tensor_new(dts[i], NG_CPU, 3, (int64_t[]){2, 3, 1 + i}, names[i]);
        if (ng_dtype_is_float(dts[i]))
            ng_test_fill_uniform(&ts[i], -5, 5);
        else
            for (size_t b = 0; b < ng_tensor_bytes(&ts[i]); b++)
                ((unsigned char *)ts[i].data)[b] = (unsigned char)(ng_test_uniform() * 127 + 128);
        e[i] = (ng_st_entry){names[i], &ts[i]};
    }
    const char *meta[] = {"format", "pt", "step", "12", NULL};
    const char *path = tmp_path("rt.safetensors");
    ng_safetensors_save(path, e, 6, meta);
    NG_TEST(access(tmp_path("rt.safetensors.tmp"), F_OK) != 0, "no temporary file left behind");
    ng_safetensors *f = ng_safetensors_open(path);
    NG_TEST(ng_safetensors_count(f) == 6, "6 tensors read back");
    for (int i = 0; i < 6; i++) {
        ng_tensor t;
        int found = ng_safetensors_find(f, names[i], &t);
        NG_TEST(found && t.dtype == dts[i] && ng_tensor_same_shape(&t, &ts[i]) &&
                    !memcmp(t.data, ts[i].data, ng_tensor_bytes(&t)),
                "%s round trip: dtype, shape and bytes", names[i]);
    }
    NG_TEST(ng_safetensors_meta(f, "step") && !strcmp(ng_safetensors_meta(f, "step"), "12"),
            "metadata round trip");
    ng_safetensors_close(f);
    for (int i = 0; i < 6; i++) ng_tensor_free(&ts[i]);
}

static ng_layer *make_net(void) {
    ng_layer *s = ng_sequence("");
    ng_layer_add_child(s, ng_linear("blocks.0.fc1", 5, 7, 1));
    ng_layer_add_child(s, ng_linear("head", 7, 3, 1));
    return s;
}

static void test_weights(void) {
    ng_model *a = ng_model_new(make_net()), *b = ng_model_new(make_net());
    ng_model_build(a, NG_CPU, NG_F32, 1, 1 << 16, 1 << 16);
    ng_model_build(b, NG_CPU, NG_F32, 2, 1 << 16, 1 << 16);
    const char *path = tmp_path("w.safetensors");
    ng_weights_save(a, path, NULL);
    ng_weights_load(b, path);
    NG_TEST(!memcmp(a->flat_params.data, b->flat_params.data, ng_tensor_bytes(&a->flat_params)),
            "weights load into a fresh model bit for bit");
    ng_safetensors *f = ng_safetensors_open(path);
    ng_tensor t;
    NG_TEST(ng_safetensors_find(f, "blocks.0.fc1.weight", &t) && t.shape[0] == 7 && t.shape[1] == 5,
            "PyTorch layout [out, in] under the timm-style name");
    ng_safetensors_close(f);
    /* A model of another shape: the mismatch names the tensor. */
    ng_layer *s = ng_sequence("");
    ng_layer_add_child(s, ng_linear("blocks.0.fc1", 5, 8, 1));
    ng_layer_add_child(s, ng_linear("head", 8, 3, 1));
    ng_model *c = ng_model_new(s);
    ng_model_build(c, NG_CPU, NG_F32, 1, 1 << 16, 1 << 16);
    NG_TEST_ERROR(ng_weights_load(c, path), "blocks.0.fc1.weight");
    ng_model *d = ng_model_new(ng_linear("other", 5, 7, 1));
    ng_model_build(d, NG_CPU, NG_F32, 1, 1 << 16, 1 << 16);
    NG_TEST_ERROR(ng_weights_load(d, path), "not a parameter");
    ng_model_free(a), ng_model_free(b), ng_model_free(c), ng_model_free(d);
}

/* Fine-tuning: a classifier of another class count stays at its fresh initialisation, every other
 * tensor comes from the file bit for bit; without the skip the head's shape is the error. */
static void test_weights_except(void) {
    ng_layer *s = ng_sequence("");
    ng_layer_add_child(s, ng_linear("blocks.0.fc1", 5, 7, 1));
    ng_layer_add_child(s, ng_linear("head", 7, 3, 1));
    ng_model *pre = ng_model_new(s);
    uint64_t seed = ng_test_seed();
    ng_model_build(pre, NG_CPU, NG_F32, seed, 1 << 16, 1 << 16);
    ng_test_fill_uniform(&pre->flat_params, -1, 1); /* the pre-trained weights: anything */
    const char *path = tmp_path("pre.safetensors");
    ng_weights_save(pre, path, NULL);
    /* The fine-tuned model: the same backbone, a head for 4 classes instead of 3. */
    ng_layer *t = ng_sequence("");
    ng_layer_add_child(t, ng_linear("blocks.0.fc1", 5, 7, 1));
    ng_layer_add_child(t, ng_linear("head", 7, 4, 1));
    ng_model *four = ng_model_new(t);
    ng_model_build(four, NG_CPU, NG_F32, seed + 1, 1 << 16, 1 << 16);
    float before[28];
    memcpy(before, ng_model_find(four, "head.weight")->param->value.data, sizeof before);
    NG_TEST_ERROR(ng_weights_load_except(four, path, NULL, 0), "head.weight");
    NG_TEST(!memcmp(before, ng_model_find(four, "head.weight")->param->value.data, sizeof before),
            "a refused file leaves the model as it was");
    const char *skip[] = {"head"};
    int n = ng_weights_load_except(four, path, skip, 1);
    NG_TEST(n == 2, "fc1's weight and bias loaded (got %d)", n);
    ng_param *w = ng_model_find(four, "blocks.0.fc1.weight")->param,
             *p = ng_model_find(pre, w->name)->param;
    NG_TEST(!memcmp(w->value.data, p->value.data, ng_tensor_bytes(&w->value)),
            "the backbone is the file's, bit for bit");
    NG_TEST(!memcmp(before, ng_model_find(four, "head.weight")->param->value.data, sizeof before),
            "the skipped head keeps its fresh initialisation");
    /* A module name matches whole components only: "hea" skips nothing. */
    const char *partial[] = {"hea"};
    NG_TEST_ERROR(ng_weights_load_except(four, path, partial, 1), "head.weight");
    NG_TEST(ng_weights_in_module("head.bias", "head") &&
                !ng_weights_in_module("head_drop.w", "head") &&
                ng_weights_in_module("blocks.0.fc1.weight", "blocks.0"),
            "module matching by dotted components");
    ng_model_free(pre), ng_model_free(four);
}

/* Batch-norm running statistics travel with the weights under PyTorch's names. */
static void test_buffers(void) {
    ng_arch a;
    ng_arch_defaults("cnn3d", &a);
    a.depth = 2, a.width = 3;
    ng_model *m = ng_model_new(ng_arch_build(&a)), *n = ng_model_new(ng_arch_build(&a));
    ng_model_build(m, NG_CPU, NG_F32, 1, 1 << 16, 1 << 16);
    ng_model_build(n, NG_CPU, NG_F32, 1, 1 << 16, 1 << 16);
    NG_TEST(m->nbuffers == 4 && !strcmp(m->buffers[1].buffer->name, "layers.0.bn.running_var"),
            "two batch norms give four buffers named as PyTorch's");
    ng_test_fill_uniform(&m->flat_buffers, 0.5, 2);
    const char *path = tmp_path("bn.safetensors");
    ng_weights_save(m, path, NULL);
    ng_weights_load(n, path);
    NG_TEST(!memcmp(m->flat_buffers.data, n->flat_buffers.data, ng_tensor_bytes(&m->flat_buffers)),
            "running statistics round trip");
    ng_model_free(m), ng_model_free(n);
}

static void test_malformed(void) {
    const char *p = tmp_path("bad.safetensors");
    expect_bad(p, "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}", 8,
               "w"); /* truncated data */
    expect_bad(p, "{\"w\":{\"dtype\":\"Q4\",\"shape\":[2],\"data_offsets\":[0,2]}}", 2,
               "Q4"); /* unknown dtype */
    expect_bad(p, "{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8,
               "w"); /* offsets disagree with the shape */
    expect_bad(p,
               "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
               "\"v\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
               12, "overlap");
    expect_bad(p, "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0.5,8.5]}}", 12, "w");
    expect_bad(p, "{not json", 0, "JSON");
    FILE *f = fopen(p, "wb");
    fputs("abc", f);
    fclose(f);
    NG_TEST_ERROR(ng_safetensors_open(p), "truncated");
    /* header length that points past the end */
    f = fopen(p, "wb");
    for (int b = 0; b < 8; b++) fputc(b == 0 ? 200 : 0, f);
    fputs("{}", f);
    fclose(f);
    NG_TEST_ERROR(ng_safetensors_open(p), "truncated");
    NG_TEST_ERROR(ng_safetensors_open(tmp_path("missing.safetensors")), "missing.safetensors");
}

/* A valid file of random tensors, then the same bytes with the header length one off either way,
 * a gap, trailing bytes and an overlap: each is refused naming the file (and the tensor). */
static void write_file(const char *path, const void *bytes, size_t n) {
    FILE *f = fopen(path, "wb");
    fwrite(bytes, 1, n, f);
    fclose(f);
}

static void test_exact_coverage(void) {
    int nt = 2 + (int)(0.5 * (ng_test_uniform() + 1) * 4);
    ng_tensor ts[6];
    ng_st_entry e[6];
    char names[6][16];
    for (int i = 0; i < nt; i++) {
        snprintf(names[i], sizeof names[i], "t%d.weight", i);
        ts[i] = ng_tensor_2d(NG_F32, NG_CPU, 1 + (int)(0.5 * (ng_test_uniform() + 1) * 5),
                             1 + (int)(0.5 * (ng_test_uniform() + 1) * 5), names[i]);
        ng_test_fill_uniform(&ts[i], -3, 3);
        e[i] = (ng_st_entry){names[i], &ts[i]};
    }
    const char *good = tmp_path("good.safetensors"), *p = tmp_path("shift.safetensors");
    ng_safetensors_save(good, e, nt, NULL);
    FILE *f = fopen(good, "rb");
    unsigned char buf[4096];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    ng_safetensors *ok = ng_safetensors_open(good);
    NG_TEST(ng_safetensors_count(ok) == nt, "the saved file opens with %d tensors", nt);
    ng_safetensors_close(ok);
    uint64_t hl = 0;
    for (int b = 7; b >= 0; b--) hl = hl << 8 | buf[b];
    for (int delta = -1; delta <= 1; delta += 2) {
        unsigned char c[4096];
        memcpy(c, buf, n);
        uint64_t h2 = hl + (uint64_t)(int64_t)delta;
        for (int b = 0; b < 8; b++) c[b] = (unsigned char)(h2 >> (8 * b));
        write_file(p, c, n);
        NG_TEST_ERROR(ng_safetensors_open(p), "shift.safetensors");
        NG_TEST(strstr(ng_last_error(), "header length"),
                "header length %+d is named as a likely cause: %s", delta, ng_last_error());
    }
    /* trailing bytes after the last tensor */
    memcpy(buf + n, "\x01\x02\x03\x04", 4);
    write_file(p, buf, n + 4);
    NG_TEST_ERROR(ng_safetensors_open(p), "trailing bytes");
    /* a gap: the first tensor's range starts 4 bytes in (the file grows by 4 at the end) */
    char hdr[200];
    size_t data = 12 + 8;
    snprintf(hdr, sizeof hdr,
             "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[4,16]},"
             "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[16,20]}}");
    write_raw(p, hdr, data);
    NG_TEST_ERROR(ng_safetensors_open(p), "tensor a starts at data byte 4");
    snprintf(hdr, sizeof hdr,
             "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]},"
             "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[16,20]}}");
    write_raw(p, hdr, data);
    NG_TEST_ERROR(ng_safetensors_open(p), "gap");
    NG_TEST(strstr(ng_last_error(), "tensor b") && strstr(ng_last_error(), "a ends at 12"),
            "the gap names both tensors: %s", ng_last_error());
    /* an overlap and a repeated name */
    snprintf(hdr, sizeof hdr,
             "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]},"
             "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}");
    write_raw(p, hdr, 16);
    NG_TEST_ERROR(ng_safetensors_open(p), "tensors a and b overlap");
    snprintf(hdr, sizeof hdr,
             "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
             "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}");
    write_raw(p, hdr, 8);
    NG_TEST_ERROR(ng_safetensors_open(p), "tensor a is listed twice");
    /* no tensors and no data is a valid (empty) file; data without tensors is not */
    write_raw(p, "{}", 0);
    ng_safetensors *empty = ng_safetensors_open(p);
    NG_TEST(ng_safetensors_count(empty) == 0, "an empty file opens");
    ng_safetensors_close(empty);
    expect_bad(p, "{}", 3, "trailing bytes");
    /* JSON followed by non-padding bytes inside the header */
    expect_bad(p, "{}xy", 0, "header length");
    /* shapes whose counts overflow: refused naming the tensor, not wrapped to a small size */
    expect_bad(p,
               "{\"big\":{\"dtype\":\"F32\",\"shape\":[2147483648,2147483648],"
               "\"data_offsets\":[0,0]}}",
               0, "tensor big");
    NG_TEST(strstr(ng_last_error(), "overflow"), "says overflow: %s", ng_last_error());
    expect_bad(p,
               "{\"big\":{\"dtype\":\"U8\",\"shape\":[4294967296,4294967296],"
               "\"data_offsets\":[0,0]}}",
               0, "overflow");
    /* metadata: strings only, once */
    expect_bad(p, "{\"__metadata__\":{\"step\":3}}", 0, "__metadata__");
    for (int i = 0; i < nt; i++) ng_tensor_free(&ts[i]);
}

/* Tensors at offsets unaligned for their type (after a U8 tensor of odd length, behind a header
 * whose length is not a multiple of 8) are valid files: they are viewed aligned, same bytes. */
static void test_unaligned(void) {
    const char *p = tmp_path("unaligned.safetensors");
    for (int pad = 0; pad < 8; pad++) {
        char hdr[300];
        int u = 1 + 2 * (int)(0.5 * (ng_test_uniform() + 1) * 3); /* odd */
        snprintf(hdr, sizeof hdr,
                 "{\"u\":{\"dtype\":\"U8\",\"shape\":[%d],\"data_offsets\":[0,%d]},"
                 "\"h\":{\"dtype\":\"F16\",\"shape\":[3],\"data_offsets\":[%d,%d]},"
                 "\"w\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[%d,%d]}}%*s",
                 u, u, u, u + 6, u + 6, u + 22, pad, "");
        write_raw(p, hdr, (size_t)u + 22);
        ng_safetensors *f = ng_safetensors_open(p);
        int ok = ng_safetensors_count(f) == 3;
        for (int i = 0; ok && i < 3; i++) {
            ng_tensor t = ng_safetensors_get(f, i);
            size_t off = !strcmp(t.name, "u")   ? 0
                         : !strcmp(t.name, "h") ? (size_t)u
                                                : (size_t)u + 6;
            ok = (uintptr_t)t.data % ng_dtype_size(t.dtype) == 0;
            for (size_t b = 0; ok && b < ng_tensor_bytes(&t); b++)
                ok = ((unsigned char *)t.data)[b] == (unsigned char)((off + b) * 37 & 0xff);
        }
        NG_TEST(ok, "unaligned tensors (header padded by %d) are viewed aligned with their bytes",
                pad);
        ng_safetensors_close(f);
    }
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/ng_test_st_XXXXXX");
    NG_TEST(mkdtemp(dir) != NULL, "temporary folder");
    test_round_trip();
    test_weights();
    test_weights_except();
    test_buffers();
    test_malformed();
    test_exact_coverage();
    test_unaligned();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) fprintf(stderr, "could not remove %s\n", dir);
    return ng_test_finish("test_safetensors");
}
