/* Which blocks run as checkpoint segments (model.checkpoint), and the one-layer segment. The
 * segments themselves are marks on a sequence (nn/sequence.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "nn/containers.h"

ng_layer *ng_checkpoint(const char *name, ng_layer *inner, int enabled) {
    ng_layer *s = ng_sequence(name);
    ng_layer_add_child(s, inner);
    if (enabled) ng_sequence_checkpoint(s, 0, 1);
    return s;
}

static int parse_int(const char **p, long *v) {
    char *end;
    while (**p == ' ') (*p)++;
    if (**p < '0' || **p > '9') return 0;
    *v = strtol(*p, &end, 10);
    *p = end;
    while (**p == ' ') (*p)++;
    return *v >= 0 && *v < 1000000;
}

int ng_ckpt_spec_parse(const char *text, ng_ckpt_spec *out, char *why, size_t cap) {
    memset(out, 0, sizeof *out);
    const char *p = text;
    while (*p == ' ') p++;
    long v;
    if (!strcmp(p, "none") || !strcmp(p, "false") || !*p) return 1;
    if (!strcmp(p, "true") || !strcmp(p, "all")) {
        out->every = 1;
        return 1;
    }
    if (!strcmp(p, "recompute")) {
        out->every = 1, out->recompute = 1;
        return 1;
    }
    if (!strncmp(p, "every", 5)) {
        p += 5;
        if (!parse_int(&p, &v) || v < 1 || *p) {
            snprintf(why, cap, "'every K' needs a whole K >= 1");
            return 0;
        }
        out->every = (int)v;
        return 1;
    }
    if (!strncmp(p, "blocks", 6)) p += 6;
    if (*p == '[') p++;
    for (;;) {
        if (!parse_int(&p, &v) || v >= NG_CKPT_MAX_BLOCKS) {
            snprintf(why, cap, "block indices are whole numbers in [0, %d)", NG_CKPT_MAX_BLOCKS);
            return 0;
        }
        if (out->blocks >> v & 1) {
            snprintf(why, cap, "block %ld is listed twice", v);
            return 0;
        }
        out->blocks |= 1ull << v;
        if (*p == ',') {
            p++;
            continue;
        }
        if (*p == ']') p++;
        while (*p == ' ') p++;
        if (*p) {
            snprintf(why, cap, "unexpected '%s'", p);
            return 0;
        }
        return 1;
    }
}

void ng_ckpt_spec_format(const ng_ckpt_spec *s, char *out, size_t cap) {
    if (s->recompute) {
        snprintf(out, cap, "recompute");
        return;
    }
    if (s->every) {
        snprintf(out, cap, "every %d", s->every);
        return;
    }
    if (!s->blocks) {
        snprintf(out, cap, "none");
        return;
    }
    size_t n = 0;
    out[0] = 0;
    for (int b = 0; b < NG_CKPT_MAX_BLOCKS && n < cap; b++)
        if (s->blocks >> b & 1)
            n += (size_t)snprintf(out + n, cap - n, "%s%d", n ? "," : "blocks ", b);
}

void ng_checkpoint_blocks(ng_layer *seq, int first, int nblocks, const ng_ckpt_spec *s) {
    if (s->every) {
        for (int b = 0; b < nblocks; b += s->every)
            ng_sequence_checkpoint(seq, first + b,
                                   b + s->every <= nblocks ? s->every : nblocks - b);
        if (s->recompute && nblocks > 0) ng_sequence_recompute(seq, first, first + nblocks);
        return;
    }
    for (int b = 0; b < NG_CKPT_MAX_BLOCKS; b++) {
        if (!(s->blocks >> b & 1)) continue;
        NG_CHECK(b < nblocks, "model.checkpoint: block %d does not exist (the model has %d blocks)",
                 b, nblocks);
        ng_sequence_checkpoint(seq, first + b, 1);
    }
}
