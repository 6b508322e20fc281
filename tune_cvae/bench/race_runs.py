"""One search of the race and what it measures: the search run (or read back, or resumed) in this process, its
winner's row of searches.csv and best-so-far curve, run_best's retraining of it, the single runs' rows, and the
winner scored as a configuration over training seeds (--train-seeds).
"""
import contextlib
import hashlib
import json
import logging
import math
import time

import numpy as np
import yaml

from tune_cvae.bench.settings import RESCORE_SEEDS_FROM, RUN_BEST
from tune_cvae.bench.strategies import seeded_runs_space
from tune_cvae.common import reports_to, write_whole
from tune_cvae.experiment.files import DIVERGED, USABLE, trial_results
from tune_cvae.experiment.tables import collect
from tune_cvae.lab.config import best_of

RESCORED = ("test_seed_std", "rescore_diverged", "winner_test_score")  # a row's columns from rescored()
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
    search_row = {k: v for k, v in search_row.items() if k not in RESCORED}  # run_best's one retraining, scored
    return {**search_row, "strategy": RUN_BEST, "test_score": summary["score"]["submission"]["score"],
            "trial_epochs": search_row["trial_epochs"] + summary["epochs"]}, []


def trial_scores(exp, data, space, table):
    """The test score of each trial of a search's table, in its order (NaN where it diverged or never reported)."""
    return [data.test_score(exp / t["trial_dir"], space)
            if t["status"] in USABLE and not math.isnan(t[f"best_{space.metric}"]) else math.nan
            for _, t in table.iterrows()]


def one_run_rows(exp, data, budget, strategy):
    """A single-run row's search: one row and curve per seed (one trial each, its own winner)."""
    from tune_cvae.experiment.record import read_search
    space, table = read_search(exp).space, collect(exp)
    return [(row(data, budget, strategy, t["seed"], t, space.metric, test, table.loc[[i]], t["wall_s"]),
             curve([exp / t["trial_dir"]], space.metric, space.mode))
            for (i, t), test in zip(table.iterrows(), trial_scores(exp, data, space, table))]


def rescored(exp, search_row, space, data, train_seeds, out, cpus):
    """The search's row with its winner scored as a configuration: the winner's values trained afresh, as one search
    of a trial per seed from RESCORE_SEEDS_FROM (once per configuration and dataset, whichever row chose it), its
    test score the mean over the seeds whose run did not diverge; the winner's own checkpoint's score kept beside."""
    from tune_cvae.experiment.winner import searched_values, trial_params, winner
    record, _, trial_dir = winner(exp)
    values = searched_values(record.space, trial_params(trial_dir))
    seeds = list(range(RESCORE_SEEDS_FROM, RESCORE_SEEDS_FROM + train_seeds))
    raw = seeded_runs_space(space, values, space.max_epochs, seeds)
    key = hashlib.sha256(json.dumps([raw["fixed"], raw["max_epochs"], seeds], sort_keys=True, default=str).encode())
    configs, _ = run_search(raw, out / "ray_results" / f"{data.name}-configs", f"config-{key.hexdigest()[:16]}", out,
                            data.dataset.root, 0, cpus)
    scores = np.array(trial_scores(configs, data, space, collect(configs)), float)  # the same metric as `space`
    finite = scores[np.isfinite(scores)]
    spread = float(finite.std(ddof=1)) if len(finite) > 1 else math.nan
    return {**search_row, "test_score": float(finite.mean()) if len(finite) else math.nan,
            **dict(zip(RESCORED, (spread, int(len(scores) - len(finite)), search_row["test_score"])))}
