/* The communicator in one process, without MPI: every collective and algorithm is the identity
 * (average too), errors name the tensor, algorithm names and the auto table round-trip. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "comm/comm.h"
#include "core/error.h"
#include "testing.h"

static const ng_dtype dtypes[4] = {NG_F32, NG_F64, NG_F16, NG_BF16};

static void test_identity(ng_comm *w, ng_device dev) {
    NG_TEST(ng_comm_rank(w) == 0 && ng_comm_size(w) == 1 && ng_comm_nodes(w) == 1 &&
                ng_comm_node(w) == 0 && ng_comm_local_rank(w) == 0 && ng_comm_local_size(w) == 1,
            "one process is rank 0 of 1 on node 0 of 1");
    for (int d = 0; d < 4; d++)
        for (int a = NG_AR_AUTO; a < NG_AR_NUM; a++)
            for (int op = 0; op < 2; op++) {
                ng_tensor x = ng_tensor_1d(dtypes[d], dev, 1003, "x");
                ng_test_fill_uniform(&x, -3, 3);
                ng_tensor before = ng_tensor_to(&x, NG_CPU, "before");
                ng_comm_allreduce_with(w, &x, (ng_comm_op)op,
                                       &(ng_allreduce_opts){.algo = (ng_allreduce_algo)a});
                ng_tensor after = ng_tensor_to(&x, NG_CPU, "after");
                NG_TEST(!memcmp(before.data, after.data, ng_tensor_bytes(&x)),
                        "%s %s of %s on %s changed the data", ng_allreduce_algo_name(a),
                        op ? "avg" : "sum", ng_dtype_name(dtypes[d]), ng_device_name(dev));
                ng_comm_request *r = ng_comm_allreduce_start(w, &x, (ng_comm_op)op, NULL);
                ng_comm_wait(r);
                ng_tensor_free(&after);
                after = ng_tensor_to(&x, NG_CPU, "after");
                NG_TEST(!memcmp(before.data, after.data, ng_tensor_bytes(&x)),
                        "non-blocking %s of %s changed the data", op ? "avg" : "sum",
                        ng_dtype_name(dtypes[d]));
                ng_tensor out = ng_tensor_1d(dtypes[d], dev, 1003, "out");
                ng_comm_reduce_scatter(w, &x, &out, (ng_comm_op)op);
                ng_tensor got = ng_tensor_to(&out, NG_CPU, "got");
                NG_TEST(!memcmp(before.data, got.data, ng_tensor_bytes(&x)),
                        "reduce-scatter of one rank copies");
                ng_tensor_free(&got);
                ng_test_poison(&out);
                ng_comm_allgather(w, &x, &out);
                got = ng_tensor_to(&out, NG_CPU, "got");
                NG_TEST(!memcmp(before.data, got.data, ng_tensor_bytes(&x)),
                        "all-gather of one rank copies");
                ng_comm_broadcast(w, &x, 0);
                ng_tensor_free(&got), ng_tensor_free(&out), ng_tensor_free(&after);
                ng_tensor_free(&before), ng_tensor_free(&x);
            }
    double v[2] = {3.5, -1};
    ng_comm_scalars(w, v, 2, NG_COMM_SCALAR_SUM);
    ng_comm_scalars(w, v, 2, NG_COMM_SCALAR_MAX);
    NG_TEST(v[0] == 3.5 && v[1] == -1, "host scalars of one rank are themselves");
    ng_comm_barrier(w);
    ng_comm *s = ng_comm_split(w, 4, 0);
    NG_TEST(s && ng_comm_size(s) == 1 && ng_comm_rank(s) == 0, "a split of one rank");
    NG_TEST(ng_comm_split(w, -1, 0) == NULL, "a negative color gives no communicator");
    ng_comm_free(s);
}

static void test_errors(ng_comm *w) {
    ng_tensor ints = ng_tensor_1d(NG_I32, NG_CPU, 4, "step_counter");
    NG_TEST_ERROR(ng_comm_allreduce(w, &ints, NG_COMM_SUM), "step_counter");
    ng_tensor a = ng_tensor_1d(NG_F32, NG_CPU, 4, "shard"),
              b = ng_tensor_1d(NG_F32, NG_CPU, 5, "full");
    NG_TEST_ERROR(ng_comm_reduce_scatter(w, &b, &a, NG_COMM_SUM), "full");
    NG_TEST_ERROR(ng_comm_allgather(w, &a, &b), "full");
    NG_TEST_ERROR(ng_comm_broadcast(w, &a, 1), "shard");
    ng_tensor_free(&ints), ng_tensor_free(&a), ng_tensor_free(&b);
}

static void test_names_and_table(ng_comm *w) {
    ng_allreduce_opts o = {.chunk_bytes = 4096};
    NG_TEST(!ng_allreduce_opts_parse("hier_rs:ring/flat", &o) && o.algo == NG_AR_HIER_RS &&
                o.intra == NG_LEVEL_RING && o.inter == NG_LEVEL_FLAT && o.chunk_bytes == 4096,
            "hier_rs:ring/flat parses into levels, keeping the chunk size");
    NG_TEST(!strcmp(ng_allreduce_opts_name(&o), "hier_rs:ring/flat"), "the name round-trips: %s",
            ng_allreduce_opts_name(&o));
    NG_TEST(!ng_allreduce_opts_parse("torus", &o) && o.algo == NG_AR_TORUS &&
                o.intra == NG_LEVEL_FLAT,
            "a hierarchical name without levels uses flat levels");
    NG_TEST(ng_allreduce_opts_parse("ring:ring/ring", &o) && ng_allreduce_opts_parse("tree", &o) &&
                ng_allreduce_opts_parse("hier_leader:ring", &o),
            "levels on a flat algorithm, unknown names and half levels are rejected");
    for (int a = 0; a < NG_AR_NUM; a++)
        NG_TEST(ng_allreduce_algo_from_name(ng_allreduce_algo_name(a)) == a, "algorithm %d name",
                a);

    int64_t cut = 1 + (int64_t)((ng_test_uniform() * 0.5 + 0.5) * 100000);
    ng_allreduce_rule rules[3] = {{cut, {.algo = NG_AR_RING, .chunk_bytes = 8192}},
                                  {4 * cut, {.algo = NG_AR_TORUS, .intra = NG_LEVEL_RING}},
                                  {-1, {.algo = NG_AR_HIER_LEADER, .inter = NG_LEVEL_RING}}};
    char path[64];
    snprintf(path, sizeof path, "/tmp/ng_table_%d.json", (int)getpid());
    ng_allreduce_table_save(path, rules, 3);
    ng_allreduce_rule back[NG_AR_MAX_RULES];
    int n = ng_allreduce_table_load(path, back, NG_AR_MAX_RULES);
    remove(path);
    int same = n == 3;
    for (int i = 0; same && i < 3; i++)
        same = back[i].max_bytes == rules[i].max_bytes && back[i].opts.algo == rules[i].opts.algo &&
               back[i].opts.intra == rules[i].opts.intra &&
               back[i].opts.inter == rules[i].opts.inter &&
               back[i].opts.chunk_bytes == rules[i].opts.chunk_bytes;
    NG_TEST(same, "the auto table round-trips through JSON");
    ng_comm_set_table(w, back, n);
    NG_TEST(ng_comm_auto_choice(w, cut).algo == NG_AR_RING &&
                ng_comm_auto_choice(w, cut + 1).algo == NG_AR_TORUS &&
                ng_comm_auto_choice(w, 4 * cut + 1).algo == NG_AR_HIER_LEADER,
            "auto picks the first row whose size bound holds");
    ng_comm_set_table(w, NULL, 0);
    NG_TEST(ng_comm_auto_choice(w, 1 << 30).algo == NG_AR_FLAT,
            "without a table, one node uses the library's all-reduce");
}

int main(void) {
    ng_test_seed();
    ng_comm *w = ng_comm_init(NULL, NULL, &(ng_comm_config){.backend = NG_COMM_SELF});
    NG_TEST(ng_comm_backend_of(w) == NG_COMM_SELF, "the self backend");
    test_identity(w, NG_CPU);
    if (ng_test_have_gpu()) test_identity(w, NG_CUDA);
    test_errors(w);
    test_names_and_table(w);
    NG_TEST(strlen(ng_comm_mpi_version()) > 0, "an MPI version line: %s", ng_comm_mpi_version());
    ng_comm_finalize(w);
    return ng_test_finish("test_comm");
}
