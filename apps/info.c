/* `natgrad info`: the build and the devices. */
#include <stdio.h>

#include "apps/commands.h"
#include "core/build_info.h"

int ng_cmd_info(int argc, char **argv) {
    (void)argc;
    (void)argv;
#ifdef NG_GIT_REV
    printf("git:       %s\n", NG_GIT_REV[0] ? NG_GIT_REV : "unknown");
#endif
    ng_print_build_info(stdout);
    return 0;
}
