/* Exact expected values of collectives on integer-valued inputs (see comm_check.h). */
#include "comm_check.h"

#include <stdlib.h>

#include "core/convert.h"

int ng_comm_check_value(uint64_t seed, int rank, int64_t i) {
    uint64_t z =
        seed ^ ((uint64_t)rank + 1) * 0x9E3779B97F4A7C15ull ^ (uint64_t)i * 0xD1B54A32D192ED03ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (int)(z % 9) - 4;
}

/* The average as the library rounds it: the exact sum over the size, rounded once. */
static double rounded(double v, ng_dtype dt) {
    char cell[8];
    cv_store(cell, dt, 0, v);
    return cv_load(cell, dt, 0);
}

void ng_comm_check_fill(ng_tensor *t, uint64_t seed, int rank, int64_t first) {
    ng_tensor h =
        t->device == NG_CPU ? *t : ng_tensor_new(t->dtype, NG_CPU, t->ndim, t->shape, "fill");
    for (int64_t i = 0; i < t->numel; i++)
        cv_store(h.data, t->dtype, i, ng_comm_check_value(seed, rank, first + i));
    if (t->device != NG_CPU) {
        ng_tensor_copy(t, &h);
        ng_tensor_free(&h);
    }
}

int64_t ng_comm_check_wrong(const ng_tensor *t, uint64_t seed, int size, ng_comm_op op,
                            int64_t first) {
    ng_tensor h = t->device == NG_CPU ? *t : ng_tensor_to(t, NG_CPU, "check");
    int64_t wrong = 0;
    for (int64_t i = 0; i < t->numel; i++) {
        double sum = 0;
        for (int r = 0; r < size; r++) sum += ng_comm_check_value(seed, r, first + i);
        double want = op == NG_COMM_AVG ? rounded(sum / size, t->dtype) : sum;
        if (cv_load(h.data, t->dtype, i) != want) wrong++;
    }
    if (t->device != NG_CPU) ng_tensor_free(&h);
    return wrong;
}
