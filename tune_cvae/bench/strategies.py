"""The space each strategy of the race runs its searches over, built from the race's space (or its PBT space) and a
budget: the strategy's searcher, scheduler and knowledge (start points, prior, portfolio), the same trial-epochs
for all.

A search strategy's name is its parts joined by '+': a searcher (tpe, random, prior, sample-prior), then any of
`asha` (early stopping; else every trial trains max_epochs), `start` (the space's start points first), `portfolio`
(the space's portfolio first, after them) and `bad-prior` (the prior moved to BAD_PRIOR, high confidence, with no
start points: the robustness check). `pbt` and `random+held` race the PBT space; two rows are single runs, not
searches: `default config` (the first start point for the whole budget) and `best start point alone` (the
last start point, the best known, for the budget plus run_best's retraining epochs: the user's alternative).
"""
from tune_cvae.bench.settings import PBT_ROWS, RUN_BEST, SINGLE_RUNS
from tune_cvae.common import UserError

SEARCHERS = ("tpe", "random", "prior", "sample-prior")
PARTS = ("asha", "start", "portfolio", "bad-prior")
# the robustness check's prior: the template's default at the floor of the lr range, a residual output (which
# drifts over a rollout on the built-in data) and one optimiser step per batch, each believed with high confidence
BAD_PRIOR = {"kl_anneal_type": "Cyclical", "kl_anneal_cycle": 10, "kl_reduction": "sum_batch", "kl_beta_max": 1.0,
             "tfr": 1.0, "tfr_sde": 10, "optim": "Adam", "lr": "low", "lr_scheduler": "multistep",
             "optim_step": "clip", "output": "residual", "output_activation": "sigmoid"}


def parts_of(name):
    """(searcher, {parts}) of a search strategy's name, or a UserError naming what is wrong with it."""
    searcher, *parts = name.split("+")
    if searcher not in SEARCHERS or not set(parts) <= set(PARTS):
        raise UserError(f"strategy {name!r}: a searcher ({', '.join(SEARCHERS)}) then any of +{', +'.join(PARTS)}; "
                        f"or pbt, random+held, {', '.join(SINGLE_RUNS)}")
    return searcher, set(parts)


def tries_portfolio(strategy):
    """Whether a row's searches try the space's portfolio first: only a search strategy with the part (single runs,
    PBT's rows and run_best's retraining name no parts of their own)."""
    if strategy in SINGLE_RUNS + PBT_ROWS + (RUN_BEST,):
        return False
    return "portfolio" in parts_of(strategy)[1]


def race_space(space, strategy, budget):
    """The space a search strategy's searches run: its searcher, scheduler and budget; the start points, the
    portfolio and the prior as its parts say; trials enough for the budget (every trial trains one epoch at
    least) and for what goes first."""
    searcher, parts = parts_of(strategy)
    points = space.points_to_evaluate if "start" in parts else []
    portfolio = space.portfolio if "portfolio" in parts else []
    raw = {**space.to_dict(), "searcher": searcher, "scheduler": "asha" if "asha" in parts else "none",
           "budget": budget, "num_samples": max(budget, len(points) + len(portfolio)),
           "points_to_evaluate": points, "portfolio": portfolio, "portfolio_file": None}
    if "portfolio" in parts and not space.portfolio:
        raise UserError(f"{space.path}: no portfolio for strategy {strategy} (bench search --portfolio FILE)")
    if "bad-prior" in parts:
        raw["params"] = bad_prior(space.params)
    return raw


def with_portfolio(space, portfolio):
    """The space with `portfolio` (a portfolio file beside it, in search_spaces/ or at a path) as its own, checked
    against its parameters as a space's own portfolio is: the configurations the race's portfolio rows try first."""
    from tune_cvae.experiment.space_yaml import parse  # not at the top: the command line's --help imports this file
    return parse({**space.to_dict(), "portfolio": portfolio}, space.path)  # parse records the file it read


def bad_prior(params):
    """The space's parameters with their prior moved to BAD_PRIOR (high confidence; `low`: a range's floor, other
    numbers kept within the range); a parameter BAD_PRIOR does not name believes nothing."""
    out = {}
    for name, p in params.items():
        p = {k: v for k, v in p.items() if k != "prior"}
        value = BAD_PRIOR.get(name)
        if value is not None and p["type"] != "categorical":
            value = p["low"] if value == "low" else min(max(value, p["low"]), p["high"])
        if value is not None and (p["type"] != "categorical" or value in p["choices"]):
            p["prior"] = {"value": value, "confidence": "high"}
        out[name] = p
    return out


def pbt_race_space(pbt_space, strategy, budget):
    """The pbt strategy's space: its population trains budget / population epochs each (the same trial-epochs as
    the others), perturbing at most every max_epochs; random+held: the same trials without PBT."""
    max_epochs = max(1, budget // pbt_space.num_samples)
    raw = {**pbt_space.to_dict(), "max_epochs": max_epochs, "grace_period": 1,
           "pbt": {**pbt_space.pbt, "interval": min(pbt_space.pbt["interval"], max_epochs)}}
    return raw if strategy == "pbt" else {**raw, "scheduler": "none", "searcher": "random"}


def one_run_space(space, strategy, epochs, seeds):
    """A single-run row as one search: its start point fixed (the first for `default config`, the last for the
    best known), one trial per seed, each trained `epochs` without early stopping."""
    if not space.points_to_evaluate:
        raise UserError(f"{space.path}: no points_to_evaluate, so no start point to train")
    point = space.points_to_evaluate[0 if strategy == SINGLE_RUNS[0] else -1]
    changes = space.retrain.get("set", {}) if strategy == SINGLE_RUNS[1] else {}  # run_best's recipe for the long run
    return seeded_runs_space(space, {**point, **changes}, epochs, seeds)


def seeded_runs_space(space, values, epochs, seeds):
    """One configuration (the space's fixed values and `values`) as a search of one trial per training seed, each
    trained `epochs` without early stopping: a single-run row, or a winner scored over seeds (--train-seeds)."""
    return {**space.to_dict(), "fixed": {**space.fixed, **values}, "searcher": "random", "scheduler": "none",
            "budget": None, "max_epochs": epochs, "grace_period": 1, "num_samples": len(seeds),
            "params": {"seed": {"type": "categorical", "choices": list(seeds)}},
            "points_to_evaluate": [{"seed": s} for s in seeds], "portfolio": [], "portfolio_file": None,
            "retrain": {}}
