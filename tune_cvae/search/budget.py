"""A search's budget of trial-epochs, one object: the ledger of the epochs each trial trained and the stopper that
ends running trials once they add up to the budget. The searcher (no proposals once it is spent) and the status
table read the same object: Ray pickles the Tuner's configs in one file, so they still share it after a restore.
"""
from ray.tune import Stopper


class Budget(Stopper):
    """`total` trial-epochs (None: no budget, never spent). Ray calls it with every result of every trial."""

    def __init__(self, total=None):
        self.total, self.epochs = total, {}  # Ray trial id -> the epochs it trained

    def note(self, trial_id, result):
        """Count a trial's result (its `epoch` is the number of epochs it has trained)."""
        self.epochs[trial_id] = max(self.epochs.get(trial_id, 0), int(result.get("epoch", 0)))

    def spent(self):
        """Have the trials trained the budget's epochs in all?"""
        return bool(self.total) and sum(self.epochs.values()) >= self.total

    def __call__(self, trial_id, result):
        self.note(trial_id, result)
        return self.spent()

    def stop_all(self):
        return False
