"""The trial table of an experiment, from its files: one row per trial (status, searched values, epochs, best and
last metric, wall time, rank), a summary by KL-annealing type, trials.csv/.md/.html and the console's view.
"""
import json
import math
from pathlib import Path

import pandas as pd

from tune_cvae.experiment.files import (ERROR_FILE, JOURNAL, PARAMS_FILE, interrupted_trials, is_nan, study_storage,
                                        trial_id_of, trial_results, trial_status)
from tune_cvae.experiment.lineage import donors
from tune_cvae.experiment.record import read_search
from tune_cvae.experiment.space import PBT
from tune_cvae.lab.config import best_of

TABLE_FILES = ("trials.csv", "trials.md", "trials.html")


def collect(exp_dir):
    """One row per trial, sorted by the space's metric (best value over its epochs), ranked from 1."""
    exp_dir = Path(exp_dir)
    space = read_search(exp_dir).space
    metric, mode, max_epochs = space.metric, space.mode, space.max_epochs
    rows, cut = [], set(interrupted_trials(exp_dir))
    for params_file in sorted(exp_dir.glob(f"*/{PARAMS_FILE}")):
        trial_dir = params_file.parent
        config = json.loads(params_file.read_text())
        results = trial_results(trial_dir)
        values = [r[metric] for r in results if metric in r and not is_nan(r[metric])]
        last = results[-1] if results else {}
        epochs = int(last.get("epoch", 0)) if results else 0
        trial_id = last.get("trial_id", trial_id_of(trial_dir))
        status = trial_status(last, config.get("num_epoch", max_epochs), metric,
                              errored=(trial_dir / ERROR_FILE).is_file(), cut=trial_id in cut)
        row = {"trial_id": trial_id, "status": status}
        best = best_of(mode)(values) if values else float("nan")
        best_epoch = next((int(r["epoch"]) for r in results if r.get(metric) == best), None) if values else None
        if space.scheduler in PBT:  # the values of its best epoch (PBT changed them) and how its weights got there
            at_best = next((r for r in results if r["epoch"] == best_epoch), last)
            config = {**config, **at_best.get("config", {})}
            row.update(lineage=at_best.get("lineage", ""), exploits=len(donors(at_best.get("lineage"))))
        for p in space.params:
            row[p] = config.get(p, "")  # empty where a condition excluded the parameter
        if "kl_anneal_type" not in space.params:
            row["kl_anneal_type"] = config.get("kl_anneal_type", "Cyclical")
        row.update({"epochs": epochs, "best_epoch": best_epoch, f"best_{metric}": best,
                    f"last_{metric}": last.get(metric, float("nan")),
                    "val_psnr_600": last.get("val_psnr_600", float("nan")),
                    "wall_s": round(last.get("time_total_s") or sum(r.get("epoch_s", 0) for r in results), 1),
                    "trial_dir": trial_dir.name})
        if metric != "val_psnr":
            row["last_val_psnr"] = last.get("val_psnr", float("nan"))
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    sources = trial_sources(exp_dir)
    if sources:  # which source proposed each trial (the study records it): start point, portfolio, prior, ...
        table.insert(2, "source", [sources.get(str(t), "") for t in table["trial_id"]])
    table = table.sort_values(f"best_{metric}", ascending=(mode == "min"), na_position="last", kind="stable")
    table.insert(0, "rank", range(1, len(table) + 1))
    return table.reset_index(drop=True)


def trial_sources(exp_dir):
    """{Ray trial id: the source that proposed it} from the experiment's Optuna study ({} without one)."""
    if not (Path(exp_dir) / JOURNAL).is_file():
        return {}
    import optuna
    study = optuna.load_study(study_name=None, storage=study_storage(exp_dir))
    return {str(t.user_attrs["ray_trial_id"]): t.user_attrs.get("source", "") for t in study.get_trials(deepcopy=False)
            if "ray_trial_id" in t.user_attrs}


def summary(table, metric):
    """Trials, best, mean and std of each trial's best metric, by KL-annealing type."""
    col = f"best_{metric}"
    grouped = table.groupby("kl_anneal_type")[col]
    return pd.DataFrame({"trials": grouped.size(), "best": grouped.max(), "mean": grouped.mean(),
                         "std": grouped.std()}).reset_index()


def fmt(v):
    """Four significant digits, not fixed decimals: an lr of 0.00017 stays 0.00017."""
    return "" if math.isnan(v) else f"{v:.4g}"


def markdown(df):
    def cell(v):
        return fmt(v) if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def write_tables(exp_dir, table):
    """trials.csv, trials.md and trials.html of `table` (collect's) into the experiment folder."""
    exp_dir = Path(exp_dir)
    metric = read_search(exp_dir).space.metric
    by_type = summary(table, metric) if not table.empty else pd.DataFrame()
    table.to_csv(exp_dir / "trials.csv", index=False)
    (exp_dir / "trials.md").write_text(f"# Trials of {exp_dir.name}\n\n{markdown(table)}\n\n"
                                       f"## By KL-annealing type ({metric})\n\n{markdown(by_type)}\n")
    (exp_dir / "trials.html").write_text(
        f"<html><head><meta charset='utf-8'><title>{exp_dir.name}</title></head><body>"
        f"<h1>Trials of {exp_dir.name}</h1>{table.to_html(index=False, float_format=fmt, na_rep='')}"
        f"<h2>By KL-annealing type ({metric})</h2>{by_type.to_html(index=False, float_format=fmt, na_rep='')}"
        f"</body></html>\n")


def console(table, metric, top=10):
    if table.empty:
        return "no trial reported a result"
    cols = [c for c in table.columns if c not in ("trial_dir",)]
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        return (f"top {min(top, len(table))} of {len(table)} trials by {metric}:\n"
                + table[cols].head(top).to_string(index=False, float_format=fmt)
                + "\n\nby KL-annealing type:\n" + summary(table, metric).to_string(index=False, float_format=fmt))
