/* A resumed run against the config it was started with: which keys may change between
 * invocations, and the history of the changes that were allowed. */
#define _GNU_SOURCE /* open_memstream */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "apps/run.h"
#include "core/error.h"

/* A value as text, the same for the same value whatever file or --set it came from. */
static void value_text(const ng_config *c, const ng_cfg_spec *s, char *out, size_t cap) {
    switch (s->type) {
        case NG_CFG_INT:
            snprintf(out, cap, "%lld", (long long)ng_cfg_int(c, s->key));
            break;
        case NG_CFG_FLOAT: { /* the shortest text that reads back as the same double */
            double v = ng_cfg_float(c, s->key);
            snprintf(out, cap, "%.15g", v);
            if (strtod(out, NULL) != v) snprintf(out, cap, "%.17g", v);
            break;
        }
        case NG_CFG_BOOL:
            snprintf(out, cap, "%s", ng_cfg_bool(c, s->key) ? "true" : "false");
            break;
        case NG_CFG_INT_LIST: {
            int n = ng_cfg_int_list(c, s->key, NULL, 0);
            int64_t *v = malloc(sizeof *v * (size_t)(n + 1));
            ng_cfg_int_list(c, s->key, v, n);
            size_t len = (size_t)snprintf(out, cap, "[");
            for (int i = 0; i < n && len < cap; i++)
                len += (size_t)snprintf(out + len, cap - len, "%s%lld", i ? ", " : "",
                                        (long long)v[i]);
            if (len < cap) snprintf(out + len, cap - len, "]");
            free(v);
            break;
        }
        default:
            snprintf(out, cap, "%s", ng_cfg_str(c, s->key));
            break;
    }
}

static int is_free_key(const char *key) {
    static const char *free_keys[] = {NG_RUN_FREE_KEYS};
    for (size_t i = 0; i < sizeof free_keys / sizeof *free_keys; i++)
        if (!strcmp(key, free_keys[i])) return 1;
    return 0;
}

/* The history lines of an earlier config.yaml's header, without their "# ". */
static void old_history(const char *path, FILE *out) {
    FILE *f = fopen(path, "r");
    if (!f) return;
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) > 0)
        if (!strncmp(line, "# history: ", 11)) fputs(line + 2, out);
    free(line);
    fclose(f);
}

char *ng_run_config_check(const ng_config *now, const ng_cfg_spec *spec, int nspec, const char *dir,
                          int64_t step, int allow) {
    char path[4096];
    int pn = snprintf(path, sizeof path, "%s/config.yaml", dir);
    NG_CHECK(pn > 0 && (size_t)pn < sizeof path, "path %s/config.yaml is too long", dir);
    char *hist = NULL, *changes = NULL;
    size_t hlen = 0, clen = 0;
    FILE *h = open_memstream(&hist, &hlen), *ch = open_memstream(&changes, &clen);
    old_history(path, h);
    if (access(path, F_OK) == 0) {
        ng_config *was = ng_config_load(spec, nspec, path, NULL, 0);
        for (int i = 0; i < nspec; i++) {
            if (is_free_key(spec[i].key)) continue;
            char a[512], b[512];
            value_text(was, &spec[i], a, sizeof a);
            value_text(now, &spec[i], b, sizeof b);
            if (strcmp(a, b)) {
                fprintf(ch, "\n  %s: %s -> %s", spec[i].key, a, b);
                fprintf(h, "history: step %lld: %s: %s -> %s (--allow-config-change)\n",
                        (long long)step, spec[i].key, a, b);
            }
        }
        ng_config_free(was);
    }
    fclose(h), fclose(ch);
    if (clen && !allow)
        ng_fail("--resume: the config differs from the run's %s in keys that change the run:%s\n"
                "resume with the run's config, or pass --allow-config-change to continue with the "
                "new values (recorded in config.yaml)",
                path, changes);
    free(changes);
    return hist;
}
