/* A run's memory by category, predicted from the config's shapes (natgrad plan, and arenas sized
 * to the plan) and measured while it runs (metrics lines, memory.json at the end). */
#ifndef NG_MEMORY_REPORT_H
#define NG_MEMORY_REPORT_H

#include <stdio.h>

#include "apps/train_config.h"
#include "core/memory.h"
#include "nn/model.h"
#include "nn/plan.h"

typedef struct {
    /* Peak bytes per category. Activations and workspace count what the arenas' high-water
     * marks reach (plus, for workspace, the scratch outside the arena: K-FAC's, cuDNN's). */
    size_t cat[NG_MEM_NCAT];
    /* The device's peak: measured, everything allocated at once (arenas at their capacity);
     * predicted, the categories' sum (less OTHER, the build's host temporaries, freed before
     * training) plus the arenas' slack. */
    size_t device_peak;
    /* The two arenas' high-water marks and the most both held at once (their shared buffer:
     * what a planned run allocates, with ng_mem_arena_capacity's room) */
    ng_arena_plan arenas;
} ng_mem_figures;

/* The memory of training `a` (the setup's model, possibly at another input side or batch) with
 * the setup's precision, optimizer and K-FAC, `rank_batch` examples per rank. */
void ng_mem_predict(const ng_train_setup *s, const ng_arch *a, int64_t rank_batch,
                    ng_mem_figures *f);
/* What the model's device has seen so far. */
void ng_mem_measure(const ng_model *m, ng_mem_figures *f);
/* {"params": MiB, ..., "arenas": MiB (the most both arenas held at once), "device_peak": MiB} */
void ng_mem_json(const ng_mem_figures *f, char *out, size_t cap);
/* A table: category, predicted, measured (MiB), and their ratio; meas may be NULL. */
void ng_mem_table(FILE *out, const ng_mem_figures *pred, const ng_mem_figures *meas);
/* The capacity a planned arena gets: the plan's peak and a little room (alignment of a device
 * path the CPU plan did not replay). */
size_t ng_mem_arena_capacity(size_t planned);

#endif
