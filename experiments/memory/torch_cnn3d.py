"""PyTorch's side of the 3D-CNN memory comparison (docs/BENCHMARKS.md), for the GPU session:
the 6-layer 16-channel 3D-CNN of ../shared/docs/gpu.md (conv3d 3x3x3, BN, ReLU; global average
pool; linear), fp16 autocast, SGD, plain and with checkpoint_sequential (6 segments).

  python3 torch_cnn3d.py step --side 128 --batch 2        # median step ms and peak GiB
  python3 torch_cnn3d.py largest --batch 1 --step 16      # largest cube side that trains

Prints one JSON object per measurement."""
import argparse
import json
import time

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint_sequential


def model(width=16, depth=6, classes=2):
    layers, c = [], 1
    for _ in range(depth):
        layers.append(nn.Sequential(nn.Conv3d(c, width, 3, padding=1), nn.BatchNorm3d(width),
                                    nn.ReLU(inplace=True)))
        c = width
    return nn.Sequential(*layers), nn.Linear(width, classes)


def step_fn(side, batch, ckpt):
    body, head = model()
    body, head = body.cuda(), head.cuda()
    opt = torch.optim.SGD(list(body.parameters()) + list(head.parameters()), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 1, side, side, side, device="cuda")
    y = torch.randint(0, 2, (batch,), device="cuda")

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.float16):
            h = checkpoint_sequential(body, 6, x, use_reentrant=False) if ckpt else body(x)
            loss = nn.functional.cross_entropy(head(h.mean(dim=(2, 3, 4))), y)
        loss.backward()
        opt.step()

    return step


def measure(side, batch, ckpt, steps=10):
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    step = step_fn(side, batch, ckpt)
    step()
    torch.cuda.synchronize()
    ms = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        torch.cuda.synchronize()
        ms.append((time.perf_counter() - t) * 1e3)
    ms.sort()
    return ms[len(ms) // 2], torch.cuda.max_memory_allocated() / 2**30


def fits(side, batch, ckpt):
    try:
        measure(side, batch, ckpt, steps=1)
        return True
    except torch.OutOfMemoryError:
        return False
    finally:
        torch.cuda.empty_cache()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["step", "largest"])
    ap.add_argument("--side", type=int, default=128)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--step", type=int, default=16)
    a = ap.parse_args()
    torch.backends.cudnn.benchmark = True
    for ckpt in (False, True):
        mode = "checkpoint_sequential 6" if ckpt else "plain"
        if a.what == "step":
            ms, gib = measure(a.side, a.batch, ckpt)
            print(json.dumps({"framework": "pytorch", "side": a.side, "batch": a.batch,
                              "mode": mode, "ms_per_step": round(ms, 2), "peak_gib": round(gib, 3)}))
        else:
            lo, hi = 0, a.step
            while fits(hi, a.batch, ckpt):
                lo, hi = hi, hi * 2
            while hi - lo > a.step:
                mid = (lo + hi) // 2 // a.step * a.step
                lo, hi = (mid, hi) if fits(mid, a.batch, ckpt) else (lo, mid)
            print(json.dumps({"framework": "pytorch", "batch": a.batch, "mode": mode,
                              "largest_side": lo}))


if __name__ == "__main__":
    main()
