"""The strategy race, `python -m tune_cvae bench search`: what a search earns beyond what its user already knows.

Every strategy (bench/strategies.py names them) gets the same budget, counted in trial-epochs (a search ends once
its trials have trained that many epochs in all; run_search.py --budget), on each dataset, at each budget, with
the same seeds 0..K-1: a row and its control are paired by (dataset, budget, seed). Each search's trials train with
its seed, and its winner's values are trained afresh with --train-seeds seeds (race_runs.rescored): the race ranks
configurations, not one draw of their training noise. For each search: the winner's best val_psnr, its test score
(the mean of those runs' best checkpoints rolled out on the 5 test videos, the leaderboard's rule; with
--train-seeds 0 the winner's own checkpoint, every trial seeded 1), the trial-epochs spent, wall time, diverged
trials, and the best val_psnr so far after each trial-epoch. End to end, the default's winner is retrained by
run_best.py as `make demo` does, against the best-known start point trained as one run for the same compute (the
budget plus run_best's retraining epochs).

Everything goes under OUT: the datasets, ray_results/DATASET-bBUDGET/ (every search's experiment folder),
ray_results/DATASET-configs/ (the winners trained over seeds), protocol.json (--train-seeds), logs/ (each search's
report), searches.csv, summary.csv/.md, comparisons.csv/.md (race_stats.py), race.json (the curves) and race.png.
A search already finished is read, not run again; one an interruption cut is resumed, so the same command
continues a race. The tables hold every search measured in OUT, earlier sittings' too (race.json), so a race can
grow by seeds, datasets or rows, one command at a time. The searches run in this process (Ray started once)
through search.tuner.run.
"""
import json
import signal
from pathlib import Path

from tune_cvae.bench import race_stats
from tune_cvae.bench.race_data import datasets
from tune_cvae.bench.race_runs import (DONE_FILE, RaceInterrupted, measure, one_run_rows, rescored, run_best_row,
                                      run_search)
from tune_cvae.bench.settings import (DEFAULT, ONE_RUN, PBT_ROWS, RACE_MODEL, RACE_PORTFOLIO, RACE_QUICK, RUN_BEST,
                                      SINGLE_RUNS)
from tune_cvae.bench.strategies import one_run_space, pbt_race_space, race_space, tries_portfolio, with_portfolio
from tune_cvae.common import UserError, say, write_whole
from tune_cvae.experiment.space_yaml import load_space, parse
from tune_cvae.lab.config import DEFAULTS

PROTOCOL_FILE = "protocol.json"  # in OUT: how its searches' trials were seeded (--train-seeds)


def plan(args):
    """(space, PBT's space, budgets, seeds, strategies, training seeds per winner) of the race from its flags;
    --quick shrinks it for a test."""
    space, pbt_space = load_space(args.space), load_space(args.pbt_space)
    strategies = list(args.strategies)
    if args.portfolio or (not space.portfolio and any(map(tries_portfolio, strategies))):
        space = with_portfolio(space, args.portfolio or RACE_PORTFOLIO)
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
    if RUN_BEST in strategies and DEFAULT not in strategies:
        strategies.insert(0, DEFAULT)  # run_best retrains the default's winners
    if args.train_seeds < 0:
        raise UserError(f"--train-seeds {args.train_seeds}: 0 or more training seeds per winner")
    if args.train_seeds and "pbt" in strategies:
        raise UserError("--train-seeds: the pbt row's winner changes its values as it trains, so there is no one "
                        "configuration to score over seeds; race it with --train-seeds 0")
    check_rows(space, pbt_space, budgets, seeds, strategies)
    return space, pbt_space, budgets, seeds, strategies, args.train_seeds


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
    space, pbt_space, _, _, strategies, train_seeds = plan_
    storage = out / "ray_results" / f"{data.name}-b{budget}"
    for strategy in strategies:
        if strategy in SINGLE_RUNS or strategy == RUN_BEST:
            continue
        raw = searches_of(space, pbt_space, strategy, budget)
        if train_seeds:  # the search's trials train with its own seed: each seed a draw of the training noise
            raw = {**raw, "fixed": {**raw["fixed"], "seed": seed}}
        exp, wall = run_search(raw, storage, f"{strategy.replace('+', '-')}-seed{seed}", out, data.dataset.root,
                               seed, cpus)
        runs.append(measure(exp, wall, data, budget, strategy, seed))
        if train_seeds:
            runs[-1] = rescored(exp, runs[-1][0], space, data, train_seeds, out, cpus), runs[-1][1]
        if strategy == DEFAULT and RUN_BEST in strategies:
            runs.append(run_best_row(exp, runs[-1][0], data))
        say(f"[{data.name}, budget {budget}] {_line(runs[-1][0], space.metric)}")


def single_runs(data, budget, plan_, out, cpus, runs):
    """The single-run rows of one dataset and budget, a trial per seed, appended to `runs`: the seeds that finished
    runs in OUT hold are read, the others trained as one search (so a race grown by seeds trains the new ones)."""
    space, _, _, seeds, strategies, _ = plan_
    storage = out / "ray_results" / f"{data.name}-b{budget}"
    for strategy in (s for s in strategies if s in SINGLE_RUNS):
        epochs = budget + (space.retrain.get("epochs", 0) if strategy == ONE_RUN else 0)
        name = strategy.replace(" ", "-")
        rows = [r for exp in finished_runs(storage, name) for r in one_run_rows(exp, data, budget, strategy)]
        done = {r["seed"] for r, _ in rows}
        todo = [s for s in seeds if s not in done]
        if todo:
            exp, _ = run_search(one_run_space(space, strategy, epochs, todo), storage,
                                f"{name}-seeds-{'-'.join(map(str, todo))}", out, data.dataset.root, 0, cpus)
            rows += one_run_rows(exp, data, budget, strategy)
        runs += [(r, v) for r, v in rows if r["seed"] in seeds]
        say(f"[{data.name}, budget {budget}] " + "; ".join(_line(r, space.metric) for r, _ in runs[-len(seeds):]))


def finished_runs(storage, name):
    """The finished searches of a single-run row in `storage`: NAME-seeds-A-B-..., one per sitting that trained
    seeds, or NAME (a race from before a row's seeds were named)."""
    return [exp for exp in sorted(storage.glob(f"{name}*")) if (exp / DONE_FILE).is_file()
            and (exp.name == name or exp.name.startswith(f"{name}-seeds-"))]


def race(args):
    """Every budget's searches, seed by seed and dataset by dataset (a race cut short holds whole seeds), then its
    single runs; the tables and the figure after each seed. Returns the summary. Ctrl-C or SIGTERM ends the
    search running and the race (exit 130 or 143): the same command continues it."""
    out = Path(args.out).expanduser().resolve()
    plan_ = plan(args)
    space, _, budgets, seeds, strategies, train_seeds = plan_
    check_protocol(out, train_seeds)
    out.mkdir(parents=True, exist_ok=True)
    write_whole(out / PROTOCOL_FILE, json.dumps({"train_seeds": train_seeds}) + "\n")
    data = datasets(args, out)
    repeats = {d.name: d.repeat for d in data}
    say(f"race on {', '.join(d.name for d in data)}: {len(strategies)} rows x {len(seeds)} seeds at budgets "
        f"{', '.join(map(str, budgets))} trial-epochs, trials of up to {space.max_epochs} epochs, "
        + (f"each winner scored over {train_seeds} training seeds" if train_seeds
           else f"every trial seed {DEFAULTS['seed']}")
        + f"; logs in {out / 'logs'}")
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


def check_protocol(out, train_seeds):
    """A race continues only as it began: its searches' trials were seeded one way (--train-seeds 0: every trial
    with the config's default seed; else the search's seed), and its rows are comparable only within one."""
    path = out / PROTOCOL_FILE
    if path.is_file():
        found = json.loads(path.read_text())["train_seeds"]
    else:
        found = 0 if (out / "ray_results").is_dir() else None  # a race from before --train-seeds
    if found is not None and found != train_seeds:
        raise UserError(f"--out {out}: a race with --train-seeds {found}; continue it with --train-seeds {found}, "
                        f"or name another --out")


def _line(r, metric):
    own = f" (its own checkpoint {r['winner_test_score']:.2f})" if "winner_test_score" in r else ""
    return (f"{r['strategy']} seed {r['seed']}: best {metric} {r[f'best_{metric}']:.2f}, test score "
            f"{r['test_score']:.2f} dB{own}, {r['trial_epochs']} trial-epochs, {r['trials']} trials, {r['diverged']} "
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
