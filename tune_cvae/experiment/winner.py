"""The winner of a search, read from its experiment folder: the best trial, its best checkpoint, the thread count
it trained with and its searched values.
"""
import json
from pathlib import Path

from tune_cvae.common import UserError
from tune_cvae.experiment.files import PARAMS_FILE, STATE_FILE, USABLE, trial_results
from tune_cvae.experiment.record import read_search
from tune_cvae.experiment.tables import collect
from tune_cvae.lab.checkpoint import load_checkpoint
from tune_cvae.lab.config import best_of


def winner(exp_dir):
    """(the experiment's Search record, the winning trial's row, its folder): the best trial by the space's metric,
    errored trials and trials that went NaN ignored."""
    exp_dir = Path(exp_dir)
    if not exp_dir.is_dir():
        raise UserError(f"{exp_dir}: experiment folder does not exist")
    record = read_search(exp_dir)
    table = collect(exp_dir)
    metric = record.space.metric
    usable = table[table["status"].isin(USABLE) & table[f"best_{metric}"].notna()] if not table.empty else table
    if usable.empty:
        raise UserError(f"{exp_dir}: no trial finished an epoch with a finite {metric}")
    row = usable.iloc[0]
    return record, row, exp_dir / row["trial_dir"]


def best_checkpoint(trial_dir, metric, mode):
    """The state of the trial's checkpoint with the best metric (Ray keeps at most two)."""
    states = [load_checkpoint(p) for p in sorted(Path(trial_dir).glob(f"checkpoint_*/{STATE_FILE}"))]
    if not states:
        raise UserError(f"{trial_dir}: the winning trial has no checkpoint")
    return best_of(mode)(states, key=lambda s: s["history"][-1][metric])


def trial_threads(trial_dir, record):
    """The torch thread count the trial trained with (same config + seed + threads = same numbers on a CPU)."""
    results = trial_results(trial_dir)
    return int(results[-1].get("threads") or record.resources.get("cpu") or 1) if results else 1


def searched_values(space, params):
    return {p: params[p] for p in space.params if p in params}


def trial_params(trial_dir):
    """The config a trial was given (its params.json)."""
    return json.loads((Path(trial_dir) / PARAMS_FILE).read_text())
