/* Usage errors: the default handler prints the message and exits with status 2; library
 * failures abort; status names are distinct. Runs the failing code in a child process. */
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <signal.h>
#include <unistd.h>

#include "core/error.h"
#include "core/ops.h"
#include "testing.h"

/* Runs fn in a child with stderr captured; returns the wait status and the first bytes said. */
static int run_child(void (*fn)(void), char *said, size_t cap) {
    int fd[2];
    if (pipe(fd)) return -1;
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fd[1], 2);
        close(fd[0]);
        fn();
        _exit(0);
    }
    close(fd[1]);
    size_t n = 0;
    ssize_t r;
    while (n + 1 < cap && (r = read(fd[0], said + n, cap - 1 - n)) > 0) n += (size_t)r;
    said[n] = 0;
    close(fd[0]);
    int st = 0;
    waitpid(pid, &st, 0);
    return st;
}

static void bad_gemm(void) {
    ng_tensor A = ng_tensor_2d(NG_F32, NG_CPU, 3, 4, "weights");
    ng_tensor B = ng_tensor_2d(NG_F32, NG_CPU, 5, 2, "inputs");
    ng_tensor C = ng_tensor_2d(NG_F32, NG_CPU, 3, 2, "out");
    ng_gemm(0, 0, 1.0, &A, &B, 0.0, &C);
}

static void lib_failure(void) {
    ng_lib_fail("CUDA", "file.cu", 42, "cudaMalloc(&p, n)", "out of memory");
}

static void cuda_on_cpu_build(void) {
    ng_tensor t = ng_tensor_1d(NG_F32, NG_CUDA, 4, "gpu tensor");
    (void)t;
}

int main(void) {
    char said[4096];
    int st = run_child(bad_gemm, said, sizeof said);
    NG_TEST(WIFEXITED(st) && WEXITSTATUS(st) == NG_EXIT_USAGE, "a shape error exits with status 2");
    NG_TEST(strstr(said, "natgrad: error:") && strstr(said, "weights") && strstr(said, "inputs"),
            "the shape error names both tensors: %s", said);

    st = run_child(lib_failure, said, sizeof said);
    NG_TEST(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT, "a library failure aborts");
    NG_TEST(strstr(said, "CUDA") && strstr(said, "file.cu:42") && strstr(said, "out of memory") &&
                strstr(said, "cudaMalloc"),
            "a library failure names library, place, call and message: %s", said);

    if (!ng_test_have_gpu()) {
        st = run_child(cuda_on_cpu_build, said, sizeof said);
        NG_TEST(WIFEXITED(st) && WEXITSTATUS(st) == NG_EXIT_USAGE && strstr(said, "CUDA"),
                "a CUDA tensor without a usable GPU is a clear error: %s", said);
    }

    NG_TEST(strcmp(ng_status_name(NG_ERR_NOT_PD), ng_status_name(NG_ERR_NO_CONVERGE)) &&
                strcmp(ng_status_name(NG_OK), ng_status_name(NG_ERR_NONFINITE)),
            "status names are distinct");
    return ng_test_finish("test_error");
}
