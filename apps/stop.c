/* Signals that stop a run after its current step. */
#define _POSIX_C_SOURCE 200809L
#include "apps/stop.h"

#include <signal.h>
#include <stdio.h>
#include <unistd.h>

static volatile sig_atomic_t stop_signal;

/* Async-signal-safe: a flag the first time, _exit the second (the user or the scheduler insists;
 * the checkpoint being written, if any, is not marked COMPLETE and resume ignores it). */
static void on_signal(int sig) {
    if (stop_signal) _exit(128 + sig);
    stop_signal = sig;
}

void ng_stop_install(void) {
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART; /* reads and writes in progress carry on */
    const int sigs[] = {SIGTERM, SIGINT, SIGUSR1};
    for (int i = 0; i < 3; i++) sigaction(sigs[i], &sa, NULL);
}

int ng_stop_requested(void) {
    return stop_signal;
}

const char *ng_stop_signal_name(int sig) {
    static char other[32];
    switch (sig) {
        case SIGTERM:
            return "SIGTERM";
        case SIGINT:
            return "SIGINT";
        case SIGUSR1:
            return "SIGUSR1";
        default:
            snprintf(other, sizeof other, "signal %d", sig);
            return other;
    }
}
