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

/* Every tensor is checked before any is copied, so a bad file leaves the model as it was, and
 * the file is closed before the error is raised, so a caught error leaks nothing. */
void ng_weights_load(ng_model *m, const char *path) {
    ng_safetensors *f = ng_safetensors_open(path);
    char msg[1024];
    int bad = 0;
    for (int i = 0; i < ng_safetensors_count(f) && !bad; i++) {
        ng_tensor t = ng_safetensors_get(f, i);
        if (!ng_model_find(m, t.name) && !is_buffer(m, t.name)) {
            snprintf(msg, sizeof msg, "%s: tensor %s is not a parameter or buffer of this model",
                     path, t.name);
            bad = 1;
        }
    }
    for (int i = 0; i < m->nparams && !bad; i++)
        bad = mismatch(f, path, m->params[i].param->name, &m->params[i].param->value, msg,
                       sizeof msg);
    for (int i = 0; i < m->nbuffers && !bad; i++)
        bad = mismatch(f, path, m->buffers[i].buffer->name, &m->buffers[i].buffer->value, msg,
                       sizeof msg);
    if (bad) {
        ng_safetensors_close(f);
        ng_fail("%s", msg);
    }
    for (int i = 0; i < m->nparams; i++)
        load_one(f, m->params[i].param->name, &m->params[i].param->value);
    for (int i = 0; i < m->nbuffers; i++)
        load_one(f, m->buffers[i].buffer->name, &m->buffers[i].buffer->value);
    ng_safetensors_close(f);
    ng_model_refresh_compute(m); /* a mixed model computes with the loaded weights too */
}
