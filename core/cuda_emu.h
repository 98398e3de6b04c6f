/* The CUDA emulation build (-DNG_CUDA_EMU=ON): the CUDA build's host code, every line of it that
 * decides devices, copies, workspaces and launches, run on a machine without a GPU. "Device"
 * memory is real host memory kept unreadable except while an emulated device op runs; an op runs
 * the CPU twin (the kernels themselves are not emulated: that is what the gpu-labelled tests on a
 * GPU are for). Host code that reads or writes device memory outside an op (a missing copy, a
 * host loop over a CUDA tensor) faults, and the fault is reported with its backtrace. */
#ifndef NG_CUDA_EMU_H
#define NG_CUDA_EMU_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Opens device memory to the calling op (nests; concurrent ops of other threads keep it open)
 * and closes it when the last op leaves. */
void ng_emu_enter(void);
void ng_emu_leave(void);
/* 1 when [p, p + bytes) lies inside one allocated block of device memory: what a library that
 * takes device pointers (NCCL, emulated in comm/nccl_emu.c) would need. */
int ng_emu_is_device(const void *p, size_t bytes);
/* "natgrad: LIB (emulated): " and the message on stderr: why an emulated library refuses a call
 * (it then returns the library's own status). */
void ng_emu_say(const char *lib, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Device memory outside the counting allocator (cudaMalloc, cudaFree of the emulated runtime). */
void *ng_emu_alloc(size_t bytes);
void ng_emu_free(void *p);
/* cudaFree waits for all of the device's work first; the emulated streams (comm/, which core
 * does not call) register the wait that freeing device memory makes here. */
void ng_emu_set_free_wait(void (*wait_all)(void));

#ifdef __cplusplus
}
#endif
#endif
