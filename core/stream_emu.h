/* The emulated CUDA streams (core/cuda_runtime_emu.c): a stream made by
 * cudaStreamCreate* is a worker thread running its queue in order, as a GPU runs a stream beside
 * the host; the NULL stream (core's, in the emulation) runs everything at once on the caller. */
#ifndef NG_STREAM_EMU_H
#define NG_STREAM_EMU_H

#include <cuda_runtime.h>

/* Queues run(arg) on stream s and returns 1; returns 0 for the NULL stream, whose work the
 * caller runs itself. run owns arg. */
int ng_emu_stream_enqueue(cudaStream_t s, void (*run)(void *arg), void *arg);
/* Waits until every live stream's queue has run (before a communicator is split or destroyed:
 * its MPI communicator must not be in use by a worker). */
void ng_emu_streams_drain(void);

#endif
