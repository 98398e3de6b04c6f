/* The CUDA emulation's guard (core/cuda_emu.h): host code that reads or writes device memory
 * outside a device op stops with a report naming the block and a backtrace, while device ops,
 * copies and the allocator work. Runs only in the emulation build (-DNG_CUDA_EMU=ON). */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "core/ops.h"
#include "core/tensor.h"
#include "comm/comm.h"
#include "testing.h"

#ifdef NG_CUDA_EMU
static int64_t n_elems; /* drawn per run: the block the child touches */
static int64_t touch_at;

static void host_reads_device(void) {
    ng_tensor t = ng_tensor_1d(NG_F32, NG_CUDA, n_elems, "device buffer");
    ng_fill(&t, 1.0);
    volatile float v = ((float *)t.data)[touch_at]; /* the bug the guard is for */
    (void)v;
}

static void host_writes_device(void) {
    ng_tensor t = ng_tensor_1d(NG_F32, NG_CUDA, n_elems, "device buffer");
    ((float *)t.data)[touch_at] = 2.0f;
}

static void bad_memory_setting(void) {
    setenv("NG_EMU_MEMORY_GIB", "lots", 1);
    ng_tensor t = ng_tensor_1d(NG_F32, NG_CUDA, 4, "device buffer");
    (void)t;
}

/* A bad NG_EMU_MEMORY_GIB is a usage error naming the variable and the value. Run before this
 * process touches the device, so the child's emulation reads the setting afresh. */
static void bad_setting_refused(void) {
    char said[1024];
    int st = ng_test_run_child(bad_memory_setting, said, sizeof said);
    NG_TEST(WIFEXITED(st) && WEXITSTATUS(st) == 2 && strstr(said, "NG_EMU_MEMORY_GIB") &&
                strstr(said, "'lots'"),
            "NG_EMU_MEMORY_GIB=lots: status %d, said: %s", st, said);
}

static void bad_delay_setting(void) {
    setenv("NG_EMU_STREAM_DELAY_US", "-5", 1);
    int argc = 1;
    char *args[] = {"test_cuda_emu", NULL}, **argv = args;
    ng_comm_init(&argc, &argv, &(ng_comm_config){.backend = NG_COMM_NCCL}); /* makes a stream */
}

/* A bad NG_EMU_STREAM_DELAY_US (the emulated NCCL's stream delay) likewise, where the emulation
 * has NCCL (an MPI build). */
static void bad_delay_refused(void) {
    if (!strncmp(ng_comm_mpi_version(), "not built", 9)) return;
    char said[1024];
    int st = ng_test_run_child(bad_delay_setting, said, sizeof said);
    NG_TEST(WIFEXITED(st) && WEXITSTATUS(st) == 2 && strstr(said, "NG_EMU_STREAM_DELAY_US") &&
                strstr(said, "'-5'"),
            "NG_EMU_STREAM_DELAY_US=-5: status %d, said: %s", st, said);
}

/* The child must die of SIGABRT having said what it touched, where in which block. */
static void expect_caught(const char *what, void (*fn)(void)) {
    char said[4096];
    int st = ng_test_run_child(fn, said, sizeof said);
    size_t block = ((size_t)n_elems * 4 + 255) / 256 * 256;
    char where[96];
    snprintf(where, sizeof where, "(%lld bytes into an allocated block of %zu bytes)",
             (long long)touch_at * 4, block);
    NG_TEST(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT, "%s: the child was not stopped (status %d)",
            what, st);
    NG_TEST(strstr(said, "host code touched, outside a device op, CUDA device memory") &&
                strstr(said, where) && strstr(said, "Backtrace"),
            "%s: the report should name the block %s and give a backtrace; it said: %s", what,
            where, said);
}

/* Device ops see the memory, copies cross the guard both ways, freed blocks are reused first-fit
 * at cudaMalloc's 256-byte alignment. */
static void ops_and_allocator(void) {
    int64_t n = n_elems;
    ng_tensor h = ng_tensor_1d(NG_F64, NG_CPU, n, "host");
    ng_test_fill_uniform(&h, -1, 1);
    ng_tensor d = ng_tensor_to(&h, NG_CUDA, "device copy");
    NG_TEST((uintptr_t)d.data % 256 == 0, "device block %p not 256-byte aligned", d.data);
    ng_scale(3.0, &d);
    ng_tensor back = ng_tensor_to(&d, NG_CPU, "back");
    int64_t wrong = 0;
    for (int64_t i = 0; i < n; i++)
        wrong += ((double *)back.data)[i] != 3.0 * ((double *)h.data)[i];
    NG_TEST(wrong == 0, "%lld of %lld elements wrong after a round trip through the device",
            (long long)wrong, (long long)n);
    double s = ng_sum(&d), want = 0;
    for (int64_t i = 0; i < n; i++) want += ((double *)back.data)[i];
    NG_TEST(s == want || (s - want) * (s - want) <= 1e-24 * (double)n * (double)n,
            "device sum %.17g, host %.17g", s, want);
    void *first = d.data;
    ng_tensor_free(&d);
    ng_tensor again = ng_tensor_1d(NG_F64, NG_CUDA, n, "again");
    NG_TEST(again.data == first, "a freed block of the same size should be reused first");
    ng_tensor_free(&again), ng_tensor_free(&h), ng_tensor_free(&back);
}
#endif

int main(void) {
#ifndef NG_CUDA_EMU
    printf("test_cuda_emu: skipped (not the CUDA emulation build)\n");
    return 77;
#else
    n_elems = 1 + (int64_t)((ng_test_uniform() + 1.0) * 20000);
    touch_at = (int64_t)((ng_test_uniform() + 1.0) * 0.5 * (double)(n_elems - 1));
    bad_setting_refused();
    bad_delay_refused();
    expect_caught("a host read of a CUDA tensor", host_reads_device);
    expect_caught("a host write to a CUDA tensor", host_writes_device);
    ops_and_allocator();
    return ng_test_finish("test_cuda_emu");
#endif
}
