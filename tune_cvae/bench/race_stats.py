"""The race's figures, from its rows (one per search or single run): per row of each dataset and budget, the
winner's test score as mean, median and interquartile range; each row against its control (settings.CONTROLS)
paired by (dataset, budget, seed): the mean and median difference, the win rate and the two-sided Wilcoxon
signed-rank p-value, per dataset and over both; the best-so-far curves as medians with IQR bands.
"""
import json
import math
import warnings

import numpy as np
import pandas as pd

from tune_cvae.bench.settings import CONTROLS
from tune_cvae.common import say, write_whole
from tune_cvae.experiment import figures
from tune_cvae.experiment.tables import markdown

ALL = "both datasets"  # the pooled rows of the tables


def summary(table, metric):
    """Per budget, dataset (and both pooled) and strategy: the test score's mean, median, quartiles and std over
    seeds, with the winner's val metric and what the searches spent."""
    groups = [table, table.assign(dataset=ALL)] if table["dataset"].nunique() > 1 else [table]
    lines = []
    for (budget, dataset, strategy), g in pd.concat(groups).groupby(["budget", "dataset", "strategy"], sort=False):
        score = g["test_score"]
        lines.append({"budget": budget, "dataset": dataset, "strategy": strategy, "searches": len(g),
                      "test mean": score.mean(), "test median": score.median(), "test q1": score.quantile(0.25),
                      "test q3": score.quantile(0.75), "test std": score.std(ddof=1),
                      f"best {metric} mean": g[f"best_{metric}"].mean(), "trial_epochs": g["trial_epochs"].mean(),
                      "trials": g["trials"].mean(), "diverged": int(g["diverged"].sum()),
                      "wall_s": g["wall_s"].mean()})
    return pd.DataFrame(lines)


def paired(table, strategy, control):
    """{(budget, dataset): (the row's scores, the control's)} over the (dataset, budget, seed) both have."""
    keys = ["budget", "dataset", "seed"]
    mine = table[table["strategy"] == strategy].set_index(keys)["test_score"]
    theirs = table[table["strategy"] == control].set_index(keys)["test_score"]
    both = mine.to_frame("row").join(theirs.to_frame("control"), how="inner").dropna()
    out = {}
    for budget, g in both.groupby(level="budget"):
        for dataset, d in g.groupby(level="dataset"):
            out[(budget, dataset)] = (d["row"].to_numpy(), d["control"].to_numpy())
        if g.index.get_level_values("dataset").nunique() > 1:
            out[(budget, ALL)] = (g["row"].to_numpy(), g["control"].to_numpy())
    return out


def wilcoxon(diffs):
    """Two-sided Wilcoxon signed-rank p-value of paired differences (1.0 where all are zero, NaN below two)."""
    from scipy.stats import wilcoxon as test
    if len(diffs) < 2:
        return math.nan
    if not np.any(diffs):
        return 1.0
    with warnings.catch_warnings():  # few pairs: scipy says its normal approximation is rough; exact is used
        warnings.simplefilter("ignore")
        return float(test(diffs).pvalue)


NO_PAIRS = "No row of this race ran beside its control (the pairs are CONTROLS in tune_cvae/bench/settings.py)."


def comparisons(table):
    """Each row of CONTROLS that ran, against its control: per budget and dataset (and both pooled)."""
    lines = []
    for strategy, control in CONTROLS:
        for (budget, dataset), (row, base) in paired(table, strategy, control).items():
            diffs = row - base
            lines.append({"budget": budget, "dataset": dataset, "row": strategy, "control": control,
                          "pairs": len(diffs), "mean diff (dB)": diffs.mean(), "median diff (dB)": np.median(diffs),
                          "win rate": (np.sum(diffs > 0) + 0.5 * np.sum(diffs == 0)) / len(diffs),
                          "Wilcoxon p": wilcoxon(diffs)})
    return pd.DataFrame(lines, columns=["budget", "dataset", "row", "control", "pairs", "mean diff (dB)",
                                        "median diff (dB)", "win rate", "Wilcoxon p"])


def plot(runs, metric, path):
    """Best-so-far against trial-epochs: one panel per budget and dataset, per search row the median over seeds
    and the band between the quartiles."""
    plt = figures.pyplot()
    panels = sorted({(r["budget"], r["dataset"]) for r, values in runs if values})
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.5), squeeze=False)
    for ax, (budget, dataset) in zip(axes[0], panels):
        x = np.arange(1, budget + 1)
        here = [(r, v) for r, v in runs if (r["budget"], r["dataset"]) == (budget, dataset) and v]
        for strategy in dict.fromkeys(r["strategy"] for r, _ in here):
            ys = np.array([[v[min(i, len(v)) - 1] for i in x] for r, v in here if r["strategy"] == strategy], float)
            with warnings.catch_warnings():  # all-NaN columns: before a strategy's first finite value
                warnings.simplefilter("ignore", RuntimeWarning)
                q1, median, q3 = np.nanpercentile(ys, [25, 50, 75], axis=0)
            line, = ax.plot(x, median, label=f"{strategy} ({len(ys)})")
            ax.fill_between(x, q1, q3, color=line.get_color(), alpha=0.12)
        ax.set(xlabel="trial-epochs spent", ylabel=f"best {metric} so far (dB)", title=f"{dataset}, budget {budget}")
        figures.whole_epochs(ax)
        ax.legend(fontsize=7)
    sep = " " if len(panels) > 1 else "\n"  # one panel is too narrow for the title on one line
    fig.suptitle(f"Search strategies at equal budget:{sep}median over seeds, band between the quartiles")
    figures.save(fig, path)


KEY = ("dataset", "budget", "strategy", "seed")  # one search (or single run) of the race


def with_earlier(out, runs, repeats):
    """(runs, repeats) with what earlier sittings in OUT measured (its race.json) before this sitting's; a search
    measured again replaces its earlier row. So a race run in parts, with other seeds, datasets or rows, has one
    table."""
    path = out / "race.json"
    if not path.is_file():
        return runs, repeats
    earlier = json.loads(path.read_text())
    found = {tuple(e[k] for k in KEY): ({k: v for k, v in e.items() if k != "curve"}, e["curve"])
             for e in earlier["runs"]}
    found.update({tuple(r[k] for k in KEY): (r, v) for r, v in runs})
    return list(found.values()), {**earlier["repeat_first_frame"], **repeats}


def write(out, runs, metric, repeats):
    """searches.csv, summary.csv/.md, comparisons.csv/.md, race.json (the curves) and race.png, of this sitting's
    runs and every earlier one's in OUT; returns the summary, or None while nothing is measured (a race of single runs
    alone has none after its seeds)."""
    runs, repeats = with_earlier(out, runs, repeats)
    if not runs:
        return None
    table = pd.DataFrame([r for r, _ in runs])
    table.to_csv(out / "searches.csv", index=False)
    summ, comp = summary(table, metric), comparisons(table)
    summ.to_csv(out / "summary.csv", index=False)
    comp.to_csv(out / "comparisons.csv", index=False)
    (out / "summary.md").write_text(markdown(summ) + "\n")
    (out / "comparisons.md").write_text((markdown(comp) if len(comp) else NO_PAIRS) + "\n")
    write_whole(out / "race.json", json.dumps({"repeat_first_frame": repeats,
                                                "runs": [{**r, "curve": v} for r, v in runs]}, default=float) + "\n")
    plot(runs, metric, out / "race.png")
    say(f"wrote {out}/searches.csv, summary.csv/.md, comparisons.csv/.md, race.json, race.png (repeating the "
        f"first frame scores " + ", ".join(f"{k} {v:.2f} dB" for k, v in repeats.items()) + " on the test videos)")
    return summ
