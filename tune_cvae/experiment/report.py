"""The report of a search: the trial tables (tables.py) and report/ (the lab's figures, index.html and index.md).

    python -m tune_cvae report EXPERIMENT_DIR

Reads only files (search.yaml, each trial's params.json, result.json, epochs.jsonl, error.txt, the Optuna journal,
run_best's best/ folder), so it works while a search runs, after it, and without Ray.
"""
import math
import warnings
from pathlib import Path

import pandas as pd

from tune_cvae.common import UserError, say
from tune_cvae.experiment.files import (BEST_DIR, FINISHED, JOURNAL, PER_FRAME_FILE, REPORT_DIR, USABLE,
                                        is_nan, study_storage, trial_results)
from tune_cvae.experiment.lineage import LineageError, trained_schedule
from tune_cvae.experiment.record import read_search
from tune_cvae.experiment.space import PBT
from tune_cvae.experiment.storage import experiment_at, shown
from tune_cvae.experiment.tables import TABLE_FILES, collect, console, fmt, markdown, summary, write_tables


def write(exp_dir):
    """Write trials.csv, trials.md, trials.html and report/ into the experiment folder; returns the table."""
    table = collect(exp_dir)
    write_tables(exp_dir, table)
    lab_report(exp_dir, table)
    return table


def _figures(exp_dir, table, out):
    """Draw every figure the experiment's files allow; returns [(title, file name, (reading, reading))]."""
    from tune_cvae.experiment import figures
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
                            .sum()), int((group.status == FINISHED).sum()))
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
        points = [(r["epoch"], r[metric]) for r in results[row.trial_dir] if not is_nan(r.get(metric))]
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
    from tune_cvae.experiment import figures
    if space.scheduler not in PBT:
        return [("Teacher forcing and the KL weight", "tfr.png", figures.tfr(results, best.trial_id,
                                                                             out / "tfr.png"))]
    try:
        rows = trained_schedule(exp_dir, best.trial_id, int(best.best_epoch))
    except LineageError as e:  # a trial folder removed by hand: the rest of the report still stands
        say(f"report: no PBT schedule figure: {e}")
        return []
    return [("Schedule learned by PBT", "pbt_schedule.png",
             figures.pbt_schedule(rows, best.trial_id, out / "pbt_schedule.png"))]


def _psnr_per_frame(exp_dir, best):
    """The winner's per-frame validation PSNR: run_best.py's retraining when it ran, else the best trial's last
    validation; (None, None) when neither is on disk."""
    for path, source in ((exp_dir / BEST_DIR / PER_FRAME_FILE, "run_best.py's retrained winner"),
                         (exp_dir / best.trial_dir / PER_FRAME_FILE,
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
    proposer = {"tpe": "Optuna's TPE", "random": "random sampling",
                "prior": "the prior-guided sampler (the prior, mutations of the incumbent or uniform draws, weighted "
                         "by the evidence)", "sample-prior": "draws from the prior alone"}[space.searcher]
    stopper = "ASHA stopping poor trials early" if space.scheduler == "asha" else "no early stopping"
    budget = f", until they had trained {space.budget} epochs in all" if space.budget else ""
    first = " and ".join(n for n, points in (("the start points", space.points_to_evaluate),
                                             (f"a portfolio of {len(space.portfolio)}", space.portfolio)) if points)
    return f"Trials proposed by {proposer}, {stopper}{budget}" + (f"; {first} first." if first else ".")


def lab_report(exp_dir, table):
    """EXPERIMENT/report/: every figure the files allow, and index.html + index.md (the trial table with links to
    the trial folders, the per-KL-type summary, each figure with its two-line reading)."""
    exp_dir = Path(exp_dir)
    out = exp_dir / REPORT_DIR
    out.mkdir(exist_ok=True)
    space = read_search(exp_dir).space
    metric = space.metric
    sections = _figures(exp_dir, table, out) if not table.empty else []
    by_type = summary(table, metric) if not table.empty else pd.DataFrame()
    shown = table.drop(columns=["trial_dir"], errors="ignore")
    md = [f"# Search {exp_dir.name}", "", strategy(space), "", f"Ranked by the best {metric} over each trial's epochs.",
          "",
          markdown(shown), "", f"## By KL-annealing type ({metric})", "", markdown(by_type), ""]
    linked = shown.copy()
    if not table.empty:
        linked["trial_id"] = [f"<a href='../{d}/'>{t}</a>" for t, d in zip(table.trial_id, table.trial_dir)]
    html = [f"<html><head><meta charset='utf-8'><title>Search {exp_dir.name}</title><style>"
            "body{font-family:sans-serif;margin:2em} table{border-collapse:collapse;font-size:13px}"
            "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right} th{cursor:pointer;background:#eee}"
            "img{max-width:100%}</style></head><body>", f"<h1>Search {exp_dir.name}</h1>", f"<p>{strategy(space)}</p>",
            f"<p>Ranked by the best {metric} over each trial's epochs; click a column to sort.</p>",
            linked.to_html(index=False, float_format=fmt, na_rep="", escape=False, classes="sortable"),
            f"<h2>By KL-annealing type ({metric})</h2>", by_type.to_html(index=False, float_format=fmt, na_rep="")]
    for title, name, reading in sections:
        md += [f"## {title}", "", f"![{title}]({name})", "", *[line + "  " for line in reading], ""]
        html += [f"<h2>{title}</h2>", f"<p>{'<br>'.join(reading)}</p>", f"<img src='{name}' alt='{title}'>"]
    (out / "index.md").write_text("\n".join(md) + "\n")
    (out / "index.html").write_text("\n".join(html) + SORTABLE + "</body></html>\n")
    return out


def main(args):
    """`python -m tune_cvae report` (flags: cli.report_flags): an experiment folder, or a URI's, downloaded into
    its local copy, written there and uploaded back."""
    where, name = experiment_at(args.experiment, "report")
    exp = where.pull(name)
    if not exp.is_dir():
        raise UserError(f"{exp}: experiment folder does not exist")
    table = write(exp)
    where.push(name, [*TABLE_FILES, REPORT_DIR])
    say(console(table, read_search(exp).space.metric), result=True)
    say(f"\nwrote {exp / 'trials.csv'}, trials.md, trials.html and {exp / REPORT_DIR / 'index.html'}"
        + (f", and into {shown(where.uri(name))}" if where.remote else ""), result=True)
