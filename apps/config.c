/* Config files through libyaml, overrides, and the schema checks. */
#define _GNU_SOURCE /* strdup */
#include "apps/config.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "core/error.h"

typedef struct {
    char *text;        /* the value as written (lists joined with ',') */
    const char *where; /* "default", "file", "--set" */
    int line;          /* 1-based line in the file, 0 otherwise */
} cfg_value;

struct ng_config {
    const ng_cfg_spec *spec;
    int n;
    cfg_value *v;
    char *path;
};

static int find(const ng_cfg_spec *spec, int n, const char *key) {
    for (int i = 0; i < n; i++)
        if (!strcmp(spec[i].key, key)) return i;
    return -1;
}

static int edit_distance(const char *a, const char *b) {
    int la = (int)strlen(a), lb = (int)strlen(b), d[64][64];
    if (la > 63 || lb > 63) return 99;
    for (int i = 0; i <= la; i++) d[i][0] = i;
    for (int j = 0; j <= lb; j++) d[0][j] = j;
    for (int i = 1; i <= la; i++)
        for (int j = 1; j <= lb; j++) {
            int c = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
            if (d[i - 1][j] + 1 < c) c = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < c) c = d[i][j - 1] + 1;
            d[i][j] = c;
        }
    return d[la][lb];
}

/* " (did you mean optimizer.lr?)" for a near miss, or "". */
static const char *suggest(const ng_cfg_spec *spec, int n, const char *key) {
    static char buf[160];
    int best = 99, bi = -1;
    for (int i = 0; i < n; i++) {
        int d = edit_distance(key, spec[i].key);
        const char *dot = strrchr(spec[i].key, '.'); /* a leaf given without its section */
        if (dot && !strcmp(dot + 1, key)) d = 1;
        if (d < best) best = d, bi = i;
    }
    if (bi < 0 || best > 3) return "";
    snprintf(buf, sizeof buf, " (did you mean %s?)", spec[bi].key);
    return buf;
}

static void where(char *out, size_t cap, const ng_config *c, const cfg_value *v) {
    if (v->line)
        snprintf(out, cap, " (%s line %d)", c->path, v->line);
    else if (!strcmp(v->where, "--set"))
        snprintf(out, cap, " (from --set)");
    else
        out[0] = 0;
}

static void set_value(ng_config *c, const char *key, const char *text, const char *from, int line) {
    int i = find(c->spec, c->n, key);
    if (i < 0) {
        if (line)
            ng_fail("%s line %d: unknown key '%s'%s; `natgrad train --help-config` lists the keys",
                    c->path, line, key, suggest(c->spec, c->n, key));
        ng_fail("--set: unknown key '%s'%s; `natgrad train --help-config` lists the keys", key,
                suggest(c->spec, c->n, key));
    }
    free(c->v[i].text);
    c->v[i] = (cfg_value){strdup(text), from, line};
}

static void walk(ng_config *c, yaml_document_t *doc, yaml_node_t *node, const char *prefix) {
    for (yaml_node_pair_t *p = node->data.mapping.pairs.start; p < node->data.mapping.pairs.top;
         p++) {
        yaml_node_t *k = yaml_document_get_node(doc, p->key),
                    *v = yaml_document_get_node(doc, p->value);
        int line = (int)k->start_mark.line + 1;
        NG_CHECK(k->type == YAML_SCALAR_NODE, "%s line %d: keys must be plain names", c->path,
                 line);
        char key[256];
        snprintf(key, sizeof key, "%s%s%s", prefix, prefix[0] ? "." : "",
                 (char *)k->data.scalar.value);
        if (v->type == YAML_MAPPING_NODE) {
            walk(c, doc, v, key);
        } else if (v->type == YAML_SEQUENCE_NODE) {
            int i = find(c->spec, c->n, key);
            NG_CHECK(i < 0 || c->spec[i].type == NG_CFG_INT_LIST,
                     "%s line %d: %s takes a single value, not a list", c->path, line, key);
            char text[1024] = "";
            size_t len = 0;
            for (yaml_node_item_t *it = v->data.sequence.items.start;
                 it < v->data.sequence.items.top; it++) {
                yaml_node_t *e = yaml_document_get_node(doc, *it);
                NG_CHECK(e->type == YAML_SCALAR_NODE, "%s line %d: %s: list items must be numbers",
                         c->path, line, key);
                len += (size_t)snprintf(text + len, sizeof text - len, "%s%s", len ? "," : "",
                                        (char *)e->data.scalar.value);
                NG_CHECK(len < sizeof text, "%s line %d: %s: list too long", c->path, line, key);
            }
            set_value(c, key, text, "file", line);
        } else {
            set_value(c, key, (char *)v->data.scalar.value, "file", line);
        }
    }
}

static void read_file(ng_config *c, const char *path) {
    FILE *f = fopen(path, "rb");
    NG_CHECK(f, "--config: cannot open %s: %s", path, strerror(errno));
    yaml_parser_t p;
    yaml_document_t doc;
    yaml_parser_initialize(&p);
    yaml_parser_set_input_file(&p, f);
    if (!yaml_parser_load(&p, &doc)) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s line %zu column %zu: YAML syntax error: %s", path,
                 p.problem_mark.line + 1, p.problem_mark.column + 1,
                 p.problem ? p.problem : "unreadable");
        yaml_parser_delete(&p);
        fclose(f);
        ng_fail("%s", msg);
    }
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (root) { /* an empty file is all defaults */
        NG_CHECK(root->type == YAML_MAPPING_NODE, "%s: the top level must be a mapping of keys",
                 path);
        walk(c, &doc, root, "");
    }
    yaml_document_delete(&doc);
    yaml_parser_delete(&p);
    fclose(f);
}

static int parse_double(const char *s, double *out) {
    char *end;
    errno = 0;
    double x = strtod(s, &end);
    if (end == s || *end || errno || !isfinite(x)) return 0;
    *out = x;
    return 1;
}

static int parse_int(const char *s, int64_t *out) {
    char *end;
    errno = 0;
    long long x = strtoll(s, &end, 10);
    if (end == s || *end || errno) return 0;
    *out = x;
    return 1;
}

static int parse_bool(const char *s, int *out) {
    static const char *t[] = {"true", "yes", "on", "1"}, *f[] = {"false", "no", "off", "0"};
    for (int i = 0; i < 4; i++) {
        if (!strcasecmp(s, t[i])) return *out = 1, 1;
        if (!strcasecmp(s, f[i])) return *out = 0, 1;
    }
    return 0;
}

static void check_range(const ng_config *c, int i, double x, const char *w) {
    const ng_cfg_spec *s = &c->spec[i];
    if (s->min > s->max) return;
    NG_CHECK(x >= s->min, "%s: %s is below the minimum %g%s", s->key, c->v[i].text, s->min, w);
    NG_CHECK(x <= s->max, "%s: %s is above the maximum %g%s", s->key, c->v[i].text, s->max, w);
}

static int in_choices(const char *choices, const char *v) {
    size_t n = strlen(v);
    for (const char *p = choices; p && *p;) {
        const char *bar = strchr(p, '|');
        size_t l = bar ? (size_t)(bar - p) : strlen(p);
        if (l == n && !strncmp(p, v, n)) return 1;
        p = bar ? bar + 1 : NULL;
    }
    return 0;
}

static void check(const ng_config *c, int i) {
    const ng_cfg_spec *s = &c->spec[i];
    const char *t = c->v[i].text;
    char w[512];
    where(w, sizeof w, c, &c->v[i]);
    NG_CHECK(t, "%s: required key is missing", s->key);
    double x = 0;
    int64_t n = 0;
    int b = 0;
    switch (s->type) {
        case NG_CFG_INT:
            NG_CHECK(parse_int(t, &n), "%s: '%s' is not an integer%s", s->key, t, w);
            check_range(c, i, (double)n, w);
            break;
        case NG_CFG_FLOAT:
            NG_CHECK(parse_double(t, &x), "%s: '%s' is not a number%s", s->key, t, w);
            check_range(c, i, x, w);
            break;
        case NG_CFG_BOOL:
            NG_CHECK(parse_bool(t, &b), "%s: '%s' is not true or false%s", s->key, t, w);
            break;
        case NG_CFG_CHOICE:
            NG_CHECK(in_choices(s->choices, t), "%s: '%s' is not one of %s%s", s->key, t,
                     s->choices, w);
            break;
        case NG_CFG_INT_LIST: {
            char *copy = strdup(t), *save = NULL;
            for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
                while (*tok == ' ') tok++;
                NG_CHECK(parse_int(tok, &n), "%s: '%s' in the list is not an integer%s", s->key,
                         tok, w);
                check_range(c, i, (double)n, w);
            }
            free(copy);
            break;
        }
        case NG_CFG_STRING:
            break;
    }
}

ng_config *ng_config_load(const ng_cfg_spec *spec, int nspec, const char *path,
                          const char *const *sets, int nsets) {
    ng_config *c = calloc(1, sizeof *c);
    c->spec = spec, c->n = nspec;
    c->v = calloc((size_t)nspec, sizeof *c->v);
    c->path = strdup(path ? path : "(none)");
    for (int i = 0; i < nspec; i++)
        c->v[i] = (cfg_value){spec[i].def ? strdup(spec[i].def) : NULL, "default", 0};
    if (path) read_file(c, path);
    for (int i = 0; i < nsets; i++) {
        const char *eq = strchr(sets[i], '=');
        NG_CHECK(eq && eq != sets[i], "--set: '%s' is not key=value", sets[i]);
        char key[256];
        snprintf(key, sizeof key, "%.*s", (int)(eq - sets[i]), sets[i]);
        set_value(c, key, eq + 1, "--set", 0);
    }
    for (int i = 0; i < nspec; i++) check(c, i);
    return c;
}

void ng_config_free(ng_config *c) {
    if (!c) return;
    for (int i = 0; i < c->n; i++) free(c->v[i].text);
    free(c->v);
    free(c->path);
    free(c);
}

static int lookup(const ng_config *c, const char *key, ng_cfg_type t, int also_choice) {
    int i = find(c->spec, c->n, key);
    NG_CHECK(i >= 0, "config: key %s is not in the schema", key);
    NG_CHECK(c->spec[i].type == t || (also_choice && c->spec[i].type == NG_CFG_CHOICE),
             "config: key %s read with the wrong type", key);
    return i;
}

int64_t ng_cfg_int(const ng_config *c, const char *key) {
    int64_t n = 0;
    parse_int(c->v[lookup(c, key, NG_CFG_INT, 0)].text, &n);
    return n;
}

double ng_cfg_float(const ng_config *c, const char *key) {
    double x = 0;
    parse_double(c->v[lookup(c, key, NG_CFG_FLOAT, 0)].text, &x);
    return x;
}

int ng_cfg_bool(const ng_config *c, const char *key) {
    int b = 0;
    parse_bool(c->v[lookup(c, key, NG_CFG_BOOL, 0)].text, &b);
    return b;
}

const char *ng_cfg_str(const ng_config *c, const char *key) {
    return c->v[lookup(c, key, NG_CFG_STRING, 1)].text;
}

int ng_cfg_int_list(const ng_config *c, const char *key, int64_t *out, int cap) {
    char *copy = strdup(c->v[lookup(c, key, NG_CFG_INT_LIST, 0)].text), *save = NULL;
    int n = 0;
    for (char *tok = strtok_r(copy, ",", &save); tok && n < cap; tok = strtok_r(NULL, ",", &save))
        parse_int(tok + strspn(tok, " "), &out[n++]);
    free(copy);
    return n;
}

const char *ng_cfg_source(const ng_config *c, const char *key) {
    int i = find(c->spec, c->n, key);
    NG_CHECK(i >= 0, "config: key %s is not in the schema", key);
    return c->v[i].where;
}

/* Strings are written double-quoted so values like "no" or "1e3" stay strings. */
static void write_value(FILE *f, const ng_cfg_spec *s, const char *t) {
    if (s->type == NG_CFG_STRING || s->type == NG_CFG_CHOICE) {
        fputc('"', f);
        for (const char *p = t; *p; p++) {
            if (*p == '"' || *p == '\\') fputc('\\', f);
            fputc(*p, f);
        }
        fputc('"', f);
    } else if (s->type == NG_CFG_INT_LIST) {
        fprintf(f, "[%s]", t);
    } else {
        fputs(t, f);
    }
}

void ng_config_write_yaml(const ng_config *c, FILE *f, const char *header) {
    if (header) {
        const char *p = header;
        while (*p) {
            const char *nl = strchr(p, '\n');
            int len = nl ? (int)(nl - p) : (int)strlen(p);
            fprintf(f, "# %.*s\n", len, p);
            p += len + (nl ? 1 : 0);
        }
    }
    /* Keys sharing a section prefix are written under one nested mapping; the schema lists a
     * section's keys together, so consecutive keys are compared. */
    char prev[256] = "";
    for (int i = 0; i < c->n; i++) {
        const char *k = c->spec[i].key;
        /* common dotted prefix with the previous key, in whole components */
        size_t common = 0;
        for (size_t j = 0; k[j] && prev[j] == k[j]; j++)
            if (k[j] == '.') common = j + 1;
        int depth = 0;
        for (size_t j = 0; j < common; j++) depth += k[j] == '.';
        const char *rest = k + common;
        for (const char *dot; (dot = strchr(rest, '.'));) {
            fprintf(f, "%*s%.*s:\n", 2 * depth, "", (int)(dot - rest), rest);
            depth++;
            rest = dot + 1;
        }
        fprintf(f, "%*s%s: ", 2 * depth, "", rest);
        write_value(f, &c->spec[i], c->v[i].text);
        fputc('\n', f);
        snprintf(prev, sizeof prev, "%s", k);
    }
}

void ng_config_print_schema(const ng_cfg_spec *spec, int nspec, FILE *f) {
    static const char *types[] = {"int", "float", "bool", "string", "choice", "int list"};
    for (int i = 0; i < nspec; i++) {
        const ng_cfg_spec *s = &spec[i];
        fprintf(f, "%-28s %-7s default %-10s", s->key, types[s->type],
                s->def ? s->def : "(required)");
        if (s->type == NG_CFG_CHOICE)
            fprintf(f, " one of %s", s->choices);
        else if (s->min <= s->max)
            fprintf(f, " in [%g, %g]", s->min, s->max);
        fprintf(f, "\n    %s\n", s->help);
    }
}
