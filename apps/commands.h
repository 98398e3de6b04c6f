/* The subcommands of the natgrad program; each takes argv starting at its own name. */
#ifndef NG_COMMANDS_H
#define NG_COMMANDS_H

int ng_cmd_info(int argc, char **argv);
int ng_cmd_smoke(int argc, char **argv);
int ng_cmd_bench_core(int argc, char **argv);
int ng_cmd_bench(int argc, char **argv);
int ng_cmd_train(int argc, char **argv);
int ng_cmd_eval(int argc, char **argv);
int ng_cmd_plan(int argc, char **argv);
int ng_cmd_comm_bench(int argc, char **argv);
int ng_cmd_shards(int argc, char **argv);
int ng_cmd_data_bench(int argc, char **argv);

#endif
