#!/usr/bin/env python3
"""PyTorch's side of issue 14's table, measured in the same call on the same GPU as natgrad's
(scripts/gpu-session.sh runs both). One process runs every job given, so PyTorch and CUDA start
once; each job prints one JSON line (op, settings, ms, and TFLOP/s or images/s and peak memory).

  torch_peer.py gemm:4096,8192 eigh:1024,2048,4096 vit:vit_tiny_patch16_224:256:bf16:eager ...

Jobs:
  gemm:N,N..     C = A B for square N, f32 (TF32 off, as natgrad's f32), f16 and bf16; median of
                 20 after 3 warm-ups, timed with CUDA events.
  eigh:N,N..     torch.linalg.eigh of a random symmetric positive-definite f32 matrix, and the
                 Cholesky inverse (K-FAC's two inverse routes).
  vit:MODEL:BATCH:PRECISION:MODE
                 a timm ViT (no pretrained weights, drop rates 0) trained on one fixed random batch
                 of 224 px images: forward, cross-entropy, backward, SGD step (momentum 0.9), as
                 natgrad bench --step times it. PRECISION fp32 or bf16 (autocast), MODE eager or
                 compile (the model through torch.compile, default mode; the compile time is
                 reported apart).
Steps: median of --steps (default 20) after --warmup (default 5) steps.
"""
import argparse
import json
import sys
import time

import torch


def cuda_ms(fn, reps, warmup):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    times.sort()
    return times[len(times) // 2], sum(times) / len(times)


def gemm(sizes, dev):
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    for n in sizes:
        for name, dt in (("f32", torch.float32), ("f16", torch.float16), ("bf16", torch.bfloat16)):
            a = torch.randn(n, n, device=dev, dtype=dt)
            b = torch.randn(n, n, device=dev, dtype=dt)
            ms, _ = cuda_ms(lambda: torch.mm(a, b), 20, 3)
            yield {"op": "gemm", "dtype": name, "n": n, "ms": ms,
                   "tflops": 2 * n ** 3 / (ms * 1e-3) / 1e12}


def eigh(sizes, dev):
    for n in sizes:
        g = torch.randn(n, n, device=dev)
        s = g @ g.T / n + torch.eye(n, device=dev)
        ms, _ = cuda_ms(lambda: torch.linalg.eigh(s), 5, 2)
        yield {"op": "eigh", "dtype": "f32", "n": n, "ms": ms}
        ms, _ = cuda_ms(lambda: torch.cholesky_inverse(torch.linalg.cholesky(s)), 10, 2)
        yield {"op": "chol_inv", "dtype": "f32", "n": n, "ms": ms}


def vit(model, batch, precision, mode, steps, warmup, dev):
    import timm
    torch.manual_seed(0)
    net = timm.create_model(model, pretrained=False, num_classes=1000).to(dev)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, 224, 224, device=dev)
    y = torch.randint(0, 1000, (batch,), device=dev)
    loss_fn = torch.nn.CrossEntropyLoss()
    amp = precision == "bf16"

    fwd = torch.compile(net) if mode == "compile" else net  # the model compiled, as is usual

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            loss = loss_fn(fwd(x), y)
        loss.backward()
        opt.step()

    t0 = time.time()
    step()  # compiles under torch.compile
    torch.cuda.synchronize()
    compile_s = time.time() - t0 if mode == "compile" else 0.0
    torch.cuda.reset_peak_memory_stats()
    med, mean = cuda_ms(step, steps, warmup)
    yield {"op": "vit", "model": model, "batch": batch, "precision": precision, "mode": mode,
           "ms": med, "mean_ms": mean, "images_per_s": batch / (med * 1e-3),
           "peak_gib": torch.cuda.max_memory_allocated() / 2 ** 30, "compile_s": compile_s}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("jobs", nargs="+")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    a = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("torch_peer.py: no CUDA device")
    dev = torch.device("cuda")
    print(json.dumps({"op": "info", "torch": torch.__version__,
                      "device": torch.cuda.get_device_name(0)}), flush=True)
    for job in a.jobs:
        kind, _, rest = job.partition(":")
        try:
            if kind == "gemm":
                rows = gemm([int(v) for v in rest.split(",")], dev)
            elif kind == "eigh":
                rows = eigh([int(v) for v in rest.split(",")], dev)
            elif kind == "vit":
                model, batch, precision, mode = rest.split(":")
                rows = vit(model, int(batch), precision, mode, a.steps, a.warmup, dev)
            else:
                sys.exit(f"torch_peer.py: unknown job '{job}' (gemm, eigh, vit)")
            for r in rows:
                print(json.dumps(r), flush=True)
        except Exception as e:  # one failed job must not lose the others' figures
            print(json.dumps({"op": kind, "job": job, "error": repr(e)}), flush=True)
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
