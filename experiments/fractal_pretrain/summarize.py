#!/usr/bin/env python3
"""Table and plot of experiments/fractal_pretrain/run.sh's run directories.

usage: summarize.py OUT_DIR  (writes OUT_DIR/results.md and OUT_DIR/fractal_pretrain.png)
"""
import glob
import json
import os
import re
import statistics
import sys


def evals(run):
    """The eval lines of a run's metrics.jsonl, in order."""
    with open(os.path.join(run, "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if r.get("type") == "eval"]


def mean_sd(xs):
    return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def main(out):
    pre = {}  # optimizer -> seed -> (fractal test accuracy, seconds)
    for run in sorted(glob.glob(os.path.join(out, "pre_*_s*/"))):
        m = re.match(r"pre_(.+)_s(\d+)$", os.path.basename(run[:-1]))
        e = evals(run)
        if m and e:
            pre.setdefault(m[1], {})[int(m[2])] = (e[-1]["accuracy"], e[-1]["train_s"])
    lines = ["| pre-training | seeds | FractalDB test acc, mean ± sd | per seed | "
             "pre-training s (mean) |", "|---|---|---|---|---|"]
    for opt, seeds in pre.items():
        accs = [a for a, _ in seeds.values()]
        m, sd = mean_sd(accs)
        lines.append(f"| {opt} | {len(accs)} | {100 * m:.2f} ± {100 * sd:.2f}% | "
                     + ", ".join(f"{100 * a:.2f}" for a in accs)
                     + f" | {statistics.mean(t for _, t in seeds.values()):.0f} |")
    curves = {}  # start -> seed -> [(step, acc)]
    for run in sorted(glob.glob(os.path.join(out, "ft_*_s*/"))):
        m = re.match(r"ft_(.+)_s(\d+)$", os.path.basename(run[:-1]))
        e = evals(run)
        if m and e:
            curves.setdefault(m[1], {})[int(m[2])] = [(r["step"], r["accuracy"]) for r in e]
    lines += ["", "| MNIST start | seeds | first eval acc (step) | final test acc, mean ± sd | "
              "per seed |", "|---|---|---|---|---|"]
    for start, seeds in curves.items():
        final = [c[-1][1] for c in seeds.values()]
        first = [c[0][1] for c in seeds.values()]
        step0 = next(iter(seeds.values()))[0][0]
        fm, fs = mean_sd(final)
        lines.append(f"| {start} | {len(final)} | {100 * statistics.mean(first):.2f}% ({step0}) | "
                     f"{100 * fm:.2f} ± {100 * fs:.2f}% | "
                     + ", ".join(f"{100 * a:.2f}" for a in final) + " |")
    text = "\n".join(lines) + "\n"
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(text)
    print(text, end="")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (Debian: python3-matplotlib): no plot", file=sys.stderr)
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    for start, seeds in curves.items():
        steps = [s for s, _ in next(iter(seeds.values()))]
        accs = [[c[i][1] for c in seeds.values() if len(c) > i] for i in range(len(steps))]
        label = "from scratch" if start == "scratch" else f"pre-trained on FractalDB ({start})"
        ax.plot(steps, [100 * statistics.mean(a) for a in accs], label=label)
        ax.fill_between(steps, [100 * min(a) for a in accs], [100 * max(a) for a in accs],
                        alpha=0.25)
    ax.set_xlabel("MNIST training step (batch 100)")
    ax.set_ylabel("test accuracy (%), mean and seed range")
    ax.set_title("small ViT on MNIST: from FractalDB pre-training vs scratch")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out, "fractal_pretrain.png"), dpi=90)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/fractal_pretrain")
