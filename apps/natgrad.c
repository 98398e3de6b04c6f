/* The natgrad command: one program, subcommands for each job. */
#include <stdio.h>
#include <string.h>

#include "apps/commands.h"
#include "core/hgemm.h"
#include "core/threads.h"

static const struct {
    const char *name, *help;
    int (*run)(int argc, char **argv);
} commands[] = {
    {"train", "train a model from a YAML config (--help for options)", ng_cmd_train},
    {"eval", "evaluate saved weights on a config's test data", ng_cmd_eval},
    {"plan", "a config's peak memory per category from its shapes; --measure, --search",
     ng_cmd_plan},
    {"info", "what this build contains and which devices it sees", ng_cmd_info},
    {"smoke", "a quick check of the core: GEMM and eigh on CPU (and GPU) against float64",
     ng_cmd_smoke},
    {"bench", "forward+backward time and activation memory of a model at a batch size",
     ng_cmd_bench},
    {"bench-core", "GEMM TFLOP/s and eigh / Cholesky-inverse times on one device",
     ng_cmd_bench_core},
    {"shards", "write a config's data as tar shards (WebDataset layout)", ng_cmd_shards},
    {"data-bench", "images/s of a config's training data: source, loader, one PNG file per image",
     ng_cmd_data_bench},
    {"comm-bench", "all-reduce algorithms over a sweep of sizes, checked and timed (mpirun)",
     ng_cmd_comm_bench},
};

static void usage(FILE *f) {
    fprintf(f, "usage: natgrad <command> [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        fprintf(f, "  %-11s %s\n", commands[i].name, commands[i].help);
    fprintf(f, "\n'natgrad <command> --help' describes a command's options.\n");
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    ng_threads();        /* on the main thread, whose OpenMP setting the compute runs under */
    ng_hgemm_kind_now(); /* NG_F16_NATIVE checked before any command starts */
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "natgrad: error: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
