"""The strategy race, `python -m tune_cvae bench search`: what a search earns beyond what its user already knows.

Every strategy (bench/strategies.py names them) gets the same budget, counted in trial-epochs (a search ends once
its trials have trained that many epochs in all; run_search.py --budget), on each dataset, at each budget, with
the same seeds 0..K-1: a row and its control are paired by (dataset, budget, seed). For each search: the
winner's best val_psnr, its test score (its best checkpoint rolled out on the 5 test videos, the leaderboard's
rule), the trial-epochs spent, wall time, diverged trials, and the best val_psnr so far after each trial-epoch.
End to end, the new default's winner is retrained by run_best.py as `make demo` does, against the best-known start
point trained as one run for the same compute (the budget plus run_best's retraining epochs).

Everything goes under OUT: the datasets, ray_results/DATASET-bBUDGET/ (every search's experiment folder),
logs/ (each search's report), searches.csv, summary.csv/.md, comparisons.csv/.md (race_stats.py), race.json (the
curves) and race.png. A search already finished is read, not run again; one an interruption cut is resumed, so the
same command continues a race. The tables hold every search measured in OUT, earlier sittings' too (race.json), so
a race can grow by seeds, datasets or rows, one command at a time. The searches run in this process (Ray started
once) through search.tuner.run.
"""
import contextlib
import json
import logging
import math
import signal
import time
from pathlib import Path

import yaml

from tune_cvae.bench import race_stats
from tune_cvae.bench.race_data import datasets
from tune_cvae.bench.settings import NEW_DEFAULT, ONE_RUN, RACE_MODEL, RACE_QUICK, RUN_BEST, SINGLE_RUNS
from tune_cvae.bench.strategies import one_run_space, pbt_race_space, race_space
from tune_cvae.common import UserError, reports_to, say, write_whole
from tune_cvae.experiment.files import DIVERGED, USABLE, trial_results
from tune_cvae.experiment.space_yaml import load_space, parse
from tune_cvae.experiment.tables import collect
from tune_cvae.lab.config import best_of

PBT_ROWS = ("pbt", "random+held")  # the rows that race the PBT space
DONE_FILE = "race.json"  # in a search's experiment folder: the race finished it (its wall time)


def run_search(raw, storage, name, out, data_dir, seed, cpus):
    """One search of the race (in this process, Ray started once), its reports in OUT/logs/; returns (experiment
    folder, wall seconds). A search an earlier run finished is read; one it left unfinished is resumed (its wall
    time then counts the resumed part only). An interruption ends the race: the same command continues it."""
    from tune_cvae.search import tuner
    exp = storage / name
    if (exp / DONE_FILE).is_file():
        return exp, json.loads((exp / DONE_FILE).read_text())["wall_s"]
    space_file = out / "spaces" / storage.name / f"{name}.yaml"
    space_file.parent.mkdir(parents=True, exist_ok=True)
    space_file.write_text(yaml.safe_dump(raw, sort_keys=False))
    log = out / "logs" / storage.name / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    t0, interrupted = time.perf_counter(), None
    with open(log, "a") as f, reports_to(f), logging_to(f), contextlib.redirect_stdout(f):  # and Ray's own print
        try:
            tuner.run(None if exp.exists() else str(space_file), resume=exp.exists(), data_dir=str(data_dir),
                      storage=str(storage), name=name, seed=seed, num_cpus=cpus, dashboard=False, verbose=0,
                      reuse_actors=True)
        except tuner.Interrupted as e:
            interrupted = e
    if interrupted:
        raise RaceInterrupted(interrupted.exit_status)
    wall = time.perf_counter() - t0
    write_whole(exp / DONE_FILE, json.dumps({"wall_s": wall}) + "\n")
    return exp, wall


@contextlib.contextmanager
def logging_to(stream):
    """Within this block Ray's own log records (its warnings about checkpoint frequency, say) go to `stream`, the
    search's log, instead of the race's console (Ray also prints its results path: redirect_stdout takes that)."""
    ray_logger = logging.getLogger("ray")
    handlers, propagate = ray_logger.handlers[:], ray_logger.propagate
    ray_logger.handlers, ray_logger.propagate = [logging.StreamHandler(stream)], False
    try:
        yield
    finally:
        ray_logger.handlers, ray_logger.propagate = handlers, propagate


class RaceInterrupted(Exception):
    """Ctrl-C or SIGTERM ended the search running: the race ends with its exit status; finished searches stay."""

    def __init__(self, exit_status):
        super().__init__(exit_status)
        self.exit_status = exit_status


def curve(trial_dirs, metric, mode):
    """Best value so far after each trial-epoch, the search's results in the order they came: one value per
    trial-epoch spent (NaN until a finite one came)."""
    results = [r for d in trial_dirs for r in trial_results(d)]
    results.sort(key=lambda r: (r.get("wall_time") or r.get("timestamp", 0), r.get("time_total_s", 0)))
    best, out = math.nan, []
    for r in results:
        value = r.get(metric)
        if isinstance(value, (int, float)) and math.isfinite(value):
            best = value if math.isnan(best) else best_of(mode)(best, value)
        out.append(best)
    return out


def row(data, budget, strategy, seed, trial, metric, test, trials, wall):
    """One row of searches.csv: a search's winner (`trial`, a row of its table) and what the search spent."""
    return {"dataset": data.name, "budget": budget, "strategy": strategy, "seed": int(seed),
            "winner": trial["trial_id"], f"best_{metric}": trial[f"best_{metric}"], "test_score": test,
            "trial_epochs": int(trials["epochs"].sum()), "trials": len(trials),
            "diverged": int((trials["status"] == DIVERGED).sum()), "wall_s": round(float(wall), 1),
            "repeat_first_frame": data.repeat}


def measure(exp, wall, data, budget, strategy, seed):
    """(a row of searches.csv, its best-so-far curve) of one search."""
    from tune_cvae.experiment.winner import winner
    record, trial, trial_dir = winner(exp)
    table = collect(exp)
    values = curve([exp / d for d in table["trial_dir"]], record.space.metric, record.space.mode)
    test = data.test_score(trial_dir, record.space)
    return row(data, budget, strategy, seed, trial, record.space.metric, test, table, wall), values


def run_best_row(exp, search_row, data):
    """The new default's winner retrained by run_best.py as `make demo` does (the space's retrain), scored."""
    from tune_cvae.experiment.best import run_best
    summary_file = exp / "best" / "summary.json"
    if not summary_file.is_file():
        with open(exp / "best.log", "a") as f, reports_to(f):
            run_best(exp, out=exp / "best")
    summary = json.loads(summary_file.read_text())
    return {**search_row, "strategy": RUN_BEST, "test_score": summary["score"]["submission"]["score"],
            "trial_epochs": search_row["trial_epochs"] + summary["epochs"]}, []


def one_run_rows(exp, data, budget, strategy):
    """A single-run row's search: one row and curve per seed (one trial each, its own winner)."""
    from tune_cvae.experiment.record import read_search
    space, table = read_search(exp).space, collect(exp)
    runs = []
    for i, t in table.iterrows():
        usable = t["status"] in USABLE and not math.isnan(t[f"best_{space.metric}"])
        test = data.test_score(exp / t["trial_dir"], space) if usable else math.nan
        runs.append((row(data, budget, strategy, t["seed"], t, space.metric, test, table.loc[[i]], t["wall_s"]),
                     curve([exp / t["trial_dir"]], space.metric, space.mode)))
    return runs


def plan(args):
    """(space, PBT's space, budgets, seeds, strategies) of the race from its flags; --quick shrinks it for a test."""
    space, pbt_space = load_space(args.space), load_space(args.pbt_space)
    if pbt_space.scheduler not in ("pbt", "pb2"):
        raise UserError(f"--pbt-space {args.pbt_space}: scheduler {pbt_space.scheduler}, not pbt or pb2")
    if args.model == "small":
        space.fixed.update(RACE_MODEL)
        pbt_space.fixed.update(RACE_MODEL)
    space.max_epochs = RACE_QUICK["max_epochs"] if args.quick else (args.max_epochs or space.max_epochs)
    space.grace_period = min(space.grace_period, space.max_epochs)
    budgets = RACE_QUICK["budgets"] if args.quick else args.budgets
    if min(budgets) < space.max_epochs:
        raise UserError(f"--budgets {min(budgets)}: less than one trial of max_epochs={space.max_epochs}")
    seeds = list(range(RACE_QUICK["seeds"] if args.quick else args.seeds))
    strategies = list(args.strategies)
    if RUN_BEST in strategies and NEW_DEFAULT not in strategies:
        strategies.insert(0, NEW_DEFAULT)  # run_best retrains the new default's winners
    check_rows(space, pbt_space, budgets, seeds, strategies)
    return space, pbt_space, budgets, seeds, strategies


def check_rows(space, pbt_space, budgets, seeds, strategies):
    """Every row's space checked before the first search, as run_search.py checks one: a row that cannot run (a
    space without a portfolio, a prior outside its range) is one line now, not hours into the race."""
    for budget in budgets:
        for strategy in strategies:
            if strategy in SINGLE_RUNS:
                parse(one_run_space(space, strategy, budget, seeds), space.path)
            elif strategy != RUN_BEST:
                parse(searches_of(space, pbt_space, strategy, budget),
                      pbt_space.path if strategy in PBT_ROWS else space.path)


def searches_of(space, pbt_space, strategy, budget):
    """The raw space of one search of a search strategy."""
    if strategy in PBT_ROWS:
        return pbt_race_space(pbt_space, strategy, budget)
    return race_space(space, strategy, budget)


def searches(data, budget, seed, plan_, out, cpus, runs):
    """Every search strategy's search of one dataset, budget and seed; appended to `runs`."""
    space, pbt_space, _, _, strategies = plan_
    storage = out / "ray_results" / f"{data.name}-b{budget}"
    for strategy in strategies:
        if strategy in SINGLE_RUNS or strategy == RUN_BEST:
            continue
        raw = searches_of(space, pbt_space, strategy, budget)
        exp, wall = run_search(raw, storage, f"{strategy.replace('+', '-')}-seed{seed}", out, data.dataset.root,
                               seed, cpus)
        runs.append(measure(exp, wall, data, budget, strategy, seed))
        if strategy == NEW_DEFAULT and RUN_BEST in strategies:
            runs.append(run_best_row(exp, runs[-1][0], data))
        say(f"[{data.name}, budget {budget}] {_line(runs[-1][0], space.metric)}")


def single_runs(data, budget, plan_, out, cpus, runs):
    """The single-run rows of one dataset and budget: one search each, a trial per seed; appended to `runs`."""
    space, _, _, seeds, strategies = plan_
    storage = out / "ray_results" / f"{data.name}-b{budget}"
    for strategy in (s for s in strategies if s in SINGLE_RUNS):
        epochs = budget + (space.retrain.get("epochs", 0) if strategy == ONE_RUN else 0)
        raw = one_run_space(space, strategy, epochs, seeds)
        exp, _ = run_search(raw, storage, strategy.replace(" ", "-"), out, data.dataset.root, 0, cpus)
        runs += one_run_rows(exp, data, budget, strategy)
        say(f"[{data.name}, budget {budget}] " + "; ".join(_line(r, space.metric) for r, _ in runs[-len(seeds):]))


def race(args):
    """Every budget's searches, seed by seed and dataset by dataset (a race cut short holds whole seeds), then its
    single runs; the tables and the figure after each seed. Returns the summary. Ctrl-C or SIGTERM ends the
    search running and the race (exit 130 or 143): the same command continues it."""
    out = Path(args.out).expanduser().resolve()
    plan_ = plan(args)
    space, _, budgets, seeds, strategies = plan_
    out.mkdir(parents=True, exist_ok=True)
    data = datasets(args, out)
    repeats = {d.name: d.repeat for d in data}
    say(f"race on {', '.join(d.name for d in data)}: {len(strategies)} rows x {len(seeds)} seeds at budgets "
        f"{', '.join(map(str, budgets))} trial-epochs, trials of up to {space.max_epochs} epochs; logs in "
        f"{out / 'logs'}")
    runs = []
    try:
        for budget in budgets:
            for seed in seeds:
                for d in data:
                    searches(d, budget, seed, plan_, out, args.cpus, runs)
                race_stats.write(out, runs, space.metric, repeats)
            for d in data:
                single_runs(d, budget, plan_, out, args.cpus, runs)
    except RaceInterrupted as e:
        say(f"the race was interrupted; its finished searches are kept in {out}, and the same command continues it")
        raise SystemExit(e.exit_status) from None
    return race_stats.write(out, runs, space.metric, repeats)


def _line(r, metric):
    return (f"{r['strategy']} seed {r['seed']}: best {metric} {r[f'best_{metric}']:.2f}, test score "
            f"{r['test_score']:.2f} dB, {r['trial_epochs']} trial-epochs, {r['trials']} trials, {r['diverged']} "
            f"diverged, {r['wall_s']:.0f} s")


def _terminated(signum, frame):
    raise RaceInterrupted(128 + signum)


def main(args):
    """`python -m tune_cvae bench search` (flags: cli.bench_flags)."""
    previous = signal.signal(signal.SIGTERM, _terminated)  # between searches (a search handles its own)
    try:
        table = race(args)
    except KeyboardInterrupt:
        say("the race was interrupted; its finished searches are kept, and the same command continues it")
        raise SystemExit(130) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    say(table.to_string(index=False, float_format=lambda v: f"{v:.2f}", na_rep=""), result=True)
