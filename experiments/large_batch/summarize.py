#!/usr/bin/env python3
"""Summarize experiments/large_batch/run.sh's run directories: results.md and four PNGs.

usage: summarize.py RUN_DIR [OUT_DIR]   (OUT_DIR defaults to RUN_DIR)

A run directory is METHOD_bBATCH_lrLR_sSEED. Per (method, batch) the chosen learning rate is the
one whose seed-0 run ends with the best test accuracy (ties: the smaller rate), as run.sh picks
it; the table's statistics are over every seed run at that rate. The train loss is that of the
final weights on the whole training set (train_eval.json, written by run.sh with natgrad eval),
the generalization gap is test loss minus that train loss.
"""
import json
import math
import os
import re
import statistics
import sys

METHODS = ["sgd", "kfac", "kfac_smooth", "noisy_kfac"]
LABELS = {"sgd": "SGD", "kfac": "K-FAC", "kfac_smooth": "K-FAC + smoothing",
          "noisy_kfac": "Noisy K-FAC"}
NAME = re.compile(r"^(?P<m>[a-z_]+)_b(?P<b>\d+)_lr(?P<lr>[0-9.e+-]+)_s(?P<s>\d+)$")


def read_run(path):
    """The run's evaluations and final numbers, or None when it did not finish."""
    try:
        with open(os.path.join(path, "result.json")) as f:
            result = json.load(f)
    except (OSError, ValueError):
        return None
    evals, train_losses = [], []
    with open(os.path.join(path, "metrics.jsonl")) as f:
        for line in f:
            rec = json.loads(line)
            if rec.get("type") == "eval":
                evals.append(rec)
            elif rec.get("type") == "train":
                train_losses.append((rec["epoch"], rec["loss"]))
    train = None
    try:
        with open(os.path.join(path, "train_eval.json")) as f:
            train = json.loads(f.read().strip().splitlines()[-1])
    except (OSError, ValueError, IndexError):
        pass
    # The train lines' loss over the last epoch, for comparison: each is one batch's loss before
    # that step's update (at the perturbed weights with smoothing or Noisy K-FAC).
    last_epoch = evals[-1]["epoch"] - 1 if evals else 0
    tail = [l for e, l in train_losses if e > last_epoch and l is not None]
    return {
        "acc": result["test_accuracy"], "test_loss": result["test_loss"],
        "best": max(e["accuracy"] for e in evals) if evals else float("nan"),
        "steps": result["step"], "secs": evals[-1]["train_s"] if evals else float("nan"),
        "train_loss": train["loss"] if train else float("nan"),
        "train_acc": train["accuracy"] if train else float("nan"),
        "train_line_loss": statistics.fmean(tail) if tail else float("nan"),
        "curve": [(e["step"], e["train_s"], e["accuracy"]) for e in evals],
    }


def mean_std(xs):
    xs = [x for x in xs if not math.isnan(x)]
    if not xs:
        return float("nan"), float("nan")
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__.strip().splitlines()[2])
    root = sys.argv[1]
    out = sys.argv[2] if len(sys.argv) == 3 else root
    os.makedirs(out, exist_ok=True)

    runs = {}  # (method, batch, lr string, seed) -> run or None
    for name in sorted(os.listdir(root)):
        m = NAME.match(name)
        if m and os.path.isdir(os.path.join(root, name)):
            key = (m["m"], int(m["b"]), m["lr"], int(m["s"]))
            runs[key] = read_run(os.path.join(root, name))
    batches = sorted({k[1] for k in runs})
    methods = [m for m in METHODS if any(k[0] == m for k in runs)]

    rows, sweep = {}, []
    for m in methods:
        for b in batches:
            lrs = sorted({k[2] for k in runs if k[0] == m and k[1] == b}, key=float)
            seed0 = [(lr, runs.get((m, b, lr, 0))) for lr in lrs]
            for lr, r in seed0:
                sweep.append((m, b, lr, r))
            done = [(lr, r) for lr, r in seed0 if r]
            if not done:
                continue
            lr = max(done, key=lambda x: (x[1]["acc"], -float(x[0])))[0]
            seeds = sorted(k[3] for k in runs if k[:3] == (m, b, lr) and runs[k])
            rows[(m, b)] = (lr, {s: runs[(m, b, lr, s)] for s in seeds})

    def col(rs, field):
        return mean_std([r[field] for r in rs.values()])

    lines = ["| method | batch | steps | lr | seeds | final test acc (mean ± std) | best acc (mean over seeds) | "
             "test loss | train loss | gap (test - train loss) | train acc | train s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for b in batches:
        for m in methods:
            if (m, b) not in rows:
                continue
            lr, rs = rows[(m, b)]
            acc, acc_sd = col(rs, "acc")
            gaps = {s: dict(r, gap=r["test_loss"] - r["train_loss"]) for s, r in rs.items()}
            gap, gap_sd = col(gaps, "gap")
            lines.append(
                f"| {LABELS[m]} | {b} | {next(iter(rs.values()))['steps']} | {lr} | {len(rs)} | "
                f"{100 * acc:.2f}% ± {100 * acc_sd:.2f} | {100 * col(rs, 'best')[0]:.2f}% | "
                f"{col(rs, 'test_loss')[0]:.4f} | {col(rs, 'train_loss')[0]:.4f} | "
                f"{gap:.4f} ± {gap_sd:.4f} | {100 * col(rs, 'train_acc')[0]:.2f}% | "
                f"{col(rs, 'secs')[0]:.1f} |")
    lines += ["", "Learning-rate sweep (seed 0): final test accuracy, best during the run, "
              "test loss, training seconds.", "",
              "| method | batch | lr | final acc | best acc | test loss | train loss | train s |",
              "|---|---|---|---|---|---|---|---|"]
    for m, b, lr, r in sorted(sweep, key=lambda x: (x[1], METHODS.index(x[0]), float(x[2]))):
        if r is None:
            why = "failed"
            try:
                with open(os.path.join(root, f"{m}_b{b}_lr{lr}_s0.log")) as f:
                    if "training diverged" in f.read():
                        why = "diverged"
            except OSError:
                pass
            lines.append(f"| {LABELS[m]} | {b} | {lr} | {why} | - | - | - | - |")
        else:
            lines.append(f"| {LABELS[m]} | {b} | {lr} | {100 * r['acc']:.2f}% | "
                         f"{100 * r['best']:.2f}% | {r['test_loss']:.4f} | "
                         f"{r['train_loss']:.4f} | {r['secs']:.1f} |")
    table = "\n".join(lines) + "\n"
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(table)
    sys.stdout.write(table)
    plot(rows, methods, batches, out)


def plot(rows, methods, batches, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dpi = 90
    # (a) and (d): one point per (method, batch), error bars the seed spread (std).
    for fname, field, ylabel, scale in [
            ("large_batch_final_acc.png", "acc", "final test accuracy (%)", 100),
            ("large_batch_gap.png", "gap", "test loss - train loss", 1)]:
        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        for i, m in enumerate(methods):
            xs, ys, es = [], [], []
            for b in batches:
                if (m, b) not in rows:
                    continue
                vals = [r["acc"] if field == "acc" else r["test_loss"] - r["train_loss"]
                        for r in rows[(m, b)][1].values()]
                mu, sd = mean_std(vals)
                # Methods side by side at each batch so the error bars do not overlap.
                xs.append(b * 1.06 ** (i - (len(methods) - 1) / 2))
                ys.append(scale * mu)
                es.append(scale * sd)
            ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=LABELS[m])
        ax.set_xscale("log", base=2)
        ax.set_xticks(batches)
        ax.set_xticklabels([str(b) for b in batches])
        ax.set_xlabel("global batch size")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(out, fname), dpi=dpi)
        plt.close(fig)

    # (b) and (c): the mean test-accuracy curve over the seeds at the chosen rate, shaded between
    # the seeds' lowest and highest; against seconds the x is the seeds' mean training time.
    for fname, xi, xlabel in [("large_batch_acc_vs_steps.png", 0, "optimizer steps"),
                              ("large_batch_acc_vs_seconds.png", 1, "training seconds")]:
        fig, axes = plt.subplots(1, len(batches), figsize=(4.2 * len(batches), 3.6),
                                 squeeze=False)
        for ax, b in zip(axes[0], batches):
            for m in methods:
                if (m, b) not in rows:
                    continue
                lr, rs = rows[(m, b)]
                curves = [r["curve"] for r in rs.values()]
                n = min(len(c) for c in curves)
                x = [statistics.fmean(c[j][xi] for c in curves) for j in range(n)]
                accs = [[100 * c[j][2] for c in curves] for j in range(n)]
                line, = ax.plot(x, [statistics.fmean(a) for a in accs],
                                label=f"{LABELS[m]} (lr {lr})")
                ax.fill_between(x, [min(a) for a in accs], [max(a) for a in accs],
                                color=line.get_color(), alpha=0.2)
            ax.set_title(f"batch {b}")
            ax.set_xlabel(xlabel)
            ax.set_ylabel("test accuracy (%)")
            ax.set_ylim(85, 100)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        fig.savefig(os.path.join(out, fname), dpi=dpi)
        plt.close(fig)


if __name__ == "__main__":
    main()
