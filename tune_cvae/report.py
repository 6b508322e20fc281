"""The report of a search: trials.csv/.md/.html and report/ (the lab's figures, index.html and index.md).

    python -m tune_cvae report EXPERIMENT_DIR

Reads only files (search.yaml, each trial's params.json, result.json, error.txt, the Optuna journal, run_best's
best/ folder), so it works while a search runs, after it, and without Ray.
"""
import json
import math
import sys
import warnings
from pathlib import Path

import pandas as pd

from tune_cvae import cli, say
from tune_cvae.config import best_of
from tune_cvae.lineage import LineageError, assemble, donors
from tune_cvae.space import PBT, read_search


EPOCHS_FILE = "epochs.jsonl"  # in a trial folder: every epoch's metrics, appended by the trainable


def trial_results(trial_dir):
    """The results a trial reported, one dict per epoch in epoch order: the trainable's own epochs.jsonl, with
    what Ray added to each (time_total_s, trial_id, config) from its result.json. Ray rewrites result.json when a
    paused trial restarts (every PBT perturbation), losing earlier epochs; epochs.jsonl is only appended to. A
    resumed trial trains again the epochs after its last saved checkpoint: the later report counts."""
    by_epoch = {}
    for name in (EPOCHS_FILE, "result.json"):
        path = Path(trial_dir) / name
        if path.is_file():
            for line in path.read_text().splitlines():
                if line.strip():
                    result = json.loads(line)
                    epoch = result.get("epoch", len(by_epoch) + 1)
                    by_epoch[epoch] = {**by_epoch.get(epoch, {}), **result}
    return [by_epoch[epoch] for epoch in sorted(by_epoch)]


def schedule(exp_dir, trial_id, epoch):
    """lineage.assemble over the experiment's trial records (trial_results): the KL weight, teacher-forcing
    ratio and lr that PBT trial `trial_id`'s weights after `epoch` trained with, epoch by epoch, and who trained
    each."""
    return assemble(trial_id, epoch, lambda who: {int(r["epoch"]): r for r in
                                                  trial_results(Path(exp_dir) / f"trial_{who}")})


FINISHED, STOPPED, DIVERGED, ERRORED, INTERRUPTED = "finished", "stopped early", "diverged (NaN)", "errored", \
    "interrupted"
USABLE = (FINISHED, STOPPED, INTERRUPTED)  # statuses of trials whose metric values count


def _nan(x):
    return x is None or (isinstance(x, float) and math.isnan(x))


def trial_status(last, num_epoch, metric, errored=False, cut=False):
    """A trial's status from its last result (None: it reported none): the one decision behind the table, the
    console's status table and what the Optuna study is told."""
    last = last or {}
    if errored:
        return ERRORED
    if last and (last.get("diverged") or _nan(last.get(metric))):
        return DIVERGED
    if int(last.get("epoch", 0)) >= num_epoch:
        return FINISHED
    return INTERRUPTED if cut else STOPPED


JOURNAL = "optuna.journal"  # in an experiment folder: the search's Optuna study (optuna-dashboard reads it)


def study_storage(exp_dir):
    """The Optuna storage of a search's study: EXPERIMENT/optuna.journal."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return JournalStorage(JournalFileBackend(str(Path(exp_dir) / JOURNAL)))


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
        status = trial_status(last, config.get("num_epoch", max_epochs), metric,
                              errored=(trial_dir / "error.txt").is_file(), cut=trial_id in cut)
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
    """Four significant digits, not fixed decimals: an lr of 0.00017 stays 0.00017."""
    return "" if math.isnan(v) else f"{v:.4g}"


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
    lab_report(exp_dir, table)
    return table


def _figures(exp_dir, table, out):
    """Draw every figure the experiment's files allow; returns [(title, file name, (reading, reading))]."""
    from tune_cvae import figures
    space = read_search(exp_dir).space
    metric, col = space.metric, f"best_{space.metric}"
    usable = table[table.status.isin(USABLE)]
    if usable.empty:
        return []
    results = {d: trial_results(exp_dir / d) for d in table.trial_dir}
    best = usable.iloc[0]
    sections = _schedule_section(exp_dir, space, best, results[best.trial_dir], out)
    by_type = {}
    for kl_type in usable.kl_anneal_type.drop_duplicates():  # the table is ranked: the best type comes first
        group = usable[usable.kl_anneal_type == kl_type]
        top = group.iloc[0]
        by_type[kl_type] = (top.trial_id, results[top.trial_dir], top[col], int((table.kl_anneal_type == kl_type)
                            .sum()), int((group.status == "finished").sum()))
    sections.append(("KL-annealing types", "kl_types.png",
                     figures.kl_types(by_type, out / "kl_types.png", metric, space.max_epochs)))
    psnr, source = _psnr_per_frame(exp_dir, best)
    if psnr is not None:
        sections.append(("Validation PSNR per frame", "psnr_per_frame.png",
                         figures.psnr_per_frame(psnr, source, out / "psnr_per_frame.png")))
    found = importances(exp_dir, table, metric)
    if found:
        values, n = found
        pd.DataFrame({"parameter": list(values), "importance": list(values.values())}).to_csv(
            out / "importance.csv", index=False)
        sections.append(("Parameter importance", "importance.png",
                         figures.importance(values, "PED-ANOVA evaluator", n, out / "importance.png")))
    log_params = {name for name, p in space.params.items() if p.get("log")}
    sections.append(("Searched values", "parallel.png",
                     figures.parallel(table, list(space.params), log_params, metric, out / "parallel.png")))
    curves = []
    for row in table.itertuples():
        points = [(r["epoch"], r[metric]) for r in results[row.trial_dir] if not _nan(r.get(metric))]
        if points:
            curves.append((row.trial_id, row.status, [e for e, _ in points], [v for _, v in points]))
    rungs = []
    rung = space.grace_period
    while rung < space.max_epochs and space.scheduler == "asha":
        rungs.append(rung)
        rung *= space.reduction_factor
    sections.append(("Early stopping (ASHA)" if rungs else "Learning curves", "asha.png",
                     figures.asha(curves, metric, rungs, space.max_epochs, out / "asha.png")))
    return sections


def _schedule_section(exp_dir, space, best, results, out):
    """The best trial's teacher forcing and KL weight per epoch; under PBT the schedule its weights trained with,
    across the trials of its lineage."""
    from tune_cvae import figures
    if space.scheduler not in PBT:
        return [("Teacher forcing and the KL weight", "tfr.png", figures.tfr(results, best.trial_id,
                                                                             out / "tfr.png"))]
    try:
        rows = schedule(exp_dir, best.trial_id, int(best.best_epoch))
    except LineageError as e:  # a trial folder removed by hand: the rest of the report still stands
        say(f"report: no PBT schedule figure: {e}")
        return []
    return [("Schedule learned by PBT", "pbt_schedule.png",
             figures.pbt_schedule(rows, best.trial_id, out / "pbt_schedule.png"))]


def _psnr_per_frame(exp_dir, best):
    """The winner's per-frame validation PSNR: run_best.py's retraining when it ran, else the best trial's last
    validation; (None, None) when neither is on disk."""
    for path, source in ((exp_dir / "best" / "val_psnr_per_frame.csv", "run_best.py's retrained winner"),
                         (exp_dir / best.trial_dir / "val_psnr_per_frame.csv",
                          f"best trial {best.trial_id}, its last validation")):
        if path.is_file():
            return pd.read_csv(path)["psnr"].tolist(), source
    return None, None


def importances(exp_dir, table, metric):
    """Optuna's parameter importances (PED-ANOVA: needs no extra package) over every trial of the study with a
    finite best value, valued at it (a trial ASHA stopped counts at its best epoch, a lower budget: ASHA leaves
    too few finished trials in a small search); ({parameter: importance}, trials), or None below 2 trials."""
    if not (Path(exp_dir) / JOURNAL).is_file():
        return None
    import optuna
    study = optuna.load_study(study_name=None, storage=study_storage(exp_dir))
    best = dict(zip(table.trial_id.astype(str), table[f"best_{metric}"]))
    valued = optuna.create_study(direction=study.direction)
    for trial in study.trials:
        value = best.get(str(trial.user_attrs.get("ray_trial_id")))
        if value is not None and math.isfinite(value) and trial.params:
            valued.add_trial(optuna.trial.create_trial(params=trial.params, distributions=trial.distributions,
                                                       value=value))
    if len(valued.trials) < 2:
        return None
    evaluator = optuna.importance.PedAnovaImportanceEvaluator()
    with warnings.catch_warnings():  # "some regimes have less than 2 trials": a small search; the text says n
        warnings.simplefilter("ignore", UserWarning)
        return optuna.importance.get_param_importances(valued, evaluator=evaluator), len(valued.trials)


SORTABLE = """<script>
document.querySelectorAll("table.sortable th").forEach((th, i) => th.addEventListener("click", () => {
  const body = th.closest("table").tBodies[0], up = th.dataset.up !== "1";
  const key = r => { const t = r.cells[i].innerText, n = parseFloat(t); return isNaN(n) ? t : n; };
  [...body.rows].sort((a, b) => (key(a) > key(b) ? 1 : key(a) < key(b) ? -1 : 0) * (up ? 1 : -1))
    .forEach(r => body.appendChild(r));
  th.dataset.up = up ? "1" : "0";
}));
</script>"""


def strategy(space):
    """The search's strategy in one sentence (the report's first line)."""
    if space.scheduler in PBT:
        return (f"Population Based Training ({'PB2' if space.scheduler == 'pb2' else 'PBT'}): {space.num_samples} "
                f"trials drawn at random; every {space.pbt['interval']} epochs the bottom "
                f"{space.pbt['quantile']:.0%} took the weights of a top trial and perturbed "
                f"{', '.join(space.mutated)}.")
    proposer = {"tpe": "Optuna's TPE", "random": "random sampling"}[space.searcher]
    stopper = "ASHA stopping poor trials early" if space.scheduler == "asha" else "no early stopping"
    budget = f", until they had trained {space.budget} epochs in all" if space.budget else ""
    return f"Trials proposed by {proposer}, {stopper}{budget}."


def lab_report(exp_dir, table):
    """EXPERIMENT/report/: every figure the files allow, and index.html + index.md (the trial table with links to
    the trial folders, the per-KL-type summary, each figure with its two-line reading)."""
    exp_dir = Path(exp_dir)
    out = exp_dir / "report"
    out.mkdir(exist_ok=True)
    space = read_search(exp_dir).space
    metric = space.metric
    sections = _figures(exp_dir, table, out) if not table.empty else []
    by_type = summary(table, metric) if not table.empty else pd.DataFrame()
    shown = table.drop(columns=["trial_dir"], errors="ignore")
    md = [f"# Search {exp_dir.name}", "", strategy(space), "", f"Ranked by the best {metric} over each trial's epochs.",
          "",
          _markdown(shown), "", f"## By KL-annealing type ({metric})", "", _markdown(by_type), ""]
    linked = shown.copy()
    if not table.empty:
        linked["trial_id"] = [f"<a href='../{d}/'>{t}</a>" for t, d in zip(table.trial_id, table.trial_dir)]
    html = [f"<html><head><meta charset='utf-8'><title>Search {exp_dir.name}</title><style>"
            "body{font-family:sans-serif;margin:2em} table{border-collapse:collapse;font-size:13px}"
            "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right} th{cursor:pointer;background:#eee}"
            "img{max-width:100%}</style></head><body>", f"<h1>Search {exp_dir.name}</h1>", f"<p>{strategy(space)}</p>",
            f"<p>Ranked by the best {metric} over each trial's epochs; click a column to sort.</p>",
            linked.to_html(index=False, float_format=_fmt, na_rep="", escape=False, classes="sortable"),
            f"<h2>By KL-annealing type ({metric})</h2>", by_type.to_html(index=False, float_format=_fmt, na_rep="")]
    for title, name, reading in sections:
        md += [f"## {title}", "", f"![{title}]({name})", "", *[line + "  " for line in reading], ""]
        html += [f"<h2>{title}</h2>", f"<p>{'<br>'.join(reading)}</p>", f"<img src='{name}' alt='{title}'>"]
    (out / "index.md").write_text("\n".join(md) + "\n")
    (out / "index.html").write_text("\n".join(html) + SORTABLE + "</body></html>\n")
    return out


def console(table, metric, top=10):
    if table.empty:
        return "no trial reported a result"
    cols = [c for c in table.columns if c not in ("trial_dir",)]
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        return (f"top {min(top, len(table))} of {len(table)} trials by {metric}:\n"
                + table[cols].head(top).to_string(index=False, float_format=_fmt)
                + "\n\nby KL-annealing type:\n" + summary(table, metric).to_string(index=False, float_format=_fmt))


def main(args):
    """`python -m tune_cvae report` (flags: cli.report_flags)."""
    table = write(args.experiment)
    print(console(table, read_search(args.experiment).space.metric))
    print(f"\nwrote {Path(args.experiment) / 'trials.csv'}, trials.md, trials.html and "
          f"{Path(args.experiment) / 'report' / 'index.html'}")


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
    cli.main(["report", *sys.argv[1:]])
