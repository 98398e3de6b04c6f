/* Run configuration: a YAML file plus --set key=value overrides, checked against a schema.
 * Every error names the key (and the file and line where it came from) and the allowed values,
 * and exits with status 2 through ng_fail. */
#ifndef NG_CONFIG_H
#define NG_CONFIG_H

#include <stdint.h>
#include <stdio.h>

typedef enum {
    NG_CFG_INT,
    NG_CFG_FLOAT,
    NG_CFG_BOOL,
    NG_CFG_STRING,
    NG_CFG_CHOICE,
    NG_CFG_INT_LIST
} ng_cfg_type;

typedef struct {
    const char *key; /* dotted: "optimizer.lr" */
    ng_cfg_type type;
    const char *def;     /* default as text; NULL = required */
    double min, max;     /* inclusive range for numbers; min > max = unbounded */
    const char *choices; /* CHOICE: "sgd|adamw" */
    const char *help;
} ng_cfg_spec;

typedef struct ng_config ng_config;

/* Reads `path` (NULL: defaults only), applies `sets` ("key=value"; later ones win; all win over
 * the file) and checks every value. A nested YAML mapping gives dotted keys. */
ng_config *ng_config_load(const ng_cfg_spec *spec, int nspec, const char *path,
                          const char *const *sets, int nsets);
void ng_config_free(ng_config *c);
int64_t ng_cfg_int(const ng_config *c, const char *key);
double ng_cfg_float(const ng_config *c, const char *key);
int ng_cfg_bool(const ng_config *c, const char *key);        /* true/false/yes/no/on/off/1/0 */
const char *ng_cfg_str(const ng_config *c, const char *key); /* STRING and CHOICE */
int ng_cfg_int_list(const ng_config *c, const char *key, int64_t *out, int cap);
/* "default", "file" or "--set". */
const char *ng_cfg_source(const ng_config *c, const char *key);
/* Every key with its resolved value as nested YAML that ng_config_load reads back to the same
 * values, after a comment block (each line of `header` prefixed with "# "). */
void ng_config_write_yaml(const ng_config *c, FILE *f, const char *header);
void ng_config_print_schema(const ng_cfg_spec *spec, int nspec, FILE *f);

#endif
