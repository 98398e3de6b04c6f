/* A run directory: the resolved config, metrics as JSON lines, and checkpoints that are
 * complete or ignored. Layout:
 *   DIR/config.yaml                      resolved config with versions and git revision
 *   DIR/metrics.jsonl                    one JSON object per logged step and per evaluation
 *   DIR/checkpoints/step-00000500/       model.safetensors, one file per optimizer part:
 *                                        optimizer.safetensors (the base), kfac.safetensors
 *                                        (with K-FAC) or its shards, COMPLETE
 *   DIR/final.safetensors                the weights at the end of the run
 *   DIR/result.json                      the final evaluation, written with final.safetensors
 *   DIR/.lock                            flock'ed by the process using DIR; holds its pid
 * The invariants (docs/ARCHITECTURE.md): every file but metrics.jsonl is written whole to a
 * temporary name, fsynced and renamed; COMPLETE is written last and only over finite weights;
 * one process at a time holds DIR/.lock. */
#ifndef NG_RUN_H
#define NG_RUN_H

#include <stdint.h>
#include <stdio.h>

#include "apps/config.h"
#include "apps/metrics.h"
#include "nn/model.h"
#include "optim/optimizer.h"

/* What a checkpoint restores besides tensors. */
typedef struct {
    int64_t step;                 /* training steps done, skipped ones included */
    int64_t epoch, index;         /* the loader position of the next batch */
    double train_s;               /* seconds spent in training steps so far (not evaluation) */
    int64_t optimizer_step;       /* steps the optimizer took: step - skipped */
    int64_t skipped, skip_streak; /* steps skipped for non-finite values: all, and in a row */
    double loss_scale;            /* the dynamic loss scale (fp16), 0: none recorded */
    int64_t scale_clean;          /* clean steps since the loss scale last changed */
} ng_run_position;

/* Reads and checks a checkpoint folder's position without loading any tensor: COMPLETE present,
 * step equal to the folder's step-N, 0 <= epoch <= step, index >= 0, train_s finite and >= 0,
 * skip counts in range, optimizer_step = step - skipped. Errors (exit 2) name the file and the key.
 */
ng_run_position ng_checkpoint_position(const char *ckpt);

/* Creates DIR (and DIR/checkpoints) and takes an exclusive lock on DIR/.lock, held until the
 * process exits; when another process holds it, exit 2 naming DIR and that process's pid. */
void ng_run_dir_create(const char *dir);
/* Writes DIR/name atomically. */
void ng_run_write(const char *dir, const char *name, const char *text);

/* Saves weights, buffers and the state of every part of the optimizer chain o for `pos`, then
 * writes COMPLETE; keeps the newest `keep` complete checkpoints and removes older ones. Each part
 * goes to "<its file>.safetensors" (optimizer.safetensors for the base, with the chain's step
 * count as metadata "optimizer_step"). Returns 0 and writes nothing when a weight, buffer or
 * optimizer state is not finite (such a state is never a checkpoint). With a communicator c of
 * several ranks every rank calls it: rank 0 writes the replicated state, each rank its own shard
 * ("<file>.rankR-of-W.safetensors") of a sharded part (K-FAC with grad_worker_fraction < 1), and
 * rank 0 writes COMPLETE after all of them (barriers between). c NULL: this process alone. */
struct ng_comm;
int ng_checkpoint_save(const char *dir, ng_model *m, ng_optimizer *o, ng_run_position pos,
                       int64_t keep, struct ng_comm *c);
/* The newest complete checkpoint's folder under DIR/checkpoints (into out), or 0 when none.
 * Folders without COMPLETE (a crash mid-write) are ignored. */
int ng_checkpoint_latest(const char *dir, char *out, size_t cap);
/* Restores a checkpoint folder into m and every part of o; returns its position
 * (ng_checkpoint_position). Every part's file must be there (a sharded part reads this rank's
 * shard: same world size as the run that wrote it), and no state file of a part this run lacks.
 * Errors name the file. */
ng_run_position ng_checkpoint_load(const char *ckpt, ng_model *m, ng_optimizer *o);

/* The final evaluation of a finished run, in DIR/result.json (written atomically). */
typedef struct {
    int64_t step, examples;
    double loss, accuracy;
} ng_run_result;
void ng_run_write_result(const char *dir, ng_run_result r);
/* Returns 0 when DIR has no readable result. */
int ng_run_read_result(const char *dir, ng_run_result *r);

/* On resume: compares the config `now` with DIR/config.yaml key by key. A change of a key that
 * changes the run (all but NG_RUN_FREE_KEYS) is a usage error naming every such key with its
 * old and new value, unless `allow`; then the changes are returned as history lines
 * ("history: step N: key: old -> new") to keep in config.yaml's header, after the earlier
 * history lines, which are returned too. The caller frees the text (never NULL). */
#define NG_RUN_FREE_KEYS                                                                           \
    "train.log_every", "train.eval_every", "train.checkpoint_every", "train.keep_checkpoints",     \
        "train.stop_at_step", "train.max_skips", "train.arena_mib", "data.prefetch", "data.dir",   \
        "data.workers"
char *ng_run_config_check(const ng_config *now, const ng_cfg_spec *spec, int nspec, const char *dir,
                          int64_t step, int allow);

#endif
