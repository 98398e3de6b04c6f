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
    const char *key; /* dotted: "optimizer.lr"; components are [A-Za-z0-9_-] */
    ng_cfg_type type;
    const char *def;     /* default as text, read like a --set value; NULL = required */
    double min, max;     /* inclusive range for INT, FLOAT and INT_LIST items; min > max =
                            unbounded */
    const char *choices; /* CHOICE: "sgd|adamw" */
    const char *help;    /* one line for --help-config */
} ng_cfg_spec;

typedef struct ng_config ng_config;

/* Reads `path` (NULL: defaults only), applies `sets` ("key=value"; later ones win; all win over
 * the file) and checks every value; any problem is a usage error (ng_fail, exit 2) that names
 * the key, the file and line or --set, and what is allowed.
 *
 * The file: one YAML mapping. Nested mappings give dotted keys (optimizer: {lr: 0.1} is
 * optimizer.lr: 0.1) and both forms mix; a key given twice is an error; sequences only for
 * INT_LIST keys; a section left empty (`optimizer:` with nothing under it) is ignored.
 * Values are read by the key's type whether quoted or not, strictly:
 *   INT    decimal digits with an optional sign (no 1.5, 1e3, 0x10 or 1_000)
 *   FLOAT  1, -2.5, .5, 1e-3, 1.5E+4 (no inf, nan, hex or underscores)
 *   BOOL   true/false, yes/no, on/off, 1/0, any case
 *   STRING any text; CHOICE one of the alternatives, exactly (case matters)
 *   INT_LIST  a YAML sequence, or in --set and defaults "1,2,3" or "[1, 2, 3]"
 * A --set value has surrounding spaces and one pair of matching outer quotes removed.
 * The schema itself is checked too (bad keys, defaults or choices are programming errors). */
ng_config *ng_config_load(const ng_cfg_spec *spec, int nspec, const char *path,
                          const char *const *sets, int nsets);
void ng_config_free(ng_config *c);

/* Accessors: a key missing from the schema, or read with the wrong type, is a programming error
 * (ng_fail naming the key). */
int64_t ng_cfg_int(const ng_config *c, const char *key);
double ng_cfg_float(const ng_config *c, const char *key);
int ng_cfg_bool(const ng_config *c, const char *key);        /* true/false/yes/no/on/off/1/0 */
const char *ng_cfg_str(const ng_config *c, const char *key); /* STRING and CHOICE */
/* Returns the number of items. With out == NULL only counts; otherwise a list longer than cap
 * is a usage error naming the key and the limit. */
int ng_cfg_int_list(const ng_config *c, const char *key, int64_t *out, int cap);
/* Where the value came from: "default", "file" or "--set". */
const char *ng_cfg_source(const ng_config *c, const char *key);

/* Every key with its resolved value as nested YAML that ng_config_load reads back to the same
 * values (floats exactly), after a comment block (each line of `header` prefixed with "# ").
 * Values not from the default carry a trailing comment saying where they came from. */
void ng_config_write_yaml(const ng_config *c, FILE *f, const char *header);
/* The keys with type, default, allowed values and help, for --help-config. */
void ng_config_print_schema(const ng_cfg_spec *spec, int nspec, FILE *f);

#endif
