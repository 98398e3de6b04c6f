/* Stopping a run early on a signal (preemption: SIGTERM from a scheduler, Ctrl-C, SIGUSR1): the
 * handler only records the signal; the training loop asks ng_stop_requested after each step,
 * checkpoints and exits with 128 + the signal. A second signal ends the process at once. */
#ifndef NG_STOP_H
#define NG_STOP_H

/* Installs the handler for SIGTERM, SIGINT and SIGUSR1. */
void ng_stop_install(void);
/* The signal that asked the run to stop, or 0. The one place that decides whether to stop after
 * a step, so that under MPI it can become an agreement of every rank (a max all-reduce). */
int ng_stop_requested(void);
/* "SIGTERM", "SIGINT", "SIGUSR1" or "signal N". */
const char *ng_stop_signal_name(int sig);

#endif
