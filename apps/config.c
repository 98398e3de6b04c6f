/* Config files through libyaml, --set overrides and the schema checks; a load error is raised
 * only after everything is freed, so a caught one (tests) leaks nothing. */
#define _GNU_SOURCE /* strdup, strndup */
#include "apps/config.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <yaml.h>

#include "core/error.h"

enum { SRC_DEFAULT, SRC_FILE, SRC_SET };
static const char *const src_name[] = {"default", "file", "--set"};
static const char *const type_name[] = {"int", "float", "bool", "string", "choice", "int list"};

#define MAX_DEPTH 32 /* nesting of YAML mappings; also stops self-referencing aliases */
/* Nesting of mappings and lists together, checked on parser events before libyaml builds a
 * document: libyaml's scanner rescans every open level for each token, so a deep file (100k
 * '[') would take hours to reject. A config nests a few levels. */
#define MAX_NEST 64
/* Key/value pairs visited while walking the document: aliases let a small file name one
 * mapping from many places, which would otherwise multiply the walk without bound. */
#define MAX_PAIRS 100000
#define MAX_KEY 256 /* longest dotted key */
#define MAX_FILE (1 << 24)

typedef struct {
    int src;
    int line;     /* 1-based line in the file when src is SRC_FILE */
    char *text;   /* scalar as written; NULL when unset; unused for INT_LIST */
    char **items; /* INT_LIST: the items as written */
    int nitems, has_items;
    /* resolved */
    int64_t i;
    double f;
    int b;
    int64_t *list;
} cfg_value;

struct ng_config {
    const ng_cfg_spec *spec;
    int n;
    cfg_value *v;
    char *path;
    long pairs;     /* pairs walked so far, against MAX_PAIRS */
    char err[1024]; /* the pending error while loading */
};

static int failf(ng_config *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int failf(ng_config *c, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, sizeof c->err, fmt, ap);
    va_end(ap);
    return -1;
}

static int find(const ng_cfg_spec *spec, int n, const char *key) {
    for (int i = 0; i < n; i++)
        if (!strcmp(spec[i].key, key)) return i;
    return -1;
}

/* First schema key inside section `key` (key + "." is its prefix), or -1. */
static int find_section(const ng_cfg_spec *spec, int n, const char *key) {
    size_t l = strlen(key);
    for (int i = 0; i < n; i++)
        if (!strncmp(spec[i].key, key, l) && spec[i].key[l] == '.') return i;
    return -1;
}

/* ---- "did you mean": optimal string alignment distance (edits and swaps) ------------------ */

static int edit_distance(const char *a, const char *b) {
    int la = (int)strlen(a), lb = (int)strlen(b);
    if (la > 200 || lb > 200) return 1000;
    int *d = malloc(sizeof(int) * (size_t)(la + 1) * (size_t)(lb + 1));
    if (!d) return 1000;
#define D(i, j) d[(i) * (lb + 1) + (j)]
    for (int i = 0; i <= la; i++) D(i, 0) = i;
    for (int j = 0; j <= lb; j++) D(0, j) = j;
    for (int i = 1; i <= la; i++)
        for (int j = 1; j <= lb; j++) {
            int x = D(i - 1, j - 1) + (a[i - 1] != b[j - 1]);
            if (D(i - 1, j) + 1 < x) x = D(i - 1, j) + 1;
            if (D(i, j - 1) + 1 < x) x = D(i, j - 1) + 1;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
                D(i - 2, j - 2) + 1 < x)
                x = D(i - 2, j - 2) + 1;
            D(i, j) = x;
        }
    int r = D(la, lb);
#undef D
    free(d);
    return r;
}

static const char *leaf(const char *key) {
    const char *dot = strrchr(key, '.');
    return dot ? dot + 1 : key;
}

typedef const char *(*name_fn)(const void *ctx, int i, char *buf, size_t cap);

/* The index of the closest of `n` names, or -1 when none is close: a few edits for the length
 * (a swap counts one), the same name in another case, or the same last component under another
 * section (lr -> optimizer.lr). Ties go to the first. */
static int closest(const char *word, int n, name_fn name, const void *ctx) {
    int best = 1000, pick = -1;
    char buf[256];
    for (int i = 0; i < n; i++) {
        const char *cand = name(ctx, i, buf, sizeof buf);
        int d = 2 * edit_distance(word, cand); /* half edits, for the case-only match */
        if (!strcasecmp(word, cand)) d = 1;
        if (!strcmp(leaf(word), leaf(cand)) && d > 2) d = 2;
        if (d < best) best = d, pick = i;
    }
    int len = (int)strlen(word), allowed = len / 4 > 2 ? len / 4 : 2;
    return best <= 2 * allowed ? pick : -1;
}

static const char *list_name(const void *ctx, int i, char *buf, size_t cap) {
    (void)buf, (void)cap;
    return ((char *const *)ctx)[i];
}

/* " (did you mean optimizer.lr?)" naming the closest key or section, else the keys of the
 * section the word is under, else "". */
static void key_hint(const ng_cfg_spec *spec, int n, const char *key, char *out, size_t cap) {
    out[0] = 0;
    int nnames = 0, maxnames = 0;
    for (int i = 0; i < n; i++)
        for (const char *p = spec[i].key; p; p = strchr(p + 1, '.')) maxnames++;
    char **names = calloc((size_t)maxnames, sizeof *names);
    for (int i = 0; i < n; i++) {
        names[nnames++] = strdup(spec[i].key);
        for (const char *p = strchr(spec[i].key, '.'); p; p = strchr(p + 1, '.'))
            names[nnames++] = strndup(spec[i].key, (size_t)(p - spec[i].key));
    }
    int s = closest(key, nnames, list_name, names);
    if (s >= 0) snprintf(out, cap, " (did you mean %s?)", names[s]);
    for (int i = 0; i < nnames; i++) free(names[i]);
    free(names);
    if (s >= 0) return;
    const char *dot = strrchr(key, '.');
    if (!dot) return;
    char sect[MAX_KEY];
    snprintf(sect, sizeof sect, "%.*s", (int)(dot - key), key);
    size_t l = strlen(sect), len = 0;
    for (int i = 0; i < n && len + 1 < cap; i++)
        if (!strncmp(spec[i].key, sect, l) && spec[i].key[l] == '.')
            len += (size_t)snprintf(out + len, cap - len, "%s%s",
                                    len ? ", " : " (section has: ", spec[i].key + l + 1);
    if (len && len + 2 < cap) strcat(out, ")");
}

/* ", such as name, lr, momentum" listing a section's keys (shortened) */
static void section_keys(const ng_cfg_spec *spec, int n, const char *sect, char *out, size_t cap) {
    size_t l = strlen(sect), len = 0;
    int shown = 0;
    out[0] = 0;
    for (int i = 0; i < n; i++) {
        if (strncmp(spec[i].key, sect, l) || spec[i].key[l] != '.') continue;
        if (shown == 6) {
            snprintf(out + len, cap - len, ", ...");
            return;
        }
        len += (size_t)snprintf(out + len, cap - len, "%s%s", shown ? ", " : "", spec[i].key);
        if (len >= cap) return;
        shown++;
    }
}

/* ---- numbers, text ------------------------------------------------------------------------ */

static int is_int_text(const char *s) {
    if (*s == '+' || *s == '-') s++;
    if (!isdigit((unsigned char)*s)) return 0;
    while (isdigit((unsigned char)*s)) s++;
    return *s == 0;
}

static int is_float_text(const char *s) {
    int digits = 0;
    if (*s == '+' || *s == '-') s++;
    for (; isdigit((unsigned char)*s); s++) digits++;
    if (*s == '.')
        for (s++; isdigit((unsigned char)*s); s++) digits++;
    if (!digits) return 0;
    if (*s == 'e' || *s == 'E') {
        s++;
        if (*s == '+' || *s == '-') s++;
        if (!isdigit((unsigned char)*s)) return 0;
        while (isdigit((unsigned char)*s)) s++;
    }
    return *s == 0;
}

/* The text without underscores when that makes it a number, for a hint; else NULL. */
static char *without_underscores(const char *s) {
    if (!strchr(s, '_')) return NULL;
    char *t = strdup(s), *w = t;
    for (const char *p = s; *p; p++)
        if (*p != '_') *w++ = *p;
    *w = 0;
    if (is_float_text(t)) return t;
    free(t);
    return NULL;
}

/* Shortest %g text that reads back to exactly x. */
static void fmt_num(double x, char *buf, size_t cap) {
    if (x == floor(x) && fabs(x) < 1e15) {
        snprintf(buf, cap, "%.0f", x);
        return;
    }
    for (int p = 1; p <= 17; p++) {
        snprintf(buf, cap, "%.*g", p, x);
        if (strtod(buf, NULL) == x) return;
    }
}

static char *trim(char *s) {
    while (isspace((unsigned char)*s)) s++;
    size_t l = strlen(s);
    while (l && isspace((unsigned char)s[l - 1])) s[--l] = 0;
    return s;
}

/* ---- values ------------------------------------------------------------------------------- */

static void clear_value(cfg_value *v) {
    free(v->text);
    for (int k = 0; k < v->nitems; k++) free(v->items[k]);
    free(v->items);
    free(v->list);
    memset(v, 0, sizeof *v);
}

/* "1,2,3" or "[1, 2, 3]" or "[]" into items (lexically; the types are checked later). */
static void split_list(cfg_value *v, const char *text) {
    char *copy = strdup(text), *s = trim(copy);
    size_t l = strlen(s);
    if (l >= 2 && s[0] == '[' && s[l - 1] == ']') {
        s[l - 1] = 0;
        s = trim(s + 1);
    }
    v->has_items = 1;
    if (*s) {
        int cap = 1;
        for (const char *p = s; *p; p++) cap += *p == ',';
        v->items = calloc((size_t)cap, sizeof *v->items);
        for (char *p = s;;) {
            char *comma = strchr(p, ',');
            if (comma) *comma = 0;
            v->items[v->nitems++] = strdup(trim(p));
            if (!comma) break;
            p = comma + 1;
        }
    }
    free(copy);
}

static void set_text(ng_config *c, int i, const char *text, int src, int line) {
    cfg_value *v = &c->v[i];
    clear_value(v);
    v->src = src, v->line = line;
    if (c->spec[i].type == NG_CFG_INT_LIST)
        split_list(v, text);
    else
        v->text = strdup(text);
}

/* " (exp.yaml line 4)", " (from --set)" or " (the schema's default)". */
static void where(const ng_config *c, const cfg_value *v, char *out, size_t cap) {
    if (v->src == SRC_FILE)
        snprintf(out, cap, " (%s line %d)", c->path, v->line);
    else if (v->src == SRC_SET)
        snprintf(out, cap, " (from --set)");
    else
        snprintf(out, cap, " (the schema's default)");
}

static int range_ok(ng_config *c, const ng_cfg_spec *s, double x, const char *what,
                    const char *loc) {
    if (s->min > s->max) return 0;
    char b[64];
    if (x < s->min) {
        fmt_num(s->min, b, sizeof b);
        return failf(c, "%s: %s is below the minimum %s%s", s->key, what, b, loc);
    }
    if (x > s->max) {
        fmt_num(s->max, b, sizeof b);
        return failf(c, "%s: %s is above the maximum %s%s", s->key, what, b, loc);
    }
    return 0;
}

/* Parses an integer; `what` names it in messages ("'12x'" or "item 2 '12x'"). */
static int parse_int(ng_config *c, const ng_cfg_spec *s, const char *t, const char *what,
                     const char *loc, int64_t *out) {
    if (is_int_text(t)) {
        errno = 0;
        long long x = strtoll(t, NULL, 10);
        if (errno == ERANGE)
            return failf(c, "%s: %s is outside the 64-bit integer range%s", s->key, what, loc);
        *out = x;
        return 0;
    }
    if (is_float_text(t)) {
        double x = strtod(t, NULL);
        if (x == floor(x) && fabs(x) < 9e18)
            return failf(c, "%s: %s is not an integer (write %.0f)%s", s->key, what, x, loc);
        return failf(c, "%s: %s is not an integer%s", s->key, what, loc);
    }
    char *u = without_underscores(t);
    if (u) {
        failf(c, "%s: %s is not an integer (no underscores: write %s)%s", s->key, what, u, loc);
        free(u);
        return -1;
    }
    return failf(c, "%s: %s is not an integer%s", s->key, what, loc);
}

static int parse_bool(const char *s, int *out) {
    static const char *const t[] = {"true", "yes", "on", "1"}, *const f[] = {"false", "no", "off",
                                                                             "0"};
    for (int i = 0; i < 4; i++) {
        if (!strcasecmp(s, t[i])) return *out = 1, 1;
        if (!strcasecmp(s, f[i])) return *out = 0, 1;
    }
    return 0;
}

static int choice_count(const char *choices) {
    int n = 1;
    for (const char *p = choices; *p; p++) n += *p == '|';
    return n;
}

/* The i-th alternative of "a|b|c" into buf. */
static const char *choice_at(const char *choices, int i, char *buf, size_t cap) {
    const char *p = choices;
    for (; i > 0; i--) p = strchr(p, '|') + 1;
    const char *bar = strchr(p, '|');
    snprintf(buf, cap, "%.*s", bar ? (int)(bar - p) : (int)strlen(p), p);
    return buf;
}

static int in_choices(const char *choices, const char *v) {
    char buf[256];
    for (int i = 0, n = choice_count(choices); i < n; i++)
        if (!strcmp(choice_at(choices, i, buf, sizeof buf), v)) return 1;
    return 0;
}

static const char *choice_name(const void *ctx, int i, char *buf, size_t cap) {
    return choice_at((const char *)ctx, i, buf, cap);
}

/* Checks value i and fills its resolved fields. */
static int resolve(ng_config *c, int i) {
    const ng_cfg_spec *s = &c->spec[i];
    cfg_value *v = &c->v[i];
    char loc[600], what[160];
    where(c, v, loc, sizeof loc);
    const char *t = v->text;
    if (t) snprintf(what, sizeof what, "'%.120s'", t);
    switch (s->type) {
        case NG_CFG_INT:
            if (parse_int(c, s, t, what, loc, &v->i)) return -1;
            return range_ok(c, s, (double)v->i, t, loc);
        case NG_CFG_FLOAT: {
            if (!is_float_text(t)) {
                char *u = without_underscores(t);
                if (u) {
                    failf(c, "%s: %s is not a number (no underscores: write %s)%s", s->key, what, u,
                          loc);
                    free(u);
                    return -1;
                }
                return failf(c, "%s: %s is not a number%s", s->key, what, loc);
            }
            v->f = strtod(t, NULL);
            if (!isfinite(v->f))
                return failf(c, "%s: %s is too large for a double%s", s->key, what, loc);
            return range_ok(c, s, v->f, t, loc);
        }
        case NG_CFG_BOOL:
            if (!parse_bool(t, &v->b))
                return failf(c, "%s: %s is not a boolean (true/false, yes/no, on/off, 1/0)%s",
                             s->key, what, loc);
            return 0;
        case NG_CFG_STRING:
            return 0;
        case NG_CFG_CHOICE: {
            if (in_choices(s->choices, t)) return 0;
            int near = closest(t, choice_count(s->choices), choice_name, s->choices);
            char hint[300] = "", buf[256];
            if (near >= 0)
                snprintf(hint, sizeof hint, " (did you mean %s?)",
                         choice_at(s->choices, near, buf, sizeof buf));
            return failf(c, "%s: %s is not one of %s%s%s", s->key, what, s->choices, hint, loc);
        }
        case NG_CFG_INT_LIST:
            free(v->list); /* a default is resolved again when nothing overrides it */
            v->list = calloc((size_t)(v->nitems ? v->nitems : 1), sizeof *v->list);
            for (int k = 0; k < v->nitems; k++) {
                snprintf(what, sizeof what, "item %d '%.100s'", k + 1, v->items[k]);
                if (parse_int(c, s, v->items[k], what, loc, &v->list[k])) return -1;
                snprintf(what, sizeof what, "item %d (%s)", k + 1, v->items[k]);
                if (range_ok(c, s, (double)v->list[k], what, loc)) return -1;
            }
            return 0;
    }
    return failf(c, "%s: unknown type %d in the schema", s->key, (int)s->type);
}

static int has_value(const ng_config *c, int i) {
    return c->spec[i].type == NG_CFG_INT_LIST ? c->v[i].has_items : c->v[i].text != NULL;
}

/* ---- the schema --------------------------------------------------------------------------- */

static int key_ok(const char *k) {
    if (!k || !*k || *k == '.' || k[strlen(k) - 1] == '.' || strstr(k, "..")) return 0;
    if (strlen(k) >= MAX_KEY) return 0;
    for (const char *p = k; *p; p++)
        if (!isalnum((unsigned char)*p) && !strchr("_-.", *p)) return 0;
    return 1;
}

/* A broken schema is the program's bug; say so before reading any user input. */
static void check_schema(const ng_cfg_spec *spec, int n) {
    NG_CHECK(spec && n > 0, "config schema: no keys (spec %p, n %d)", (const void *)spec, n);
    for (int i = 0; i < n; i++) {
        const ng_cfg_spec *s = &spec[i];
        NG_CHECK(key_ok(s->key),
                 "config schema: entry %d has a bad key '%s' (want dotted [A-Za-z0-9_-] names)", i,
                 s->key ? s->key : "(null)");
        NG_CHECK(s->type >= NG_CFG_INT && s->type <= NG_CFG_INT_LIST,
                 "config schema: %s has an unknown type %d", s->key, (int)s->type);
        if (s->type == NG_CFG_CHOICE) {
            const char *ch = s->choices;
            NG_CHECK(ch && *ch && *ch != '|' && ch[strlen(ch) - 1] != '|' && !strstr(ch, "||"),
                     "config schema: %s is a choice with bad choices '%s' (want \"a|b|c\")", s->key,
                     ch ? ch : "(null)");
        }
        for (int j = 0; j < i; j++) {
            const char *a = spec[j].key, *b = s->key;
            size_t la = strlen(a), lb = strlen(b);
            NG_CHECK(strcmp(a, b), "config schema: %s is listed twice", b);
            NG_CHECK(!(la < lb && !strncmp(a, b, la) && b[la] == '.') &&
                         !(lb < la && !strncmp(a, b, lb) && a[lb] == '.'),
                     "config schema: %s and %s clash (a key cannot also be a section)", a, b);
        }
    }
}

/* ---- the YAML file ------------------------------------------------------------------------ */

static const char *node_kind(const yaml_node_t *n) {
    return n->type == YAML_MAPPING_NODE    ? "mapping"
           : n->type == YAML_SEQUENCE_NODE ? "list"
                                           : "value";
}

static int is_null(const yaml_node_t *n) {
    const char *s = (const char *)n->data.scalar.value;
    return n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
           (!*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") ||
            !strcmp(s, "NULL"));
}

static int unknown_key(ng_config *c, const char *key, int line) {
    char hint[600];
    key_hint(c->spec, c->n, key, hint, sizeof hint);
    if (line)
        return failf(c,
                     "%s line %d: unknown key '%s'%s; `natgrad train --help-config` lists the keys",
                     c->path, line, key, hint);
    return failf(c, "--set: unknown key '%s'%s; `natgrad train --help-config` lists the keys", key,
                 hint);
}

static int not_a_key(ng_config *c, const char *key, const char *loc) {
    char keys[400];
    section_keys(c->spec, c->n, key, keys, sizeof keys);
    return failf(c, "'%s' is a section, not a key%s: set its keys (%s), nested or dotted", key, loc,
                 keys);
}

static int file_value_slot(ng_config *c, const char *key, int line, int *idx) {
    int i = *idx = find(c->spec, c->n, key);
    if (i < 0) {
        if (find_section(c->spec, c->n, key) >= 0) {
            char loc[600];
            snprintf(loc, sizeof loc, " (%s line %d)", c->path, line);
            return not_a_key(c, key, loc);
        }
        return unknown_key(c, key, line);
    }
    if (c->v[i].src == SRC_FILE)
        return failf(c, "%s is given twice in %s: line %d and line %d", key, c->path, c->v[i].line,
                     line);
    return 0;
}

static int walk(ng_config *c, yaml_document_t *doc, yaml_node_t *map, const char *prefix,
                int depth) {
    if (depth > MAX_DEPTH)
        return failf(c, "%s line %d: mappings nest deeper than %d levels under '%s'", c->path,
                     (int)map->start_mark.line + 1, MAX_DEPTH, prefix);
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        yaml_node_t *k = yaml_document_get_node(doc, p->key),
                    *v = yaml_document_get_node(doc, p->value);
        int line = (int)k->start_mark.line + 1, i;
        if (++c->pairs > MAX_PAIRS)
            return failf(c, "%s line %d: more than %d keys once aliases (*name) are expanded",
                         c->path, line, MAX_PAIRS);
        if (k->type != YAML_SCALAR_NODE)
            return failf(c, "%s line %d: a key must be a plain name, not a %s", c->path, line,
                         node_kind(k));
        const char *name = (const char *)k->data.scalar.value;
        if (!strcmp(name, "<<"))
            return failf(c, "%s line %d: merge keys (<<) are not supported; write the keys out",
                         c->path, line);
        if (!*name) return failf(c, "%s line %d: empty key", c->path, line);
        char key[MAX_KEY];
        if (snprintf(key, sizeof key, "%s%s%s", prefix, *prefix ? "." : "", name) >=
            (int)sizeof key)
            return failf(c, "%s line %d: key '%.60s...' is too long", c->path, line, key);

        if (v->type == YAML_MAPPING_NODE) {
            int j = find(c->spec, c->n, key);
            if (j >= 0)
                return failf(c, "%s: takes a single %s, not a mapping (%s line %d)", key,
                             type_name[c->spec[j].type], c->path, line);
            if (find_section(c->spec, c->n, key) < 0 &&
                v->data.mapping.pairs.top == v->data.mapping.pairs.start)
                return unknown_key(c, key, line); /* `foo: {}` would otherwise pass unseen */
            if (walk(c, doc, v, key, depth + 1)) return -1;
        } else if (v->type == YAML_SEQUENCE_NODE) {
            if (file_value_slot(c, key, line, &i)) return -1;
            const ng_cfg_spec *s = &c->spec[i];
            if (s->type != NG_CFG_INT_LIST)
                return failf(c, "%s: takes a single %s, not a list (%s line %d)", key,
                             type_name[s->type], c->path, line);
            cfg_value *cv = &c->v[i];
            clear_value(cv);
            cv->src = SRC_FILE, cv->line = line, cv->has_items = 1;
            int n = (int)(v->data.sequence.items.top - v->data.sequence.items.start);
            cv->items = calloc((size_t)(n ? n : 1), sizeof *cv->items);
            for (int m = 0; m < n; m++) {
                yaml_node_t *e = yaml_document_get_node(doc, v->data.sequence.items.start[m]);
                if (e->type != YAML_SCALAR_NODE)
                    return failf(c, "%s: item %d must be an integer, not a %s (%s line %d)", key,
                                 m + 1, node_kind(e), c->path, (int)e->start_mark.line + 1);
                cv->items[cv->nitems++] = strdup((const char *)e->data.scalar.value);
            }
        } else {
            if (is_null(v) && find(c->spec, c->n, key) < 0 && find_section(c->spec, c->n, key) >= 0)
                continue; /* a section with all its keys commented out */
            if (file_value_slot(c, key, line, &i)) return -1;
            if (is_null(v)) {
                const char *d = c->spec[i].def;
                return failf(c, "%s: no value given (%s line %d); write one, or %s%s%s", key,
                             c->path, line, d ? "delete the line to use the default '" : "",
                             d ? d : "it is required", d ? "'" : "");
            }
            set_text(c, i, (const char *)v->data.scalar.value, SRC_FILE, line);
        }
    }
    return 0;
}

/* "exp.yaml line 3 column 9: YAML syntax error: ..." with the line quoted and a caret. */
static int syntax_error(ng_config *c, const yaml_parser_t *p, const char *buf, size_t len) {
    if (p->error == YAML_MEMORY_ERROR) return failf(c, "%s: out of memory reading YAML", c->path);
    if (p->error == YAML_READER_ERROR) {
        int line = 1;
        for (size_t k = 0; k < p->problem_offset && k < len; k++) line += buf[k] == '\n';
        return failf(c, "%s line %d: the file is not valid UTF-8 text (%s at byte %zu)", c->path,
                     line, p->problem ? p->problem : "unreadable", p->problem_offset);
    }
    size_t line = p->problem_mark.line, col = p->problem_mark.column;
    char ctx[300] = "";
    if (p->context)
        snprintf(ctx, sizeof ctx, " (%s at line %zu)", p->context, p->context_mark.line + 1);
    /* the offending line, tabs shown as spaces, with a caret under the column */
    const char *s = buf, *end = buf + len;
    for (size_t l = 0; l < line && s < end; s++)
        if (*s == '\n') l++;
    const char *e = memchr(s, '\n', (size_t)(end - s));
    if (!e) e = end;
    char text[160], caret[160];
    int tl = (int)(e - s) < 150 ? (int)(e - s) : 150, has_tab = 0;
    for (int k = 0; k < tl; k++) {
        has_tab |= s[k] == '\t';
        text[k] = s[k] == '\t' ? ' ' : s[k];
    }
    text[tl] = 0;
    int cc = (int)col < 150 ? (int)col : 150;
    memset(caret, ' ', (size_t)cc);
    caret[cc] = '^';
    caret[cc + 1] = 0;
    char excerpt[400] = "";
    if (s < end && tl)
        snprintf(excerpt, sizeof excerpt, "\n  %5zu | %s\n        | %s", line + 1, text, caret);
    return failf(c, "%s line %zu column %zu: YAML syntax error: %s%s%s%s", c->path, line + 1,
                 col + 1, p->problem ? p->problem : "unreadable", ctx,
                 has_tab ? " (YAML indents with spaces; this line has a tab)" : "", excerpt);
}

/* Reads the file as parser events only, counting open mappings and lists, and stops at the
 * first one past MAX_NEST. A syntax error is left for the document pass to report. */
static int check_nesting(ng_config *c, const char *buf, size_t len) {
    yaml_parser_t p;
    if (!yaml_parser_initialize(&p)) return failf(c, "%s: out of memory reading YAML", c->path);
    yaml_parser_set_input_string(&p, (const unsigned char *)buf, len);
    int depth = 0, rc = 0;
    for (;;) {
        yaml_event_t e;
        if (!yaml_parser_parse(&p, &e)) break;
        yaml_event_type_t t = e.type;
        int line = (int)e.start_mark.line + 1;
        yaml_event_delete(&e);
        if (t == YAML_STREAM_END_EVENT) break;
        if (t == YAML_MAPPING_START_EVENT || t == YAML_SEQUENCE_START_EVENT) depth++;
        if (t == YAML_MAPPING_END_EVENT || t == YAML_SEQUENCE_END_EVENT) depth--;
        if (depth > MAX_NEST) {
            rc = failf(c, "%s line %d: mappings and lists nest deeper than %d levels", c->path,
                       line, MAX_NEST);
            break;
        }
    }
    yaml_parser_delete(&p);
    return rc;
}

static int read_file(ng_config *c, const char *path) {
    struct stat st;
    if (stat(path, &st)) return failf(c, "--config: cannot open %s: %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode)) return failf(c, "--config: %s is a directory, not a file", path);
    if (st.st_size > MAX_FILE)
        return failf(c, "--config: %s is %lld bytes, too large for a config file", path,
                     (long long)st.st_size);
    FILE *f = fopen(path, "rb");
    if (!f) return failf(c, "--config: cannot open %s: %s", path, strerror(errno));
    char *buf = malloc((size_t)st.st_size + 1);
    size_t len = buf ? fread(buf, 1, (size_t)st.st_size, f) : 0;
    int bad_read = !buf || ferror(f);
    fclose(f);
    if (bad_read) {
        free(buf);
        return failf(c, "--config: cannot read %s", path);
    }
    buf[len] = 0;
    if (check_nesting(c, buf, len)) {
        free(buf);
        return -1;
    }

    yaml_parser_t p;
    yaml_document_t doc;
    int rc = 0;
    if (!yaml_parser_initialize(&p)) {
        free(buf);
        return failf(c, "%s: out of memory reading YAML", path);
    }
    yaml_parser_set_input_string(&p, (const unsigned char *)buf, len);
    if (!yaml_parser_load(&p, &doc)) { /* libyaml frees the partial document itself */
        rc = syntax_error(c, &p, buf, len);
    } else {
        yaml_node_t *root = yaml_document_get_root_node(&doc);
        int had_root = root != NULL;
        if (root && root->type != YAML_MAPPING_NODE)
            rc = !(root->type == YAML_SCALAR_NODE && is_null(root)) /* only comments */
                     ? failf(c,
                             "%s line %d: the top level must be a mapping of keys (key: value "
                             "lines), not a %s",
                             path, (int)root->start_mark.line + 1, node_kind(root))
                     : 0;
        else if (root)
            rc = walk(c, &doc, root, "", 0);
        yaml_document_delete(&doc);
        if (!rc && had_root) { /* a second document ("---") would be ignored silently */
            if (!yaml_parser_load(&p, &doc)) {
                rc = syntax_error(c, &p, buf, len);
            } else {
                yaml_node_t *r2 = yaml_document_get_root_node(&doc);
                if (r2)
                    rc = failf(c,
                               "%s line %d: a second YAML document starts here; a config is "
                               "one document (drop the '---')",
                               path, (int)r2->start_mark.line + 1);
                yaml_document_delete(&doc);
            }
        }
    }
    yaml_parser_delete(&p);
    free(buf);
    return rc;
}

/* ---- --set -------------------------------------------------------------------------------- */

/* The length of the UTF-8 sequence at p and its code point, or 0 when it is not valid UTF-8
 * (overlong forms, surrogates and code points past U+10FFFF included). */
static int utf8_next(const unsigned char *p, uint32_t *cp) {
    int n = p[0] < 0x80             ? 1
            : (p[0] & 0xE0) == 0xC0 ? 2
            : (p[0] & 0xF0) == 0xE0 ? 3
            : (p[0] & 0xF8) == 0xF0 ? 4
                                    : 0;
    if (!n) return 0;
    uint32_t c = n == 1 ? p[0] : p[0] & (0x7F >> n);
    for (int k = 1; k < n; k++) {
        if ((p[k] & 0xC0) != 0x80) return 0;
        c = c << 6 | (p[k] & 0x3F);
    }
    static const uint32_t least[] = {0, 0, 0x80, 0x800, 0x10000};
    if (c < least[n] || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) return 0;
    *cp = c;
    return n;
}

static int is_utf8(const char *s) {
    uint32_t cp;
    for (const unsigned char *p = (const unsigned char *)s; *p;) {
        int n = utf8_next(p, &cp);
        if (!n) return 0;
        p += n;
    }
    return 1;
}

static int apply_set(ng_config *c, const char *arg) {
    const char *eq = strchr(arg, '=');
    char key[MAX_KEY];
    if (eq) snprintf(key, sizeof key, "%.*s", (int)(eq - arg), arg);
    char *k = eq ? trim(key) : NULL;
    if (!k || !*k)
        return failf(c, "--set '%s': expected key=value, e.g. --set optimizer.lr=0.1", arg);
    int i = find(c->spec, c->n, k);
    if (i < 0) {
        if (find_section(c->spec, c->n, k) >= 0) return not_a_key(c, k, " (from --set)");
        return unknown_key(c, k, 0);
    }
    if (!is_utf8(eq + 1)) return failf(c, "%s: the value given with --set is not UTF-8 text", k);
    char *val = strdup(eq + 1), *v = trim(val);
    size_t l = strlen(v);
    if (l >= 2 && (v[0] == '"' || v[0] == '\'') && v[l - 1] == v[0]) {
        v[l - 1] = 0;
        v++;
    }
    set_text(c, i, v, SRC_SET, 0);
    free(val);
    return 0;
}

/* ---- loading ------------------------------------------------------------------------------ */

static int load(ng_config *c, const char *path, const char *const *sets, int nsets) {
    if (path && read_file(c, path)) return -1;
    for (int k = 0; k < nsets; k++)
        if (apply_set(c, sets[k])) return -1;
    char missing[600] = "";
    size_t len = 0;
    int nmissing = 0;
    for (int i = 0; i < c->n; i++)
        if (!has_value(c, i) && len + 1 < sizeof missing) {
            len += (size_t)snprintf(missing + len, sizeof missing - len, "%s%s",
                                    nmissing ? ", " : "", c->spec[i].key);
            nmissing++;
        }
    if (nmissing == 1)
        return failf(c, "%s: required key is missing; set it in %s or with --set %s=VALUE", missing,
                     path ? path : "the config file", missing);
    if (nmissing)
        return failf(c, "required keys are missing: %s; set them in %s or with --set KEY=VALUE",
                     missing, path ? path : "the config file");
    for (int i = 0; i < c->n; i++)
        if (resolve(c, i)) return -1;
    return 0;
}

ng_config *ng_config_load(const ng_cfg_spec *spec, int nspec, const char *path,
                          const char *const *sets, int nsets) {
    check_schema(spec, nspec);
    NG_CHECK(nsets >= 0 && (sets || !nsets), "config: %d --set values but no array", nsets);
    ng_config *c = calloc(1, sizeof *c);
    NG_CHECK(c, "config: out of memory");
    c->spec = spec, c->n = nspec;
    c->v = calloc((size_t)nspec, sizeof *c->v);
    c->path = strdup(path ? path : "(no file)");
    /* Defaults are checked on their own first: a bad one is the schema's bug even when the
     * file overrides it. */
    int rc = 0;
    for (int i = 0; i < nspec && !rc; i++)
        if (spec[i].def) {
            set_text(c, i, spec[i].def, SRC_DEFAULT, 0);
            rc = resolve(c, i);
        }
    if (rc) {
        char msg[sizeof c->err];
        snprintf(msg, sizeof msg, "config schema: %.1000s", c->err);
        snprintf(c->err, sizeof c->err, "%s", msg);
    } else {
        rc = load(c, path, sets, nsets);
    }
    if (rc) {
        char msg[sizeof c->err];
        memcpy(msg, c->err, sizeof msg);
        ng_config_free(c);
        ng_fail("%s", msg);
    }
    return c;
}

void ng_config_free(ng_config *c) {
    if (!c) return;
    for (int i = 0; i < c->n; i++) clear_value(&c->v[i]);
    free(c->v);
    free(c->path);
    free(c);
}

/* ---- accessors ---------------------------------------------------------------------------- */

static const cfg_value *get(const ng_config *c, const char *key, const char *fn, ng_cfg_type t,
                            int also_choice) {
    NG_CHECK(c && key, "config: %s(%s) on a NULL config or key", fn, key ? key : "NULL");
    int i = find(c->spec, c->n, key);
    if (i < 0) {
        char hint[600];
        key_hint(c->spec, c->n, key, hint, sizeof hint);
        ng_fail("config: %s(\"%s\"): the key is not in the schema%s", fn, key, hint);
    }
    static const char *const accessor[] = {"ng_cfg_int", "ng_cfg_float", "ng_cfg_bool",
                                           "ng_cfg_str", "ng_cfg_str",   "ng_cfg_int_list"};
    ng_cfg_type have = c->spec[i].type;
    NG_CHECK(have == t || (also_choice && have == NG_CFG_CHOICE),
             "config: %s(\"%s\"): the key is a %s; read it with %s", fn, key, type_name[have],
             accessor[have]);
    return &c->v[i];
}

int64_t ng_cfg_int(const ng_config *c, const char *key) {
    return get(c, key, "ng_cfg_int", NG_CFG_INT, 0)->i;
}

double ng_cfg_float(const ng_config *c, const char *key) {
    return get(c, key, "ng_cfg_float", NG_CFG_FLOAT, 0)->f;
}

int ng_cfg_bool(const ng_config *c, const char *key) {
    return get(c, key, "ng_cfg_bool", NG_CFG_BOOL, 0)->b;
}

const char *ng_cfg_str(const ng_config *c, const char *key) {
    return get(c, key, "ng_cfg_str", NG_CFG_STRING, 1)->text;
}

int ng_cfg_int_list(const ng_config *c, const char *key, int64_t *out, int cap) {
    const cfg_value *v = get(c, key, "ng_cfg_int_list", NG_CFG_INT_LIST, 0);
    if (!out) return v->nitems;
    if (v->nitems > cap) {
        char loc[600];
        where(c, v, loc, sizeof loc);
        ng_fail("%s: %d items given, at most %d are allowed%s", key, v->nitems, cap, loc);
    }
    memcpy(out, v->list, sizeof *out * (size_t)v->nitems);
    return v->nitems;
}

const char *ng_cfg_source(const ng_config *c, const char *key) {
    NG_CHECK(c && key, "config: ng_cfg_source on a NULL config or key");
    int i = find(c->spec, c->n, key);
    NG_CHECK(i >= 0, "config: ng_cfg_source(\"%s\"): the key is not in the schema", key);
    return src_name[c->v[i].src];
}

/* ---- writing ------------------------------------------------------------------------------ */

/* Floats always look like floats (1.0, 1.0e-08) so other YAML readers agree on the type. */
static void write_float(FILE *f, double x) {
    char b[64];
    for (int p = 1; p <= 17; p++) {
        snprintf(b, sizeof b, "%.*g", p, x);
        if (strtod(b, NULL) == x) break;
    }
    char *e = strchr(b, 'e');
    if (strchr(b, '.'))
        fputs(b, f);
    else if (e)
        fprintf(f, "%.*s.0%s", (int)(e - b), b, e);
    else
        fprintf(f, "%s.0", b);
}

/* A double-quoted YAML string (so "no", "1e3" or "" stay strings) that reads back to t: characters
 * YAML does not allow raw in a file (controls, C1 controls, U+FFFE/U+FFFF) and those it reads as
 * line breaks or a byte order mark (U+0085, U+2028, U+2029, U+FEFF) are escaped. */
static void write_string(FILE *f, const char *t) {
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)t; *p;) {
        uint32_t c = 0;
        int n = utf8_next(p, &c);
        if (!n) { /* values are checked to be UTF-8 when set; never here */
            fprintf(f, "\\x%02x", *p++);
            continue;
        }
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", (int)c);
        else if (c == '\n')
            fputs("\\n", f);
        else if (c == '\t')
            fputs("\\t", f);
        else if (c < 0x20 || c == 0x7f)
            fprintf(f, "\\x%02x", (unsigned)c);
        else if (c < 0x80 || (c >= 0xA0 && c <= 0xD7FF && c != 0x2028 && c != 0x2029) ||
                 (c >= 0xE000 && c <= 0xFFFD && c != 0xFEFF) || c >= 0x10000)
            fwrite(p, 1, (size_t)n, f);
        else
            fprintf(f, "\\u%04X", (unsigned)c);
        p += n;
    }
    fputc('"', f);
}

static void write_value(const ng_config *c, FILE *f, int i) {
    const cfg_value *v = &c->v[i];
    switch (c->spec[i].type) {
        case NG_CFG_INT:
            fprintf(f, "%lld", (long long)v->i);
            break;
        case NG_CFG_FLOAT:
            write_float(f, v->f);
            break;
        case NG_CFG_BOOL:
            fputs(v->b ? "true" : "false", f);
            break;
        case NG_CFG_STRING:
        case NG_CFG_CHOICE:
            write_string(f, v->text);
            break;
        case NG_CFG_INT_LIST:
            fputc('[', f);
            for (int k = 0; k < v->nitems; k++)
                fprintf(f, "%s%lld", k ? ", " : "", (long long)v->list[k]);
            fputc(']', f);
            break;
    }
    if (v->src != SRC_DEFAULT) fprintf(f, "  # from %s", src_name[v->src]);
    fputc('\n', f);
}

/* Writes the keys under `prefix` (its first plen characters), each section once, in the order
 * the schema first names it. */
static void write_section(const ng_config *c, FILE *f, const char *prefix, size_t plen, int depth,
                          char *done) {
    for (int i = 0; i < c->n; i++) {
        const char *k = c->spec[i].key;
        if (done[i] || strncmp(k, prefix, plen)) continue;
        const char *rest = k + plen, *dot = strchr(rest, '.');
        if (!dot) {
            fprintf(f, "%*s%s: ", 2 * depth, "", rest);
            write_value(c, f, i);
            done[i] = 1;
        } else {
            fprintf(f, "%*s%.*s:\n", 2 * depth, "", (int)(dot - rest), rest);
            write_section(c, f, k, (size_t)(dot + 1 - k), depth + 1, done);
        }
    }
}

void ng_config_write_yaml(const ng_config *c, FILE *f, const char *header) {
    NG_CHECK(c && f, "config: ng_config_write_yaml on a NULL config or file");
    if (header && *header) {
        for (const char *p = header; *p;) {
            const char *nl = strchr(p, '\n');
            int len = nl ? (int)(nl - p) : (int)strlen(p);
            fprintf(f, len ? "# %.*s\n" : "#\n", len, p);
            p += len + (nl ? 1 : 0);
        }
        fputc('\n', f);
    }
    char *done = calloc((size_t)c->n, 1);
    write_section(c, f, "", 0, 0, done);
    free(done);
}

void ng_config_print_schema(const ng_cfg_spec *spec, int nspec, FILE *f) {
    fprintf(f, "Config keys: set them in the YAML file (nested, `optimizer: {lr: 0.1}`, or "
               "dotted, `optimizer.lr: 0.1`)\nor with --set key=value.\n");
    const char *prev = "";
    size_t prevl = 0;
    int kw = 30; /* the key column: as wide as the longest key */
    for (int i = 0; i < nspec; i++)
        if ((int)strlen(spec[i].key) > kw) kw = (int)strlen(spec[i].key);
    for (int i = 0; i < nspec; i++) {
        const ng_cfg_spec *s = &spec[i];
        const char *dot = strchr(s->key, '.');
        size_t l = dot ? (size_t)(dot - s->key) : 0;
        if (!i || l != prevl || strncmp(prev, s->key, l)) fputc('\n', f); /* a new section */
        prev = s->key, prevl = l;
        char def[96], allowed[300] = "";
        if (!s->def)
            snprintf(def, sizeof def, "(required)");
        else if (s->type == NG_CFG_STRING || (s->type == NG_CFG_INT_LIST && !*s->def))
            snprintf(def, sizeof def, "\"%.90s\"", s->def);
        else
            snprintf(def, sizeof def, "%.90s", s->def);
        if (s->type == NG_CFG_CHOICE) {
            snprintf(allowed, sizeof allowed, "one of %s", s->choices);
        } else if (s->type == NG_CFG_BOOL) {
            snprintf(allowed, sizeof allowed, "true|false");
        } else if (s->min <= s->max) {
            char lo[64], hi[64];
            fmt_num(s->min, lo, sizeof lo);
            fmt_num(s->max, hi, sizeof hi);
            snprintf(allowed, sizeof allowed, "%s%s to %s",
                     s->type == NG_CFG_INT_LIST ? "items " : "", lo, hi);
        }
        if (*allowed)
            fprintf(f, "  %-*s %-8s default %-14s %s\n", kw, s->key, type_name[s->type], def,
                    allowed);
        else
            fprintf(f, "  %-*s %-8s default %s\n", kw, s->key, type_name[s->type], def);
        if (s->help && *s->help) fprintf(f, "      %s\n", s->help);
    }
}
