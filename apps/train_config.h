/* The training configuration: the schema of every key `natgrad train` reads, and the objects
 * (model description, optimizer, schedule, data) built from a loaded config. */
#ifndef NG_TRAIN_CONFIG_H
#define NG_TRAIN_CONFIG_H

#include "apps/config.h"
#include "apps/optimizers.h"
#include "comm/comm.h"
#include "data/augment.h"
#include "data/source.h"
#include "nn/models.h"
#include "optim/loss_scale.h"
#include "optim/schedule.h"

extern const ng_cfg_spec ng_train_spec[];
extern const int ng_train_nspec;

#define NG_INIT_MAX_SKIP 16

/* model.init: the weights a fresh run starts from, less the modules left at their random
 * initialisation (fine-tuning). */
typedef struct {
    const char *path; /* NULL: random initialisation from the seed */
    char *skip[NG_INIT_MAX_SKIP];
    int nskip;
} ng_init_weights;

/* Everything `natgrad train` needs, resolved from the config and checked, before any run
 * directory, device or training work exists. */
typedef struct {
    ng_config *cfg;
    ng_arch arch;
    ng_init_weights init;
    ng_optim_plan optim; /* the optimizer chain: base and the parts in front of it */
    ng_schedule sched;
    ng_dtype compute;           /* precision.compute: f32, f16 or bf16 */
    ng_loss_scale_config scale; /* dynamic loss scaling (f16) */
    ng_comm_config comm;        /* backend, nodes, all-reduce algorithm and table */
    size_t bucket_bytes;        /* gradient buckets */
    int sync_bn;                /* average batch-norm running statistics over the ranks */
    ng_device device;
    uint64_t seed;
    int64_t batch;         /* global batch size */
    int64_t epochs, steps; /* steps = total optimizer steps (from epochs when not set) */
    int64_t log_every, eval_every, ckpt_every, keep_ckpts;
    int64_t stop_at;   /* end this invocation after this step (0: at the end) */
    int64_t max_skips; /* consecutive skipped (non-finite) steps that stop the run */
    double clip, smoothing;
    ng_source *train, *test;
    ng_augment augment; /* of training examples (data.augment.*) */
    char data_desc[256];
} ng_train_setup;

/* Loads the config (file + --set), checks every key and the data files, loads the data and fills
 * the setup. Any problem is a usage error (exit 2) naming the key or file. */
void ng_train_setup_load(ng_train_setup *s, const char *path, const char *const *sets, int nsets);
/* Only what the data needs, for commands that read or write data without training it (natgrad
 * shards): the config (every key checked for its type and range), the seed, the model's default
 * input (which data sizes left at 0 take; cnn3d's for volumes when model.arch is not set) and
 * the two sources. None of training's checks (model against data, batch against the examples,
 * steps, schedule, optimizer, comm, device): a small data set described alone is fine. Fills
 * cfg, seed, arch (its defaults), train, test and data_desc; free with ng_train_setup_free. */
void ng_train_setup_load_data(ng_train_setup *s, const char *path, const char *const *sets,
                              int nsets);
void ng_train_setup_free(ng_train_setup *s);

#endif
