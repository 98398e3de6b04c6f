/* Saving and loading model parameters and buffers by name through core/safetensors. */
#include "nn/weights.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/ops.h"
#include "core/safetensors.h"

void ng_weights_save(ng_model *m, const char *path, const char **meta) {
    int n = m->nparams + m->nbuffers;
    ng_st_entry *e = malloc(sizeof *e * (size_t)(n + 1));
    for (int i = 0; i < m->nparams; i++)
        e[i] = (ng_st_entry){m->params[i].param->name, &m->params[i].param->value};
    for (int i = 0; i < m->nbuffers; i++)
        e[m->nparams + i] = (ng_st_entry){m->buffers[i].buffer->name, &m->buffers[i].buffer->value};
    ng_safetensors_save(path, e, n, meta);
    free(e);
}

static int is_buffer(ng_model *m, const char *name) {
    for (int i = 0; i < m->nbuffers; i++)
        if (!strcmp(m->buffers[i].buffer->name, name)) return 1;
    return 0;
}

/* Why the file's tensor `name` cannot be loaded into `dst` (into msg), or 0 when it can. */
static int mismatch(ng_safetensors *f, const char *path, const char *name, const ng_tensor *dst,
                    char *msg, size_t cap) {
    ng_tensor t;
    if (!ng_safetensors_find(f, name, &t))
        snprintf(msg, cap, "%s: tensor %s is missing", path, name);
    else if (!ng_tensor_same_shape(&t, dst))
        snprintf(msg, cap, "%s: tensor %s is %s but the model's is %s", path, name,
                 ng_tensor_desc(&t), ng_tensor_desc(dst));
    else if (!ng_dtype_is_float(t.dtype))
        snprintf(msg, cap, "%s: tensor %s is %s, a floating type is needed", path, name,
                 ng_dtype_name(t.dtype));
    else
        return 0;
    return 1;
}

/* Copies the file's tensor `name` into `dst`, converting its dtype. */
static void load_one(ng_safetensors *f, const char *name, ng_tensor *dst) {
    ng_tensor t;
    ng_safetensors_find(f, name, &t);
    ng_tensor host = ng_tensor_new(dst->dtype, NG_CPU, t.ndim, t.shape, name);
    ng_cast(&host, &t);
    ng_tensor_copy(dst, &host);
    ng_tensor_free(&host);
}

int ng_weights_in_module(const char *name, const char *module) {
    size_t n = strlen(module);
    return !strncmp(name, module, n) && (name[n] == '\0' || name[n] == '.');
}

static int skipped(const char *name, const char *const *skip, int nskip) {
    for (int i = 0; i < nskip; i++)
        if (ng_weights_in_module(name, skip[i])) return 1;
    return 0;
}

/* Why the file cannot be loaded into m (into msg), or 0 when it can: a tensor of the file the
 * model lacks, one the file lacks, a shape or dtype that differs, skipped names aside. */
static int check(ng_model *m, ng_safetensors *f, const char *path, const char *const *skip,
                 int nskip, char *msg, size_t cap) {
    for (int i = 0; i < ng_safetensors_count(f); i++) {
        ng_tensor t = ng_safetensors_get(f, i);
        if (!skipped(t.name, skip, nskip) && !ng_model_find(m, t.name) && !is_buffer(m, t.name)) {
            snprintf(msg, cap, "%s: tensor %s is not a parameter or buffer of this model", path,
                     t.name);
            return 1;
        }
    }
    for (int i = 0; i < m->nparams; i++)
        if (!skipped(m->params[i].param->name, skip, nskip) &&
            mismatch(f, path, m->params[i].param->name, &m->params[i].param->value, msg, cap))
            return 1;
    for (int i = 0; i < m->nbuffers; i++)
        if (!skipped(m->buffers[i].buffer->name, skip, nskip) &&
            mismatch(f, path, m->buffers[i].buffer->name, &m->buffers[i].buffer->value, msg, cap))
            return 1;
    return 0;
}

/* The file is closed before an error is raised, so a caught error leaks nothing. */
void ng_weights_check_except(ng_model *m, const char *path, const char *const *skip, int nskip) {
    ng_safetensors *f = ng_safetensors_open(path);
    char msg[1024];
    int bad = check(m, f, path, skip, nskip, msg, sizeof msg);
    ng_safetensors_close(f);
    if (bad) ng_fail("%s", msg);
}

/* Every tensor is checked before any is copied, so a bad file leaves the model as it was. */
int ng_weights_load_except(ng_model *m, const char *path, const char *const *skip, int nskip) {
    ng_safetensors *f = ng_safetensors_open(path);
    char msg[1024];
    if (check(m, f, path, skip, nskip, msg, sizeof msg)) {
        ng_safetensors_close(f);
        ng_fail("%s", msg);
    }
    int loaded = 0;
    for (int i = 0; i < m->nparams; i++)
        if (!skipped(m->params[i].param->name, skip, nskip)) {
            load_one(f, m->params[i].param->name, &m->params[i].param->value);
            loaded++;
        }
    for (int i = 0; i < m->nbuffers; i++)
        if (!skipped(m->buffers[i].buffer->name, skip, nskip)) {
            load_one(f, m->buffers[i].buffer->name, &m->buffers[i].buffer->value);
            loaded++;
        }
    ng_safetensors_close(f);
    ng_model_refresh_compute(m); /* a mixed model computes with the loaded weights too */
    return loaded;
}

void ng_weights_load(ng_model *m, const char *path) {
    ng_weights_load_except(m, path, NULL, 0);
}
