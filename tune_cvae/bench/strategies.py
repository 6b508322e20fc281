"""The space each strategy of the race runs its searches over, from the race's space (or its PBT space) and
budget: the strategy's searcher, scheduler and start points, the same trial-epochs for all.
"""
from tune_cvae.common import UserError


def race_space(space, strategy, budget):
    """The space a strategy's searches run: its searcher, scheduler and budget; the start points only where the
    strategy has them; num_samples = the budget (every trial trains one epoch at least)."""
    parts = strategy.split("+")  # searcher[+asha][+start]
    searcher, scheduler, start = parts[0], "asha" if "asha" in parts else "none", "start" in parts
    return {**space.to_dict(), "searcher": searcher, "scheduler": scheduler, "budget": budget,
            "num_samples": budget, "points_to_evaluate": space.points_to_evaluate if start else []}


def pbt_race_space(pbt_space, strategy, budget):
    """The pbt strategy's space: its population trains budget / population epochs each (the same trial-epochs as
    the others), perturbing at most every max_epochs; random+held: the same trials without PBT."""
    max_epochs = max(1, budget // pbt_space.num_samples)
    raw = {**pbt_space.to_dict(), "max_epochs": max_epochs, "grace_period": 1,
           "pbt": {**pbt_space.pbt, "interval": min(pbt_space.pbt["interval"], max_epochs)}}
    return raw if strategy == "pbt" else {**raw, "scheduler": "none", "searcher": "random"}


def default_space(space, budget, seeds):
    """The default configuration's runs as one search: the first start point fixed, one trial per seed, each
    trained for the whole budget without early stopping."""
    if not space.points_to_evaluate:
        raise UserError(f"{space.path}: no points_to_evaluate, so no default configuration to train")
    fixed = {**space.fixed, **space.points_to_evaluate[0]}
    return {**space.to_dict(), "fixed": fixed, "searcher": "random", "scheduler": "none", "budget": None,
            "max_epochs": budget, "grace_period": 1, "num_samples": len(seeds),
            "params": {"seed": {"type": "categorical", "choices": list(seeds)}},
            "points_to_evaluate": [{"seed": s} for s in seeds], "retrain": {}}
