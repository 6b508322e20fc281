"""The strategy race, `python -m tune_cvae bench search`: what TPE and ASHA buy on this task at the same compute.

Every strategy gets the same budget, counted in trial-epochs (a search ends once its trials have trained that
many epochs in all; run_search.py --budget), and K independent searches (seeds 0..K-1):

    tpe+asha        the default: Optuna's TPE proposes, ASHA stops poor trials early
    random+asha     random proposals, ASHA
    tpe             TPE, every trial trains max_epochs
    random          random search without early stopping: the classic baseline
    tpe+asha+start  the default with the space's hand-written start points (points_to_evaluate), as users run it
    random+start    random search with the start points
    pbt             Population Based Training over --pbt-space (demo_pbt.yaml): its population of num_samples
                    trials trains budget / num_samples epochs each, exploiting and perturbing the KL weight,
                    teacher-forcing ratio and lr
    random+held     PBT's control: random search over the same space and epochs, the values held, no exploits
    default config  the space's first start point (the template's default configuration) trained for the whole
                    budget, one run per seed

The first four race without start points (which would help every strategy alike): the search alone. For each
search: the winner's best val_psnr, its test score (its best checkpoint rolled out on the test videos by the
leaderboard's rule; no retraining) where the data has test truth, the trial-epochs spent, wall time, diverged
trials, and the best val_psnr so far against the trial-epochs spent. Writes OUT/searches.csv (one row per
search), OUT/summary.csv and .md (mean and std over seeds per strategy), OUT/race.png (the best-so-far curves,
mean and a band of one std). A search already finished in OUT is read, not run again. The searches run in this
process (Ray started once), through search.tuner.run like run_search.py, their reports into OUT/logs/; this module
imports the search only when it runs.
"""
import json
import math
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from tune_cvae.bench.settings import RACE_MODEL, RACE_QUICK, STRATEGY_NAMES
from tune_cvae.bench.strategies import default_space, pbt_race_space, race_space
from tune_cvae.common import UserError, reports_to, say
from tune_cvae.experiment import figures
from tune_cvae.experiment.files import DIVERGED, USABLE, trial_results
from tune_cvae.experiment.space_yaml import load_space
from tune_cvae.experiment.tables import collect, markdown
from tune_cvae.lab.config import BUILTIN_TRAIN_FRAMES, DEFAULTS, UNSEEN_SEED, best_of

DEFAULT_CONFIG, BASELINE = STRATEGY_NAMES[-1], "random"


def run_search(raw, name, out, data_dir, seed, cpus):
    """One search of the race (in this process, Ray started once), its console output in OUT/logs/NAME.log;
    returns (experiment folder, wall seconds). A search an earlier run of the bench finished is read; one it left
    unfinished (Ctrl-C) is resumed (its wall time then counts the resumed part only)."""
    from tune_cvae.search import tuner
    exp, done = out / "ray_results" / name, out / "ray_results" / name / "race.json"
    if done.is_file():
        return exp, json.loads(done.read_text())["wall_s"]
    space_file = out / "spaces" / f"{name}.yaml"
    space_file.parent.mkdir(parents=True, exist_ok=True)
    space_file.write_text(yaml.safe_dump(raw, sort_keys=False))
    (out / "logs").mkdir(exist_ok=True)
    t0, interrupted = time.perf_counter(), None
    with open(out / "logs" / f"{name}.log", "a") as log, reports_to(log):
        try:
            tuner.run(None if exp.exists() else str(space_file), resume=exp.exists(), data_dir=str(data_dir),
                      storage=str(out / "ray_results"), name=name, seed=seed, num_cpus=cpus, dashboard=False,
                      verbose=0)
        except tuner.Interrupted as e:
            interrupted = e
    if interrupted:
        say(f"the race was interrupted in {name}; the same command continues it")
        raise SystemExit(interrupted.exit_status)
    wall = time.perf_counter() - t0
    done.write_text(json.dumps({"wall_s": wall}) + "\n")
    return exp, wall


def curve(trial_dirs, metric, mode):
    """Best value so far after each trial-epoch, the search's results in the order they came: a list with one
    value per trial-epoch spent (NaN until a finite one came)."""
    results = [r for d in trial_dirs for r in trial_results(d)]
    results.sort(key=lambda r: (r.get("wall_time") or r.get("timestamp", 0), r.get("time_total_s", 0)))
    best, out = math.nan, []
    for r in results:
        value = r.get(metric)
        if isinstance(value, (int, float)) and math.isfinite(value):
            best = value if math.isnan(best) else best_of(mode)(best, value)
        out.append(best)
    return out


def test_truth(dataset):
    """The test videos' true frames as the leaderboard reads them (decoded once per race), and the score of
    repeating their first frames; (None, NaN) where the data has no test truth."""
    from tune_cvae.lab.leaderboard import load_truth, score_arrays
    truth_dir = Path(dataset.root) / "test_truth"
    if not truth_dir.is_dir():
        return None, math.nan
    truth = load_truth(truth_dir, len(dataset.test_first))
    return truth, score_arrays(np.repeat(truth[:, :1], truth.shape[1], axis=1), truth)["score"]


def test_score(trial_dir, space, dataset, truth):
    """The leaderboard's score of a trial's best checkpoint rolled out on the test videos (NaN without truth)."""
    from tune_cvae.experiment.winner import best_checkpoint
    from tune_cvae.lab.leaderboard import PIXELS, predict_tests, score_arrays, to_uint8
    from tune_cvae.lab.train import Run
    if truth is None:
        return math.nan
    state = best_checkpoint(trial_dir, space.metric, space.mode)
    run = Run(state["config"], dataset)
    run.load_state(state)
    videos = to_uint8(predict_tests(run, run.config["infer_z"])).reshape(len(truth), -1, PIXELS)
    return score_arrays(videos.numpy(), truth)["score"]


def _row(strategy, seed, trial, metric, test, trials, wall):
    """One row of searches.csv: a search's winner (`trial`, a row of report.collect) and what the search spent
    (`trials`: its rows)."""
    return {"strategy": strategy, "seed": seed, "winner": trial["trial_id"], f"best_{metric}": trial[f"best_{metric}"],
            "test_score": test, "trial_epochs": int(trials["epochs"].sum()), "trials": len(trials),
            "diverged": int((trials["status"] == DIVERGED).sum()), "wall_s": round(float(wall), 1)}


def measure(exp, wall, strategy, seed, dataset, truth):
    """One row of searches.csv and its best-so-far curve."""
    from tune_cvae.experiment.winner import winner
    record, row, trial_dir = winner(exp)
    space = record.space
    table = collect(exp)
    values = curve([exp / d for d in table["trial_dir"]], space.metric, space.mode)
    return _row(strategy, seed, row, space.metric, test_score(trial_dir, space, dataset, truth), table, wall), values


def default_rows(exp, dataset, truth):
    """The default configuration's search: one row and curve per seed (one trial each, its own winner)."""
    from tune_cvae.experiment.record import read_search
    space = read_search(exp).space
    table = collect(exp)
    runs = []
    for i, t in table.iterrows():
        usable = t["status"] in USABLE and not math.isnan(t[f"best_{space.metric}"])
        test = test_score(exp / t["trial_dir"], space, dataset, truth) if usable else math.nan
        runs.append((_row(DEFAULT_CONFIG, t["seed"], t, space.metric, test, table.loc[[i]], t["wall_s"]),
                     curve([exp / t["trial_dir"]], space.metric, space.mode)))
    return runs


def reach(values, target, mode):
    """Trial-epochs a search spent until its best so far reached `target` (NaN if it never did)."""
    hit = [i + 1 for i, v in enumerate(values) if not math.isnan(v) and (v >= target if mode == "max" else v <= target)]
    return hit[0] if hit else math.nan


def summarise(runs, metric, mode):
    """Mean and std over seeds per strategy; the trial-epochs each needed to reach the mean final best of random
    search without early stopping (the baseline), with how many of its searches got there."""
    table = pd.DataFrame([row for row, _ in runs])
    base = table[table["strategy"] == BASELINE][f"best_{metric}"]
    target = float(base.mean()) if len(base) else math.nan
    lines = []
    for strategy, group in table.groupby("strategy", sort=False):
        epochs = [reach(values, target, mode) for row, values in runs if row["strategy"] == strategy]
        reached = [e for e in epochs if not math.isnan(e)]
        line = {"strategy": strategy, "searches": len(group)}
        for col in (f"best_{metric}", "test_score", "trial_epochs", "trials", "diverged", "wall_s"):
            line[f"{col} mean"], line[f"{col} std"] = group[col].mean(), group[col].std(ddof=1)
        line["epochs to baseline's best"] = float(np.mean(reached)) if reached else math.nan
        line["reached"] = f"{len(reached)}/{len(epochs)}"
        lines.append(line)
    summary = pd.DataFrame(lines)
    summary.attrs["target"] = target
    return table, summary


def plot(runs, budget, metric, path):
    """Best-so-far against trial-epochs: per strategy the mean over seeds and a band of one std."""
    plt = figures.pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.8))
    x = np.arange(1, budget + 1)
    for strategy in dict.fromkeys(row["strategy"] for row, _ in runs):
        ys = np.array([[values[min(i, len(values)) - 1] if values else math.nan for i in x]
                       for row, values in runs if row["strategy"] == strategy], dtype=float)
        with warnings.catch_warnings():  # all-NaN columns: before a strategy's first finite value
            warnings.simplefilter("ignore", RuntimeWarning)
            mean, std = np.nanmean(ys, axis=0), np.nanstd(ys, axis=0)
        line, = ax.plot(x, mean, label=f"{strategy} ({len(ys)} seeds)")
        ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.15)
    ax.set(xlabel="trial-epochs spent", ylabel=f"best {metric} so far (dB)",
           title=f"Search strategies at a budget of {budget} trial-epochs (mean, band: one std over seeds)")
    figures.whole_epochs(ax)
    ax.legend(fontsize=8)
    figures.save(fig, path)


def prepare(out, data_dir, quick):
    """The race's dataset: --data, or the built-in dataset generated with UNSEEN_SEED (the spaces were tuned on
    BUILTIN_SEED)."""
    from tune_cvae.lab.synthetic import generate
    if data_dir is not None:
        return Path(data_dir).expanduser().resolve()
    data_dir = out / f"data-seed{UNSEEN_SEED}"
    if not data_dir.is_dir():
        say(f"generating the built-in dataset with seed {UNSEEN_SEED} into {data_dir}")
        generate(data_dir, RACE_QUICK["train_frames"] if quick else BUILTIN_TRAIN_FRAMES, UNSEEN_SEED)
    return data_dir


def plan(args):
    """(space, PBT's space, budget, seeds) of the race from its flags; --quick shrinks everything for a test."""
    space, pbt_space = load_space(args.space), load_space(args.pbt_space)
    if pbt_space.scheduler not in ("pbt", "pb2"):
        raise UserError(f"--pbt-space {args.pbt_space}: scheduler {pbt_space.scheduler}, not pbt or pb2")
    if args.model == "small":
        space.fixed.update(RACE_MODEL)
        pbt_space.fixed.update(RACE_MODEL)
    space.max_epochs = RACE_QUICK["max_epochs"] if args.quick else (args.max_epochs or space.max_epochs)
    space.grace_period = min(space.grace_period, space.max_epochs)
    budget = RACE_QUICK["budget"] if args.quick else args.budget
    if budget < space.max_epochs:
        raise UserError(f"--budget {budget}: less than one trial of max_epochs={space.max_epochs}")
    seeds = list(range(RACE_QUICK["seeds"] if args.quick else args.seeds))
    return space, pbt_space, budget, seeds


def race(args):
    """Every strategy's searches, seed after seed, then the tables and the figure; returns the summary."""
    from tune_cvae.lab.data import load_dataset
    out = Path(args.out).expanduser().resolve()
    space, pbt_space, budget, seeds = plan(args)
    strategies = [s for s in STRATEGY_NAMES if s in args.strategies and s != DEFAULT_CONFIG]
    dataset = load_dataset(prepare(out, args.data, args.quick), progress=False)  # checked before OUT is made
    out.mkdir(parents=True, exist_ok=True)
    truth, repeat = test_truth(dataset)
    say(f"race on {dataset.root}: {len(strategies)} strategies x {len(seeds)} seeds at {budget} trial-epochs each, "
        f"trials of up to {space.max_epochs} epochs, "
        f"{', '.join(f'{k}={space.fixed.get(k, DEFAULTS[k])}' for k in RACE_MODEL)}"
        f"; logs in {out / 'logs'}")
    runs, n, total = [], 0, len(strategies) * len(seeds) + (DEFAULT_CONFIG in args.strategies)
    for seed in seeds:
        for strategy in strategies:
            n += 1
            name = f"{strategy.replace('+', '-')}-seed{seed}"
            raw = (pbt_race_space(pbt_space, strategy, budget) if strategy in ("pbt", "random+held")
                   else race_space(space, strategy, budget))
            exp, wall = run_search(raw, name, out, dataset.root, seed, args.cpus)
            runs.append(measure(exp, wall, strategy, seed, dataset, truth))
            say(f"[{n}/{total}] {_line(runs[-1][0], space.metric)}")
    if DEFAULT_CONFIG in args.strategies:
        exp, _ = run_search(default_space(space, budget, seeds), "default-config", out, dataset.root, 0, args.cpus)
        runs += default_rows(exp, dataset, truth)
        say(f"[{total}/{total}] " + "; ".join(_line(row, space.metric) for row, _ in runs[-len(seeds):]))
    return write(out, runs, space, budget, repeat)


def _line(row, metric):
    return (f"{row['strategy']} seed {row['seed']}: best {metric} {row[f'best_{metric}']:.2f}, test score "
            f"{row['test_score']:.2f} dB, {row['trial_epochs']} trial-epochs, {row['trials']} trials, "
            f"{row['diverged']} diverged, {row['wall_s']:.0f} s")


def write(out, runs, space, budget, repeat):
    """searches.csv, summary.csv/.md, race.json (the curves) and race.png; returns the summary. `repeat`: the test
    score of repeating the first frames, the same for every search."""
    table, summary = summarise(runs, space.metric, space.mode)
    table["repeat_first_frame"] = repeat
    table.to_csv(out / "searches.csv", index=False)
    summary.to_csv(out / "summary.csv", index=False)
    (out / "summary.md").write_text(markdown(summary) + "\n")
    (out / "race.json").write_text(json.dumps({"budget": budget, "target": summary.attrs["target"],
                                               "repeat_first_frame": repeat,
                                               "runs": [{**row, "curve": values} for row, values in runs]},
                                              default=float) + "\n")
    plot(runs, budget, space.metric, out / "race.png")
    say(f"wrote {out}/searches.csv, summary.csv, summary.md, race.json, race.png (the baseline's mean final best: "
        f"{summary.attrs['target']:.2f} dB; repeating the first frame scores {repeat:.2f} dB on the test videos)")
    return summary


def main(args):
    """`python -m tune_cvae bench search` (flags: cli.bench_flags)."""
    table = race(args)
    say(table.to_string(index=False, float_format=lambda v: f"{v:.2f}", na_rep=""), result=True)
