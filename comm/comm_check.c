/* Exact expected values of collectives on integer-valued inputs (see comm_check.h). */
#include "comm_check.h"

#include <stdlib.h>

#include "core/error.h"
#include "core/half.h"
#include "core/memory.h"

int ng_comm_check_value(uint64_t seed, int rank, int64_t i) {
    uint64_t z =
        seed ^ ((uint64_t)rank + 1) * 0x9E3779B97F4A7C15ull ^ (uint64_t)i * 0xD1B54A32D192ED03ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (int)(z % 9) - 4;
}

static void put(void *p, int64_t i, ng_dtype dt, double v) {
    switch (dt) {
        case NG_F32:
            ((float *)p)[i] = (float)v;
            return;
        case NG_F64:
            ((double *)p)[i] = v;
            return;
        case NG_F16:
            ((ng_f16 *)p)[i] = ng_f32_to_f16((float)v);
            return;
        case NG_BF16:
            ((ng_bf16 *)p)[i] = ng_f32_to_bf16((float)v);
            return;
        default:
            ng_fail("comm check: %s is not a float type", ng_dtype_name(dt));
    }
}

static double get(const void *p, int64_t i, ng_dtype dt) {
    switch (dt) {
        case NG_F32:
            return ((const float *)p)[i];
        case NG_F64:
            return ((const double *)p)[i];
        case NG_F16:
            return ng_f16_to_f32(((const ng_f16 *)p)[i]);
        case NG_BF16:
            return ng_bf16_to_f32(((const ng_bf16 *)p)[i]);
        default:
            ng_fail("comm check: %s is not a float type", ng_dtype_name(dt));
    }
    return 0;
}

/* The average rounded once from double to the element type (f16/bf16 by way of f32). */
static double rounded(double v, ng_dtype dt) {
    char cell[8];
    put(cell, 0, dt, dt == NG_F64 ? v : (double)(float)v);
    return get(cell, 0, dt);
}

void ng_comm_check_fill(ng_tensor *t, uint64_t seed, int rank, int64_t first) {
    ng_tensor h =
        t->device == NG_CPU ? *t : ng_tensor_new(t->dtype, NG_CPU, t->ndim, t->shape, "fill");
    for (int64_t i = 0; i < t->numel; i++)
        put(h.data, i, t->dtype, ng_comm_check_value(seed, rank, first + i));
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
        if (get(h.data, i, t->dtype) != want) wrong++;
    }
    if (t->device != NG_CPU) ng_tensor_free(&h);
    return wrong;
}
