/* Run directories, checkpoints and the metrics log. */
#define _GNU_SOURCE /* strdup, mkdtemp */
#include "apps/run.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "core/safetensors.h"
#include "nn/weights.h"

static void join(char *out, size_t cap, const char *a, const char *b) {
    int n = snprintf(out, cap, "%s/%s", a, b);
    NG_CHECK(n > 0 && (size_t)n < cap, "path %s/%s is too long", a, b);
}

static void mkdir_p(const char *path) {
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            mkdir(tmp, 0755);
            *p = '/';
        }
    NG_CHECK(!mkdir(tmp, 0755) || errno == EEXIST, "cannot create %s: %s", path, strerror(errno));
}

void ng_run_dir_create(const char *dir) {
    char ck[4096];
    mkdir_p(dir);
    join(ck, sizeof ck, dir, "checkpoints");
    mkdir_p(ck);
}

void ng_run_write(const char *dir, const char *name, const char *text) {
    char p[4096];
    join(p, sizeof p, dir, name);
    ng_write_file_atomic(p, text, strlen(text));
}

static int is_complete(const char *ckpt) {
    char p[4096];
    join(p, sizeof p, ckpt, "COMPLETE");
    return access(p, F_OK) == 0;
}

/* Step numbers of the checkpoint folders (complete or not), ascending. */
static int list_steps(const char *dir, int64_t *steps, int cap) {
    char ck[4096];
    join(ck, sizeof ck, dir, "checkpoints");
    DIR *d = opendir(ck);
    if (!d) return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < cap) {
        long long s;
        char tail;
        if (sscanf(e->d_name, "step-%lld%c", &s, &tail) == 1) steps[n++] = s;
    }
    closedir(d);
    for (int i = 1; i < n; i++) /* insertion sort: a few entries */
        for (int j = i; j > 0 && steps[j - 1] > steps[j]; j--) {
            int64_t t = steps[j];
            steps[j] = steps[j - 1], steps[j - 1] = t;
        }
    return n;
}

static void ckpt_path(char *out, size_t cap, const char *dir, int64_t step) {
    int n = snprintf(out, cap, "%s/checkpoints/step-%08lld", dir, (long long)step);
    NG_CHECK(n > 0 && (size_t)n < cap, "checkpoint path under %s is too long", dir);
}

static void remove_tree(const char *path) {
    DIR *d = opendir(path);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            char p[4096];
            join(p, sizeof p, path, e->d_name);
            unlink(p);
        }
        closedir(d);
    }
    rmdir(path);
}

/* A table of named state tensors (optimizer, K-FAC) as one safetensors file. */
static void save_table(const char *path, const char **names, ng_tensor **ts, int n,
                       const char **meta) {
    ng_st_entry *e = malloc(sizeof *e * (size_t)(n + 1));
    for (int i = 0; i < n; i++) e[i] = (ng_st_entry){names[i], ts[i]};
    ng_safetensors_save(path, e, n, meta);
    free(e);
}

/* Reads a table back into the tensors it was saved from: every name present, same dtype and
 * shape, nothing extra. */
static void load_table(ng_safetensors *f, const char **names, ng_tensor **ts, int n,
                       const char *what) {
    const char *p = ng_safetensors_path(f);
    NG_CHECK(ng_safetensors_count(f) == n, "%s: %d tensors, the %s has %d state tensors", p,
             ng_safetensors_count(f), what, n);
    for (int i = 0; i < n; i++) {
        ng_tensor t;
        NG_CHECK(ng_safetensors_find(f, names[i], &t), "%s: %s state %s is missing", p, what,
                 names[i]);
        NG_CHECK(t.dtype == ts[i]->dtype && ng_tensor_same_shape(&t, ts[i]),
                 "%s: %s state %s is %s, expected %s", p, what, names[i], ng_tensor_desc(&t),
                 ng_tensor_desc(ts[i]));
        ng_tensor_copy(ts[i], &t);
    }
}

/* K-FAC's state table, sized by a first call. */
static int kfac_table(ng_kfac *k, const char ***names, ng_tensor ***ts) {
    int n = ng_kfac_state(k, NULL, NULL, 0);
    *names = malloc(sizeof **names * (size_t)(n + 1));
    *ts = malloc(sizeof **ts * (size_t)(n + 1));
    return ng_kfac_state(k, *names, *ts, n);
}

void ng_checkpoint_save(const char *dir, ng_model *m, ng_optimizer *o, ng_kfac *k,
                        ng_run_position pos, int64_t keep) {
    char ck[4096], p[4096];
    ckpt_path(ck, sizeof ck, dir, pos.step);
    remove_tree(ck); /* an incomplete folder of the same step from a crashed run */
    mkdir_p(ck);
    char step[32], epoch[32], index[32], ostep[32], secs[48];
    snprintf(secs, sizeof secs, "%.17g", pos.train_s);
    snprintf(step, sizeof step, "%lld", (long long)pos.step);
    snprintf(epoch, sizeof epoch, "%lld", (long long)pos.epoch);
    snprintf(index, sizeof index, "%lld", (long long)pos.index);
    snprintf(ostep, sizeof ostep, "%lld", (long long)ng_optimizer_get_step(o));
    const char *meta[] = {"format", "pt",  "step",    step, "epoch", epoch,
                          "index",  index, "train_s", secs, NULL};
    join(p, sizeof p, ck, "model.safetensors");
    ng_weights_save(m, p, meta);
    const char *names[NG_OPTIM_MAX_STATE + 1];
    ng_tensor *ts[NG_OPTIM_MAX_STATE + 1];
    int n = ng_optimizer_state(o, names, ts, NG_OPTIM_MAX_STATE);
    join(p, sizeof p, ck, "optimizer.safetensors");
    save_table(p, names, ts, n, (const char *[]){"optimizer_step", ostep, NULL});
    if (k) {
        const char **kn;
        ng_tensor **kt;
        int kc = kfac_table(k, &kn, &kt);
        join(p, sizeof p, ck, "kfac.safetensors");
        save_table(p, kn, kt, kc, NULL);
        free(kn), free(kt);
    }
    /* The marker last: a checkpoint without it is one a crash interrupted. */
    join(p, sizeof p, ck, "COMPLETE");
    ng_write_file_atomic(p, step, strlen(step));
    int64_t steps[4096];
    int ns = list_steps(dir, steps, 4096), kept = 0;
    for (int i = ns - 1; i >= 0; i--) {
        char c[4096];
        ckpt_path(c, sizeof c, dir, steps[i]);
        if (is_complete(c) && kept < keep) {
            kept++;
            continue;
        }
        if (steps[i] < pos.step) remove_tree(c);
    }
}

int ng_checkpoint_latest(const char *dir, char *out, size_t cap) {
    int64_t steps[4096];
    int n = list_steps(dir, steps, 4096);
    for (int i = n - 1; i >= 0; i--) {
        ckpt_path(out, cap, dir, steps[i]);
        if (is_complete(out)) return 1;
    }
    return 0;
}

static int64_t meta_int(ng_safetensors *f, const char *key) {
    const char *v = ng_safetensors_meta(f, key);
    char *end = NULL;
    long long x = v ? strtoll(v, &end, 10) : -1;
    NG_CHECK(v && *v && end && !*end && x >= 0, "%s: metadata '%s' is missing or not a count",
             ng_safetensors_path(f), key);
    return x;
}

ng_run_position ng_checkpoint_load(const char *ckpt, ng_model *m, ng_optimizer *o, ng_kfac *k) {
    char p[4096];
    NG_CHECK(is_complete(ckpt), "%s is not a complete checkpoint (no COMPLETE marker)", ckpt);
    join(p, sizeof p, ckpt, "model.safetensors");
    ng_weights_load(m, p);
    ng_safetensors *f = ng_safetensors_open(p);
    ng_run_position pos = {meta_int(f, "step"), meta_int(f, "epoch"), meta_int(f, "index"), 0};
    const char *secs = ng_safetensors_meta(f, "train_s");
    pos.train_s = secs ? strtod(secs, NULL) : 0;
    ng_safetensors_close(f);
    join(p, sizeof p, ckpt, "optimizer.safetensors");
    f = ng_safetensors_open(p);
    const char *names[NG_OPTIM_MAX_STATE + 1];
    ng_tensor *ts[NG_OPTIM_MAX_STATE + 1];
    load_table(f, names, ts, ng_optimizer_state(o, names, ts, NG_OPTIM_MAX_STATE), "optimizer");
    ng_optimizer_set_step(o, meta_int(f, "optimizer_step"));
    ng_safetensors_close(f);
    join(p, sizeof p, ckpt, "kfac.safetensors");
    NG_CHECK(!k == (access(p, F_OK) != 0),
             "%s: the checkpoint %s K-FAC state but this run %s K-FAC (kfac.enabled)", ckpt,
             k ? "has no" : "holds", k ? "uses" : "does not use");
    if (k) {
        const char **kn;
        ng_tensor **kt;
        int kc = kfac_table(k, &kn, &kt);
        f = ng_safetensors_open(p);
        load_table(f, kn, kt, kc, "K-FAC");
        ng_safetensors_close(f);
        free(kn), free(kt);
    }
    return pos;
}

ng_metrics ng_metrics_open(const char *dir, int64_t resume_step) {
    char p[4096];
    join(p, sizeof p, dir, "metrics.jsonl");
    if (resume_step >= 0) {
        /* Keep the lines up to the resumed step: what came after was lost with the crash and
         * will be written again. */
        FILE *in = fopen(p, "r");
        if (in) {
            size_t cap = 1 << 16, len = 0;
            char *kept = malloc(cap), line[8192];
            while (fgets(line, sizeof line, in)) {
                const char *s = strstr(line, "\"step\": ");
                long long st = s ? atoll(s + 8) : 0;
                if (st > resume_step) continue;
                size_t l = strlen(line);
                if (len + l + 1 > cap) kept = realloc(kept, cap *= 2);
                memcpy(kept + len, line, l);
                len += l;
            }
            fclose(in);
            ng_write_file_atomic(p, kept, len);
            free(kept);
        }
    }
    ng_metrics m = {fopen(p, resume_step >= 0 ? "a" : "w")};
    NG_CHECK(m.f, "cannot write %s: %s", p, strerror(errno));
    return m;
}

void ng_metrics_line(ng_metrics *m, const char *json) {
    fputs(json, m->f);
    fputc('\n', m->f);
    fflush(m->f);
}

void ng_metrics_close(ng_metrics *m) {
    if (m->f) fclose(m->f);
    m->f = NULL;
}
