/* The schema of `natgrad train` configs and what is built from them. */
#include "apps/train_config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/backend.h"
#include "core/error.h"
#include "data/fractal.h"
#include "data/fractal3d.h"
#include "data/shards.h"
#include "nn/weights.h"

#define NONE 1, 0 /* min > max: unbounded */

const ng_cfg_spec ng_train_spec[] = {
    {"seed", NG_CFG_INT, "0", 0, 4294967295.0, NULL, "seed of every random stream of the run"},
    {"device", NG_CFG_CHOICE, "auto", NONE, "auto|cpu|cuda",
     "where to train; auto = cuda if present"},
    {"precision.compute", NG_CFG_CHOICE, "fp32", NONE, "fp32|bf16|fp16",
     "compute dtype of activations and of the weights' working copy; master weights, gradients "
     "and optimizer state stay fp32"},
    {"precision.init_scale", NG_CFG_FLOAT, "65536", 1e-30, 1e30, NULL,
     "fp16: the dynamic loss scale to start from"},
    {"precision.growth_interval", NG_CFG_INT, "2000", 1, 1e12, NULL,
     "fp16: clean steps in a row before the loss scale grows"},
    {"precision.growth_factor", NG_CFG_FLOAT, "2", 1.000001, 1e6, NULL,
     "fp16: what the loss scale grows by"},
    {"precision.backoff_factor", NG_CFG_FLOAT, "0.5", 1e-6, 0.999999, NULL,
     "fp16: what the loss scale shrinks by on a non-finite gradient (the step is skipped)"},

    {"model.arch", NG_CFG_STRING, "mlp", NONE, NULL,
     "mlp, lenet, vgg, nin, cnn3d, vit, or a vit_* preset"},
    {"model.width", NG_CFG_INT, "0", 0, 65536, NULL,
     "hidden units (mlp) or first-stage channels / embed dim; 0 = the arch's default"},
    {"model.depth", NG_CFG_INT, "0", 0, 60, NULL,
     "hidden layers / stages / blocks; 0 = the arch's default"},
    {"model.heads", NG_CFG_INT, "0", 0, 256, NULL, "vit heads; 0 = default"},
    {"model.patch", NG_CFG_INT, "0", 0, 1024, NULL, "vit patch size; 0 = default"},
    {"model.dropout", NG_CFG_FLOAT, "0", 0, 0.99, NULL,
     "dropout probability (mlp hidden layers, vit MLPs)"},
    {"model.batchnorm", NG_CFG_BOOL, "true", NONE, NULL,
     "batch norm after convolutions (vgg, cnn3d)"},
    {"model.checkpoint", NG_CFG_STRING, "none", NONE, NULL,
     "blocks run as activation-checkpoint segments: none, every K (K blocks a segment; all = every "
     "1) or block indices 0,3,7 (each alone); true/false as all/none"},
    {"model.init", NG_CFG_STRING, "", NONE, NULL,
     "safetensors weights a fresh run starts from (fine-tuning: a pre-training run's "
     "final.safetensors); empty = random initialisation from the seed"},
    {"model.init_skip", NG_CFG_STRING, "", NONE, NULL,
     "comma-separated modules of model.init left at their random initialisation, e.g. head (a "
     "classifier for another number of classes)"},

    {"data.name", NG_CFG_CHOICE, "mnist", NONE,
     "mnist|synthetic|synthetic3d|fractal|fractal3d|shards",
     "data source: MNIST images, synthetic images, synthetic [C,D,D,D] volumes (cnn3d), FractalDB "
     "2D images rendered on the fly, FractalDB 3D voxel volumes (cnn3d), or tar shards (natgrad "
     "shards writes them)"},
    {"data.dir", NG_CFG_STRING, "datasets/mnist", NONE, NULL,
     "folder with the MNIST IDX files (.gz or raw), or with the shards train-*.tar, test-*.tar"},
    {"data.shuffle_buffer", NG_CFG_INT, "1000", 1, 1e7, NULL,
     "shards: examples held in the shuffle buffer (1 = the stored order)"},
    {"data.skip_bad", NG_CFG_BOOL, "false", NONE, NULL,
     "shards: leave out bad examples (corrupt, truncated, unlabelled, wrong size) and count them, "
     "instead of stopping with an error naming the shard and member; the scan then decodes all"},
    {"data.fallback_synthetic", NG_CFG_BOOL, "false", NONE, NULL,
     "use synthetic data when MNIST is not in data.dir"},
    {"data.synthetic.train", NG_CFG_INT, "8000", 1, 1e9, NULL, "synthetic training examples"},
    {"data.synthetic.test", NG_CFG_INT, "2000", 1, 1e9, NULL, "synthetic test examples"},
    {"data.synthetic.noise", NG_CFG_FLOAT, "1.0", 0, 100, NULL,
     "std of the noise around each class mean (synthetic3d: around each blob)"},
    {"data.synthetic.side", NG_CFG_INT, "0", 0, 4096, NULL,
     "side of the synthetic images or volumes; 0 = the model's default input side"},
    {"data.synthetic.channels", NG_CFG_INT, "0", 0, 1024, NULL,
     "channels of the synthetic images or volumes; 0 = the model's default"},
    {"data.synthetic.classes", NG_CFG_INT, "0", 0, 100000, NULL,
     "classes of the synthetic data (synthetic3d: 2-13); 0 = the model's default"},
    {"data.fractal.categories", NG_CFG_INT, "20", 2, 1e6, NULL,
     "fractal: categories (classes), each an IFS found by the filling-rate search"},
    {"data.fractal.instances", NG_CFG_INT, "50", 1, 1e7, NULL,
     "fractal: training instances per category"},
    {"data.fractal.test_instances", NG_CFG_INT, "10", 1, 1e7, NULL,
     "fractal: test instances per category (other instances of the same categories)"},
    {"data.fractal.side", NG_CFG_INT, "0", 0, 4096, NULL,
     "fractal: image side in pixels; 0 = the model's default input side"},
    {"data.fractal.points", NG_CFG_INT, "2000", 21, 4294967296.0, NULL,
     "fractal: chaos-game points per image (the first 20 are skipped)"},
    {"data.fractal.threshold", NG_CFG_FLOAT, "0.2", 0.001, 1, NULL,
     "fractal: filling rate (occupied fraction of 32x32 pixels) a category's IFS must reach"},
    {"data.fractal.patch", NG_CFG_INT, "1", 1, 7, NULL,
     "fractal: each point lights a patch x patch pattern of the instance (1 = its pixel)"},
    {"data.fractal.colour", NG_CFG_BOOL, "false", NONE, NULL,
     "fractal: RGB images [3,side,side], each map of an instance its own colour"},
    {"data.fractal.weight_variation", NG_CFG_BOOL, "true", NONE, NULL,
     "fractal: each instance scales one parameter of one map by 0.8, 0.9, 1.1 or 1.2 "
     "(FractalDB's weight variation); false = the category's IFS exactly"},
    {"data.fractal.flip", NG_CFG_BOOL, "true", NONE, NULL,
     "fractal: each instance flips its image horizontally and/or vertically; false = never"},
    {"data.fractal3d.categories", NG_CFG_INT, "10", 2, 1e6, NULL,
     "fractal3d: categories (classes), each a 3D IFS found by the filling-rate search"},
    {"data.fractal3d.instances", NG_CFG_INT, "50", 1, 1e7, NULL,
     "fractal3d: training instances per category"},
    {"data.fractal3d.test_instances", NG_CFG_INT, "10", 1, 1e7, NULL,
     "fractal3d: test instances per category (other instances of the same categories)"},
    {"data.fractal3d.side", NG_CFG_INT, "0", 0, 1024, NULL,
     "fractal3d: volume side in voxels (D of D^3); 0 = the model's default input side"},
    {"data.fractal3d.points", NG_CFG_INT, "16384", 21, 4294967296.0, NULL,
     "fractal3d: chaos-game points per volume (the first 20 are skipped)"},
    {"data.fractal3d.threshold", NG_CFG_FLOAT, "0.1", 0.001, 1, NULL,
     "fractal3d: filling rate (occupied fraction of 16^3 voxels) a category's IFS must reach"},
    {"data.fractal3d.weight_variation", NG_CFG_BOOL, "true", NONE, NULL,
     "fractal3d: each instance scales one of the twelve parameters of one map by 0.8-1.2; false "
     "= the category's IFS exactly"},
    {"data.fractal3d.flip", NG_CFG_BOOL, "true", NONE, NULL,
     "fractal3d: each instance mirrors any of the three axes; false = never"},
    {"data.augment.crop_pad", NG_CFG_INT, "0", 0, 64, NULL,
     "random crop after zero padding by this many pixels"},
    {"data.augment.hflip", NG_CFG_BOOL, "false", NONE, NULL, "random horizontal flips"},
    {"data.prefetch", NG_CFG_INT, "2", 0, 64, NULL,
     "batches the loader thread prepares ahead (0: no thread)"},
    {"data.workers", NG_CFG_INT, "1", 1, 256, NULL,
     "threads that render, decode and augment a batch's examples (the batches are the same for "
     "any number)"},

    {"train.batch_size", NG_CFG_INT, "128", 1, 1e9, NULL, "global batch size"},
    {"train.epochs", NG_CFG_INT, "10", 0, 1e6, NULL, "epochs (ignored when train.steps > 0)"},
    {"train.steps", NG_CFG_INT, "0", 0, 1e12, NULL, "optimizer steps; 0 = from train.epochs"},
    {"train.log_every", NG_CFG_INT, "10", 1, 1e9, NULL, "steps between metrics lines"},
    {"train.eval_every", NG_CFG_INT, "0", 0, 1e12, NULL,
     "steps between evaluations; 0 = each epoch"},
    {"train.checkpoint_every", NG_CFG_INT, "0", 0, 1e12, NULL,
     "steps between checkpoints; 0 = each epoch"},
    {"train.stop_at_step", NG_CFG_INT, "0", 0, 1e12, NULL,
     "end this invocation after this step, with a checkpoint (0 = run to the end); --resume auto "
     "continues"},
    {"train.max_skips", NG_CFG_INT, "10", 1, 1e9, NULL,
     "steps in a row skipped for a non-finite loss or gradient that stop the run (exit 1)"},
    {"train.keep_checkpoints", NG_CFG_INT, "2", 1, 1000, NULL, "complete checkpoints kept"},
    {"train.clip_grad_norm", NG_CFG_FLOAT, "0", 0, 1e9, NULL,
     "clip the global gradient norm; 0 = off"},
    {"train.label_smoothing", NG_CFG_FLOAT, "0", 0, 1, NULL,
     "label smoothing of the cross-entropy"},
    {"train.arena_mib", NG_CFG_INT, "0", 0, 1048576, NULL,
     "the arena buffer in MiB (activations from one end, activation gradients from the other); "
     "0 = what natgrad plan predicts a step needs"},

    NG_OPTIM_CFG_ROWS,

    {"comm.allreduce", NG_CFG_STRING, "auto", NONE, NULL,
     "gradient all-reduce: auto|flat|ring|hier_rs|hier_leader|torus, levels as "
     "hier_rs:ring/flat (intra/inter)"},
    {"comm.ranks_per_node", NG_CFG_INT, "0", 0, 1e6, NULL,
     "ranks per node; 0 = detect (MPI shared memory); N simulates nodes of N ranks"},
    {"comm.bucket_mib", NG_CFG_FLOAT, "4", 0, 1e6, NULL,
     "gradient bucket size in MiB, all-reduced while backward goes on; 0 = one per parameter"},
    {"comm.table", NG_CFG_STRING, "", NONE, NULL,
     "auto's size -> algorithm table (JSON from natgrad comm-bench --write-table); '' = built in"},
    {"model.sync_bn", NG_CFG_BOOL, "false", NONE, NULL,
     "under mpirun: average batch-norm running statistics over the ranks after every step"},

    {"schedule.name", NG_CFG_CHOICE, "cosine", NONE, "constant|cosine|poly|step",
     "learning-rate schedule"},
    {"schedule.warmup_steps", NG_CFG_INT, "0", 0, 1e12, NULL, "linear warmup steps"},
    {"schedule.warmup_epochs", NG_CFG_FLOAT, "0", 0, 1e6, NULL,
     "linear warmup in epochs (adds to warmup_steps)"},
    {"schedule.min_lr", NG_CFG_FLOAT, "0", 0, 1e6, NULL, "cosine floor / poly end"},
    {"schedule.power", NG_CFG_FLOAT, "2", 0, 100, NULL, "poly decay power"},
    {"schedule.step_size", NG_CFG_INT, "1000", 1, 1e12, NULL,
     "step schedule: steps between decays"},
    {"schedule.gamma", NG_CFG_FLOAT, "0.1", 0, 1, NULL, "step schedule: decay factor"},
};
const int ng_train_nspec = sizeof ng_train_spec / sizeof ng_train_spec[0];

/* A model-default value unless the config sets one (0 = default). */
static int64_t or_default(const ng_config *c, const char *key, int64_t dflt) {
    int64_t v = ng_cfg_int(c, key);
    return v ? v : dflt;
}

/* The FractalDB instance augmentations left out, for the data's description ("" when none). */
static const char *augment_desc(int no_weight_variation, int no_flip) {
    return no_weight_variation && no_flip ? ", no weight variation or flips"
           : no_weight_variation          ? ", no weight variation"
           : no_flip                      ? ", no flips"
                                          : "";
}

static ng_source *load_data(ng_train_setup *s, const char *split) {
    const ng_config *c = s->cfg;
    const char *name = ng_cfg_str(c, "data.name");
    if (!strcmp(name, "mnist")) {
        ng_dataset *d = ng_mnist_find(ng_cfg_str(c, "data.dir"), split);
        if (d) {
            snprintf(s->data_desc, sizeof s->data_desc, "MNIST from %s", ng_cfg_str(c, "data.dir"));
            return ng_source_dataset(d);
        }
        NG_CHECK(ng_cfg_bool(c, "data.fallback_synthetic"),
                 "data.dir: no MNIST %s files (train-images-idx3-ubyte[.gz], ...) in '%s'; fetch "
                 "them with scripts/fetch-mnist.sh %s, or set data.fallback_synthetic=true or "
                 "data.name=synthetic",
                 split, ng_cfg_str(c, "data.dir"), ng_cfg_str(c, "data.dir"));
    }
    if (!strcmp(name, "shards")) {
        ng_shards_config sc = {.dir = ng_cfg_str(c, "data.dir"),
                               .prefix = split,
                               .shuffle_buffer = ng_cfg_int(c, "data.shuffle_buffer"),
                               .seed = s->seed,
                               .skip_bad = ng_cfg_bool(c, "data.skip_bad")};
        snprintf(s->data_desc, sizeof s->data_desc, "shards from %s", sc.dir);
        return ng_shards_open(&sc);
    }
    int test = !strcmp(split, "test");
    if (!strcmp(name, "fractal")) {
        int64_t train_inst = ng_cfg_int(c, "data.fractal.instances");
        ng_fractal_config f = {
            .categories = ng_cfg_int(c, "data.fractal.categories"),
            .instances = test ? ng_cfg_int(c, "data.fractal.test_instances") : train_inst,
            .first_instance = test ? train_inst : 0,
            .side = or_default(c, "data.fractal.side", s->arch.img),
            .points = ng_cfg_int(c, "data.fractal.points"),
            .threshold = ng_cfg_float(c, "data.fractal.threshold"),
            .patch = ng_cfg_int(c, "data.fractal.patch"),
            .colour = ng_cfg_bool(c, "data.fractal.colour"),
            .no_weight_variation = !ng_cfg_bool(c, "data.fractal.weight_variation"),
            .no_flip = !ng_cfg_bool(c, "data.fractal.flip"),
            .seed = s->seed,
            .name = test ? "fractal-test" : "fractal-train"};
        char extra[64] = "";
        if (f.patch > 1 || f.colour)
            snprintf(extra, sizeof extra, ", %s, patch %lld", f.colour ? "colour" : "grey",
                     (long long)f.patch);
        snprintf(s->data_desc, sizeof s->data_desc,
                 "FractalDB %lld categories x %lld+%lld instances, %lld px, %lld points%s%s",
                 (long long)f.categories, (long long)train_inst,
                 (long long)ng_cfg_int(c, "data.fractal.test_instances"), (long long)f.side,
                 (long long)f.points, extra, augment_desc(f.no_weight_variation, f.no_flip));
        return ng_fractal_new(&f);
    }
    if (!strcmp(name, "fractal3d")) {
        int64_t train_inst = ng_cfg_int(c, "data.fractal3d.instances");
        ng_fractal3d_config f = {
            .categories = ng_cfg_int(c, "data.fractal3d.categories"),
            .instances = test ? ng_cfg_int(c, "data.fractal3d.test_instances") : train_inst,
            .first_instance = test ? train_inst : 0,
            .side = or_default(c, "data.fractal3d.side", s->arch.img),
            .points = ng_cfg_int(c, "data.fractal3d.points"),
            .threshold = ng_cfg_float(c, "data.fractal3d.threshold"),
            .no_weight_variation = !ng_cfg_bool(c, "data.fractal3d.weight_variation"),
            .no_flip = !ng_cfg_bool(c, "data.fractal3d.flip"),
            .seed = s->seed,
            .name = test ? "fractal3d-test" : "fractal3d-train"};
        snprintf(s->data_desc, sizeof s->data_desc,
                 "FractalDB 3D %lld categories x %lld+%lld instances, %lld^3 voxels, %lld points%s",
                 (long long)f.categories, (long long)train_inst,
                 (long long)ng_cfg_int(c, "data.fractal3d.test_instances"), (long long)f.side,
                 (long long)f.points, augment_desc(f.no_weight_variation, f.no_flip));
        return ng_fractal3d_new(&f);
    }
    int64_t n = ng_cfg_int(c, test ? "data.synthetic.test" : "data.synthetic.train");
    int64_t side = or_default(c, "data.synthetic.side", s->arch.img);
    int64_t channels = or_default(c, "data.synthetic.channels", s->arch.in_ch);
    int64_t classes = or_default(c, "data.synthetic.classes", s->arch.classes);
    NG_CHECK(classes >= 2, "data.synthetic.classes: %lld, need 2 or more", (long long)classes);
    double noise = ng_cfg_float(c, "data.synthetic.noise");
    const char *label = test ? "synthetic-test" : "synthetic-train";
    if (!strcmp(name, "synthetic3d")) {
        ng_synthetic3d_config v = {.n = n,
                                   .side = side,
                                   .channels = channels,
                                   .classes = classes,
                                   .noise = noise,
                                   .seed = s->seed,
                                   .split = (uint64_t)test,
                                   .name = test ? "synthetic3d-test" : "synthetic3d-train"};
        snprintf(s->data_desc, sizeof s->data_desc, "synthetic %lld x %lld^3 volumes, %lld classes",
                 (long long)channels, (long long)side, (long long)classes);
        return ng_synthetic3d_new(&v);
    }
    int64_t shape[3] = {channels, side, side};
    /* Train and test share class means (the seed), and differ in their noise draws. */
    ng_dataset *d = ng_synthetic(n, 3, shape, classes, noise, s->seed, (uint64_t)test, label);
    snprintf(s->data_desc, sizeof s->data_desc, "synthetic %lldx%lld, %lld classes",
             (long long)side, (long long)side, (long long)classes);
    return ng_source_dataset(d);
}

/* model.init / model.init_skip: the skipped modules are parsed, and the file is checked against
 * the model's names and shapes (from the unbuilt layer tree, nothing allocated) so that a wrong
 * file stops the run before its directory exists. */
static void init_weights(ng_train_setup *s) {
    const char *path = ng_cfg_str(s->cfg, "model.init"),
               *list = ng_cfg_str(s->cfg, "model.init_skip");
    s->init.path = *path ? path : NULL;
    NG_CHECK(s->init.path || !*list, "model.init_skip: '%s' given without model.init", list);
    for (const char *p = list; *p;) {
        size_t n = strcspn(p, ",");
        NG_CHECK(n > 0 && s->init.nskip < NG_INIT_MAX_SKIP,
                 "model.init_skip: '%s': expected up to %d comma-separated module names", list,
                 NG_INIT_MAX_SKIP);
        s->init.skip[s->init.nskip++] = strndup(p, n);
        p += n + (p[n] == ',');
    }
    if (!s->init.path) return;
    ng_model *m = ng_model_new(ng_arch_build(&s->arch));
    for (int i = 0; i < s->init.nskip; i++) {
        int found = 0;
        for (int j = 0; j < m->nparams && !found; j++)
            found = ng_weights_in_module(m->params[j].param->name, s->init.skip[i]);
        if (!found) ng_model_free(m);
        NG_CHECK(found, "model.init_skip: '%s' names no parameter of model.arch %s",
                 s->init.skip[i], ng_cfg_str(s->cfg, "model.arch"));
    }
    ng_weights_check_except(m, s->init.path, (const char *const *)s->init.skip, s->init.nskip);
    ng_model_free(m);
}

static int gives_volumes(const char *data) {
    return !strcmp(data, "synthetic3d") || !strcmp(data, "fractal3d");
}

/* The file and --set values, every key checked for its type and range, and the seed. */
static void read_config(ng_train_setup *s, const char *path, const char *const *sets, int nsets) {
    memset(s, 0, sizeof *s);
    s->cfg = ng_config_load(ng_train_spec, ng_train_nspec, path, sets, nsets);
    s->seed = (uint64_t)ng_cfg_int(s->cfg, "seed");
}

/* Both splits; their shapes must agree (sources read from files, shards, may not). */
static void read_data(ng_train_setup *s) {
    s->train = load_data(s, "train");
    s->test = load_data(s, "test");
    NG_CHECK(
        s->test->ndim == s->train->ndim &&
            !memcmp(s->test->shape, s->train->shape, sizeof(int64_t) * (size_t)s->train->ndim) &&
            s->test->classes <= s->train->classes,
        "data: the test examples (%s: %d dims, first %lld, %lld classes) do not match the "
        "training ones (%s: %d dims, first %lld, %lld classes)",
        s->test->name, s->test->ndim, (long long)s->test->shape[0], (long long)s->test->classes,
        s->train->name, s->train->ndim, (long long)s->train->shape[0],
        (long long)s->train->classes);
}

void ng_train_setup_load_data(ng_train_setup *s, const char *path, const char *const *sets,
                              int nsets) {
    read_config(s, path, sets, nsets);
    const ng_config *c = s->cfg;
    /* Data sizes left at 0 are the model's input: model.arch's when the config names one, else
     * that of the model that reads such data (a data-only config of volumes is for cnn3d). */
    const char *arch = ng_cfg_str(c, "model.arch");
    if (!strcmp(ng_cfg_source(c, "model.arch"), "default") &&
        gives_volumes(ng_cfg_str(c, "data.name")))
        arch = "cnn3d";
    NG_CHECK(ng_arch_defaults(arch, &s->arch), "model.arch: '%s' is not one of %s", arch,
             ng_arch_names());
    read_data(s);
}

void ng_train_setup_load(ng_train_setup *s, const char *path, const char *const *sets, int nsets) {
    read_config(s, path, sets, nsets);
    ng_config *c = s->cfg;

    const char *dev = ng_cfg_str(c, "device");
    if (!strcmp(dev, "cuda"))
        NG_CHECK(ng_cuda_available(), "device: 'cuda' but no CUDA device is usable here%s",
                 ng_backend_cuda() ? "" : " (natgrad was built without CUDA)");
    s->device = !strcmp(dev, "cpu")                           ? NG_CPU
                : !strcmp(dev, "cuda") || ng_cuda_available() ? NG_CUDA
                                                              : NG_CPU;

    const char *arch = ng_cfg_str(c, "model.arch");
    NG_CHECK(ng_arch_defaults(arch, &s->arch), "model.arch: '%s' is not one of %s", arch,
             ng_arch_names());
    ng_arch *a = &s->arch;
    if (ng_cfg_int(c, "model.width")) a->width = ng_cfg_int(c, "model.width");
    if (ng_cfg_int(c, "model.depth")) a->depth = (int)ng_cfg_int(c, "model.depth");
    if (ng_cfg_int(c, "model.heads")) a->heads = ng_cfg_int(c, "model.heads");
    if (ng_cfg_int(c, "model.patch")) a->patch = ng_cfg_int(c, "model.patch");
    if (strcmp(ng_cfg_source(c, "model.dropout"), "default"))
        a->dropout = ng_cfg_float(c, "model.dropout");
    a->batchnorm = ng_cfg_bool(c, "model.batchnorm");
    char why[160];
    const char *ck = ng_cfg_str(c, "model.checkpoint");
    NG_CHECK(ng_ckpt_spec_parse(ck, &a->checkpoint, why, sizeof why),
             "model.checkpoint: '%s': %s (none, every K, all, or block indices such as 0,3,7)", ck,
             why);
    ng_arch_check_checkpoint(a);
    /* The 3D-CNN takes volumes, every other model images: say so before loading anything. */
    const char *data = ng_cfg_str(c, "data.name");
    int volumes = gives_volumes(data), cnn3d = !strcmp(arch, "cnn3d");
    NG_CHECK(volumes || !cnn3d || !strcmp(data, "shards"),
             "model.arch: cnn3d takes [C,D,D,D] volumes, and data.name %s gives images; set "
             "data.name=synthetic3d or fractal3d",
             data);
    NG_CHECK(!volumes || cnn3d,
             "data.name: %s gives [C,D,D,D] volumes, which only model.arch cnn3d takes "
             "(model.arch is %s)",
             data, arch);

    /* Data first: its shape fixes the model's input. */
    read_data(s);
    int sides = s->train->ndim - 1, square = 1;
    for (int i = 2; i <= sides; i++) square &= s->train->shape[i] == s->train->shape[1];
    NG_CHECK(s->train->ndim == (cnn3d ? 4 : 3) && square,
             "data: examples must be square images [C,H,W] (cubes [C,D,D,D] for cnn3d) for "
             "model.arch %s",
             arch);
    /* Augmentation is its own step after the source: checked here against the examples' shape,
     * so a crop larger than the data stops before a run directory exists. */
    s->augment = (ng_augment){.crop_pad = (int)ng_cfg_int(c, "data.augment.crop_pad"),
                              .hflip = ng_cfg_bool(c, "data.augment.hflip")};
    ng_augment_check(&s->augment, s->train->ndim, s->train->shape, s->train->name);
    a->in_ch = s->train->shape[0];
    a->img = s->train->shape[1];
    a->classes = s->train->classes;
    if (!strncmp(arch, "vit", 3))
        NG_CHECK(a->img % a->patch == 0, "model.patch: %lld does not divide the %lld-pixel images",
                 (long long)a->patch, (long long)a->img);
    init_weights(s);

    s->batch = ng_cfg_int(c, "train.batch_size");
    NG_CHECK(s->batch <= s->train->n,
             "train.batch_size: %lld is larger than the %lld training examples",
             (long long)s->batch, (long long)s->train->n);
    int64_t per_epoch = s->train->n / s->batch;
    s->epochs = ng_cfg_int(c, "train.epochs");
    s->steps = ng_cfg_int(c, "train.steps");
    if (!s->steps) s->steps = s->epochs * per_epoch;
    NG_CHECK(s->steps > 0, "train.epochs / train.steps: the run would take no step (set one > 0)");
    s->log_every = ng_cfg_int(c, "train.log_every");
    s->eval_every = ng_cfg_int(c, "train.eval_every");
    if (!s->eval_every) s->eval_every = per_epoch;
    s->ckpt_every = ng_cfg_int(c, "train.checkpoint_every");
    if (!s->ckpt_every) s->ckpt_every = per_epoch;
    s->keep_ckpts = ng_cfg_int(c, "train.keep_checkpoints");
    s->stop_at = ng_cfg_int(c, "train.stop_at_step");
    s->max_skips = ng_cfg_int(c, "train.max_skips");
    s->clip = ng_cfg_float(c, "train.clip_grad_norm");
    s->smoothing = ng_cfg_float(c, "train.label_smoothing");

    ng_optim_plan_read(&s->optim,
                       &(ng_optim_env){.cfg = c, .steps = s->steps, .train_examples = s->train->n});

    const char *prec = ng_cfg_str(c, "precision.compute");
    s->compute = !strcmp(prec, "fp16") ? NG_F16 : !strcmp(prec, "bf16") ? NG_BF16 : NG_F32;
    s->scale = ng_loss_scale_defaults(s->compute);
    if (s->scale.dynamic) {
        s->scale.init_scale = ng_cfg_float(c, "precision.init_scale");
        s->scale.growth_interval = ng_cfg_int(c, "precision.growth_interval");
        s->scale.growth_factor = ng_cfg_float(c, "precision.growth_factor");
        s->scale.backoff_factor = ng_cfg_float(c, "precision.backoff_factor");
    }
    s->scale.max_skips = s->max_skips; /* one limit on skipped steps, whatever their cause */
    ng_comm_config *cc = &s->comm;
    *cc = (ng_comm_config){.ranks_per_node = (int)ng_cfg_int(c, "comm.ranks_per_node")};
    const char *ar = ng_cfg_str(c, "comm.allreduce");
    NG_CHECK(!ng_allreduce_opts_parse(ar, &cc->allreduce),
             "comm.allreduce: '%s' is not one of auto, flat, ring, hier_rs, hier_leader, torus "
             "(hierarchical ones may name their levels: hier_rs:ring/flat)",
             ar);
    cc->table_file = *ng_cfg_str(c, "comm.table") ? ng_cfg_str(c, "comm.table") : NULL;
    NG_CHECK(!cc->table_file || access(cc->table_file, R_OK) == 0, "comm.table: cannot read '%s'",
             cc->table_file);
    s->bucket_bytes = (size_t)(ng_cfg_float(c, "comm.bucket_mib") * 1048576.0);
    s->sync_bn = ng_cfg_bool(c, "model.sync_bn");

    ng_schedule *sc = &s->sched;
    sc->kind = (ng_sched_kind)ng_schedule_kind_from_name(ng_cfg_str(c, "schedule.name"));
    sc->base_lr = ng_cfg_float(c, "optimizer.lr");
    sc->warmup_steps =
        ng_cfg_int(c, "schedule.warmup_steps") +
        (int64_t)llround(ng_cfg_float(c, "schedule.warmup_epochs") * (double)per_epoch);
    sc->total_steps = s->steps;
    sc->min_lr = ng_cfg_float(c, "schedule.min_lr");
    sc->power = ng_cfg_float(c, "schedule.power");
    sc->step_size = ng_cfg_int(c, "schedule.step_size");
    sc->gamma = ng_cfg_float(c, "schedule.gamma");
    NG_CHECK(sc->warmup_steps <= s->steps,
             "schedule.warmup_steps: %lld warmup steps exceed the run's %lld steps",
             (long long)sc->warmup_steps, (long long)s->steps);
    NG_CHECK(sc->min_lr <= sc->base_lr, "schedule.min_lr: %g is above optimizer.lr %g", sc->min_lr,
             sc->base_lr);
    ng_schedule_check(sc);
}

void ng_train_setup_free(ng_train_setup *s) {
    for (int i = 0; i < s->init.nskip; i++) free(s->init.skip[i]);
    ng_optim_plan_free(&s->optim);
    ng_source_free(s->train);
    ng_source_free(s->test);
    ng_config_free(s->cfg);
}
