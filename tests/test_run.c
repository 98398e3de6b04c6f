/* The run directory's pieces (apps/run.h, apps/metrics.h): JSON numbers, checkpoint positions
 * written and read back (and never over non-finite weights), the metrics log's trimming on resume,
 * and the directory lock. The end-to-end behaviour is in tests/train_*.sh. */
#define _GNU_SOURCE /* mkdtemp */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "apps/run.h"
#include "core/ops.h"
#include "nn/models.h"
#include "tests/testing.h"

static ng_model *tiny_model(uint64_t seed) {
    ng_arch a;
    ng_arch_defaults("mlp", &a);
    a.in_ch = 1, a.img = 4, a.classes = 3, a.width = 8, a.depth = 1;
    ng_model *m = ng_model_new(ng_arch_build(&a));
    ng_model_build(m, NG_CPU, NG_F32, seed, 1 << 20, 1 << 20);
    return m;
}

static char *slurp(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return strdup("");
    char *buf = calloc(1, 1 << 16);
    size_t n = fread(buf, 1, (1 << 16) - 1, f);
    buf[n] = 0;
    fclose(f);
    return buf;
}

static void test_json_num(void) {
    NG_TEST(!strcmp(ng_json_num("%.4f", 1.5).s, "1.5000"), "1.5 as %%.4f");
    NG_TEST(!strcmp(ng_json_num("%.9g", NAN).s, "null"), "NaN is null");
    NG_TEST(!strcmp(ng_json_num("%.9g", INFINITY).s, "null"), "inf is null");
    NG_TEST(!strcmp(ng_json_num("%.9g", -INFINITY).s, "null"), "-inf is null");
}

static void test_checkpoint(const char *dir) {
    ng_model *m = tiny_model(ng_test_seed());
    ng_test_fill_uniform(&m->flat_grads, -1, 1);
    ng_optimizer *o = ng_optimizer_new(m, &(ng_optim_config){.name = "sgd", .momentum = 0.9});
    ng_optimizer_step(o, 0.1);
    ng_run_position pos = {.step = 7,
                           .epoch = 2,
                           .index = 3,
                           .train_s = 1.25,
                           .optimizer_step = 1,
                           .skipped = 6,
                           .skip_streak = 2};
    NG_TEST(ng_checkpoint_save(dir, m, o, pos, 2, NULL), "checkpoint of finite weights saved");
    char ck[4096];
    NG_TEST(ng_checkpoint_latest(dir, ck, sizeof ck), "the checkpoint is found");
    ng_run_position got = ng_checkpoint_position(ck);
    NG_TEST(!memcmp(&got, &pos, sizeof pos),
            "position read back: step %lld epoch %lld index %lld "
            "train_s %g optimizer_step %lld skipped %lld streak %lld",
            (long long)got.step, (long long)got.epoch, (long long)got.index, got.train_s,
            (long long)got.optimizer_step, (long long)got.skipped, (long long)got.skip_streak);

    ng_model *m2 = tiny_model(ng_test_seed() + 1);
    ng_optimizer *o2 = ng_optimizer_new(m2, &(ng_optim_config){.name = "sgd", .momentum = 0.9});
    got = ng_checkpoint_load(ck, m2, o2);
    NG_TEST(got.step == 7 && ng_optimizer_get_step(o2) == 1, "load: step and optimizer step");
    NG_TEST(!memcmp(m->flat_params.data, m2->flat_params.data, (size_t)m->numel * sizeof(float)),
            "load restores the weights bit for bit");

    /* A NaN weight: no checkpoint at all, the newest stays the old one. */
    ng_fill(&m->params[0].param->value, NAN);
    pos.step = 8;
    NG_TEST(!ng_checkpoint_save(dir, m, o, pos, 2, NULL), "non-finite weights are not saved");
    char p[4200];
    snprintf(p, sizeof p, "%s/checkpoints/step-00000008", dir);
    NG_TEST(access(p, F_OK) != 0, "no folder for the refused checkpoint");
    NG_TEST(ng_checkpoint_latest(dir, ck, sizeof ck) && strstr(ck, "step-00000007"),
            "the newest complete checkpoint is still step 7 (%s)", ck);

    /* A folder whose name disagrees with the step it holds. */
    snprintf(p, sizeof p, "%s/checkpoints/step-00000009", dir);
    NG_TEST(!rename(ck, p), "rename %s", ck);
    NG_TEST_ERROR(ng_checkpoint_position(p), "metadata 'step' is 7 but the folder is step 9");
    ng_optimizer_free(o), ng_optimizer_free(o2);
    ng_model_free(m), ng_model_free(m2);
}

static void test_metrics(const char *dir) {
    ng_metrics mt = ng_metrics_open(dir, -1);
    for (int s = 1; s <= 3; s++) {
        char line[64];
        snprintf(line, sizeof line, "{\"type\": \"train\", \"step\": %d}", s);
        ng_metrics_line(&mt, line);
    }
    ng_metrics_close(&mt);
    char path[4200];
    snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
    char *text = slurp(path);
    NG_TEST(!strcmp(text, "{\"type\": \"train\", \"step\": 1}\n{\"type\": \"train\", \"step\": 2}\n"
                          "{\"type\": \"train\", \"step\": 3}\n"),
            "three whole lines: %s", text);
    free(text);
    /* A crash mid-line leaves a line without its newline: resume drops it with later steps. */
    FILE *f = fopen(path, "a");
    fputs("{\"type\": \"train\", \"st", f);
    fclose(f);
    mt = ng_metrics_open(dir, 2);
    ng_metrics_line(&mt, "{\"type\": \"train\", \"step\": 3}");
    ng_metrics_close(&mt);
    text = slurp(path);
    NG_TEST(!strcmp(text, "{\"type\": \"train\", \"step\": 1}\n{\"type\": \"train\", \"step\": 2}\n"
                          "{\"type\": \"train\", \"step\": 3}\n"),
            "resume at step 2 keeps steps 1-2, drops the torn line: %s", text);
    free(text);
}

int main(void) {
    char dir[] = "/tmp/ng_test_run_XXXXXX";
    NG_TEST(mkdtemp(dir) != NULL, "mkdtemp");
    test_json_num();
    ng_run_dir_create(dir);
    /* flock locks belong to an open file: a second open in this same process is refused too. */
    char pid[32];
    snprintf(pid, sizeof pid, "pid %lld", (long long)getpid());
    NG_TEST_ERROR(ng_run_dir_create(dir), pid);
    test_checkpoint(dir);
    test_metrics(dir);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    NG_TEST(system(cmd) == 0, "%s", cmd);
    return ng_test_finish("test_run");
}
