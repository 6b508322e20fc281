"""Trial comparison tables of an experiment folder: trials.csv, trials.md, trials.html, summary by KL type.

    python -m tune_cvae.report EXPERIMENT_DIR

Reads only files (search.yaml, each trial's params.json, result.json, error.txt), so it works while a search
runs, after it, and without Ray.
"""
import argparse
import json
import math
from pathlib import Path

import pandas as pd

from tune_cvae import UserError, fail
from tune_cvae.space import read_search


def trial_results(trial_dir):
    """The results a trial reported, one dict per epoch (its result.json)."""
    rows = []
    path = Path(trial_dir) / "result.json"
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                rows.append(json.loads(line))
    return rows


USABLE = ("finished", "stopped early", "interrupted")  # statuses of trials whose metric values count


def _nan(x):
    return x is None or (isinstance(x, float) and math.isnan(x))


INTERRUPTED_FILE = "interrupted.json"  # written by an interrupted search: the trials it cut off


def cut_trials(exp_dir):
    """Trial ids the last interruption of the search cut off; [] when the search was not interrupted."""
    path = Path(exp_dir) / INTERRUPTED_FILE
    try:
        return json.loads(path.read_text()) if path.is_file() else []
    except (OSError, ValueError):
        return []


def collect(exp_dir):
    """One row per trial, sorted by the space's metric (best value over its epochs), ranked from 1."""
    exp_dir = Path(exp_dir)
    space = read_search(exp_dir).space
    metric, mode, max_epochs = space.metric, space.mode, space.max_epochs
    rows, cut = [], set(cut_trials(exp_dir))
    for params_file in sorted(exp_dir.glob("*/params.json")):
        trial_dir = params_file.parent
        config = json.loads(params_file.read_text())
        results = trial_results(trial_dir)
        values = [r[metric] for r in results if metric in r and not _nan(r[metric])]
        last = results[-1] if results else {}
        epochs = int(last.get("epoch", 0)) if results else 0
        trial_id = last.get("trial_id", trial_dir.name.removeprefix("trial_"))
        if (trial_dir / "error.txt").is_file():
            status = "errored"
        elif results and _nan(last.get(metric)):
            status = "diverged (NaN)"
        elif epochs >= config.get("num_epoch", max_epochs):
            status = "finished"
        elif trial_id in cut:
            status = "interrupted"
        else:
            status = "stopped early"
        row = {"trial_id": trial_id, "status": status}
        for p in space.params:
            row[p] = config.get(p, "")  # empty where a condition excluded the parameter
        if "kl_anneal_type" not in space.params:
            row["kl_anneal_type"] = config.get("kl_anneal_type", "Cyclical")
        best = (max(values) if mode == "max" else min(values)) if values else float("nan")
        row.update({"epochs": epochs, f"best_{metric}": best, f"last_{metric}": last.get(metric, float("nan")),
                    "val_psnr_600": last.get("val_psnr_600", float("nan")),
                    "wall_s": round(last.get("time_total_s", 0.0), 1), "trial_dir": trial_dir.name})
        if metric != "val_psnr":
            row["last_val_psnr"] = last.get("val_psnr", float("nan"))
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table = table.sort_values(f"best_{metric}", ascending=(mode == "min"), na_position="last", kind="stable")
    table.insert(0, "rank", range(1, len(table) + 1))
    return table.reset_index(drop=True)


def summary(table, metric):
    """Trials, best, mean and std of each trial's best metric, by KL-annealing type."""
    col = f"best_{metric}"
    grouped = table.groupby("kl_anneal_type")[col]
    return pd.DataFrame({"trials": grouped.size(), "best": grouped.max(), "mean": grouped.mean(),
                         "std": grouped.std()}).reset_index()


def _fmt(v):
    return "" if math.isnan(v) else f"{v:.3f}"


def _markdown(df):
    def cell(v):
        return _fmt(v) if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def write(exp_dir):
    """Write trials.csv, trials.md, trials.html into the experiment folder; returns the table."""
    exp_dir = Path(exp_dir)
    table = collect(exp_dir)
    metric = read_search(exp_dir).space.metric
    by_type = summary(table, metric) if not table.empty else pd.DataFrame()
    table.to_csv(exp_dir / "trials.csv", index=False)
    (exp_dir / "trials.md").write_text(f"# Trials of {exp_dir.name}\n\n{_markdown(table)}\n\n"
                                       f"## By KL-annealing type ({metric})\n\n{_markdown(by_type)}\n")
    (exp_dir / "trials.html").write_text(
        f"<html><head><meta charset='utf-8'><title>{exp_dir.name}</title></head><body>"
        f"<h1>Trials of {exp_dir.name}</h1>{table.to_html(index=False, float_format=_fmt, na_rep='')}"
        f"<h2>By KL-annealing type ({metric})</h2>{by_type.to_html(index=False, float_format=_fmt, na_rep='')}"
        f"</body></html>\n")
    return table


def console(table, metric, top=10):
    if table.empty:
        return "no trial reported a result"
    cols = [c for c in table.columns if c not in ("trial_dir",)]
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        return (f"top {min(top, len(table))} of {len(table)} trials by {metric}:\n"
                + table[cols].head(top).to_string(index=False, float_format=lambda v: f"{v:.3f}")
                + "\n\nby KL-annealing type:\n" + summary(table, metric).to_string(index=False, float_format=_fmt))


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m tune_cvae.report", description=__doc__.split("\n\n")[0])
    p.add_argument("experiment", help="experiment folder (e.g. ray_results/kl_tfr-20261125-101500)")
    args = p.parse_args(argv)
    try:
        table = write(args.experiment)
        metric = read_search(args.experiment).space.metric
    except UserError as e:
        fail(e)
    print(console(table, metric))
    print(f"\nwrote {Path(args.experiment) / 'trials.csv'}, trials.md, trials.html")


def plot_psnr(psnr, path, title):
    """PSNR per frame (frame index 1..T-1) with the mean marked, as PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(9, 3.5))
    frames = range(1, len(psnr) + 1)
    ax.plot(frames, psnr, lw=1, label="PSNR per frame")
    mean = float(sum(psnr) / len(psnr))
    ax.axhline(mean, color="tab:red", ls="--", lw=1, label=f"mean {mean:.2f} dB")
    ax.set_xlabel("frame index")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title(title)
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
