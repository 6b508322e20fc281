"""A portfolio from earlier searches: `python -m tune_cvae portfolio EXPERIMENT... --k 6 --out FILE`.

k configurations chosen greedily, as Auto-sklearn 2.0 builds its portfolios (Feurer et al., JMLR 2022), so that
on the earlier searches' datasets the best of them scores as high as it can: each step adds the candidate that
raises most the mean, over the datasets, of the portfolio's best score there (ties: the one farthest from those
chosen). Candidates are every search's finished trials but the space's start points; a candidate's score on a
dataset is its percentile among that search's trials (1 = the best), where it ran there, and else the percentile
of the trial nearest to it in the unit range (one nearest neighbour: the searches did not run each other's
configurations). A space names the file (`portfolio: FILE`) and its search evaluates the portfolio first, after
the start points.
"""
import math
from pathlib import Path

import numpy as np
import yaml

from tune_cvae.common import UserError, say, write_whole
from tune_cvae.experiment.files import FINISHED, USABLE
from tune_cvae.experiment.prior import unit
from tune_cvae.experiment.record import read_search
from tune_cvae.experiment.space import SpaceError
from tune_cvae.experiment.space_yaml import SPACES_DIR, load_space, parse
from tune_cvae.experiment.tables import collect


def trials_of(exp_dir, space):
    """[(the trial's searched values, its best metric, finished?)] of an experiment's usable trials."""
    table, record = collect(exp_dir), read_search(exp_dir)
    metric, sign = record.space.metric, 1 if record.space.mode == "max" else -1
    if table.empty:
        return []
    rows = table[table["status"].isin(USABLE) & table[f"best_{metric}"].notna()]
    return [({p: row[p] for p in space.params if p in row and row[p] == row[p] and row[p] != ""},
             sign * float(row[f"best_{metric}"]), row["status"] == FINISHED) for _, row in rows.iterrows()]


def distance(space, a, b):
    """How far apart two configurations are: per parameter the gap in the unit range (a categorical: 0 or 1; a
    parameter only one of them sets: 1), as a root mean square."""
    gaps = []
    for name, p in space.params.items():
        if (name in a) != (name in b):
            gaps.append(1.0)
        elif name in a:
            gaps.append(float(a[name] != b[name]) if p["type"] == "categorical" else
                        abs(unit(p, a[name]) - unit(p, b[name])))
    return math.sqrt(sum(g * g for g in gaps) / max(len(gaps), 1))


def percentiles(values):
    """Each value's percentile among `values` (higher is better): 1 for the best, 0 for the worst."""
    order = np.argsort(np.argsort(values))
    return order / max(len(values) - 1, 1)


def score_matrix(space, searches):
    """(candidates, scores): every finished trial of every search (the same values once), and its score on each
    search's dataset (candidates x searches)."""
    candidates = []
    for i, trials in enumerate(searches):
        candidates += [(i, values) for values, _, done in trials
                       if done and all(values != seen for _, seen in candidates)]
    scores = np.zeros((len(candidates), len(searches)))
    for j, trials in enumerate(searches):
        ranks = percentiles([value for _, value, _ in trials])
        for c, (i, values) in enumerate(candidates):
            nearest = min(range(len(trials)), key=lambda t: distance(space, values, trials[t][0]))
            scores[c, j] = ranks[nearest]  # the candidate itself where it ran there (distance 0)
    return [values for _, values in candidates], scores


def greedy(scores, k, apart=None):
    """Indices of k candidates, each step the one that most raises the mean over searches of the portfolio's best
    score; ties (the best scores can saturate) go to the higher mean score, then to the candidate farthest from
    those chosen (`apart(a, b)`: their distance), so that the portfolio does not repeat itself."""
    chosen, best = [], np.zeros(scores.shape[1])
    for _ in range(min(k, len(scores))):
        def key(c):
            spread = min((apart(c, d) for d in chosen), default=0.0) if apart else 0.0
            return round(np.maximum(best, scores[c]).mean(), 9), round(scores[c].mean(), 9), spread, -c
        c = max((c for c in range(len(scores)) if c not in chosen), key=key)
        chosen.append(c)
        best = np.maximum(best, scores[c])
    return chosen


def fits(space, values):
    """Does a configuration lie in the space (every active parameter set, every value in its range)?"""
    try:
        parse({**space.to_dict(), "points_to_evaluate": [], "portfolio": [values]}, space.path)
    except SpaceError:
        return False
    return True


def build(experiments, k, space_name=None):
    """(space, portfolio, [(dataset, trials, finished)], the mean best percentile after each pick): k
    configurations of the experiments' finished trials that lie in the space (default: the first one's)."""
    if not experiments:
        raise UserError("name at least one experiment folder")
    records = [read_search(e) for e in experiments]
    if len({(r.space.metric, r.space.mode) for r in records}) > 1:
        raise UserError("the experiments rank by different metrics: " + ", ".join(
            f"{e} by {r.space.metric}" for e, r in zip(experiments, records)))
    space = load_space(space_name) if space_name else records[0].space
    searches = [trials_of(e, space) for e in experiments]
    for e, trials in zip(experiments, searches):
        if not any(done for _, _, done in trials):
            raise UserError(f"{e}: no finished trial to take into a portfolio")
    candidates, scores = score_matrix(space, searches)
    keep = [c for c, values in enumerate(candidates)  # the start points are evaluated first anyway
            if fits(space, values) and values not in space.points_to_evaluate]
    if not keep:
        raise UserError(f"no finished trial of these experiments lies in {space.path} beside its start points; "
                        f"pass --space with the space they searched")
    chosen = [keep[i] for i in greedy(scores[keep], k, lambda a, b: distance(space, candidates[keep[a]],
                                                                             candidates[keep[b]]))]
    curve = [float(scores[chosen[:n + 1]].max(axis=0).mean()) for n in range(len(chosen))]
    sources = [(r.data_dir, len(t), sum(done for _, _, done in t)) for r, t in zip(records, searches)]
    return space, [candidates[c] for c in chosen], sources, curve


def shown_path(path):
    """A space's file as a portfolio names it: its name when it is one of search_spaces/, else its path."""
    return Path(path).name if Path(path).resolve().parent == SPACES_DIR.resolve() else str(path)


def main(args):
    """`python -m tune_cvae portfolio` (flags: cli.portfolio_flags)."""
    experiments = [str(Path(e).expanduser().resolve()) for e in args.experiments]
    space, portfolio, sources, curve = build(experiments, args.k, args.space)
    text = yaml.safe_dump({
        "description": f"a portfolio of {len(portfolio)} configurations from {len(experiments)} searches "
                       f"(python -m tune_cvae portfolio, greedy over their datasets)",
        "space": shown_path(space.path), "metric": space.metric,
        "built_from": [{"experiment": e, "data": d, "trials": n, "finished": f}
                       for e, (d, n, f) in zip(experiments, sources)],
        "mean_best_percentile": [round(v, 4) for v in curve],
        "portfolio": [{k: (float(v) if isinstance(v, np.floating) else int(v) if isinstance(v, np.integer) else v)
                       for k, v in values.items()} for values in portfolio]}, sort_keys=False)
    write_whole(Path(args.out), text)
    for n, (values, level) in enumerate(zip(portfolio, curve), 1):
        say(f"{n}. mean best percentile over the searches {level:.3f}: {values}")
    say(f"wrote {args.out}; name it in a space as `portfolio: {Path(args.out).name}` (beside the space file or in "
        f"search_spaces/)", result=True)
