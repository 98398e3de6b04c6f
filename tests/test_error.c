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
    int st = ng_test_run_child(bad_gemm, said, sizeof said);
    NG_TEST(WIFEXITED(st) && WEXITSTATUS(st) == NG_EXIT_USAGE, "a shape error exits with status 2");
    NG_TEST(strstr(said, "natgrad: error:") && strstr(said, "weights") && strstr(said, "inputs"),
            "the shape error names both tensors: %s", said);

    st = ng_test_run_child(lib_failure, said, sizeof said);
    NG_TEST(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT, "a library failure aborts");
    NG_TEST(strstr(said, "CUDA") && strstr(said, "file.cu:42") && strstr(said, "out of memory") &&
                strstr(said, "cudaMalloc"),
            "a library failure names library, place, call and message: %s", said);

    if (!ng_test_have_gpu()) {
        st = ng_test_run_child(cuda_on_cpu_build, said, sizeof said);
        NG_TEST(WIFEXITED(st) && WEXITSTATUS(st) == NG_EXIT_USAGE && strstr(said, "CUDA"),
                "a CUDA tensor without a usable GPU is a clear error: %s", said);
    }

    NG_TEST(strcmp(ng_status_name(NG_ERR_NOT_PD), ng_status_name(NG_ERR_NO_CONVERGE)) &&
                strcmp(ng_status_name(NG_OK), ng_status_name(NG_ERR_NONFINITE)),
            "status names are distinct");
    return ng_test_finish("test_error");
}
