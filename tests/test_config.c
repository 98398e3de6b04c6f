/* Run configuration: defaults, nested/dotted YAML, --set precedence, every bad input named with
 * its key and place, exact round trips through write_yaml, and exit status 2 by default. */
#define _GNU_SOURCE /* mkdtemp, open_memstream */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "apps/config.h"
#include "core/error.h"
#include "testing.h"

#define ANY 1, 0 /* min > max: unbounded */

static const ng_cfg_spec spec[] = {
    {"seed", NG_CFG_INT, "0", 0, 1e9, NULL, "seed"},
    {"device", NG_CFG_CHOICE, "auto", ANY, "auto|cpu|cuda", "where to run"},
    {"model.arch", NG_CFG_STRING, "mlp", ANY, NULL, "architecture"},
    {"model.width", NG_CFG_INT, "64", 1, 4096, NULL, "hidden units"},
    {"model.widths", NG_CFG_INT_LIST, "8,16", 1, 1024, NULL, "stage widths"},
    {"model.dropout", NG_CFG_FLOAT, "0.1", 0, 0.99, NULL, "dropout"},
    {"model.batchnorm", NG_CFG_BOOL, "true", ANY, NULL, "batch norm"},
    {"optimizer.name", NG_CFG_CHOICE, "sgd", ANY, "sgd|adamw|kfac", "optimizer"},
    {"optimizer.lr", NG_CFG_FLOAT, "0.1", 0, 10, NULL, "learning rate"},
    {"optimizer.shift", NG_CFG_FLOAT, "-1.5", ANY, NULL, "any float"},
    {"optimizer.nesterov", NG_CFG_BOOL, "false", ANY, NULL, "nesterov"},
    {"data.dir", NG_CFG_STRING, "", ANY, NULL, "data folder"},
    {"data.synthetic.n", NG_CFG_INT, "1000", 1, 1e9, NULL, "examples"},
    {"train.offset", NG_CFG_INT, "-7", ANY, NULL, "any int"},
};
static const int nspec = sizeof spec / sizeof spec[0];

static char dir[256];

/* Writes `text` to dir/name and returns the path (valid until the next call with that name). */
static const char *write_cfg(const char *name, const char *text) {
    static char paths[4][512];
    static int next;
    char *p = paths[next++ % 4];
    snprintf(p, 512, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    if (!f) {
        ng_test_fail("cannot write %s", p);
        return p;
    }
    fputs(text, f);
    fclose(f);
    return p;
}

static double unif01(void) {
    return 0.5 * (ng_test_uniform() + 1.0);
}
static int64_t rand_int(int64_t lo, int64_t hi) {
    int64_t x = lo + (int64_t)(unif01() * (double)(hi - lo + 1));
    return x > hi ? hi : x;
}

/* Values a config should hold, with a random draw for the ones a file sets. */
typedef struct {
    int64_t seed, width, n, offset;
    int64_t widths[6];
    int nwidths;
    double dropout, lr, shift;
    int batchnorm, nesterov;
    char arch[32], name[16], device[16], dir[128];
} values;

static values defaults(void) {
    values v = {.seed = 0, .width = 64, .n = 1000, .offset = -7, .widths = {8, 16}, .nwidths = 2};
    v.dropout = 0.1, v.lr = 0.1, v.shift = -1.5, v.batchnorm = 1, v.nesterov = 0;
    strcpy(v.arch, "mlp"), strcpy(v.name, "sgd"), strcpy(v.device, "auto"), v.dir[0] = 0;
    return v;
}

static values random_values(void) {
    static const char *const opts[] = {"sgd", "adamw", "kfac"}, *const devs[] = {"auto", "cpu",
                                                                                 "cuda"};
    values v = defaults();
    v.seed = rand_int(0, 1000000000);
    v.width = rand_int(1, 4096);
    v.n = rand_int(1, 1000000000);
    v.offset = rand_int(-1000000, 1000000);
    v.nwidths = (int)rand_int(1, 6);
    for (int k = 0; k < v.nwidths; k++) v.widths[k] = rand_int(1, 1024);
    v.dropout = 0.99 * unif01();
    v.lr = 10 * unif01();
    v.shift = 1e6 * ng_test_uniform();
    v.batchnorm = unif01() < 0.5;
    v.nesterov = unif01() < 0.5;
    int len = (int)rand_int(1, 12);
    for (int k = 0; k < len; k++) v.arch[k] = (char)('a' + rand_int(0, 25));
    v.arch[len] = 0;
    if (!strcmp(v.arch, "null")) strcpy(v.arch, "vit"); /* YAML's null, not a string */
    strcpy(v.name, opts[rand_int(0, 2)]);
    strcpy(v.device, devs[rand_int(0, 2)]);
    snprintf(v.dir, sizeof v.dir, "/data/run %lld/\"x\"", (long long)rand_int(0, 999));
    return v;
}

static void check_values(const ng_config *c, const values *e, const char *what) {
    NG_TEST(ng_cfg_int(c, "seed") == e->seed, "%s: seed %lld, want %lld", what,
            (long long)ng_cfg_int(c, "seed"), (long long)e->seed);
    NG_TEST(ng_cfg_int(c, "model.width") == e->width, "%s: model.width %lld, want %lld", what,
            (long long)ng_cfg_int(c, "model.width"), (long long)e->width);
    NG_TEST(ng_cfg_int(c, "data.synthetic.n") == e->n, "%s: data.synthetic.n", what);
    NG_TEST(ng_cfg_int(c, "train.offset") == e->offset, "%s: train.offset", what);
    int64_t w[6];
    for (int k = 0; k < 6; k++) w[k] = -12345;
    int nw = ng_cfg_int_list(c, "model.widths", w, 6);
    int same = nw == e->nwidths && ng_cfg_int_list(c, "model.widths", NULL, 0) == nw;
    for (int k = 0; same && k < nw; k++) same = w[k] == e->widths[k];
    NG_TEST(same, "%s: model.widths has %d items (want %d), first %lld (want %lld)", what, nw,
            e->nwidths, (long long)w[0], (long long)e->widths[0]);
    NG_TEST(ng_cfg_float(c, "model.dropout") == e->dropout, "%s: model.dropout %.17g, want %.17g",
            what, ng_cfg_float(c, "model.dropout"), e->dropout);
    NG_TEST(ng_cfg_float(c, "optimizer.lr") == e->lr, "%s: optimizer.lr %.17g, want %.17g", what,
            ng_cfg_float(c, "optimizer.lr"), e->lr);
    NG_TEST(ng_cfg_float(c, "optimizer.shift") == e->shift, "%s: optimizer.shift %.17g, want %.17g",
            what, ng_cfg_float(c, "optimizer.shift"), e->shift);
    NG_TEST(ng_cfg_bool(c, "model.batchnorm") == e->batchnorm, "%s: model.batchnorm", what);
    NG_TEST(ng_cfg_bool(c, "optimizer.nesterov") == e->nesterov, "%s: optimizer.nesterov", what);
    NG_TEST(!strcmp(ng_cfg_str(c, "model.arch"), e->arch), "%s: model.arch '%s', want '%s'", what,
            ng_cfg_str(c, "model.arch"), e->arch);
    NG_TEST(!strcmp(ng_cfg_str(c, "optimizer.name"), e->name), "%s: optimizer.name '%s', want '%s'",
            what, ng_cfg_str(c, "optimizer.name"), e->name);
    NG_TEST(!strcmp(ng_cfg_str(c, "device"), e->device), "%s: device", what);
    NG_TEST(!strcmp(ng_cfg_str(c, "data.dir"), e->dir), "%s: data.dir '%s', want '%s'", what,
            ng_cfg_str(c, "data.dir"), e->dir);
}

/* A YAML double-quoted string. */
static void quoted(char *out, size_t cap, const char *s) {
    size_t n = 0;
    out[n++] = '"';
    for (; *s && n + 3 < cap; s++) {
        if (*s == '"' || *s == '\\') out[n++] = '\\';
        out[n++] = *s;
    }
    out[n++] = '"';
    out[n] = 0;
}

static void widths_text(char *out, size_t cap, const values *v) {
    size_t n = 0;
    for (int k = 0; k < v->nwidths; k++)
        n += (size_t)snprintf(out + n, cap - n, "%s%lld", k ? ", " : "", (long long)v->widths[k]);
}

static void test_defaults(void) {
    ng_config *c = ng_config_load(spec, nspec, NULL, NULL, 0);
    values d = defaults();
    check_values(c, &d, "defaults only");
    int all_default = 1;
    for (int i = 0; i < nspec; i++)
        all_default &= !strcmp(ng_cfg_source(c, spec[i].key), "default");
    NG_TEST(all_default, "every key's source is 'default'");
    ng_config_free(c);

    /* an empty file, a comments-only file and an emptied section are all defaults */
    const char *texts[] = {"", "# nothing yet\n", "optimizer:\n  # lr: 3\nseed: 0\n"};
    for (int t = 0; t < 3; t++) {
        c = ng_config_load(spec, nspec, write_cfg("empty.yaml", texts[t]), NULL, 0);
        check_values(c, &d, texts[t]);
        NG_TEST(!strcmp(ng_cfg_source(c, "optimizer.lr"), "default"), "empty file %d: source", t);
        ng_config_free(c);
    }
}

/* The same random values written nested, dotted and mixed read back the same. */
static void test_file_forms(void) {
    values v = random_values();
    char arch[64], dirq[300], wl[160], text[4096];
    quoted(dirq, sizeof dirq, v.dir);
    widths_text(wl, sizeof wl, &v);
    snprintf(arch, sizeof arch, "'%s'", v.arch); /* single-quoted works like plain */
    const char *bools[2][4] = {{"false", "no", "Off", "0"}, {"true", "YES", "on", "1"}};
    const char *bn = bools[v.batchnorm][rand_int(0, 3)], *ne = bools[v.nesterov][rand_int(0, 3)];

    snprintf(text, sizeof text,
             "# a run\nseed: %lld\ndevice: %s\nmodel:\n  arch: %s\n  width: %lld\n  widths:\n",
             (long long)v.seed, v.device, arch, (long long)v.width);
    for (int k = 0; k < v.nwidths; k++)
        snprintf(text + strlen(text), sizeof text - strlen(text), "    - %lld\n",
                 (long long)v.widths[k]);
    snprintf(text + strlen(text), sizeof text - strlen(text),
             "  dropout: %.17g\n  batchnorm: %s\noptimizer:\n  name: \"%s\"\n  lr: %.17g\n"
             "  shift: %.17g\n  nesterov: %s\ndata:\n  dir: %s\n  synthetic:\n    n: %lld\n"
             "train:\n  offset: %lld\n",
             v.dropout, bn, v.name, v.lr, v.shift, ne, dirq, (long long)v.n, (long long)v.offset);
    ng_config *c = ng_config_load(spec, nspec, write_cfg("nested.yaml", text), NULL, 0);
    check_values(c, &v, "nested file");
    int all_file = 1;
    for (int i = 0; i < nspec; i++) all_file &= !strcmp(ng_cfg_source(c, spec[i].key), "file");
    NG_TEST(all_file, "every key set in the file has source 'file'");
    ng_config_free(c);

    snprintf(text, sizeof text,
             "seed: %lld\ndevice: %s\nmodel.arch: %s\nmodel.width: %lld\nmodel.widths: [%s]\n"
             "model.dropout: %.17g\nmodel.batchnorm: %s\noptimizer.name: %s\noptimizer.lr: %.17g\n"
             "optimizer.shift: %.17g\noptimizer.nesterov: %s\ndata.dir: %s\n"
             "data.synthetic.n: %lld\ntrain.offset: %lld\n",
             (long long)v.seed, v.device, v.arch, (long long)v.width, wl, v.dropout, bn, v.name,
             v.lr, v.shift, ne, dirq, (long long)v.n, (long long)v.offset);
    c = ng_config_load(spec, nspec, write_cfg("dotted.yaml", text), NULL, 0);
    check_values(c, &v, "dotted file");
    ng_config_free(c);

    snprintf(text, sizeof text,
             "seed: %lld\ndevice: %s\nmodel: {arch: %s, width: %lld, widths: [%s]}\n"
             "model.dropout: %.17g\nmodel:\n  batchnorm: %s\n"
             "optimizer: {name: %s, lr: %.17g, shift: %.17g, nesterov: %s}\n"
             "data:\n  dir: %s\n  synthetic.n: %lld\ntrain: {offset: %lld}\n",
             (long long)v.seed, v.device, v.arch, (long long)v.width, wl, v.dropout, bn, v.name,
             v.lr, v.shift, ne, dirq, (long long)v.n, (long long)v.offset);
    c = ng_config_load(spec, nspec, write_cfg("mixed.yaml", text), NULL, 0);
    check_values(c, &v, "mixed nested/dotted/flow file");
    ng_config_free(c);
}

/* Number spellings, quoted values, lists; --set over the file, later --set over earlier. */
static void test_values_and_sets(void) {
    const char *text = "optimizer:\n  lr: 1e-3\n  shift: .5\nmodel:\n  dropout: \"0.25\"\n"
                       "  arch: \"yes\"\n  widths: []\n  width: 12\n";
    const char *path = write_cfg("forms.yaml", text);
    ng_config *c = ng_config_load(spec, nspec, path, NULL, 0);
    NG_TEST(ng_cfg_float(c, "optimizer.lr") == 1e-3, "1e-3 reads as 0.001");
    NG_TEST(ng_cfg_float(c, "optimizer.shift") == 0.5, ".5 reads as 0.5");
    NG_TEST(ng_cfg_float(c, "model.dropout") == 0.25, "a quoted number reads by the key's type");
    NG_TEST(!strcmp(ng_cfg_str(c, "model.arch"), "yes"), "a quoted 'yes' stays a string");
    NG_TEST(ng_cfg_int_list(c, "model.widths", NULL, 0) == 0, "[] is an empty list");
    ng_config_free(c);

    double lr1 = 10 * unif01(), lr2 = 10 * unif01(), sh = -1e3 * unif01();
    int64_t w = rand_int(1, 4096), a = rand_int(1, 1024), b = rand_int(1, 1024);
    char s1[64], s2[64], s3[64], s4[64], s5[64], s6[64];
    snprintf(s1, sizeof s1, "optimizer.lr=%.17g", lr1);
    snprintf(s2, sizeof s2, "optimizer.lr=%.17g", lr2);
    snprintf(s3, sizeof s3, "model.widths=[%lld, %lld]", (long long)a, (long long)b);
    snprintf(s4, sizeof s4, " model.width = %lld ", (long long)w);
    snprintf(s5, sizeof s5, "optimizer.shift=%.17g", sh);
    snprintf(s6, sizeof s6, "model.arch=\"a b\"");
    const char *sets[] = {s1, s3, s4, s2, s5, s6, "model.batchnorm=off", "optimizer.name=kfac"};
    c = ng_config_load(spec, nspec, path, sets, 8);
    NG_TEST(ng_cfg_float(c, "optimizer.lr") == lr2, "the later --set wins: %.17g, want %.17g",
            ng_cfg_float(c, "optimizer.lr"), lr2);
    NG_TEST(!strcmp(ng_cfg_source(c, "optimizer.lr"), "--set"), "source of a --set key");
    NG_TEST(ng_cfg_int(c, "model.width") == w, "--set over the file's model.width, spaces trimmed");
    NG_TEST(ng_cfg_float(c, "optimizer.shift") == sh, "--set over the file's .5");
    int64_t got[4] = {-1, -1, -1, -1};
    NG_TEST(ng_cfg_int_list(c, "model.widths", got, 4) == 2 && got[0] == a && got[1] == b &&
                got[2] == -1,
            "--set [a, b] list: %lld %lld", (long long)got[0], (long long)got[1]);
    NG_TEST(!strcmp(ng_cfg_str(c, "model.arch"), "a b"), "--set strips matching quotes: '%s'",
            ng_cfg_str(c, "model.arch"));
    NG_TEST(!ng_cfg_bool(c, "model.batchnorm") && !strcmp(ng_cfg_str(c, "optimizer.name"), "kfac"),
            "--set bool and choice");
    NG_TEST(!strcmp(ng_cfg_source(c, "model.dropout"), "file") &&
                !strcmp(ng_cfg_source(c, "seed"), "default"),
            "sources: file and default beside --set");
    ng_config_free(c);

    const char *list_sets[] = {"model.widths=5,6,7"};
    c = ng_config_load(spec, nspec, NULL, list_sets, 1);
    NG_TEST(ng_cfg_int_list(c, "model.widths", got, 4) == 3 && got[2] == 7, "--set 5,6,7 list");
    ng_config_free(c);
}

/* The load that should fail, kept apart so no local of the caller lives across the longjmp. */
static ng_config *load_expecting_error(const ng_cfg_spec *sp, int n, const char *path,
                                       const char *const *sets, int nsets, const char *needle) {
    ng_config *volatile c = NULL;
    NG_TEST_ERROR(c = ng_config_load(sp, n, path, sets, nsets), needle);
    return c;
}

/* Loads `yaml` (NULL: no file) with `sets` and expects a usage error that mentions every needle
 * (NULL-terminated). NG_TEST_SHOW_ERRORS=1 prints each message, to read them as a user would. */
static void expect_bad(const ng_cfg_spec *sp, int n, const char *yaml, const char *const *sets,
                       int nsets, const char *const *needles) {
    const char *path = yaml ? write_cfg("bad.yaml", yaml) : NULL;
    ng_config *c = load_expecting_error(sp, n, path, sets, nsets, needles[0]);
    if (c) {
        ng_config_free(c);
        return;
    }
    if (getenv("NG_TEST_SHOW_ERRORS")) fprintf(stderr, "natgrad: error: %s\n", ng_last_error());
    for (int k = 1; needles[k]; k++)
        NG_TEST(strstr(ng_last_error(), needles[k]), "error should mention '%s' but said: %s",
                needles[k], ng_last_error());
}

#define NEEDLES(...) ((const char *const[]){__VA_ARGS__, NULL})
#define SETS(...) ((const char *const[]){__VA_ARGS__})
#define BAD_FILE(yaml, ...) expect_bad(spec, nspec, yaml, NULL, 0, NEEDLES(__VA_ARGS__))
#define BAD_SET(set, ...) expect_bad(spec, nspec, NULL, SETS(set), 1, NEEDLES(__VA_ARGS__))

static void test_errors(void) {
    /* unknown keys: file with line, --set, suggestions */
    BAD_FILE("seed: 1\noptimizer:\n  lr: 0.1\n  momentun: 0.9\n", "optimizer.momentun",
             "bad.yaml line 4", "--help-config");
    BAD_FILE("optimizer:\n  lrr: 0.1\n", "optimizer.lrr", "bad.yaml line 2",
             "did you mean optimizer.lr?");
    BAD_FILE("optimiser:\n  lr: 0.1\n", "optimiser.lr", "did you mean optimizer.lr?");
    BAD_FILE("seed: 1\noptimiser: {}\n", "'optimiser'", "line 2", "did you mean optimizer");
    BAD_FILE("lr: 0.1\n", "'lr'", "bad.yaml line 1", "did you mean optimizer.lr?");
    BAD_FILE("optimizer:\n  zzzzzzzz: 1\n", "optimizer.zzzzzzzz", "name, lr, shift, nesterov");
    BAD_SET("optimizer.lrr=0.1", "optimizer.lrr", "--set", "did you mean optimizer.lr?");
    BAD_SET("Optimizer.LR=0.1", "Optimizer.LR", "did you mean optimizer.lr?");
    BAD_SET("optimizer.lr", "optimizer.lr", "key=value");
    BAD_SET("=3", "'=3'", "key=value");

    /* wrong types */
    BAD_FILE("optimizer:\n  lr: abc\n", "optimizer.lr: 'abc' is not a number", "bad.yaml line 2");
    BAD_SET("optimizer.lr=fast", "optimizer.lr: 'fast' is not a number", "from --set");
    BAD_SET("optimizer.lr=inf", "optimizer.lr: 'inf' is not a number");
    BAD_SET("optimizer.lr=1e999", "optimizer.lr", "too large");
    BAD_SET("optimizer.shift=1_000.5", "optimizer.shift", "write 1000.5");
    BAD_FILE("model:\n  width: 1.5\n", "model.width: '1.5' is not an integer", "line 2");
    BAD_SET("model.width=1e3", "model.width: '1e3' is not an integer", "write 1000");
    BAD_SET("model.width=1_000", "model.width", "write 1000");
    BAD_SET("model.width=0x10", "model.width: '0x10' is not an integer");
    BAD_SET("train.offset=99999999999999999999", "train.offset", "64-bit");
    BAD_SET("model.batchnorm=maybe", "model.batchnorm: 'maybe' is not a boolean", "yes/no");
    BAD_FILE("model:\n  widths: [1, x, 3]\n", "model.widths: item 2 'x' is not an integer",
             "line 2");
    BAD_SET("model.widths=4,2.5", "model.widths: item 2 '2.5' is not an integer", "--set");
    BAD_FILE("model:\n  widths:\n    - 1\n    - [2]\n", "model.widths: item 2", "a list", "line 4");

    /* ranges */
    BAD_SET("optimizer.lr=-0.1", "optimizer.lr: -0.1 is below the minimum 0");
    BAD_FILE("optimizer:\n  lr: 11\n", "optimizer.lr: 11 is above the maximum 10", "line 2");
    BAD_SET("model.width=0", "model.width: 0 is below the minimum 1");
    BAD_SET("data.synthetic.n=1000000001", "data.synthetic.n", "maximum 1000000000");
    BAD_FILE("model:\n  widths: [4, 2000]\n",
             "model.widths: item 2 (2000) is above the maximum 1024", "line 2");

    /* choices */
    BAD_SET("optimizer.name=adam", "optimizer.name: 'adam' is not one of sgd|adamw|kfac",
            "did you mean adamw?");
    BAD_FILE("optimizer:\n  name: SGD\n", "optimizer.name: 'SGD' is not one of sgd|adamw|kfac",
             "did you mean sgd?", "line 2");
    BAD_SET("device=gpu", "device: 'gpu' is not one of auto|cpu|cuda");

    /* structure */
    BAD_FILE("optimizer:\n  lr: [0.1, 0.2]\n", "optimizer.lr: takes a single float, not a list",
             "line 2");
    BAD_FILE("optimizer:\n  lr:\n    value: 0.1\n", "optimizer.lr: takes a single float",
             "mapping");
    BAD_FILE("optimizer: adamw\n", "'optimizer' is a section", "optimizer.name", "line 1");
    BAD_SET("optimizer=adamw", "'optimizer' is a section", "optimizer.lr");
    BAD_FILE("optimizer:\n  lr: 0.1\noptimizer.lr: 0.2\n", "optimizer.lr is given twice",
             "line 2 and line 3");
    BAD_FILE("optimizer:\n  lr:\n", "optimizer.lr: no value given", "line 2", "default '0.1'");
    BAD_FILE("- 1\n- 2\n", "top level must be a mapping", "bad.yaml line 1");
    BAD_FILE("seed: 1\n---\nseed: 2\n", "second YAML document", "line 3");
    BAD_FILE("optimizer: &b\n  lr: 1\ndata:\n  <<: *b\n", "merge keys", "line 4");

    /* YAML syntax, with line and column */
    BAD_FILE("optimizer:\n  lr: [1, 2\n", "bad.yaml line", "YAML syntax error");
    BAD_FILE("seed: 1\noptimizer:\n  lr: 0.1: 2\n", "bad.yaml line 3 column", "YAML syntax error",
             "lr: 0.1: 2");
    BAD_FILE("optimizer:\n\tlr: 0.1\n", "bad.yaml line 2", "tab");
    BAD_FILE("seed: *nowhere\n", "bad.yaml line 1", "YAML syntax error");
    BAD_FILE("seed: \xff\xfe\x01\n", "bad.yaml", "UTF-8");

    /* files */
    {
        char missing[600];
        snprintf(missing, sizeof missing, "%s/nonexistent.yaml", dir);
        ng_config *volatile c = NULL;
        NG_TEST_ERROR(c = ng_config_load(spec, nspec, missing, NULL, 0), "nonexistent.yaml");
        NG_TEST_ERROR(c = ng_config_load(spec, nspec, dir, NULL, 0), "directory");
        if (c) ng_config_free(c);
    }

    /* required keys */
    static const ng_cfg_spec req[] = {
        {"run.name", NG_CFG_STRING, NULL, ANY, NULL, "name"},
        {"run.steps", NG_CFG_INT, "10", 1, 100, NULL, "steps"},
        {"run.width", NG_CFG_INT, NULL, 1, 100, NULL, "width"},
    };
    expect_bad(req, 1, NULL, NULL, 0, NEEDLES("run.name: required key is missing", "--set"));
    expect_bad(req, 3, "run:\n  steps: 5\n", NULL, 0,
               NEEDLES("required keys are missing", "run.name", "run.width", "bad.yaml"));
    {
        const char *sets[] = {"run.name=x", "run.width=5"};
        ng_config *c = ng_config_load(req, 3, NULL, sets, 2);
        NG_TEST(ng_cfg_int(c, "run.width") == 5 && !strcmp(ng_cfg_str(c, "run.name"), "x"),
                "required keys given by --set");
        ng_config_free(c);
    }

    /* programming errors: accessors and the schema */
    ng_config *c = ng_config_load(spec, nspec, NULL, NULL, 0);
    NG_TEST_ERROR(ng_cfg_int(c, "optimizer.lr"), "optimizer.lr");
    NG_TEST(strstr(ng_last_error(), "float"), "wrong accessor names the type: %s", ng_last_error());
    NG_TEST_ERROR(ng_cfg_str(c, "model.width"), "model.width");
    NG_TEST_ERROR(ng_cfg_float(c, "optimizer.lrr"), "optimizer.lrr");
    NG_TEST(strstr(ng_last_error(), "did you mean optimizer.lr"), "%s", ng_last_error());
    NG_TEST_ERROR(ng_cfg_source(c, "nope"), "nope");
    int64_t two[2];
    NG_TEST_ERROR(ng_cfg_int_list(c, "model.widths", two, 1), "model.widths: 2 items given");
    NG_TEST(ng_cfg_int_list(c, "model.widths", two, 2) == 2 && two[1] == 16, "list fits cap");
    ng_config_free(c);

    static const ng_cfg_spec bad_def[] = {{"a.x", NG_CFG_FLOAT, "2", 0, 1, NULL, ""}};
    expect_bad(bad_def, 1, NULL, NULL, 0, NEEDLES("config schema", "a.x", "maximum 1"));
    static const ng_cfg_spec dup[] = {{"a.x", NG_CFG_INT, "1", ANY, NULL, ""},
                                      {"a.x", NG_CFG_INT, "1", ANY, NULL, ""}};
    expect_bad(dup, 2, NULL, NULL, 0, NEEDLES("a.x is listed twice"));
    static const ng_cfg_spec clash[] = {{"a", NG_CFG_INT, "1", ANY, NULL, ""},
                                        {"a.x", NG_CFG_INT, "1", ANY, NULL, ""}};
    expect_bad(clash, 2, NULL, NULL, 0, NEEDLES("clash", "a.x"));
    static const ng_cfg_spec nochoice[] = {{"a.c", NG_CFG_CHOICE, "x", ANY, "x||y", ""}};
    expect_bad(nochoice, 1, NULL, NULL, 0, NEEDLES("a.c", "choices"));
}

/* Random values with --set on top, written out and read back: the same values, sources 'file'. */
static void test_round_trip(void) {
    values v = random_values();
    char text[2048], wl[160], dirq[300], s_lr[64], s_sh[64], s_n[64];
    widths_text(wl, sizeof wl, &v);
    quoted(dirq, sizeof dirq, v.dir);
    snprintf(text, sizeof text,
             "seed: %lld\nmodel:\n  arch: %s\n  widths: [%s]\n  dropout: %.17g\n"
             "optimizer.nesterov: %s\ndata: {dir: %s}\ntrain.offset: %lld\n",
             (long long)v.seed, v.arch, wl, v.dropout, v.nesterov ? "true" : "false", dirq,
             (long long)v.offset);
    v.lr = 1e-12 * unif01() + 1e-9; /* a value whose shortest text has an exponent */
    v.shift = -1e7 * unif01();
    v.n = rand_int(1, 1000000000);
    snprintf(s_lr, sizeof s_lr, "optimizer.lr=%.17g", v.lr);
    snprintf(s_sh, sizeof s_sh, "optimizer.shift=%.17g", v.shift);
    snprintf(s_n, sizeof s_n, "data.synthetic.n=%lld", (long long)v.n);
    const char *sets[] = {s_lr, s_sh, s_n};
    ng_config *c = ng_config_load(spec, nspec, write_cfg("rt_in.yaml", text), sets, 3);
    /* the keys neither gives keep their defaults */
    values d = defaults();
    v.width = d.width, v.batchnorm = d.batchnorm, strcpy(v.name, d.name);
    strcpy(v.device, d.device);
    check_values(c, &v, "file + --set before writing");

    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    ng_config_write_yaml(c, m, "git abc123\n\nnatgrad 0.1.0 (test)\n");
    fclose(m);
    NG_TEST(!strncmp(buf, "# git abc123\n#\n# natgrad 0.1.0 (test)\n", 38),
            "header lines become comments: %.60s", buf);
    NG_TEST(strstr(buf, "optimizer:\n") && strstr(buf, "  synthetic:\n") &&
                !strstr(buf, "optimizer.") && strstr(buf, "# from --set"),
            "written as nested YAML with sources noted:\n%s", buf);
    const char *path = write_cfg("rt_out.yaml", buf);
    free(buf);
    ng_config *c2 = ng_config_load(spec, nspec, path, NULL, 0);
    check_values(c2, &v, "written and read back");
    int all_file = 1;
    for (int i = 0; i < nspec; i++) all_file &= !strcmp(ng_cfg_source(c2, spec[i].key), "file");
    NG_TEST(all_file, "every key of a written config comes back from the file");

    /* strings that YAML would otherwise retype or break survive */
    const char *odd[] = {"data.dir=", "model.arch=no", "model.arch=1e3", "model.arch=a: b # c",
                         "model.arch=tab\there\\back"};
    for (int k = 0; k < 5; k++) {
        ng_config *c3 = ng_config_load(spec, nspec, NULL, &odd[k], 1);
        buf = NULL, len = 0;
        m = open_memstream(&buf, &len);
        ng_config_write_yaml(c3, m, NULL);
        fclose(m);
        ng_config *c4 = ng_config_load(spec, nspec, write_cfg("odd.yaml", buf), NULL, 0);
        const char *key = k == 0 ? "data.dir" : "model.arch", *want = strchr(odd[k], '=') + 1;
        NG_TEST(!strcmp(ng_cfg_str(c4, key), want), "string '%s' round trips as '%s'", want,
                ng_cfg_str(c4, key));
        free(buf);
        ng_config_free(c3);
        ng_config_free(c4);
    }
    ng_config_free(c);
    ng_config_free(c2);
}

static void test_schema_help(void) {
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    static const ng_cfg_spec req[] = {{"run.name", NG_CFG_STRING, NULL, ANY, NULL, "run name"}};
    ng_config_print_schema(spec, nspec, m);
    ng_config_print_schema(req, 1, m);
    fclose(m);
    int every = 1;
    for (int i = 0; i < nspec; i++) every &= strstr(buf, spec[i].key) && strstr(buf, spec[i].help);
    NG_TEST(every, "--help-config lists every key with its help");
    NG_TEST(strstr(buf, "sgd|adamw|kfac") && strstr(buf, "(required)") &&
                strstr(buf, "1 to 4096") && strstr(buf, "int list"),
            "--help-config shows choices, required keys, ranges and types:\n%s", buf);
    free(buf);
}

/* Deep nesting is refused while parsing, before a document is built: 100k levels of '[' used
 * to take time growing with the square of the depth. Depths and the nesting style are drawn at
 * random; the bound on the time is loose (the old reader needed hours). */
static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void test_nesting(void) {
    static const char *const opens[] = {"[", "{a: ", "- "};
    static const char *const heads[] = {
        "seed: 1\nmodel:\n  widths: ", "seed: 1\nmodel:\n  widths: ",
        "seed: 1\nmodel:\n  widths:\n  "};
    static const char *const lines[] = {"bad.yaml line 3", "bad.yaml line 3", "bad.yaml line 4"};
    for (int style = 0; style < 3; style++) {
        int depth = (int)rand_int(100000, 120000);
        size_t w = strlen(opens[style]);
        char *text = malloc(w * (size_t)depth + 64);
        size_t n = (size_t)snprintf(text, 64, "%s", heads[style]);
        for (int k = 0; k < depth; k++, n += w) memcpy(text + n, opens[style], w);
        text[n] = 0;
        double t0 = now_s();
        BAD_FILE(text, lines[style], "nest deeper than 64 levels");
        double dt = now_s() - t0;
        NG_TEST(dt < 10, "%d levels of '%s' rejected in %.2f s", depth, opens[style], dt);
        free(text);
    }
    /* block mappings, one level per line */
    char text[8192];
    size_t n = 0;
    for (int k = 0; k < 70; k++) n += (size_t)snprintf(text + n, sizeof text - n, "%*sa:\n", k, "");
    BAD_FILE(text, "nest deeper than 64", "line 65");
    /* within the limit: the old checks still speak */
    n = 0;
    for (int k = 0; k < 20; k++) n += (size_t)snprintf(text + n, sizeof text - n, "[");
    for (int k = 0; k < 20; k++) n += (size_t)snprintf(text + n, sizeof text - n, "]");
    char file[9000];
    snprintf(file, sizeof file, "model:\n  widths: %s\n", text);
    BAD_FILE(file, "model.widths: item 1", "a list");
    /* aliases may not multiply the walk: M references to a mapping of M references to an empty
     * section visit M^2 pairs (a 16 MiB file would reach 10^12) */
    int m = (int)rand_int(400, 600);
    size_t cap = 40 * (size_t)m + 100;
    char *big = malloc(cap);
    n = (size_t)snprintf(big, cap, "data: &d {synthetic: &s {}");
    for (int k = 1; k < m; k++) n += (size_t)snprintf(big + n, cap - n, ", synthetic: *s");
    n += (size_t)snprintf(big + n, cap - n, "}\n");
    for (int k = 1; k < m; k++) n += (size_t)snprintf(big + n, cap - n, "data: *d\n");
    BAD_FILE(big, "more than 100000 keys", "aliases");
    free(big);
}

/* Any UTF-8 string value survives write_yaml and reading back, whatever YAML reads specially
 * (C1 controls, line separators, a byte order mark); bytes that are not UTF-8 are refused. */
static void test_string_escapes(void) {
    static const char *const pieces[] = {"a",
                                         " ",
                                         "\"",
                                         "\\",
                                         "\t",
                                         "\x01",
                                         "\x7f",
                                         "\xc2\x80",
                                         "\xc2\x85",
                                         "\xc2\xa0",
                                         "\xe2\x80\xa8",
                                         "\xe2\x80\xa9",
                                         "\xef\xbb\xbf",
                                         "\xef\xbf\xbd",
                                         "\xf0\x9f\x99\x82",
                                         "#",
                                         ": ",
                                         "\n",
                                         "'",
                                         "- "};
    const int np = (int)(sizeof pieces / sizeof *pieces);
    for (int trial = 0; trial < 20; trial++) {
        char value[256] = "", set[300];
        int n = (int)rand_int(1, 12);
        for (int k = 0; k < n; k++) strcat(value, pieces[rand_int(0, np - 1)]);
        snprintf(set, sizeof set, "data.dir=%s", value);
        /* --set trims surrounding spaces and one pair of quotes: compare with what it keeps */
        const char *sets[] = {set};
        ng_config *c = ng_config_load(spec, nspec, NULL, sets, 1);
        char *kept = strdup(ng_cfg_str(c, "data.dir"));
        const char *path = write_cfg("rt_out.yaml", "");
        FILE *f = fopen(path, "w");
        ng_config_write_yaml(c, f, "escapes");
        fclose(f);
        ng_config_free(c);
        ng_config *back = ng_config_load(spec, nspec, path, NULL, 0); /* exits 2 if unreadable */
        NG_TEST(!strcmp(ng_cfg_str(back, "data.dir"), kept), "string value %d read back the same",
                trial);
        ng_config_free(back);
        free(kept);
    }
    BAD_SET("data.dir=ab\xff", "data.dir", "not UTF-8");
    BAD_SET("data.dir=\xed\xa0\x80", "data.dir", "not UTF-8"); /* a surrogate */
    BAD_SET("data.dir=\xc0\xaf", "data.dir", "not UTF-8");     /* overlong '/' */
}

/* Under the default handler a bad config ends the program with status 2 and says why. */
static void bad_config_child(void) {
    const char *path = write_cfg("child.yaml", "optimizer:\n  name: adam\n");
    ng_config_load(spec, nspec, path, NULL, 0);
}

static void test_exit_status(void) {
    char said[2048];
    int st = ng_test_run_child(bad_config_child, said, sizeof said);
    NG_TEST(WIFEXITED(st) && WEXITSTATUS(st) == NG_EXIT_USAGE, "a bad config exits with status 2");
    NG_TEST(strstr(said, "natgrad: error:") && strstr(said, "optimizer.name") &&
                strstr(said, "sgd|adamw|kfac") && strstr(said, "child.yaml line 2"),
            "the message names key, choices, file and line: %s", said);
}

int main(void) {
    ng_test_seed();
    snprintf(dir, sizeof dir, "/tmp/ng_test_config_XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_defaults();
    test_file_forms();
    test_values_and_sets();
    test_errors();
    test_nesting();
    test_string_escapes();
    test_round_trip();
    test_schema_help();
    test_exit_status();

    const char *names[] = {"empty.yaml", "nested.yaml", "dotted.yaml", "mixed.yaml", "forms.yaml",
                           "bad.yaml",   "rt_in.yaml",  "rt_out.yaml", "odd.yaml",   "child.yaml"};
    char p[600];
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
        snprintf(p, sizeof p, "%s/%s", dir, names[k]);
        unlink(p);
    }
    rmdir(dir);
    return ng_test_finish("test_config");
}
