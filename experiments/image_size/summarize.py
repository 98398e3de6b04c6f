#!/usr/bin/env python3
"""Table and plot of experiments/image_size/run.sh's rows.

usage: summarize.py ROWS.tsv OUT_DIR DEVICE  (writes OUT_DIR/results.md, OUT_DIR/image_size.png)
Rows: model, side, batch, checkpoint (none/all, '-' when nothing fits), ms/step, iterations/min,
measured peak MiB, predicted peak MiB.
"""
import os
import sys


def main(rows_path, out, device):
    rows = [line.rstrip("\n").split("\t") for line in open(rows_path) if line.strip()]
    lines = [f"| model | side | batch | checkpoint | ms/step | iterations/min | peak MiB ({device}, "
             "bench) | plan MiB (a training run: + optimizer, data) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r[3] == "-":
            lines.append(f"| {r[0]} | {r[1]} | {r[2]} | does not fit | - | - | - | - |")
        else:
            lines.append("| " + " | ".join(r) + " |")
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
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.6))
    for model in sorted({r[0] for r in rows}):
        ok = [r for r in rows if r[0] == model and r[3] != "-"]
        side = [int(r[1]) for r in ok]
        a.plot(side, [float(r[5]) for r in ok], "o-", label=model)
        b.plot(side, [float(r[6]) / 1024 for r in ok], "o-", label=model)
        for r in ok:
            if r[3] == "all":
                a.annotate("ckpt", (int(r[1]), float(r[5])), fontsize=7)
    for ax, title in ((a, "training iterations per minute"), (b, "peak memory (GiB)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("image side (px)")
        ax.set_title(f"{title}, {device}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out, "image_size.png"), dpi=90)


if __name__ == "__main__":
    main(*sys.argv[1:4])
