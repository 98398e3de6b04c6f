/* Tests for data/dataset.h: MNIST IDX files (the shared subset, gzipped vs raw, crafted good and
 * malformed files) and the synthetic data set (determinism, balance, learnability). */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "core/error.h"
#include "data/dataset.h"
#include "testing.h"

static char tmp[256];

/* A path in the temporary folder; each call gets its own buffer, so paths can be kept. */
static const char *tmp_path(const char *name) {
    static char buf[64][320];
    static int k;
    if (k == 64) {
        fprintf(stderr, "tmp_path: out of buffers\n");
        exit(1);
    }
    snprintf(buf[k], sizeof buf[k], "%s/%s", tmp, name);
    return buf[k++];
}

static void write_raw(const char *path, const unsigned char *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, 1, n, f) != n) ng_test_fail("cannot write %s", path);
    if (f) fclose(f);
}

static void write_gz(const char *path, const unsigned char *p, size_t n) {
    gzFile f = gzopen(path, "wb");
    if (!f || gzwrite(f, p, (unsigned)n) != (int)n) ng_test_fail("cannot write %s", path);
    if (f) gzclose(f);
}

/* The whole of a (possibly gzipped) file, as the test sees it: zlib directly, not data/. */
static unsigned char *read_all(const char *path, size_t *len) {
    gzFile f = gzopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 20, n = 0;
    unsigned char *buf = malloc(cap);
    int r;
    while ((r = gzread(f, buf + n, (unsigned)(cap - n))) > 0) {
        n += (size_t)r;
        if (n == cap) buf = realloc(buf, cap *= 2);
    }
    gzclose(f);
    *len = n;
    return buf;
}

static void put32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24), p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8), p[3] = (unsigned char)v;
}

/* A crafted IDX pair: n random images (rows x cols) and random labels 0-9. */
typedef struct {
    unsigned char *im, *lb;
    size_t il, ll;
} idx_pair;

static idx_pair make_idx(uint32_t n, uint32_t rows, uint32_t cols) {
    idx_pair p;
    p.il = 16 + (size_t)n * rows * cols;
    p.ll = 8 + (size_t)n;
    p.im = malloc(p.il);
    p.lb = malloc(p.ll);
    put32(p.im, 0x803), put32(p.im + 4, n), put32(p.im + 8, rows), put32(p.im + 12, cols);
    put32(p.lb, 0x801), put32(p.lb + 4, n);
    for (size_t i = 16; i < p.il; i++) p.im[i] = (unsigned char)(128 + 128 * ng_test_uniform());
    for (size_t i = 8; i < p.ll; i++) p.lb[i] = (unsigned char)(5 + 5 * ng_test_uniform());
    return p;
}

static void free_idx(idx_pair *p) {
    free(p->im);
    free(p->lb);
}

/* The contract of ng_mnist_load: (v/255 - 0.1307)/0.3081 in double, rounded once to float. */
static float normalised(unsigned char v) {
    return (float)((v / 255.0 - 0.1307) / 0.3081);
}

/* Crafted random files, gzipped and raw, read back pixel for pixel and label for label. */
static void test_crafted_roundtrip(void) {
    uint32_t n = 20 + (uint32_t)(20 + 20 * ng_test_uniform());
    idx_pair p = make_idx(n, 28, 28);
    write_gz(tmp_path("c-im.gz"), p.im, p.il);
    write_gz(tmp_path("c-lb.gz"), p.lb, p.ll);
    write_raw(tmp_path("c-im"), p.im, p.il);
    write_raw(tmp_path("c-lb"), p.lb, p.ll);
    ng_dataset *g = ng_mnist_load(tmp_path("c-im.gz"), tmp_path("c-lb.gz"), "crafted");
    ng_dataset *r = ng_mnist_load(tmp_path("c-im"), tmp_path("c-lb"), "crafted-raw");
    NG_TEST(g->n == n && g->ndim == 3 && g->shape[0] == 1 && g->shape[1] == 28 &&
                g->shape[2] == 28 && g->classes == 10 && ng_dataset_example_size(g) == 784,
            "crafted MNIST: n %lld (want %u), shape [%lld,%lld,%lld], classes %lld",
            (long long)g->n, n, (long long)g->shape[0], (long long)g->shape[1],
            (long long)g->shape[2], (long long)g->classes);
    NG_TEST(!strcmp(g->name, "crafted"), "dataset name '%s', want 'crafted'", g->name);
    int64_t bad_bits = 0, bad_val = 0, bad_lab = 0;
    for (size_t i = 0; i < (size_t)n * 784; i++) {
        float want = normalised(p.im[16 + i]);
        if (memcmp(&g->x[i], &want, sizeof want)) bad_bits++;
        /* Independently of the rounding: within float32's half ulp (|x| < 4, so < 2.4e-7). */
        double exact = (p.im[16 + i] / 255.0 - 0.1307) / 0.3081;
        if (fabs(g->x[i] - exact) > 2.4e-7) bad_val++;
    }
    for (uint32_t i = 0; i < n; i++) bad_lab += g->y[i] != p.lb[8 + i];
    NG_TEST(
        !bad_bits && !bad_val,
        "crafted MNIST: %lld pixels are not (v/255 - 0.1307)/0.3081 rounded to float, %lld differ "
        "from it by more than half an ulp",
        (long long)bad_bits, (long long)bad_val);
    NG_TEST(!bad_lab, "crafted MNIST: %lld labels differ from the file", (long long)bad_lab);
    NG_TEST(r->n == g->n && !memcmp(r->x, g->x, sizeof(float) * (size_t)n * 784) &&
                !memcmp(r->y, g->y, sizeof(int32_t) * n),
            "crafted MNIST: raw and gzipped files load differently");
    ng_dataset_free(g);
    ng_dataset_free(r);
    free_idx(&p);
}

/* One malformed pair: expects an error naming `culprit` and containing `what`. */
#define EXPECT_BAD(images, labels, culprit, what)                                                  \
    do {                                                                                           \
        NG_TEST_ERROR(ng_mnist_load(images, labels, "bad"), culprit);                              \
        NG_TEST(strstr(ng_last_error(), what) != NULL,                                             \
                "error for %s should say '%s' but said: %s", culprit, what, ng_last_error());      \
    } while (0)

static void test_malformed(void) {
    uint32_t n = 30;
    idx_pair p = make_idx(n, 28, 28);
    const char *im = tmp_path("m-im.gz"), *lb = tmp_path("m-lb.gz");
    write_gz(im, p.im, p.il);
    write_gz(lb, p.lb, p.ll);

    /* Magic numbers. */
    const char *f = tmp_path("magic-im.gz");
    put32(p.im, 0x804);
    write_gz(f, p.im, p.il);
    put32(p.im, 0x803);
    EXPECT_BAD(f, lb, f, "magic");
    f = tmp_path("magic-lb.gz");
    put32(p.lb, 0x803);
    write_gz(f, p.lb, p.ll);
    put32(p.lb, 0x801);
    EXPECT_BAD(im, f, f, "magic");
    /* Swapped arguments are the common mistake. */
    EXPECT_BAD(lb, im, lb, "magic");

    /* Truncated: raw and gzip, images and labels. */
    f = tmp_path("trunc-im");
    write_raw(f, p.im, p.il - 100);
    EXPECT_BAD(f, lb, f, "truncated");
    f = tmp_path("trunc-lb.gz");
    write_gz(f, p.lb, p.ll - 3);
    EXPECT_BAD(im, f, f, "truncated");
    f = tmp_path("short-header");
    write_raw(f, p.im, 10);
    EXPECT_BAD(f, lb, f, "magic");
    {
        /* A gzip stream cut in the middle: the deflate data stops early. */
        size_t gl;
        unsigned char *gz = malloc(p.il + 1024);
        FILE *h = fopen(im, "rb");
        gl = fread(gz, 1, p.il + 1024, h);
        fclose(h);
        f = tmp_path("cut.gz");
        write_raw(f, gz, gl / 2);
        EXPECT_BAD(f, lb, f, "truncated");
        free(gz);
    }
    f = tmp_path("trailing-im");
    unsigned char *longer = calloc(p.il + 784, 1);
    memcpy(longer, p.im, p.il);
    write_raw(f, longer, p.il + 784);
    free(longer);
    EXPECT_BAD(f, lb, f, "trailing");

    /* Counts that disagree. */
    f = tmp_path("count-lb.gz");
    put32(p.lb + 4, n - 1);
    write_gz(f, p.lb, p.ll - 1);
    put32(p.lb + 4, n);
    EXPECT_BAD(im, f, f, "labels");

    /* A label that is not a digit. */
    f = tmp_path("label10-lb.gz");
    unsigned char keep = p.lb[8 + 17];
    p.lb[8 + 17] = 10;
    write_gz(f, p.lb, p.ll);
    p.lb[8 + 17] = keep;
    EXPECT_BAD(im, f, f, "label 10 of example 17");

    /* Not 28x28. */
    idx_pair q = make_idx(n, 27, 28);
    f = tmp_path("27x28-im.gz");
    write_gz(f, q.im, q.il);
    EXPECT_BAD(f, lb, f, "27x28");
    free_idx(&q);

    /* Missing files and folders. */
    f = tmp_path("missing-im.gz");
    EXPECT_BAD(f, lb, f, "cannot open");
    EXPECT_BAD(im, f, f, "cannot open");
    EXPECT_BAD(tmp, lb, tmp, "not a regular file");

    /* ng_mnist_find: absent is NULL, half-present and bad split names are errors. */
    NG_TEST(ng_mnist_find(tmp, "train") == NULL,
            "ng_mnist_find on a folder without MNIST: not NULL");
    NG_TEST(ng_mnist_find(tmp_path("no-such-folder"), "test") == NULL,
            "ng_mnist_find on a missing folder: not NULL");
    write_gz(tmp_path("t10k-images-idx3-ubyte.gz"), p.im, p.il);
    NG_TEST_ERROR(ng_mnist_find(tmp, "test"), "t10k-labels-idx1-ubyte");
    NG_TEST(strstr(ng_last_error(), tmp) != NULL, "incomplete split error should name %s: %s", tmp,
            ng_last_error());
    NG_TEST_ERROR(ng_mnist_find(tmp, "val"), "split 'val'");
    /* Raw labels beside gzipped images are found too. */
    write_raw(tmp_path("t10k-labels-idx1-ubyte"), p.lb, p.ll);
    ng_dataset *d = ng_mnist_find(tmp, "test");
    NG_TEST(d && d->n == n && d->y[5] == p.lb[8 + 5] && !strcmp(d->name, "mnist-test"),
            "ng_mnist_find of a crafted test split: %s", d ? d->name : "NULL");
    ng_dataset_free(d);
    /* A malformed file is still an error in find, not a silent fallback. */
    write_raw(tmp_path("t10k-labels-idx1-ubyte"), p.lb, p.ll - 5);
    unlink(tmp_path("t10k-labels-idx1-ubyte.gz"));
    NG_TEST_ERROR(ng_mnist_find(tmp, "test"), "t10k-labels-idx1-ubyte");
    free_idx(&p);
}

/* The shared 10,000-digit subset: 0 when it is absent. */
static int test_shared_mnist(const char *dir) {
    char path[1100];
    snprintf(path, sizeof path, "%s/train-images-idx3-ubyte.gz", dir);
    if (access(path, R_OK) != 0) return 0;
    ng_dataset *tr = ng_mnist_find(dir, "train"), *te = ng_mnist_find(dir, "test");
    NG_TEST(tr && te, "MNIST in %s: a split was not found", dir);
    if (!tr || !te) return 1;
    NG_TEST(tr->n == 7996 && te->n == 2004,
            "MNIST subset: %lld train / %lld test, want 7996 / 2004", (long long)tr->n,
            (long long)te->n);
    ng_dataset *sets[2] = {tr, te};
    for (int s = 0; s < 2; s++) {
        ng_dataset *d = sets[s];
        NG_TEST(d->ndim == 3 && d->shape[0] == 1 && d->shape[1] == 28 && d->shape[2] == 28 &&
                    d->classes == 10,
                "%s: shape or classes wrong", d->name);
        int64_t hist[10] = {0}, bad = 0;
        for (int64_t i = 0; i < d->n; i++) {
            if (d->y[i] < 0 || d->y[i] > 9)
                bad++;
            else
                hist[d->y[i]]++;
        }
        NG_TEST(!bad, "%s: %lld labels outside 0-9", d->name, (long long)bad);
        for (int c = 0; c < 10; c++)
            NG_TEST(hist[c] >= d->n / 20 && hist[c] <= d->n * 15 / 100,
                    "%s: class %d has %lld of %lld examples, outside 5%%-15%%", d->name, c,
                    (long long)hist[c], (long long)d->n);
        double sum = 0, sq = 0, lo = INFINITY, hi = -INFINITY;
        int64_t m = d->n * 784;
        for (int64_t i = 0; i < m; i++) {
            sum += d->x[i], sq += (double)d->x[i] * d->x[i];
            lo = fmin(lo, d->x[i]), hi = fmax(hi, d->x[i]);
        }
        double mean = sum / (double)m, sd = sqrt(sq / (double)m - mean * mean);
        printf("%s: %lld digits, normalised pixel mean %.4f std %.4f, range [%.4f, %.4f]\n",
               d->name, (long long)d->n, mean, sd, lo, hi);
        NG_TEST(fabs(mean) < 0.1 && fabs(sd - 1) < 0.1,
                "%s: normalised pixels have mean %g and std %g, want 0 +- 0.1 and 1 +- 0.1",
                d->name, mean, sd);
        /* Black and white are both present: the extremes of the normalisation. */
        NG_TEST(lo == normalised(0) && hi == normalised(255),
                "%s: pixel range [%g, %g], want [%g, %g]", d->name, lo, hi, normalised(0),
                normalised(255));
    }

    /* The same files inflated to raw IDX load to the same bytes. */
    const char *names[4] = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                            "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"};
    char rawdir[512];
    snprintf(rawdir, sizeof rawdir, "%s/raw", tmp);
    mkdir(rawdir, 0700);
    for (int i = 0; i < 4; i++) {
        char src[1100], dst[600];
        snprintf(src, sizeof src, "%s/%s.gz", dir, names[i]);
        snprintf(dst, sizeof dst, "%s/%s", rawdir, names[i]);
        size_t len = 0;
        unsigned char *b = read_all(src, &len);
        NG_TEST(b && len > 8, "cannot inflate %s", src);
        if (b) write_raw(dst, b, len);
        free(b);
    }
    for (int s = 0; s < 2; s++) {
        ng_dataset *r = ng_mnist_find(rawdir, s ? "test" : "train"), *g = sets[s];
        NG_TEST(r && r->n == g->n && !memcmp(r->x, g->x, sizeof(float) * (size_t)(g->n * 784)) &&
                    !memcmp(r->y, g->y, sizeof(int32_t) * (size_t)g->n),
                "%s: raw IDX and gzipped IDX load differently", g->name);
        ng_dataset_free(r);
    }
    for (int i = 0; i < 4; i++) {
        char dst[600];
        snprintf(dst, sizeof dst, "%s/%s", rawdir, names[i]);
        unlink(dst);
    }
    rmdir(rawdir);
    ng_dataset_free(tr);
    ng_dataset_free(te);
    return 1;
}

static void test_synthetic(void) {
    uint64_t seed = ng_test_seed() * 2654435761u;
    int64_t shape[3] = {1, 8, 8}, n = 1003, classes = 10, e = 64;
    double noise = 2.0 + ng_test_uniform(); /* in [1, 3) */
    ng_dataset *a = ng_synthetic(n, 3, shape, classes, noise, seed, 0, "syn-a");
    ng_dataset *b = ng_synthetic(n, 3, shape, classes, noise, seed, 0, "syn-b");
    ng_dataset *c = ng_synthetic(n, 3, shape, classes, noise, seed + 1, 0, "syn-c");
    ng_dataset *t = ng_synthetic(n, 3, shape, classes, noise, seed, 1, "syn-test");
    NG_TEST(a->n == n && a->ndim == 3 && a->shape[1] == 8 && a->classes == classes &&
                ng_dataset_example_size(a) == e && !strcmp(a->name, "syn-a"),
            "synthetic: wrong size, shape or name");
    NG_TEST(!memcmp(a->x, b->x, sizeof(float) * (size_t)(n * e)) &&
                !memcmp(a->y, b->y, sizeof(int32_t) * (size_t)n),
            "synthetic: the same seed gave different bytes");
    int64_t same_x = 0, same_y = 0, in_order = 0;
    for (int64_t i = 0; i < n * e; i++) same_x += a->x[i] == c->x[i];
    for (int64_t i = 0; i < n; i++) same_y += a->y[i] == c->y[i], in_order += a->y[i] == i % 10;
    NG_TEST(same_x < n * e / 100 && same_y < n / 2,
            "synthetic: seeds %llu and %llu share %lld of %lld values and %lld of %lld labels",
            (unsigned long long)seed, (unsigned long long)seed + 1, (long long)same_x,
            (long long)(n * e), (long long)same_y, (long long)n);
    /* Balanced: 1003 = 10 * 100 + 3, so three classes hold 101, and the order is shuffled. */
    int64_t hist[10] = {0}, bad = 0;
    for (int64_t i = 0; i < n; i++) {
        if (a->y[i] < 0 || a->y[i] >= classes)
            bad++;
        else
            hist[a->y[i]]++;
    }
    int64_t big = 0;
    for (int k = 0; k < 10; k++) {
        NG_TEST(hist[k] == 100 || hist[k] == 101, "synthetic: class %d has %lld examples", k,
                (long long)hist[k]);
        big += hist[k] == 101;
    }
    NG_TEST(!bad && big == 3, "synthetic: %lld bad labels, %lld classes of 101 (want 3)",
            (long long)bad, (long long)big);
    NG_TEST(in_order < n / 4, "synthetic: labels look unshuffled (%lld of %lld at i %% 10)",
            (long long)in_order, (long long)n);

    /* Class means from split 0; the within-class spread must be the requested noise. */
    double *mean = calloc((size_t)(classes * e), sizeof(double));
    for (int64_t i = 0; i < n; i++)
        for (int64_t k = 0; k < e; k++) mean[a->y[i] * e + k] += a->x[i * e + k];
    for (int64_t k = 0; k < classes * e; k++) mean[k] /= (double)hist[k / e];
    double ss = 0, ms = 0;
    for (int64_t i = 0; i < n; i++)
        for (int64_t k = 0; k < e; k++) {
            double dlt = a->x[i * e + k] - mean[a->y[i] * e + k];
            ss += dlt * dlt;
        }
    for (int64_t k = 0; k < classes * e; k++) ms += mean[k] * mean[k];
    /* Dividing by n - classes removes the bias of estimating each class mean. */
    double sd = sqrt(ss / (double)((n - classes) * e)), msd = sqrt(ms / (double)(classes * e));
    NG_TEST(fabs(sd / noise - 1) < 0.03,
            "synthetic: within-class std %g, requested noise %g (64k draws: +-1%% expected)", sd,
            noise);
    NG_TEST(msd > 0.8 && msd < 1.3, "synthetic: class means have rms %g, want about 1", msd);

    /* Learnable: nearest class mean, fitted on split 0, on the held-out split 1. */
    int64_t correct = 0;
    for (int64_t i = 0; i < n; i++) {
        int best = 0;
        double bd = INFINITY;
        for (int k = 0; k < classes; k++) {
            double dd = 0;
            for (int64_t j = 0; j < e; j++) {
                double v = t->x[i * e + j] - mean[k * e + j];
                dd += v * v;
            }
            if (dd < bd) bd = dd, best = k;
        }
        correct += best == t->y[i];
    }
    double acc = (double)correct / (double)n;
    printf("synthetic (noise %.3f): nearest-class-mean accuracy %.3f on the held-out split\n",
           noise, acc);
    NG_TEST(acc > 0.5, "synthetic: nearest-class-mean accuracy %g, chance is 0.1", acc);
    int64_t same_t = 0;
    for (int64_t i = 0; i < n * e; i++) same_t += a->x[i] == t->x[i];
    NG_TEST(same_t < n * e / 100, "synthetic: split 0 and 1 share %lld values", (long long)same_t);
    free(mean);
    ng_dataset_free(a);
    ng_dataset_free(b);
    ng_dataset_free(c);
    ng_dataset_free(t);

    NG_TEST_ERROR(ng_synthetic(0, 3, shape, 10, 1.0, 1, 0, "syn-empty"), "syn-empty");
    NG_TEST_ERROR(ng_synthetic(10, 3, shape, 1, 1.0, 1, 0, "syn-oneclass"), "syn-oneclass");
    NG_TEST_ERROR(ng_synthetic(10, 3, shape, 10, -1.0, 1, 0, "syn-noise"), "noise");
    NG_TEST_ERROR(ng_synthetic(10, 3, (int64_t[]){1, 0, 8}, 10, 1.0, 1, 0, "syn-zero"), "syn-zero");
    NG_TEST_ERROR(ng_synthetic(10, 5, shape, 10, 1.0, 1, 0, "syn-5d"), "syn-5d");
}

int main(void) {
    ng_test_seed();
    snprintf(tmp, sizeof tmp, "%s/ng-test-data-XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(tmp)) {
        fprintf(stderr, "cannot make a temporary folder %s\n", tmp);
        return 1;
    }
    test_crafted_roundtrip();
    test_malformed();
    test_synthetic();
    const char *shared = getenv("NG_SHARED_DIR");
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/data/mnist", shared ? shared : "../shared");
    int have = test_shared_mnist(dir);

    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmp);
    int rc = ng_test_finish("test_data");
    if (!have && rc == 0) {
        printf("test_data: skipped: no MNIST at %s (set NG_SHARED_DIR); the crafted-file and "
               "synthetic checks above ran\n",
               dir);
        return 77;
    }
    return rc;
}
