/* A run directory: the resolved config, metrics as JSON lines, and checkpoints that are
 * complete or ignored. Layout:
 *   DIR/config.yaml                      resolved config with versions and git revision
 *   DIR/metrics.jsonl                    one JSON object per logged step and per evaluation
 *   DIR/checkpoints/step-00000500/       model.safetensors, optimizer.safetensors,
 *                                        kfac.safetensors (with K-FAC), COMPLETE
 *   DIR/final.safetensors                the weights at the end of the run */
#ifndef NG_RUN_H
#define NG_RUN_H

#include <stdint.h>
#include <stdio.h>

#include "nn/model.h"
#include "optim/kfac.h"
#include "optim/optimizer.h"

/* What a checkpoint restores besides tensors. */
typedef struct {
    int64_t step;         /* optimizer steps done */
    int64_t epoch, index; /* the loader position of the next batch */
    double train_s;       /* seconds spent in training steps so far (not evaluation) */
} ng_run_position;

/* Creates DIR (and DIR/checkpoints); fails naming DIR when it exists and is not resumable. */
void ng_run_dir_create(const char *dir);
/* Writes DIR/name atomically. */
void ng_run_write(const char *dir, const char *name, const char *text);

/* Saves weights, buffers, optimizer state and K-FAC state (k may be NULL) for `pos`, then writes
 * COMPLETE; keeps the newest `keep` complete checkpoints and removes older ones. */
void ng_checkpoint_save(const char *dir, ng_model *m, ng_optimizer *o, ng_kfac *k,
                        ng_run_position pos, int64_t keep);
/* The newest complete checkpoint's folder under DIR/checkpoints (into out), or 0 when none.
 * Folders without COMPLETE (a crash mid-write) are ignored. */
int ng_checkpoint_latest(const char *dir, char *out, size_t cap);
/* Restores a checkpoint folder into m and o; returns its position. Errors name the file. */
ng_run_position ng_checkpoint_load(const char *ckpt, ng_model *m, ng_optimizer *o, ng_kfac *k);

/* Metrics: appends lines to DIR/metrics.jsonl, flushed per line. On resume, lines after the
 * resumed step are dropped first so the log reads as one uninterrupted run. */
typedef struct {
    FILE *f;
} ng_metrics;
ng_metrics ng_metrics_open(const char *dir, int64_t resume_step);
void ng_metrics_line(ng_metrics *m, const char *json);
void ng_metrics_close(ng_metrics *m);

#endif
