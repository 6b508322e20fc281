"""Ray Tune callbacks of a search: the console's status table, and the guard that ends a search while its disk
still holds its last state.
"""
import math
import shutil
import signal
import time
from pathlib import Path

from ray.tune import Callback

from tune_cvae.common import say
from tune_cvae.experiment.files import ERRORED, RUNNING, STOPPED, trial_status
from tune_cvae.lab.config import best_of

SPACE_FLOOR = 16 << 20  # bytes a search leaves free on its storage at the least (Ray's last save, the tables)


class StorageGuard(Callback):
    """Ends the search as Ctrl-C does while the experiment folder's disk still has room for Ray's last save of the
    experiment state: a disk that fills mid-write leaves state files cut short (Ray copies them into place), which
    --resume cannot read. Room kept: SPACE_FLOOR, or 3 of the largest checkpoint so far per concurrent trial.
    Ray pickles its callbacks with the experiment, so what it found is kept per folder in `short_of_space`."""
    short_of_space = {}  # experiment folder -> (bytes free, bytes wanted) when the guard ended its search

    def __init__(self, exp_dir, concurrent):
        self.exp_dir, self.concurrent, self.largest = str(exp_dir), concurrent, 0

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        self.largest = max(self.largest, sum(f.stat().st_size for f in Path(checkpoint.path).rglob("*")
                                             if f.is_file()))
        self.check()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.check()

    def check(self):
        free, wanted = shutil.disk_usage(self.exp_dir).free, max(SPACE_FLOOR, 3 * self.concurrent * self.largest)
        stop = signal.getsignal(signal.SIGUSR1)  # Ray Tune's stop handler while fit runs
        if free < wanted and self.exp_dir not in self.short_of_space and callable(stop):
            self.short_of_space[self.exp_dir] = (free, wanted)
            stop(signal.SIGUSR1, None)


class StatusTable(Callback):
    """The console's view of a running search: one table of every trial (status, epochs, the objective's last
    and best value, the searched values), printed when a trial ends and at most every `every` seconds between."""

    def __init__(self, space, budget, every=60.0):
        self.space, self.budget, self.every, self.rows, self.printed = space, budget, every, {}, 0.0

    def _row(self, trial):
        if trial.trial_id not in self.rows:
            self.rows[trial.trial_id] = {"trial_id": trial.trial_id, "status": RUNNING, "epoch": 0,
                                         "last": math.nan, "best": math.nan,
                                         **{p: trial.config.get(p, "") for p in self.space.params}}
        return self.rows[trial.trial_id]

    def on_trial_start(self, iteration, trials, trial, **info):
        self._row(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        row, value = self._row(trial), result.get(self.space.metric)
        row.update({p: trial.config.get(p, "") for p in self.space.mutated})  # what PBT gave it since
        row["epoch"] = int(result.get("epoch", row["epoch"]))
        if isinstance(value, (int, float)) and math.isfinite(value):
            row["last"] = value
            row["best"] = value if math.isnan(row["best"]) else best_of(self.space.mode)(row["best"], value)
        if time.monotonic() - self.printed > self.every:
            self.show()

    def on_trial_complete(self, iteration, trials, trial, **info):
        row = self._row(trial)
        row["status"] = trial_status(trial.last_result, trial.config.get("num_epoch", self.space.max_epochs),
                                     self.space.metric)
        if row["status"] == STOPPED:
            why = "budget" if self.budget.spent() else "ASHA"
            row["status"] += f" ({why}, epoch {row['epoch']})"
        self.show()

    def on_trial_error(self, iteration, trials, trial, **info):
        self._row(trial)["status"] = ERRORED
        self.show()

    def show(self):
        import pandas as pd
        self.printed = time.monotonic()
        table = pd.DataFrame(list(self.rows.values())).rename(
            columns={"last": f"last {self.space.metric}", "best": f"best {self.space.metric}"})
        counts = table["status"].str.split(" ").str[0].value_counts().to_dict()
        say(f"\n[{time.strftime('%H:%M:%S')}] {len(table)} of {self.space.num_samples} trials started: "
            + ", ".join(f"{n} {s}" for s, n in counts.items()), result=True)
        say(table.to_string(index=False, float_format=lambda v: f"{v:.4g}", na_rep=""), result=True)
