/* `natgrad info`: the build and the devices. */
#include <stdio.h>

#include "apps/commands.h"
#include "core/build_info.h"
#include "git_rev.h" /* generated at build time (scripts/git-rev.cmake) */

int ng_cmd_info(int argc, char **argv) {
    (void)argc;
    (void)argv;
    printf("git:       %s\n", NG_GIT_REV);
    ng_print_build_info(stdout);
    return 0;
}
