/* Run directories, checkpoints and the metrics log. */
#define _GNU_SOURCE /* strdup, mkdtemp */
#include "apps/run.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "comm/comm.h"
#include "core/error.h"
#include "core/ops.h"
#include "core/safetensors.h"
#include "apps/optimizers.h"
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

/* The lock is held through this descriptor until the process exits (never closed). */
static void lock_dir(const char *dir) {
    char p[4096];
    join(p, sizeof p, dir, ".lock");
    int fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    NG_CHECK(fd >= 0, "cannot open %s: %s", p, strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB)) {
        NG_CHECK(errno == EWOULDBLOCK, "cannot lock %s: %s", p, strerror(errno));
        char pid[32] = "";
        ssize_t n = pread(fd, pid, sizeof pid - 1, 0);
        pid[n > 0 ? n : 0] = 0;
        pid[strcspn(pid, "\n")] = 0;
        ng_fail("run directory %s is in use by another natgrad process%s%s%s; wait for it to end "
                "or choose another --out",
                dir, *pid ? " (pid " : "", pid, *pid ? ")" : "");
    }
    char pid[32];
    int n = snprintf(pid, sizeof pid, "%lld\n", (long long)getpid());
    /* The pid is a courtesy for the message above; the lock itself is what protects DIR. */
    if (ftruncate(fd, 0) || pwrite(fd, pid, (size_t)n, 0) != n)
        fprintf(stderr, "natgrad: warning: cannot write the pid into %s\n", p);
}

void ng_run_dir_create(const char *dir) {
    char ck[4096];
    mkdir_p(dir);
    lock_dir(dir);
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

/* Reads the table in file p back into the tensors it was saved from: every name present, same
 * dtype and shape, nothing extra. Every entry is checked before any is copied; on a mismatch the
 * file is closed, the message left in err and 0 returned, so that the caller frees what it holds
 * before failing (a caught error leaks nothing). */
static int load_table(const char *p, const char **names, ng_tensor **ts, int n, const char *what,
                      char *err, size_t cap) {
    ng_safetensors *f = ng_safetensors_open(p);
    err[0] = 0;
    if (ng_safetensors_count(f) != n)
        snprintf(err, cap, "%s: %d tensors, the %s has %d state tensors", p,
                 ng_safetensors_count(f), what, n);
    for (int i = 0; i < n && !err[0]; i++) {
        ng_tensor t;
        if (!ng_safetensors_find(f, names[i], &t))
            snprintf(err, cap, "%s: %s state %s is missing", p, what, names[i]);
        else if (t.dtype != ts[i]->dtype || !ng_tensor_same_shape(&t, ts[i]))
            snprintf(err, cap, "%s: %s state %s is %s, expected %s", p, what, names[i],
                     ng_tensor_desc(&t), ng_tensor_desc(ts[i]));
    }
    for (int i = 0; i < n && !err[0]; i++) {
        ng_tensor t;
        ng_safetensors_find(f, names[i], &t);
        ng_tensor_copy(ts[i], &t);
    }
    ng_safetensors_close(f);
    return !err[0];
}

/* A part's state table, sized by a first call; the caller frees both arrays. */
static int part_table(ng_optimizer *part, const char ***names, ng_tensor ***ts) {
    int n = ng_optimizer_state_count(part);
    *names = malloc(sizeof **names * (size_t)(n + 1));
    *ts = malloc(sizeof **ts * (size_t)(n + 1));
    NG_CHECK(*names && *ts, "out of host memory listing %s state", part->ops->title);
    return ng_optimizer_state(part, *names, *ts, n);
}

/* The parts of the chain o, outer first, into parts[NG_OPTIM_MAX_PARTS]. */
static int chain_parts(ng_optimizer *o, ng_optimizer **parts) {
    int np = ng_optimizer_parts(o, parts, NG_OPTIM_MAX_PARTS);
    NG_CHECK(np <= NG_OPTIM_MAX_PARTS, "optimizer: %d parts, at most %d", np, NG_OPTIM_MAX_PARTS);
    return np;
}

/* Whether weights, buffers and every part's state are finite: what a checkpoint may hold. */
static int state_finite(ng_model *m, ng_optimizer *o) {
    if (!ng_all_finite(&m->flat_params) || (m->nbuffers && !ng_all_finite(&m->flat_buffers)))
        return 0;
    ng_optimizer *parts[NG_OPTIM_MAX_PARTS];
    int np = chain_parts(o, parts), ok = 1;
    for (int p = 0; p < np && ok; p++) {
        const char **names;
        ng_tensor **ts;
        int n = part_table(parts[p], &names, &ts);
        for (int i = 0; i < n && ok; i++) ok = ng_all_finite(ts[i]);
        free(names), free(ts);
    }
    return ok;
}

/* Whether a part keeps a state file: every part with a state table (a base always, for its step
 * count); a part that keeps nothing between steps (loss smoothing) has none. */
static int has_file(const ng_optimizer *part) {
    return part->ops->state != NULL;
}

/* A part's state file in a checkpoint folder: "<file>.safetensors", or this rank's shard
 * "<file>.rankR-of-W.safetensors" when the part is sharded. Returns whether it is a shard. */
static int part_file(char *out, size_t cap, const char *ck, const ng_optimizer *part) {
    int r, w, sharded = ng_optimizer_sharded(part, &r, &w);
    char name[256];
    if (sharded)
        snprintf(name, sizeof name, "%s.rank%d-of-%d.safetensors", part->ops->file, r, w);
    else
        snprintf(name, sizeof name, "%s.safetensors", part->ops->file);
    join(out, cap, ck, name);
    return sharded;
}

static void barrier(ng_comm *c) {
    if (c) ng_comm_barrier(c);
}

int ng_checkpoint_save(const char *dir, ng_model *m, ng_optimizer *o, ng_run_position pos,
                       int64_t keep, ng_comm *c) {
    /* One decision for all ranks (their batch-norm buffers may differ). */
    double bad = !state_finite(m, o);
    if (c) ng_comm_scalars(c, &bad, 1, NG_COMM_SCALAR_MAX);
    if (bad) return 0;
    char step[32];
    snprintf(step, sizeof step, "%lld", (long long)pos.step);
    int rank0 = !c || ng_comm_rank(c) == 0;
    char ck[4096], p[4096];
    ckpt_path(ck, sizeof ck, dir, pos.step);
    if (rank0) {
        remove_tree(ck); /* an incomplete folder of the same step from a crashed run */
        mkdir_p(ck);
    }
    barrier(c); /* the folder exists, empty, before any rank writes into it */
    /* Every part's state: rank 0 writes the replicated ones, every rank its own shards. The base's
     * file carries the chain's step count. */
    char ostep[32];
    snprintf(ostep, sizeof ostep, "%lld", (long long)ng_optimizer_get_step(o));
    ng_optimizer *parts[NG_OPTIM_MAX_PARTS];
    int np = chain_parts(o, parts);
    for (int i = 0; i < np; i++) {
        if (!has_file(parts[i])) continue;
        int sharded = part_file(p, sizeof p, ck, parts[i]);
        if (!sharded && !rank0) continue;
        const char **names;
        ng_tensor **ts;
        int n = part_table(parts[i], &names, &ts);
        save_table(p, names, ts, n,
                   i == np - 1 ? (const char *[]){"optimizer_step", ostep, NULL} : NULL);
        free(names), free(ts);
    }
    if (rank0) {
        char epoch[32], index[32], secs[48], skipped[32], streak[32], scale[48], clean[32];
        snprintf(scale, sizeof scale, "%.17g", pos.loss_scale);
        snprintf(clean, sizeof clean, "%lld", (long long)pos.scale_clean);
        snprintf(secs, sizeof secs, "%.17g", pos.train_s);
        snprintf(skipped, sizeof skipped, "%lld", (long long)pos.skipped);
        snprintf(streak, sizeof streak, "%lld", (long long)pos.skip_streak);
        snprintf(epoch, sizeof epoch, "%lld", (long long)pos.epoch);
        snprintf(index, sizeof index, "%lld", (long long)pos.index);
        const char *meta[] = {"format",
                              "pt",
                              "step",
                              step,
                              "epoch",
                              epoch,
                              "index",
                              index,
                              "train_s",
                              secs,
                              "skipped",
                              skipped,
                              "skip_streak",
                              streak,
                              "loss_scale",
                              scale,
                              "loss_scale_clean",
                              clean,
                              NULL};
        join(p, sizeof p, ck, "model.safetensors");
        ng_weights_save(m, p, meta);
    }
    barrier(c); /* every shard is on disk */
    if (!rank0) return 1;
    /* The marker last: a checkpoint without it is one a crash interrupted. */
    join(p, sizeof p, ck, "COMPLETE");
    ng_write_file_atomic(p, step, strlen(step));
    int64_t steps[4096];
    int ns = list_steps(dir, steps, 4096), kept = 0;
    for (int i = ns - 1; i >= 0; i--) {
        char old[4096];
        ckpt_path(old, sizeof old, dir, steps[i]);
        if (is_complete(old) && kept < keep) {
            kept++;
            continue;
        }
        if (steps[i] < pos.step) remove_tree(old);
    }
    return 1;
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

/* Metadata values of a safetensors file, copied out so that the file is closed before any check
 * of them can fail. A missing key reads as "", one too long for the copy as "?". */
enum {
    META_STEP,
    META_EPOCH,
    META_INDEX,
    META_TRAIN_S,
    META_SKIPPED,
    META_STREAK,
    META_SCALE,
    META_CLEAN,
    META_N
};
typedef char meta_text[96];
static void read_meta(const char *path, const char *const *keys, meta_text *out) {
    ng_safetensors *f = ng_safetensors_open(path);
    for (int i = 0; keys[i]; i++) {
        const char *v = ng_safetensors_meta(f, keys[i]);
        snprintf(out[i], sizeof out[i], "%s", !v ? "" : strlen(v) < sizeof out[i] ? v : "?");
    }
    ng_safetensors_close(f);
}

/* A count >= 0 from metadata text; `missing` when the key is absent and that is allowed (-1: not
 * allowed). */
static int64_t meta_count(const char *path, const char *key, const char *v, int64_t missing) {
    if (!*v && missing >= 0) return missing;
    char *end = NULL;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    NG_CHECK(*v && !*end && x >= 0 && !errno, "%s: metadata '%s' is missing or not a count (%s)",
             path, key, *v ? v : "missing");
    return x;
}

ng_run_position ng_checkpoint_position(const char *ckpt) {
    char p[4096], folder[4096];
    NG_CHECK(is_complete(ckpt), "%s is not a complete checkpoint (no COMPLETE marker)", ckpt);
    snprintf(folder, sizeof folder, "%s", ckpt);
    size_t fl = strlen(folder);
    while (fl > 1 && folder[fl - 1] == '/') folder[--fl] = 0;
    long long named;
    char tail;
    NG_CHECK(sscanf(basename(folder), "step-%lld%c", &named, &tail) == 1 && named >= 0,
             "%s: a checkpoint folder is named step-NNNNNNNN", ckpt);

    static const char *const keys[META_N + 1] = {
        "step",    "epoch",       "index",      "train_s",
        "skipped", "skip_streak", "loss_scale", "loss_scale_clean",
        NULL};
    meta_text v[META_N];
    join(p, sizeof p, ckpt, "model.safetensors");
    read_meta(p, keys, v);
    ng_run_position pos = {.step = meta_count(p, "step", v[META_STEP], -1),
                           .epoch = meta_count(p, "epoch", v[META_EPOCH], -1),
                           .index = meta_count(p, "index", v[META_INDEX], -1),
                           /* Checkpoints from before skipped steps were counted have none. */
                           .skipped = meta_count(p, "skipped", v[META_SKIPPED], 0),
                           .skip_streak = meta_count(p, "skip_streak", v[META_STREAK], 0),
                           .scale_clean = meta_count(p, "loss_scale_clean", v[META_CLEAN], 0)};
    NG_CHECK(pos.step == named, "%s: metadata 'step' is %lld but the folder is step %lld", p,
             (long long)pos.step, named);
    NG_CHECK(pos.epoch <= pos.step, "%s: metadata 'epoch' %lld is beyond step %lld", p,
             (long long)pos.epoch, (long long)pos.step);
    const char *secs = v[META_TRAIN_S];
    char *end = NULL;
    pos.train_s = *secs ? strtod(secs, &end) : 0;
    NG_CHECK(!*secs || (!*end && isfinite(pos.train_s) && pos.train_s >= 0),
             "%s: metadata 'train_s' is '%s', not a finite number of seconds >= 0", p, secs);
    /* Checkpoints from before mixed precision have no loss scale (0: the run's initial one). */
    const char *sc = v[META_SCALE];
    pos.loss_scale = *sc ? strtod(sc, &end) : 0;
    NG_CHECK(!*sc || (!*end && isfinite(pos.loss_scale) && pos.loss_scale >= 0),
             "%s: metadata 'loss_scale' is '%s', not a finite number >= 0", p, sc);
    NG_CHECK(pos.skipped <= pos.step && pos.skip_streak <= pos.skipped,
             "%s: metadata 'skipped' %lld / 'skip_streak' %lld do not fit step %lld", p,
             (long long)pos.skipped, (long long)pos.skip_streak, (long long)pos.step);

    join(p, sizeof p, ckpt, "optimizer.safetensors");
    read_meta(p, (const char *const[]){"optimizer_step", NULL}, v);
    pos.optimizer_step = meta_count(p, "optimizer_step", v[0], -1);
    /* Every step but a skipped one steps the optimizer once. */
    NG_CHECK(pos.optimizer_step == pos.step - pos.skipped,
             "%s: metadata 'optimizer_step' %lld is not the checkpoint's step %lld less its %lld "
             "skipped steps",
             p, (long long)pos.optimizer_step, (long long)pos.step, (long long)pos.skipped);
    return pos;
}

/* A state file in the checkpoint folder that no part of this run reads (the run that wrote it had
 * a part this one lacks) is a usage error naming it. */
static void check_no_foreign_state(const char *ckpt, ng_optimizer **parts, int np) {
    DIR *d = opendir(ckpt);
    NG_CHECK(d, "cannot read checkpoint folder %s: %s", ckpt, strerror(errno));
    char foreign[256] = "";
    struct dirent *e;
    while ((e = readdir(d)) && !foreign[0]) {
        const char *n = e->d_name, *ext = strstr(n, ".safetensors");
        if (!ext || ext[12] || !strcmp(n, "model.safetensors")) continue;
        size_t stem = strcspn(n, "."); /* "kfac" of kfac.safetensors and kfac.rank1-of-4... */
        int known = 0;
        for (int i = 0; i < np && !known; i++)
            known = strlen(parts[i]->ops->file) == stem && !strncmp(parts[i]->ops->file, n, stem);
        if (!known) snprintf(foreign, sizeof foreign, "%.*s", (int)stem, n);
    }
    closedir(d);
    if (!foreign[0]) return;
    char chain[128];
    ng_optimizer_describe(parts[0], chain, sizeof chain);
    const ng_optim_kind *k = ng_optim_kind_of_file(foreign);
    if (k)
        ng_fail("%s: the checkpoint holds %s state (%s.*) but this run (%s) does not use %s (%s)",
                ckpt, k->ops->title, foreign, chain, k->ops->title, k->enable_key);
    ng_fail("%s: the checkpoint holds optimizer state %s.* that no part of this run (%s) reads",
            ckpt, foreign, chain);
}

ng_run_position ng_checkpoint_load(const char *ckpt, ng_model *m, ng_optimizer *o) {
    char p[4096], err[8192]; /* room for the path and two tensor descriptions */
    ng_run_position pos = ng_checkpoint_position(ckpt);
    ng_optimizer *parts[NG_OPTIM_MAX_PARTS];
    int np = chain_parts(o, parts);
    /* Every file is checked to be there before any tensor is read. */
    check_no_foreign_state(ckpt, parts, np);
    for (int i = 0; i < np; i++) {
        if (!has_file(parts[i])) continue;
        int r = 0, w = 1, sharded = part_file(p, sizeof p, ckpt, parts[i]);
        ng_optimizer_sharded(parts[i], &r, &w);
        if (sharded)
            NG_CHECK(
                access(p, F_OK) == 0,
                "%s: no %s shard for rank %d of %d; a run whose %s state is sharded resumes on "
                "as many ranks as wrote its checkpoint",
                p, parts[i]->ops->title, r, w, parts[i]->ops->title);
        else
            NG_CHECK(access(p, F_OK) == 0,
                     "%s: the checkpoint has no %s state, which this run (%s) uses", p,
                     parts[i]->ops->title, parts[i]->ops->kind);
    }
    join(p, sizeof p, ckpt, "model.safetensors");
    ng_weights_load(m, p);
    for (int i = 0; i < np; i++) {
        if (!has_file(parts[i])) continue;
        part_file(p, sizeof p, ckpt, parts[i]);
        const char **names;
        ng_tensor **ts;
        int n = part_table(parts[i], &names, &ts);
        int ok = load_table(p, names, ts, n, parts[i]->ops->title, err, sizeof err);
        free(names), free(ts);
        if (!ok) ng_fail("%s", err);
    }
    ng_optimizer_set_step(o, pos.optimizer_step);
    NG_CHECK(state_finite(m, o), "%s: non-finite weights or optimizer state", ckpt);
    return pos;
}

void ng_run_write_result(const char *dir, ng_run_result r) {
    char text[512];
    snprintf(text, sizeof text,
             "{\"step\": %lld, \"test_loss\": %s, \"test_accuracy\": %s, \"examples\": %lld}\n",
             (long long)r.step, ng_json_num("%.9g", r.loss).s, ng_json_num("%.6f", r.accuracy).s,
             (long long)r.examples);
    ng_run_write(dir, "result.json", text);
}

int ng_run_read_result(const char *dir, ng_run_result *r) {
    char p[4096], text[512] = "";
    join(p, sizeof p, dir, "result.json");
    FILE *f = fopen(p, "r");
    if (!f) return 0;
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = 0;
    long long step, examples;
    /* null (a non-finite loss) reads as NaN. */
    char loss[64], acc[64];
    if (sscanf(text,
               "{\"step\": %lld, \"test_loss\": %63[^,], \"test_accuracy\": %63[^,], "
               "\"examples\": %lld}",
               &step, loss, acc, &examples) != 4)
        return 0;
    *r = (ng_run_result){step, examples, strtod(loss, NULL), strtod(acc, NULL)};
    if (!strcmp(loss, "null")) r->loss = NAN;
    if (!strcmp(acc, "null")) r->accuracy = NAN;
    return 1;
}
