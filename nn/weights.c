/* Saving and loading model parameters by name through core/safetensors. */
#include "nn/weights.h"

#include <stdlib.h>

#include "core/error.h"
#include "core/ops.h"
#include "core/safetensors.h"

void ng_weights_save(ng_model *m, const char *path, const char **meta) {
    ng_st_entry *e = malloc(sizeof *e * (size_t)(m->nparams + 1));
    for (int i = 0; i < m->nparams; i++)
        e[i] = (ng_st_entry){m->params[i].param->name, &m->params[i].param->value};
    ng_safetensors_save(path, e, m->nparams, meta);
    free(e);
}

void ng_weights_load(ng_model *m, const char *path) {
    ng_safetensors *f = ng_safetensors_open(path);
    for (int i = 0; i < ng_safetensors_count(f); i++) {
        ng_tensor t = ng_safetensors_get(f, i);
        NG_CHECK(ng_model_find(m, t.name), "%s: tensor %s is not a parameter of this model", path,
                 t.name);
    }
    for (int i = 0; i < m->nparams; i++) {
        ng_param *p = m->params[i].param;
        ng_tensor t;
        NG_CHECK(ng_safetensors_find(f, p->name, &t), "%s: parameter %s is missing", path, p->name);
        NG_CHECK(ng_tensor_same_shape(&t, &p->value),
                 "%s: tensor %s is %s but the model's parameter is %s", path, p->name,
                 ng_tensor_desc(&t), ng_tensor_desc(&p->value));
        NG_CHECK(ng_dtype_is_float(t.dtype), "%s: tensor %s is %s, a floating type is needed", path,
                 p->name, ng_dtype_name(t.dtype));
        ng_tensor host = ng_tensor_new(p->value.dtype, NG_CPU, t.ndim, t.shape, p->name);
        ng_cast(&host, &t);
        ng_tensor_copy(&p->value, &host);
        ng_tensor_free(&host);
    }
    ng_safetensors_close(f);
}
