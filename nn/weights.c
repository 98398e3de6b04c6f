/* Saving and loading model parameters and buffers by name through core/safetensors. */
#include "nn/weights.h"

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

/* Copies the file's tensor `name` into `dst`, converting its dtype. */
static void load_one(ng_safetensors *f, const char *path, const char *name, ng_tensor *dst) {
    ng_tensor t;
    NG_CHECK(ng_safetensors_find(f, name, &t), "%s: tensor %s is missing", path, name);
    NG_CHECK(ng_tensor_same_shape(&t, dst), "%s: tensor %s is %s but the model's is %s", path, name,
             ng_tensor_desc(&t), ng_tensor_desc(dst));
    NG_CHECK(ng_dtype_is_float(t.dtype), "%s: tensor %s is %s, a floating type is needed", path,
             name, ng_dtype_name(t.dtype));
    ng_tensor host = ng_tensor_new(dst->dtype, NG_CPU, t.ndim, t.shape, name);
    ng_cast(&host, &t);
    ng_tensor_copy(dst, &host);
    ng_tensor_free(&host);
}

void ng_weights_load(ng_model *m, const char *path) {
    ng_safetensors *f = ng_safetensors_open(path);
    for (int i = 0; i < ng_safetensors_count(f); i++) {
        ng_tensor t = ng_safetensors_get(f, i);
        NG_CHECK(ng_model_find(m, t.name) || is_buffer(m, t.name),
                 "%s: tensor %s is not a parameter or buffer of this model", path, t.name);
    }
    for (int i = 0; i < m->nparams; i++)
        load_one(f, path, m->params[i].param->name, &m->params[i].param->value);
    for (int i = 0; i < m->nbuffers; i++)
        load_one(f, path, m->buffers[i].buffer->name, &m->buffers[i].buffer->value);
    ng_safetensors_close(f);
    ng_model_refresh_compute(m); /* a mixed model computes with the loaded weights too */
}
