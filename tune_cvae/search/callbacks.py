"""Ray Tune callbacks of a search: the console's status table, and the guard that ends a search while its disk
still holds its last state.
"""
import math
import shutil
import signal
import time
from pathlib import Path

from ray.tune import Callback

from tune_cvae.common import UserError, say
from tune_cvae.experiment.files import ERRORED, JOURNAL, RUNNING, STOPPED, trial_status
from tune_cvae.experiment.storage import SPACE_FLOOR
from tune_cvae.lab.config import best_of

class StorageGuard(Callback):
    """Ends the search as Ctrl-C does while its storage can still hold Ray's last save of the experiment state: a
    folder whose disk fills mid-write leaves state files cut short (Ray copies them into place), which --resume
    cannot read (room kept: SPACE_FLOOR, or 3 of the largest checkpoint so far per concurrent trial); a URI that
    stops answering (looked at every CHECK_EVERY_S seconds at most). Ray pickles its callbacks with the
    experiment, so what it found is kept per folder in `trouble`."""
    trouble = {}  # experiment folder -> (what happened, what to do) when the guard ended its search
    CHECK_EVERY_S = 10.0

    def __init__(self, exp_dir, concurrent, where):
        self.exp_dir, self.concurrent, self.where, self.largest, self.looked = str(exp_dir), concurrent, where, 0, 0.0

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        if not self.where.remote:
            self.largest = max(self.largest, sum(f.stat().st_size for f in Path(checkpoint.path).rglob("*")
                                                 if f.is_file()))
        self.check()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.check()

    def on_trial_error(self, iteration, trials, trial, **info):
        self.check()

    def check(self):
        if self.exp_dir in self.trouble:
            return
        if self.where.remote:
            if time.monotonic() - self.looked < self.CHECK_EVERY_S:
                return
            self.looked = time.monotonic()
            if not self.where.reachable(Path(self.exp_dir).name):
                self.stop(f"{self.where}: the storage stopped answering (the search stopped there)",
                          "once it answers again,")
            return
        free, wanted = shutil.disk_usage(self.exp_dir).free, max(SPACE_FLOOR, 3 * self.concurrent * self.largest)
        if free < wanted:
            self.stop(f"{self.exp_dir}: no space left for the search ({free / 2**20:.0f} MB free, it keeps "
                      f"{wanted / 2**20:.0f} MB for its checkpoints and state)", "free space, then")

    def stop(self, what, remedy):
        stop = signal.getsignal(signal.SIGUSR1)  # Ray Tune's stop handler while fit runs
        if callable(stop):
            self.trouble[self.exp_dir] = (what, remedy)
            stop(signal.SIGUSR1, None)


class PushRecords(Callback):
    """Keeps a URI experiment's current Optuna journal in storage (its live copy is the driver's, which needs local
    appends and locks): pushed as each trial ends and when the search does. Nothing for a folder."""

    def __init__(self, where, name):
        self.where, self.name = where, name

    def push(self):
        if self.where.remote:
            try:
                self.where.push(self.name, [JOURNAL])
            except UserError:
                pass  # the storage guard ends a search whose storage stopped answering

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.push()

    def on_experiment_end(self, trials, **info):
        self.push()


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
