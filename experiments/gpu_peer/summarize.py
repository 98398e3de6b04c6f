#!/usr/bin/env python3
"""Issue 14's table from one gpu-session.sh call: natgrad's figures (bench-core.json, step_*.json)
beside PyTorch's (torch_peer.jsonl) measured in the same call, with the ratios the issue's targets
are stated in. Prints markdown for docs/BENCHMARKS.md; a figure that is missing says so.

  summarize.py OUT_DIR
"""
import json
import os
import sys


def load_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "gpu-results"
    torch = []
    try:
        with open(os.path.join(out, "torch_peer.jsonl")) as f:
            torch = [json.loads(l) for l in f if l.strip().startswith("{")]
    except OSError:
        pass
    info = next((r for r in torch if r.get("op") == "info"), {})
    print(f"PyTorch {info.get('torch', '?')} on {info.get('device', '?')}, same call.\n")

    core = load_json(os.path.join(out, "bench-core.json")) or {"results": []}
    print("| op | dtype | n | natgrad | PyTorch | natgrad / PyTorch |")
    print("|---|---|---|---|---|---|")
    for r in core["results"]:
        if r["op"] not in ("gemm", "eigh", "chol_inv"):
            continue
        t = next((p for p in torch if p.get("op") == r["op"] and p.get("dtype") == r["dtype"]
                  and p.get("n") == r["n"]), None)
        if r["op"] == "gemm":  # throughput: higher is better
            ng, pt = f"{r['tflops']:.1f} TFLOP/s", f"{t['tflops']:.1f} TFLOP/s" if t else "missing"
            ratio = f"{r['tflops'] / t['tflops']:.2f}" if t else "-"
        else:  # time: the ratio is PyTorch's time over natgrad's (> 1: natgrad faster)
            ng, pt = f"{r['ms']:.2f} ms", f"{t['ms']:.2f} ms" if t else "missing"
            ratio = f"{t['ms'] / r['ms']:.2f}" if t else "-"
        print(f"| {r['op']} | {r['dtype']} | {r['n']} | {ng} | {pt} | {ratio} |")

    # natgrad step JSON name -> (model, batch, precision) of its PyTorch peer, and its label
    steps = [("vit_ti16_fp32_sgd", "vit_tiny_patch16_224", 256, "fp32", "ViT-Ti/16, b256, fp32, SGD"),
             ("vit_ti16_bf16_sgd", "vit_tiny_patch16_224", 256, "bf16", "ViT-Ti/16, b256, bf16, SGD"),
             ("vit_b16_bf16_sgd", "vit_base_patch16_224", 128, "bf16", "ViT-B/16, b128, bf16, SGD"),
             ("vit_ti16_bf16_kfac10_100", None, 256, "bf16", "ViT-Ti/16, b256, bf16, K-FAC(10,100)"),
             ("vit_ti16_bf16_kfac1_1", None, 256, "bf16", "ViT-Ti/16, b256, bf16, K-FAC every step")]
    print("\n| job | natgrad ms (median / mean) | PyTorch eager ms | torch.compile ms "
          "| natgrad vs eager | natgrad vs compile | vs natgrad SGD |")
    print("|---|---|---|---|---|---|---|")
    sgd = load_json(os.path.join(out, "step_vit_ti16_bf16_sgd.json"))
    for name, model, batch, prec, label in steps:
        r = load_json(os.path.join(out, f"step_{name}.json"))
        if not r:
            print(f"| {label} | missing | | | | | |")
            continue
        ng = f"{r['ms_per_step']:.1f} / {r['mean_ms_per_step']:.1f}"
        eager = comp = None
        if model:
            pick = lambda mode: next((p for p in torch if p.get("op") == "vit" and p.get("model") == model
                                      and p.get("batch") == batch and p.get("precision") == prec
                                      and p.get("mode") == mode and "ms" in p), None)
            eager, comp = pick("eager"), pick("compile")
        fmt = lambda p: f"{p['ms']:.1f}" if p else "-"
        vs = lambda p: f"{p['ms'] / r['ms_per_step']:.2f}x" if p else "-"
        rel = f"{r['mean_ms_per_step'] / sgd['mean_ms_per_step']:.2f}x" if sgd and "kfac" in name else "-"
        print(f"| {label} | {ng} | {fmt(eager)} | {fmt(comp)} | {vs(eager)} | {vs(comp)} | {rel} |")
    print("\n(vs eager / vs compile: PyTorch's median over natgrad's, > 1 means natgrad is faster; "
          "K-FAC rows against natgrad's own SGD step by mean, the issue's 1.2x and 4x targets.)")
    for p in torch:
        if "error" in p:
            print(f"\nPyTorch job {p.get('job')} failed: {p['error']}")


if __name__ == "__main__":
    main()
